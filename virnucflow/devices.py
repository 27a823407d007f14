"""Which device an embed job runs on, and the precision that goes with it.

A scheduler (SLURM, LSF, PBS) that gives a job a GPU says which in CUDA_VISIBLE_DEVICES: the job
uses the first device it sees and locks nothing. Snakemake's local executor sets nothing, so on a
node with several GPUs each job claims a free one under a lock file per device; the kernel drops
the lock when the process dies, even by SIGKILL, so a killed job never keeps a GPU claimed.

A job that was given a GPU (by a scheduler, or on a machine with NVIDIA devices) never falls back to
the CPU silently: with a CPU-only torch it fails, naming the torch build, unless `cpu_fallback` says so.

VIRNUCFLOW_FAKE_GPUS=N makes this module pretend N devices exist (without touching CUDA; the work runs
on the CPU), so the claiming and the scheduling can be tested on a machine without a GPU.
"""

import contextlib
import fcntl
import os
import re
import socket
import time
from pathlib import Path

from .errors import VirnucflowError

# torch is imported where it is used: the Snakefile counts GPUs with this module, without torch.
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
SCHEDULER_JOB_IDS = ("SLURM_JOB_ID", "LSB_JOBID", "PBS_JOBID")
# Set by schedulers for a job that was given GPUs (SLURM --gpus/--gres, LSF -gpu, PBS ngpus).
SCHEDULER_GPU_VARIABLES = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE", "LSB_GPU_ALLOC_INFO",
                           "PBS_GPUFILE")
CUDA_INSTALL = ("install a CUDA build of torch: `make setup-gpu` (README, 'GPU setup'), or `pip uninstall torch` "
                "then `pip install torch==2.13.0` from PyPI (CUDA 13) or from download.pytorch.org/whl/cuXXX")


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


def _fake_gpus():
    value = os.environ.get("VIRNUCFLOW_FAKE_GPUS", "")
    return int(value) if value.strip() else None


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


def visible_devices():
    """Names of the GPUs this process may use, in CUDA's order: the CUDA_VISIBLE_DEVICES entries
    (physical ids or UUIDs) when it is set, else '0', '1', ..."""
    listed = _listed_devices()
    fake = _fake_gpus()
    if fake is not None:
        count = fake if listed is None else min(fake, len(listed))
    else:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [listed[i] if listed is not None and i < len(listed) else str(i) for i in range(count)]


def machine_gpus():
    """How many GPUs a local run may use, found without torch (the Snakefile asks, once per run):
    VIRNUCFLOW_FAKE_GPUS, else the CUDA_VISIBLE_DEVICES entries when it is set, else the NVIDIA
    device files /dev/nvidia0, /dev/nvidia1, ..."""
    fake, listed = _fake_gpus(), _listed_devices()
    if fake is not None:
        return fake if listed is None else min(fake, len(listed))
    if listed is not None:
        return len(listed)
    return len([name for name in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", name)]) if os.path.isdir("/dev") else 0


def gpu_expected():
    """Why this job should have a GPU (a scheduler gave it one, or the machine has NVIDIA devices),
    or None: a job that expects one and finds none must not quietly compute on the CPU."""
    listed = _listed_devices()
    if listed:
        return f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}"
    for key in SCHEDULER_GPU_VARIABLES:
        if os.environ.get(key, "").strip() not in ("", "0"):
            return f"{key}={os.environ[key]}"
    if listed is None and _fake_gpus() is None and machine_gpus():
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
    """The torch device that does the work of a claimed `device` ('cpu' for a pretend GPU)."""
    return "cpu" if _fake_gpus() is not None else device


def scheduler_job():
    """'SLURM_JOB_ID=123' when a batch scheduler started this process, else None."""
    for key in SCHEDULER_JOB_IDS:
        if os.environ.get(key):
            return f"{key}={os.environ[key]}"
    return None


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
        if log:
            if expected:
                log.warning("this job has a GPU (%s) that torch cannot use: computing on the CPU (embed.cpu_fallback)",
                            expected)
            else:
                log.info("no CUDA device visible: running on the CPU")
        yield "cpu"
        return
    if str(requested).startswith("cuda:"):
        index = int(str(requested).split(":", 1)[1])
        if index >= len(devices):
            raise VirnucflowError(f"device {requested!r} was asked for but only {len(devices)} GPU(s) are visible")
        yield _use(index, devices, log, "as configured, no lock")
        return
    job = scheduler_job()
    if job and _listed_devices() is not None and len(devices) == 1:
        # The scheduler gave this job its GPU; other jobs on the node may see theirs as device 0
        # too (cgroup renumbering), so a lock named after it would only make them wait for nothing.
        yield _use(0, devices, log, f"assigned by the scheduler ({job})")
        return
    # Several visible devices and nobody chose among them: claim one. Within a scheduler
    # allocation the names may be renumbered per job, so its locks carry the job id.
    scope = f"{socket.gethostname()}-" + (f"{job.split('=')[1]}-" if job and _listed_devices() is not None else "")
    started = time.monotonic()
    waited = False
    with _lock_folder(log) as folder:
        while True:
            for index, name in enumerate(devices):
                path = folder / re.sub(r"[^\w.-]", "_", f"{scope}gpu{name}.lock")  # UUIDs of MIG slices have '/' 
                handle = _try_lock(path)
                if handle is None:
                    continue
                try:
                    note = f"lock {path}"
                    if waited:
                        note += f", after waiting {time.monotonic() - started:.0f} s"
                    yield _use(index, devices, log, note)
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
    if _fake_gpus() is None:
        import torch

        torch.cuda.set_device(index)
        label = torch.cuda.get_device_name(index)
    else:
        label = "fake GPU, computing on the CPU"
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
