"""Test-only: a machine with pretend GPUs, so that claiming and scheduling are tested without one.

With this folder on PYTHONPATH and VIRNUCFLOW_FAKE_GPUS=N, every Python process of a test (Snakemake
and its jobs) runs this at start-up: virnucflow.devices then sees N GPUs (as many of
CUDA_VISIBLE_DEVICES as N allows), claims them as on a GPU node, and computes on the CPU. A test's
own process calls `pretend(N, monkeypatch.setattr)` instead; `environment(N)` is what its job
processes need.
"""

import importlib.abc
import importlib.machinery
import os
import sys

FOLDER = os.path.dirname(os.path.abspath(__file__))


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
    env = dict(os.environ if env is None else env, VIRNUCFLOW_FAKE_GPUS=str(count))
    env["PYTHONPATH"] = os.pathsep.join([FOLDER, *filter(None, [env.get("PYTHONPATH")])])
    return env


class _PretendOnImport(importlib.abc.MetaPathFinder):
    """Applies `pretend` when virnucflow.devices is first imported, from wherever the process imports it."""

    def __init__(self, count):
        self.count = count

    def find_spec(self, name, path, target=None):
        if name != "virnucflow.devices":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None:
            run = spec.loader.exec_module

            def run_and_pretend(module):
                run(module)
                pretend(self.count, devices=module)

            spec.loader.exec_module = run_and_pretend
        return spec


if os.environ.get("VIRNUCFLOW_FAKE_GPUS", "").strip():
    sys.meta_path.insert(0, _PretendOnImport(int(os.environ["VIRNUCFLOW_FAKE_GPUS"])))
