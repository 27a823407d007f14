"""Which device an embed job runs on, and the precision that goes with it.

A scheduler that gives a job a GPU says which in CUDA_VISIBLE_DEVICES: the job uses the first device
it sees and locks nothing. Snakemake's local executor sets nothing, so on a node with several GPUs
each job claims a free one under a lock file per device (an flock: the kernel drops it when the
process dies, even by SIGKILL). A job that was given a GPU torch cannot use fails rather than
compute on the CPU for days, unless `cpu_fallback` says so.
"""

import contextlib
import fcntl
import os
import re
import socket
import time
from pathlib import Path

from .errors import VirnucflowError
from .scheduler import GPU_VARIABLES, JOB_IDS, scheduler_environment

# torch is imported where it is used: the Snakefile counts GPUs with this module, without torch.
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
CUDA_INSTALL = "install a CUDA build of torch: `make setup-gpu` (docs/cluster.md, 'GPU setup')"


def precision_name(dtype):
    """'fp32', 'bf16' or 'fp16' for a torch dtype."""
    return {name: key for key, name in PRECISIONS.items()}[str(dtype).removeprefix("torch.")]


def dtype_for(precision, device):
    """The torch dtype of `precision` (auto = bf16 on a GPU, fp32 on a CPU)."""
    import torch

    if precision == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if precision not in PRECISIONS:
        raise VirnucflowError(f"precision {precision!r} is not one of auto, {', '.join(PRECISIONS)}")
    return getattr(torch, PRECISIONS[precision])


def lock_dir():
    return Path(os.environ.get("VIRNUCFLOW_LOCK_DIR", "/tmp/virnucflow-gpu-locks"))


def _listed_devices():
    """Entries of CUDA_VISIBLE_DEVICES (None when unset). Like CUDA, stop at the first invalid one."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return None
    names = []
    for entry in listed.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        names.append(entry)
    return names


# What this module knows of the hardware, in three functions (tests/fake_gpus replaces them).
def _gpu_count():
    """GPUs torch can use."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _nvidia_device_files():
    """NVIDIA devices of the machine, counted without torch: /dev/nvidia0, /dev/nvidia1, ..."""
    if not os.path.isdir("/dev"):
        return 0
    return len([name for name in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", name)])


def _select_gpu(index):
    """Make GPU `index` this process's current device -> its name."""
    import torch

    torch.cuda.set_device(index)
    return torch.cuda.get_device_name(index)


def visible_devices():
    """Names of the GPUs this process may use, in CUDA's order: the CUDA_VISIBLE_DEVICES entries
    (physical ids or UUIDs) when it is set, else '0', '1', ..."""
    listed = _listed_devices()
    return [listed[i] if listed is not None and i < len(listed) else str(i) for i in range(_gpu_count())]


def machine_gpus():
    """How many GPUs a local run may use, found without torch (the Snakefile asks, once per run): the
    CUDA_VISIBLE_DEVICES entries when it is set, else the NVIDIA device files."""
    listed = _listed_devices()
    return len(listed) if listed is not None else _nvidia_device_files()


def gpu_expected():
    """Why this job should have a GPU (a scheduler gave it one, or the machine has NVIDIA devices),
    or None: a job that expects one and finds none must not quietly compute on the CPU."""
    listed = _listed_devices()
    if listed:
        return f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}"
    scheduler = scheduler_environment()
    for key in GPU_VARIABLES:
        if scheduler.get(key, "").strip() not in ("", "0"):
            return f"{key}={scheduler[key]}"
    if listed is None and _nvidia_device_files():
        return "this machine has NVIDIA devices (/dev/nvidia0)"
    return None


def _no_usable_gpu(reason):
    """The one-line error of a job that has a GPU torch cannot use."""
    import torch

    build = (f"torch {torch.__version__} is a CPU-only build" if torch.version.cuda is None
             else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no usable CUDA device")
    return VirnucflowError(f"this job has a GPU ({reason}) but {build}; {CUDA_INSTALL}; or set embed.cpu_fallback: "
                           "true to compute on the CPU anyway (slow: days for ESM-2 3B on large samples)")


def computes_on(device):
    """The torch device that does the work of a claimed `device` (tests/fake_gpus: 'cpu')."""
    return device


def scheduler_job():
    """'SLURM_JOB_ID=123' when a batch scheduler started this process, else None."""
    scheduler = scheduler_environment()
    return next((f"{key}={scheduler[key]}" for key in JOB_IDS if scheduler.get(key)), None)


@contextlib.contextmanager
def claim_device(requested="auto", log=None, poll_seconds=1.0, cpu_fallback=False):
    """Yield the torch device string for this job: 'cpu' or 'cuda:i', held until the block ends.

    requested: 'auto' (a free GPU if there is one, else the CPU), 'cuda' (a free GPU, an error
    without one), 'cuda:i' (that device, no lock) or 'cpu'. With 'auto', a job that was given a GPU
    torch cannot see is an error unless `cpu_fallback` (then a warning).
    """
    if requested == "cpu":
        yield "cpu"
        return
    if requested not in ("auto", "cuda") and not str(requested).startswith("cuda:"):
        raise VirnucflowError(f"device {requested!r} is not one of auto, cuda, cuda:N, cpu")
    devices = visible_devices()
    if not devices:
        _check_cpu_will_do(requested, log, cpu_fallback)
        yield "cpu"
        return
    if str(requested).startswith("cuda:"):
        index = int(str(requested).split(":", 1)[1])
        if index >= len(devices):
            raise VirnucflowError(f"device {requested!r} was asked for but only {len(devices)} GPU(s) are visible")
        yield _use(index, devices, log, "as configured, no lock")
        return
    job, listed = scheduler_job(), _listed_devices()
    if job and listed is not None and len(devices) == 1:
        # The scheduler gave this job its GPU; other jobs on the node may see theirs as device 0
        # too (cgroup renumbering), so a lock named after it would only make them wait for nothing.
        yield _use(0, devices, log, f"assigned by the scheduler ({job})")
        return
    # Several visible devices and nobody chose among them: claim one. Within a scheduler
    # allocation the names may be renumbered per job, so its locks carry the job id.
    scope = f"{socket.gethostname()}-" + (f"{job.split('=')[1]}-" if job and listed is not None else "")
    with _lock_folder(log) as folder, _free_device(folder, scope, devices, log, poll_seconds) as (index, note):
        yield _use(index, devices, log, note)


def _check_cpu_will_do(requested, log, cpu_fallback):
    """No GPU is visible: fine for 'auto' (saying so), unless this job was given one and no `cpu_fallback`."""
    expected = gpu_expected()
    if requested != "auto":
        if expected:
            raise _no_usable_gpu(expected)
        raise VirnucflowError(
            f"device {requested!r} was asked for but no CUDA device is visible (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); use device: auto or cpu, or run on a GPU node"
        )
    if expected and not cpu_fallback:
        raise _no_usable_gpu(expected)
    if log and expected:
        log.warning("this job has a GPU (%s) that torch cannot use: computing on the CPU (embed.cpu_fallback)",
                    expected)
    elif log:
        log.info("no CUDA device visible: running on the CPU")


@contextlib.contextmanager
def _free_device(folder, scope, devices, log, poll_seconds):
    """Yield (index, how it was claimed) of the first device whose lock is free, waiting for one."""
    started = time.monotonic()
    waited = False
    while True:
        for index, name in enumerate(devices):
            path = folder / re.sub(r"[^\w.-]", "_", f"{scope}gpu{name}.lock")  # UUIDs of MIG slices have '/'
            handle = _try_lock(path)
            if handle is None:
                continue
            try:
                yield index, f"lock {path}" + (f", after waiting {time.monotonic() - started:.0f} s" if waited else "")
            finally:
                handle.close()  # closing drops the flock
                if log:
                    log.info("released cuda:%d (GPU %s)", index, name)
            return
        if not waited and log:
            log.info("all %d visible GPUs are claimed by other virnucflow jobs; waiting for one", len(devices))
        waited = True
        time.sleep(poll_seconds)


def _use(index, devices, log, how):
    label = _select_gpu(index)
    if log:
        log.info("using cuda:%d (GPU %s, %s; %s)", index, devices[index], label, how)
    return f"cuda:{index}"


@contextlib.contextmanager
def _lock_folder(log):
    """The lock folder, shared by every user of the node (sticky, world-writable like /tmp)."""
    folder = lock_dir()
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):
            folder.chmod(0o1777)
    if not os.access(folder, os.W_OK):
        private = folder.with_name(f"{folder.name}-{os.getuid()}")
        if log:
            log.warning("%s is not writable; using %s (jobs of other users are not seen)", folder, private)
        private.mkdir(parents=True, exist_ok=True)
        folder = private
    yield folder


def _try_lock(path):
    """An open file holding an exclusive flock on `path`, or None when another process holds it."""
    try:
        handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+")
    except PermissionError:  # another user's lock file: flock needs no write access
        handle = os.fdopen(os.open(path, os.O_RDONLY), "r")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    if handle.writable():
        with contextlib.suppress(OSError):
            os.fchmod(handle.fileno(), 0o666)  # other users' jobs must be able to open it (umask)
            handle.truncate(0)
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")  # for a human reading the folder
            handle.flush()
    return handle
