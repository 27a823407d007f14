"""Which device an embed job uses, and the precision that goes with it.

Snakemake sets no CUDA_VISIBLE_DEVICES for local jobs, so on a node with several GPUs each job
claims a free one under a lock file (released by the OS when the process dies, even by SIGKILL).
Locks are named after the physical device, so jobs that a scheduler confined to different
devices (CUDA_VISIBLE_DEVICES) never wait for each other.
"""

import contextlib
import fcntl
import os
import time
from pathlib import Path

import torch

from .errors import ModelError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def lock_dir():
    return Path(os.environ.get("VIRNUCFLOW_LOCK_DIR", "/tmp/virnucflow-gpu-locks"))


def visible_devices():
    """Physical ids of the GPUs this process may use (VIRNUCFLOW_FAKE_GPUS=N simulates N)."""
    fake = int(os.environ.get("VIRNUCFLOW_FAKE_GPUS", "0"))
    count = fake or (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [d.strip() for d in listed.split(",") if d.strip()] if listed else []
    return [names[i] if i < len(names) else str(i) for i in range(count)]


@contextlib.contextmanager
def claim_device(requested="auto", log=None, poll_seconds=1.0):
    """Yield 'cpu' or 'cuda:i' for a GPU no other virnucflow job on this node holds."""
    if requested == "cpu":
        yield "cpu"
        return
    devices = visible_devices()
    if not devices:
        if requested == "cuda":
            raise ModelError("embed.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
        yield "cpu"
        return
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for index, name in enumerate(devices):
            handle = open(folder / f"gpu-{name}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                handle.write(f"{os.getpid()}\n")
                handle.flush()
                if log:
                    log.info("claimed GPU %s (cuda:%d)", name, index)
                yield f"cuda:{index}"
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        if log and not waited:
            log.info("all %d GPUs are claimed by other jobs; waiting", len(devices))
            waited = True
        time.sleep(poll_seconds)


def dtype_for(precision, device):
    """auto = bf16 on a GPU, fp32 on a CPU."""
    if precision == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return PRECISIONS[precision]
