"""Kill the whole workflow (Snakemake and its jobs, SIGKILL) at several points, resume with
`--unlock` + `--rerun-incomplete`, and check that nothing was lost, duplicated or redone; and kill only
Snakemake, so that its embed jobs go on as orphans beside the rerun's jobs for the same shards.

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
from benchmarks.synthetic import synthetic_reads, write_fasta

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


def make_run(root, demo_models_dir, models_built=True):
    """The big sample in a fresh workflow copy; models_built=False leaves the models to rule demo_models."""
    overlay = {"samples": "config/resume_samples.tsv", "shard_residues": 60000, "embed": {"dna_token_budget": 2048}}
    workdir = copy_workflow(root, overlay, configfile="config/resume.yaml")
    if models_built:
        shutil.copytree(demo_models_dir, workdir / "resources")
    reads = list(synthetic_reads(1500, 300, 1500, coding_fraction=0.7, seed=11, prefix="r"))
    write_fasta(workdir / "config/example/big.fa", reads)
    (workdir / "config/resume_samples.tsv").write_text(f"sample\tfasta\n{SAMPLE}\tconfig/example/big.fa\n")
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


def writing(folder):
    """True once anything (a temporary name included) is in `folder`."""
    return folder.is_dir() and any(folder.iterdir())


# Every rule of the demo is a kill point: the moment its job has started (its log or first file).
KILL_POINTS = {
    "demo_models": lambda w: writing(w / "resources/demo_models"),
    "prepare": lambda w: (w / f"logs/{SAMPLE}/prepare.log").exists(),
    "embed": lambda w: sum(finished_batches(p) for p in (w / f"work/{SAMPLE}/embed").glob("*.partial")) >= 2,
    "tabulate_embed_jobs": lambda w: (w / f"logs/{SAMPLE}/tabulate_embed_jobs.log").exists(),
    "merge": lambda w: (w / f"logs/{SAMPLE}/merge.log").exists(),
    "predict": lambda w: (w / f"logs/{SAMPLE}/predict.log").exists(),
    "calls": lambda w: (w / f"logs/{SAMPLE}/calls.log").exists(),
    "report_plots": lambda w: (w / "logs/report_plots.log").exists(),
}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, demo_models_dir):
    workdir = make_run(tmp_path_factory.mktemp("baseline") / "run", demo_models_dir)
    snakemake(workdir)
    return results(workdir)


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_and_rerun_incomplete_is_lossless(tmp_path, demo_models_dir, baseline, point):
    workdir = make_run(tmp_path / "run", demo_models_dir, models_built=point != "demo_models")
    proc = snakemake(workdir, background=True)
    reached = wait_for(lambda: KILL_POINTS[point](workdir), proc)
    with contextlib.suppress(ProcessLookupError):  # the run may have ended on its own
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert reached, f"the run finished before reaching the {point} kill point"
    killed_at = time.time()
    before = finished_shards(workdir)

    snakemake(workdir, "--unlock")  # README "Resuming": after a hard kill, --unlock, then the same command
    snakemake(workdir, "--rerun-incomplete")
    assert (workdir / "results/report/summary.tsv").exists()

    ids, rows, predictions, read_calls = results(workdir)
    base_ids, base_rows, base_predictions, base_read_calls = baseline
    assert ids == base_ids and len(set(ids)) == len(ids)  # nothing lost, nothing twice
    assert np.array_equal(rows, base_rows)  # bitwise
    assert predictions == base_predictions and read_calls == base_read_calls
    after = finished_shards(workdir)
    assert all(after.get(name) == mtime for name, mtime in before.items()), "a finished shard was recomputed"
    print(f"kill during {point}: {len(before)} shard files kept, "
          f"{reembedded(workdir, killed_at)} sequences embedded after the kill")


def session_processes(sid):
    """Pids of the live processes of session `sid` (a background snakemake and the jobs it started)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            pids.append(int(stat.parent.name))
    return pids


def signal_all(pids, sig):
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def test_orphaned_embed_jobs_beside_a_rerun_give_the_clean_result(tmp_path, demo_models_dir, baseline):
    """Issue 13: the Snakemake master SIGKILLed (its login shell died) while its embed jobs keep running,
    `--unlock`, `--rerun-incomplete` while the orphans still run. The orphans are paused (SIGSTOP) until the
    rerun's jobs for their shards have started, so that both are alive at once every time; the rerun's
    jobs wait for the orphans' locks and reuse what they write. Before the lock: exit 0 with thousands of
    wrong rows that passed validation."""
    workdir = make_run(tmp_path / "run", demo_models_dir)
    master = snakemake(workdir, background=True)
    rerun = None
    try:
        reached = wait_for(lambda: KILL_POINTS["embed"](workdir), master)
        assert reached, "the run finished before its embed jobs could be caught"
        os.kill(master.pid, signal.SIGKILL)  # only Snakemake: its jobs go on
        master.wait()
        orphans = session_processes(master.pid)
        signal_all(orphans, signal.SIGSTOP)
        assert orphans and list((workdir / f"work/{SAMPLE}/embed").glob("*.partial")), \
            "no embed job was running when Snakemake was killed"

        snakemake(workdir, "--unlock")
        rerun = snakemake(workdir, "--rerun-incomplete", background=True)
        logs = workdir / f"logs/{SAMPLE}"
        met = wait_for(lambda: any("is locked by another job" in log.read_text(errors="replace")
                                   for log in logs.glob("embed_*/*.log")), rerun)
        assert met, "the rerun ended without meeting an orphan's lock"
        signal_all(orphans, signal.SIGCONT)
        assert rerun.wait(600) == 0
    finally:
        for group in (master.pid, rerun.pid if rerun else None):
            if group:
                signal_all(session_processes(group), signal.SIGCONT)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while session_processes(master.pid) and time.monotonic() < deadline:  # the orphans finish on their own
        time.sleep(0.1)

    ids, rows, predictions, read_calls = results(workdir)
    base_ids, base_rows, base_predictions, base_read_calls = baseline
    assert ids == base_ids and np.array_equal(rows, base_rows)  # bitwise
    assert predictions == base_predictions and read_calls == base_read_calls
    validation = json.loads((workdir / f"results/{SAMPLE}/validation.json").read_text())
    assert validation["ok"] and validation["present"] == validation["expected"] == len(base_ids)
    stats = [json.loads(p.read_text()) for p in (workdir / f"work/{SAMPLE}/embed").glob("*.json")]
    waited = [s for s in stats if s.get("waited_seconds")]
    assert waited, "no rerun job met an orphan"
    print(f"{len(orphans)} orphan processes; {len(waited)} rerun jobs waited for one "
          f"({sum(1 for s in waited if s.get('reused'))} reused its file)")
