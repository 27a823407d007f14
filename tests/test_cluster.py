"""Cluster runs as a scheduler sees them: how many jobs are in flight at once.

Snakemake's cluster-generic executor stands in for Slurm (tests/cluster/submit.sh starts each job at
once and records its start and end), so the profiles' concurrency is checked on any machine;
`make slurm-test` checks the same on a real Slurm.
"""

import subprocess
import sys
from pathlib import Path

from cluster.ledger import most_at_once, read_ledger

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
