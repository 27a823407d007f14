"""Kill the whole workflow (Snakemake and its jobs, SIGKILL) at several points, resume with
`--unlock` + `--rerun-incomplete`, and check that nothing was lost, duplicated or redone.

Slow (several full runs): `make test-slow`.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import copy_workflow
from helpers import finished_batches
from virnucflow.embeddings import open_embeddings
from virnucflow.synthetic import synthetic_reads, write_fasta

pytestmark = pytest.mark.slow

SAMPLE = "big"


def snakemake(workdir, *args, background=False):
    cmd = [sys.executable, "-m", "snakemake", "--configfile", "config/resume.yaml", "--cores", "2",
           "--workflow-profile", "none", "--resources", "gpu=1", *args]
    if background:
        # Its own process group, so one killpg takes Snakemake and every job it started.
        return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def make_run(root, demo_models_dir):
    workdir = copy_workflow(root)
    shutil.copytree(demo_models_dir, workdir / "resources")
    reads = list(synthetic_reads(1500, 300, 1500, coding_fraction=0.7, seed=11, prefix="r"))
    write_fasta(workdir / "config/example/big.fa", reads)
    (workdir / "config/resume_samples.tsv").write_text(f"sample\tfasta\n{SAMPLE}\tconfig/example/big.fa\n")
    config = (workdir / "config/demo.yaml").read_text()
    config = config.replace("config/demo_samples.tsv", "config/resume_samples.tsv")
    config = config.replace("shard_residues: 1500", "shard_residues: 60000")
    config = config.replace("dna_token_budget: 4096", "dna_token_budget: 2048")
    (workdir / "config/resume.yaml").write_text(config)
    return workdir


def results(workdir):
    with open_embeddings(workdir / f"results/{SAMPLE}/embeddings.h5") as merged:
        ids, rows = merged.read_ids(), merged.embeddings[:]
    predictions = (workdir / f"results/{SAMPLE}/predictions.tsv").read_text()
    read_calls = (workdir / f"results/{SAMPLE}/read_calls.tsv").read_text()
    return ids, rows, predictions, read_calls


def finished_shards(workdir):
    """Complete shard files and their modification times (a recomputed shard gets a new one)."""
    return {path.name: path.stat().st_mtime_ns for path in (workdir / f"work/{SAMPLE}/embed").glob("*.h5")}


def reembedded(workdir, since):
    """Sequences embedded by jobs that finished after `since` (minus what they resumed from a sidecar)."""
    total = 0
    for stats in (workdir / f"work/{SAMPLE}/embed").glob("*.json"):
        if stats.stat().st_mtime > since:
            data = json.loads(stats.read_text())
            total += data["sequences"] - data.get("resumed", 0)
    return total


def wait_for(predicate, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    raise TimeoutError("kill point never reached")


KILL_POINTS = {
    "prepare": lambda w: (w / f"logs/{SAMPLE}/prepare.log").exists(),
    "embed": lambda w: sum(finished_batches(p) for p in (w / f"work/{SAMPLE}/embed").glob("*.partial")) >= 2,
    "merge": lambda w: (w / f"logs/{SAMPLE}/merge.log").exists(),
}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, demo_models_dir):
    workdir = make_run(tmp_path_factory.mktemp("baseline") / "run", demo_models_dir)
    snakemake(workdir)
    return results(workdir)


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_and_rerun_incomplete_is_lossless(tmp_path, demo_models_dir, baseline, point):
    workdir = make_run(tmp_path / "run", demo_models_dir)
    proc = snakemake(workdir, background=True)
    reached = wait_for(lambda: KILL_POINTS[point](workdir), proc)
    with contextlib.suppress(ProcessLookupError):  # the run may have ended on its own
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert reached, f"the run finished before reaching the {point} kill point"
    killed_at = time.time()
    before = finished_shards(workdir)

    snakemake(workdir, "--unlock")
    snakemake(workdir, "--rerun-incomplete")

    ids, rows, predictions, read_calls = results(workdir)
    base_ids, base_rows, base_predictions, base_read_calls = baseline
    assert ids == base_ids and len(set(ids)) == len(ids)  # nothing lost, nothing twice
    assert np.array_equal(rows, base_rows)  # bitwise
    assert predictions == base_predictions and read_calls == base_read_calls
    after = finished_shards(workdir)
    assert all(after.get(name) == mtime for name, mtime in before.items()), "a finished shard was recomputed"
    print(f"kill during {point}: {len(before)} shard files kept, "
          f"{reembedded(workdir, killed_at)} sequences embedded after the kill")
