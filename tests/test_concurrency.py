"""How many embed jobs run at once: on a cluster, as many as the profile's `jobs:`; locally, one per
GPU of the machine, each on its own device.

Snakemake's cluster-generic executor stands in for Slurm (tests/cluster/submit.sh starts each job at
once and records its start and end), so the profiles' concurrency is checked on any machine;
`make slurm-test` checks the same on a real Slurm. The local test pretends the machine has GPUs
(tests/fake_gpus: jobs claim devices as on a GPU node and compute on the CPU).
"""

import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from cluster.ledger import master_log_jobs, most_at_once, read_ledger
from fake_gpus.sitecustomize import environment

TESTS = Path(__file__).resolve().parent
DEVICE_AUTO = TESTS / "data/device_auto.yaml"


def run_through_profile(workdir, profile, ledger, *extra):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", profile, "--executor", "cluster-generic",
         "--cluster-generic-submit-cmd", f"{TESTS / 'cluster/submit.sh'} {ledger}", "--latency-wait", "5", "--seconds-between-status-checks", "1",
         "--configfile", "config/demo.yaml", str(DEVICE_AUTO), *extra],
        cwd=workdir, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_ledger(ledger)


def test_slurm_profile_keeps_many_gpu_jobs_in_flight(demo_workdir, tmp_path):
    """Each embed job asks the scheduler for its own GPU; no global GPU slot serialises them."""
    jobs = run_through_profile(demo_workdir, "profiles/slurm", tmp_path / "ledger")
    embeds = [job for job in jobs.values() if job[0].startswith("embed_")]
    assert len(embeds) == 14 and all(status == 0 for *_, status in embeds)  # 7 shards x 2 models
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
    env = environment(3, dict(os.environ, VIRNUCFLOW_LOCK_DIR=str(tmp_path / "locks")))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "6", "--configfile", "config/demo.yaml", str(DEVICE_AUTO)],
        cwd=demo_workdir, capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    spans = job_spans(demo_workdir)
    assert len(spans) == 14
    # Jobs as the scheduler ran them (Snakemake's log: a demo job's own log covers only its last 0.1 s,
    # after Python and torch have started, too short to show overlap reliably).
    jobs = master_log_jobs(demo_workdir)
    assert sum(rule.startswith("embed") for rule, *_ in jobs.values()) == 14
    assert 2 <= most_at_once(jobs, "embed") <= 3  # three GPU slots, though six cores were free
    devices = [device for _, _, device, _, _ in spans]
    assert set(devices) <= {"cuda:0", "cuda:1", "cuda:2"} and len(set(devices)) >= 2
    for i, (*_, device, held_from, held_until) in enumerate(spans):  # never two jobs on one device at once
        for *_, other, other_from, other_until in spans[i + 1 :]:
            assert device != other or held_until <= other_from or other_until <= held_from
