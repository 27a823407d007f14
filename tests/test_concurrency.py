"""How many embed jobs run at once: on a cluster, as many as the profile's `jobs:`; locally, one per
GPU of the machine, each on its own device.

Snakemake's cluster-generic executor stands in for Slurm (tests/cluster/submit.sh starts each job at
once and records its start and end), so the profiles' concurrency is checked on any machine;
`make slurm-test` checks the same on a real Slurm. The local test pretends the machine has GPUs
(tests/fake_gpus: jobs claim devices as on a GPU node and compute on the CPU). A demo job computes for
a fraction of a second, so overlap would be chance: both tests hold each embed job at a barrier
(tests/fake_gpus, `barrier`) until as many as the design lets run at once have started.
"""

import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from cluster.ledger import master_log_jobs, most_at_once, read_ledger
from fake_gpus.sitecustomize import barrier, environment

TESTS = Path(__file__).resolve().parent
DEVICE_AUTO = TESTS / "data/device_auto.yaml"
pytestmark = pytest.mark.workflow  # whole demo runs


def run_through_profile(workdir, profile, ledger, *extra, env=None):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", profile, "--executor", "cluster-generic",
         "--cluster-generic-submit-cmd", f"{TESTS / 'cluster/submit.sh'} {ledger}", "--latency-wait", "5", "--seconds-between-status-checks", "1",
         "--configfile", "config/demo.yaml", str(DEVICE_AUTO), *extra],
        cwd=workdir, capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_ledger(ledger)


def test_slurm_profile_keeps_many_gpu_jobs_in_flight(demo_workdir, tmp_path):
    """Each embed job asks the scheduler for its own GPU; no global GPU slot serialises them (each embed
    job waits until four have started: a profile that ran fewer at once would fail here)."""
    jobs = run_through_profile(demo_workdir, "profiles/slurm", tmp_path / "ledger", env=barrier(4, tmp_path / "barrier"))
    embeds = [job for job in jobs.values() if job[0].startswith("embed_")]
    assert len(embeds) == 14 and all(status == 0 for *_, status in embeds)  # 7 shards x 2 models
    assert not list((tmp_path / "barrier").glob("*.timed_out"))  # four embed jobs ran at once
    assert most_at_once(jobs, "embed_") >= 4


def stamp(line):
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()


def job_spans(log_folder):
    """(start, end, claimed device, held from, held until) of every embed job, from its log."""
    spans = []
    for log in Path(log_folder).glob("logs/*/embed_*/*.log"):
        lines = log.read_text().splitlines()
        claimed = [line for line in lines if re.search(r" using cuda:\d+", line)]
        released = [line for line in lines if " released cuda:" in line]
        device = re.search(r"using (cuda:\d+)", claimed[0]).group(1) if claimed else "cpu"
        held = (stamp(claimed[0]), stamp(released[0])) if claimed and released else (None, None)
        spans.append((stamp(lines[0]), stamp(lines[-1]), device, *held))
    return spans


def test_a_local_run_uses_every_gpu_of_the_machine_one_job_each(demo_workdir, tmp_path):
    """Three pretend GPUs and six cores: three embed jobs at once, each on its own device. Each job holds
    its device until three jobs hold one (and 1.1 s more), so the three overlap whatever the timing."""
    env = environment(3, barrier(3, tmp_path / "barrier", dict(os.environ, VIRNUCFLOW_LOCK_DIR=str(tmp_path / "locks"))))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "6", "--configfile", "config/demo.yaml", str(DEVICE_AUTO)],
        cwd=demo_workdir, capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list((tmp_path / "barrier").glob("*.timed_out")), "three embed jobs never held devices at once"
    spans = job_spans(demo_workdir)
    assert len(spans) == 14
    # Jobs as the scheduler ran them (Snakemake's log, whole-second stamps): the first three overlap by
    # more than a second at the barrier; more than three at once would need a fourth GPU slot.
    jobs = master_log_jobs(demo_workdir)
    assert sum(rule.startswith("embed") for rule, *_ in jobs.values()) == 14
    assert most_at_once(jobs, "embed") == 3  # three GPU slots, though six cores were free
    devices = [device for _, _, device, _, _ in spans]
    assert set(devices) == {"cuda:0", "cuda:1", "cuda:2"}
    first = sorted(spans, key=lambda span: span[3])[:3]  # the first three claims, held at once at the barrier
    assert {device for _, _, device, _, _ in first} == {"cuda:0", "cuda:1", "cuda:2"}
    assert max(held_from for *_, held_from, _ in first) <= min(held_until for *_, held_until in first)
    for i, (*_, device, held_from, held_until) in enumerate(spans):  # never two jobs on one device at once
        for *_, other, other_from, other_until in spans[i + 1 :]:
            assert device != other or held_until <= other_from or other_until <= held_from
