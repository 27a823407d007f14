"""Test-only: a machine with pretend GPUs, so that claiming and scheduling are tested without one.

With this folder on PYTHONPATH and VIRNUCFLOW_FAKE_GPUS=N, every Python process of a test (Snakemake
and its jobs) runs this at start-up: virnucflow.devices then sees N GPUs (as many of
CUDA_VISIBLE_DEVICES as N allows), claims them as on a GPU node, and computes on the CPU. A test's
own process calls `pretend(N, monkeypatch.setattr)` instead; `environment(N)` is what its job
processes need.

With VIRNUCFLOW_TEST_BARRIER=N:FOLDER (`barrier(N, folder)`), every embed job, its device claimed,
waits until N embed jobs have come that far: jobs that may overlap then certainly do, however fast a
demo job is, so a test of concurrency depends on no timing it does not control.
"""

import importlib.abc
import importlib.machinery
import os
import sys
import time

FOLDER = os.path.dirname(os.path.abspath(__file__))
# The first N jobs at the barrier hold their device this long after the N-th came (more than Snakemake's
# whole-second log stamps can hide), and give up after BARRIER_TIMEOUT (the test then fails, not hangs).
BARRIER_HOLD = 1.1
BARRIER_TIMEOUT = 300


def pretend(count, setattr=setattr, devices=None):
    """Make virnucflow.devices see `count` GPUs that compute on the CPU."""
    if devices is None:
        from virnucflow import devices

    def gpu_count():
        listed = devices._listed_devices()
        return count if listed is None else min(count, len(listed))

    setattr(devices, "_gpu_count", gpu_count)
    setattr(devices, "machine_gpus", gpu_count)
    setattr(devices, "_nvidia_device_files", lambda: 0)  # pretend GPUs are not GPUs a job must not miss
    setattr(devices, "_select_gpu", lambda index: "fake GPU, computing on the CPU")
    setattr(devices, "computes_on", lambda device: "cpu")


def environment(count, env=None):
    """`env` (default: this process's) for job processes that see `count` pretend GPUs."""
    return _with_this_folder(dict(os.environ if env is None else env, VIRNUCFLOW_FAKE_GPUS=str(count)))


def barrier(count, folder, env=None):
    """`env` (default: this process's) whose embed jobs hold their device until `count` of them hold one
    (the jobs leave a file each in `folder`)."""
    return _with_this_folder(dict(os.environ if env is None else env, VIRNUCFLOW_TEST_BARRIER=f"{count}:{folder}"))


def _with_this_folder(env):
    env["PYTHONPATH"] = os.pathsep.join([FOLDER, *filter(None, [env.get("PYTHONPATH")])])
    return env


def wait_at_barrier(spec):
    """Arrive at the barrier `spec` ('N:FOLDER') and wait: until N jobs have arrived, then until
    BARRIER_HOLD seconds after the N-th arrived. So every two of the first N hold at once for at least
    BARRIER_HOLD seconds; later jobs pass at once."""
    count, folder = spec.split(":", 1)
    count = int(count)
    os.makedirs(folder, exist_ok=True)
    mine = os.path.join(folder, f"{os.uname().nodename}-{os.getpid()}")
    with open(mine + ".tmp", "w") as handle:
        handle.write(repr(time.time()))
    os.replace(mine + ".tmp", mine)  # whole: others read the arrival time it holds
    deadline = time.monotonic() + BARRIER_TIMEOUT
    while True:
        arrivals, gave_up = _arrivals(folder)
        if len(arrivals) >= count:
            time.sleep(max(0.0, arrivals[count - 1] + BARRIER_HOLD - time.time()))
            return
        if gave_up or time.monotonic() > deadline:
            open(mine + ".timed_out", "w").close()  # later jobs need not wait too
            return
        time.sleep(0.05)


def _arrivals(folder):
    """The sorted arrival times of the jobs at the barrier in `folder`, and whether one gave up waiting."""
    times, gave_up = [], False
    for name in os.listdir(folder):
        if name.endswith(".timed_out"):
            gave_up = True
        elif not name.endswith(".tmp"):
            with open(os.path.join(folder, name)) as handle:
                times.append(float(handle.read()))
    return sorted(times), gave_up


def _hold_at_barrier(devices, spec):
    """Make every embed job call `wait_at_barrier(spec)` once its device is claimed (embed.py asks
    `computes_on` right after claiming)."""
    computes_on = devices.computes_on

    def computes_on_after_the_barrier(device):
        wait_at_barrier(spec)
        return computes_on(device)

    devices.computes_on = computes_on_after_the_barrier


class _PretendOnImport(importlib.abc.MetaPathFinder):
    """Applies `pretend` when virnucflow.devices is first imported, from wherever the process imports it."""

    def __init__(self, count, barrier_spec):
        self.count, self.barrier_spec = count, barrier_spec

    def find_spec(self, name, path, target=None):
        if name != "virnucflow.devices":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None:
            run = spec.loader.exec_module

            def run_and_pretend(module):
                run(module)
                if self.count is not None:
                    pretend(self.count, devices=module)
                if self.barrier_spec:
                    _hold_at_barrier(module, self.barrier_spec)

            spec.loader.exec_module = run_and_pretend
        return spec


_FAKE = os.environ.get("VIRNUCFLOW_FAKE_GPUS", "").strip()
_BARRIER = os.environ.get("VIRNUCFLOW_TEST_BARRIER", "").strip()
if _FAKE or _BARRIER:
    sys.meta_path.insert(0, _PretendOnImport(int(_FAKE) if _FAKE else None, _BARRIER))
