"""Device claiming on a pretend multi-GPU node (tests/fake_gpus), and precision choice."""

import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fake_gpus.sitecustomize import environment, pretend
from virnucflow.devices import claim_device, dtype_for
from virnucflow.errors import VirnucflowError

REPO = Path(__file__).resolve().parents[1]
# Claims a device, says which, and holds it until the file `release` appears.
HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from virnucflow.devices import claim_device
with claim_device("auto") as device:
    print(device, flush=True)
    while not Path({release!r}).exists():
        time.sleep(0.02)
"""


@pytest.fixture
def node(tmp_path, monkeypatch):
    """A node with two pretend GPUs and no scheduler; returns the environment for job processes."""
    for key in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "LSB_JOBID", "PBS_JOBID"):
        monkeypatch.delenv(key, raising=False)
    pretend(2, monkeypatch.setattr)
    monkeypatch.setenv("VIRNUCFLOW_LOCK_DIR", str(tmp_path / "locks"))
    return environment(2)


def holder(tmp_path, env, name):
    code = HOLDER.format(repo=str(REPO), release=str(tmp_path / f"release-{name}"))
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)


def test_two_jobs_at_once_claim_different_gpus_and_a_third_waits(tmp_path, node):
    first, second = holder(tmp_path, node, "a"), holder(tmp_path, node, "a")
    # Both print while both still hold their device (neither can release before the file exists).
    claimed = sorted([first.stdout.readline().strip(), second.stdout.readline().strip()])
    assert claimed == ["cuda:0", "cuda:1"]
    third = holder(tmp_path, node, "b")
    printed, _, _ = select.select([third.stdout], [], [], 3.0)
    assert not printed  # no free device: it waits instead of sharing one
    (tmp_path / "release-a").touch()
    assert first.wait(10) == 0 and second.wait(10) == 0
    assert third.stdout.readline().strip() in claimed  # one of the devices the first two gave back
    (tmp_path / "release-b").touch()
    assert third.wait(10) == 0


def test_a_killed_job_gives_its_gpu_back(tmp_path, node):
    node["VIRNUCFLOW_FAKE_GPUS"] = "1"
    killed = holder(tmp_path, node, "never")
    assert killed.stdout.readline().strip() == "cuda:0"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    after = holder(tmp_path, node, "b")
    assert after.stdout.readline().strip() == "cuda:0"
    (tmp_path / "release-b").touch()
    assert after.wait(10) == 0


def test_a_gpu_given_by_the_scheduler_is_used_without_locks(tmp_path, node, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    # Another job of the node sees its own GPU as device 0 too: neither may wait for the other.
    with claim_device("auto") as first, claim_device("auto") as second:
        assert first == second == "cuda:0"
    assert not (tmp_path / "locks").exists()


def test_locks_are_named_after_physical_devices_or_the_scheduler_allocation(tmp_path, node, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    with claim_device("auto") as first, claim_device("auto") as second:
        assert (first, second) == ("cuda:0", "cuda:1")
        names = sorted(p.name for p in (tmp_path / "locks").iterdir())
        assert names[0].endswith("gpu5.lock") and names[1].endswith("gpu7.lock")
    # Several GPUs of one Slurm allocation (Snakemake's local executor inside salloc): its own locks.
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with claim_device("auto") as first, claim_device("auto") as second:
        assert (first, second) == ("cuda:0", "cuda:1")
        assert len([p for p in (tmp_path / "locks").iterdir() if "-99-gpu" in p.name]) == 2


def test_cpu_when_asked_or_when_no_gpu_is_visible(node, monkeypatch):
    with claim_device("cpu") as device:
        assert device == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a scheduler that gave this job no GPU
    with claim_device("auto") as device:
        assert device == "cpu"
    with pytest.raises(VirnucflowError, match="no CUDA device is visible"):
        with claim_device("cuda"):
            pass
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with claim_device("cuda:1") as device:  # pinned by the user: no lock, no waiting
        assert device == "cuda:1"
    with pytest.raises(VirnucflowError, match="not one of auto, cuda, cuda:N, cpu"):
        with claim_device("gpu"):
            pass


def test_precision_auto_is_bf16_on_a_gpu_and_fp32_on_a_cpu():
    assert dtype_for("auto", "cuda:1") == torch.bfloat16 and dtype_for("auto", "cpu") == torch.float32
    assert dtype_for("fp16", "cuda:0") == torch.float16 and dtype_for("fp32", "cuda:0") == torch.float32
    with pytest.raises(VirnucflowError, match="precision 'half' is not one of auto, fp32, bf16, fp16"):
        dtype_for("half", "cpu")


@pytest.mark.parametrize("variable, value", [("CUDA_VISIBLE_DEVICES", "0"), ("SLURM_JOB_GPUS", "2"),
                                             ("LSB_GPU_ALLOC_INFO", "1 gpu0")])
def test_a_job_given_a_gpu_that_torch_cannot_use_fails_unless_told_to_use_the_cpu(monkeypatch, variable, value):
    """A CPU-only torch on a GPU node must not embed for days on the CPU without a word."""
    for key in ("VIRNUCFLOW_FAKE_GPUS", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "LSB_GPU_ALLOC_INFO"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv(variable, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for requested in ("auto", "cuda"):
        with pytest.raises(VirnucflowError) as raised:
            with claim_device(requested):
                pass
        message = str(raised.value)
        assert "\n" not in message and f"{variable}={value}" in message and "embed.cpu_fallback" in message
        assert f"torch {torch.__version__}" in message and "make setup-gpu" in message
        if torch.version.cuda is None:
            assert "CPU-only build" in message
    with claim_device("auto", cpu_fallback=True) as device:
        assert device == "cpu"


def test_a_machine_with_nvidia_devices_counts_as_having_a_gpu(monkeypatch):
    from virnucflow import devices

    for key in ("VIRNUCFLOW_FAKE_GPUS", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_JOB_GPUS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices.os, "listdir", lambda folder: ["null", "nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"])
    assert devices.machine_gpus() == 2
    with pytest.raises(VirnucflowError, match="this machine has NVIDIA devices"):
        with claim_device("auto"):
            pass
    monkeypatch.setattr(devices.os, "listdir", lambda folder: ["null"])
    with claim_device("auto") as device:  # a laptop: the CPU, as asked by `auto`
        assert device == "cpu"


def test_gpu_slots_of_a_local_run_are_counted_without_torch(monkeypatch):
    from virnucflow import devices

    monkeypatch.delenv("VIRNUCFLOW_FAKE_GPUS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert devices.machine_gpus() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.machine_gpus() == 0
    pretend(4, monkeypatch.setattr)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert devices.machine_gpus() == 4
    code = "import sys, virnucflow.devices as d; d.machine_gpus(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
