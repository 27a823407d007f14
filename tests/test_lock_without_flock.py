"""The embed lock where flock does not hold. In the jobs' processes flock is replaced (LD_PRELOAD of a few
lines of C) by one that fails with ENOSYS, as on Lustre mounted `noflock`, or by one that always succeeds,
as Lustre `localflock` or NFS `local_lock=all` look from two nodes. The lease alone then keeps two jobs
on one shard apart: each ends with the clean run's rows, or fails in one line saying that another job
took its lease over; never with a finished shard of wrong rows."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import embed_options, finished_batches, text, wait_until
from virnucflow.embed import embed_shard
from virnucflow.embeddings import open_embeddings
from virnucflow.lease import STALE_PERIODS
from virnucflow.models.random_weights import write_random_dnabert_s
from benchmarks.synthetic import synthetic_reads

REPO = Path(__file__).resolve().parents[1]
FLOCKS = {
    "enosys": "#include <errno.h>\nint flock(int fd, int op) { (void)fd; (void)op; errno = ENOSYS; return -1; }\n",
    "noop": "int flock(int fd, int op) { (void)fd; (void)op; return 0; }\n",
}
# Two descriptors of one file, each locked: what flock does for this process.
PROBE = """
import errno, fcntl, os, sys
first, second = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT), os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("both locked")
except OSError as error:
    print(errno.errorcode[error.errno])
"""
LOST = re.compile(r"virnucflow embed: error: another job took over the lease of \S+\.partial \(now held by pid \d+ "
                  r"on host .*\): this job stops; the other job finishes the shard")


@pytest.fixture(scope="module", params=list(FLOCKS))
def preload(request, tmp_path_factory):
    """(variant, LD_PRELOAD value) of a library whose flock is the variant's."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc) to build the flock replacement with")
    folder = tmp_path_factory.mktemp(f"flock_{request.param}")
    (folder / "flock.c").write_text(FLOCKS[request.param])
    built = subprocess.run([compiler, "-shared", "-fPIC", "-o", str(folder / "flock.so"), str(folder / "flock.c")],
                           capture_output=True, text=True, timeout=120)
    if built.returncode != 0:
        pytest.skip(f"{compiler} could not build the flock replacement: {built.stderr.strip()[-500:]}")
    library = str(folder / "flock.so")
    probe = subprocess.run([sys.executable, "-c", PROBE, str(folder / "probe")], capture_output=True, text=True,
                           env={**os.environ, "LD_PRELOAD": library}, timeout=60)
    assert probe.stdout.strip() == {"enosys": "ENOSYS", "noop": "both locked"}[request.param], probe.stderr
    return request.param, library


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """(model, shard of 120 ids: 9 batches at 1500 tokens, (ids, rows, attrs) of its uninterrupted run)."""
    root = tmp_path_factory.mktemp("clean")
    model = str(write_random_dnabert_s(root / "dnabert", seed=1))
    reads = synthetic_reads(120, 30, 600, coding_fraction=1.0, seed=5, prefix="g")
    fasta = root / "s.fna"
    fasta.write_text("".join(f">{rid}\n{seq}\n" for rid, seq in reads))
    embed_shard(fasta, root / "clean.h5", **embed_options("dna", model=model, device="cpu", token_budget=1500))
    return model, fasta, contents(root / "clean.h5")


def contents(path):
    with open_embeddings(path) as shard:
        return shard.read_ids(), shard.embeddings[:], dict(shard.attrs)


def assert_clean(out, want):
    ids, rows, attrs = contents(out)
    assert ids == want[0] and np.array_equal(rows, want[1]) and attrs == want[2]  # bitwise


JOB = """
import json, sys
sys.path.insert(0, sys.argv[1])
from virnucflow.embed import embed_shard
from virnucflow.jobs import job
fasta, out, log_file, options = sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
with job("embed", log_file):
    embed_shard(fasta, out, **options)
"""


def start(fasta, out, model, log, library, lease_seconds, token_budget=1500):
    """An embed job in its own process, as a workflow job runs it (one-line errors), with flock replaced."""
    options = embed_options("dna", model=model, device="cpu", token_budget=token_budget, stats_json=f"{out}.json")
    env = {**os.environ, "LD_PRELOAD": library, "VIRNUCFLOW_LOCK_LEASE_SECONDS": str(lease_seconds)}
    return subprocess.Popen([sys.executable, "-c", JOB, str(REPO), str(fasta), str(out), str(log), json.dumps(options)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def end(*procs):
    for proc in procs:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.communicate()


def test_a_job_paused_past_its_lease_stops_in_one_line_and_the_job_that_took_it_over_finishes(preload, clean,
                                                                                               tmp_path):
    """The older job paused (SIGSTOP) after 2 of its 9 batches while a newer one starts on the same shard:
    the newer waits, takes the lease over once it went 6 periods unrenewed, resumes from the older's
    batches and writes the clean file; the older, woken up, stops before it writes anything."""
    variant, library = preload
    model, fasta, want = clean
    out, older, newer = tmp_path / "s.h5", None, None
    try:
        older = start(fasta, out, model, tmp_path / "older.log", library, 0.2)
        wait_until(lambda: finished_batches(f"{out}.partial") >= 2 or older.poll() is not None, what="2 batches")
        assert older.poll() is None, older.communicate()[1][-2000:]
        os.kill(older.pid, signal.SIGSTOP)
        newer = start(fasta, out, model, tmp_path / "newer.log", library, 0.2, token_budget=5000)
        wait_until(lambda: "took over the lease" in text(tmp_path / "newer.log") or newer.poll() is not None,
                   what="the take-over")
        os.kill(older.pid, signal.SIGCONT)
        newer_err = newer.communicate(timeout=300)[1]
        older_err = older.communicate(timeout=300)[1]
    finally:
        end(older, newer)
    assert newer.returncode == 0, newer_err[-3000:]
    errors = [line for line in older_err.splitlines() if " error: " in line]
    assert older.returncode == 1 and len(errors) == 1 and LOST.fullmatch(errors[0]), older_err[-3000:]
    assert "Traceback" not in older_err
    log = text(tmp_path / "newer.log")
    assert f"is locked by another job embedding this shard: pid {older.pid} on host " in log
    assert f"took over the lease of {out}.partial from pid {older.pid} " in log
    if variant == "enosys":
        assert "has no flock (Function not implemented): the lease alone protects this sidecar" in log
    stats = json.loads(Path(f"{out}.json").read_text())
    assert stats["resumed"] > 0 and not stats.get("reused") and stats["waited_seconds"] > 0
    assert_clean(out, want)  # the older job's stored plan (1500 tokens) followed, its batches reused
    assert not Path(f"{out}.partial").exists()


def test_a_job_waiting_for_one_that_is_killed_takes_the_lease_at_once_and_resumes(preload, clean, tmp_path):
    """With a lease of 2 s (taken over after 12 s unrenewed), a holder killed with SIGKILL on this host is
    taken over at once: its pid is gone."""
    period = 2
    _, library = preload
    model, fasta, want = clean
    out, first, second = tmp_path / "s.h5", None, None
    try:
        first = start(fasta, out, model, tmp_path / "first.log", library, period)
        wait_until(lambda: finished_batches(f"{out}.partial") >= 2 or first.poll() is not None, what="2 batches")
        assert first.poll() is None, first.communicate()[1][-2000:]
        os.kill(first.pid, signal.SIGSTOP)
        second = start(fasta, out, model, tmp_path / "second.log", library, period)
        wait_until(lambda: "is locked by another job" in text(tmp_path / "second.log") or second.poll() is not None,
                   what="the second job's wait")
        first.kill()
        first.wait()
        killed = time.monotonic()
        wait_until(lambda: "took over the lease" in text(tmp_path / "second.log") or second.poll() is not None,
                   what="the take-over")
        took = time.monotonic() - killed
        second_err = second.communicate(timeout=300)[1]
    finally:
        end(first, second)
    assert second.returncode == 0, second_err[-3000:]
    assert took < STALE_PERIODS * period / 2, f"took {took:.1f} s"
    assert f"from pid {first.pid} on host " in text(tmp_path / "second.log")
    assert "its process has ended" in text(tmp_path / "second.log")
    stats = json.loads(Path(f"{out}.json").read_text())
    assert stats["resumed"] > 0 and not stats.get("reused")
    assert_clean(out, want)


@pytest.mark.workflow
def test_the_demo_workflow_finishes_without_a_working_flock(preload, demo_workdir, finished_demo):
    """The whole demo with flock replaced in Snakemake and every job (HDF5 included), at the default lease of
    embed.lock_lease_seconds: the same embeddings as the session's ordinary demo run."""
    variant, library = preload
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/demo.yaml"],
                          cwd=demo_workdir, env={**os.environ, "LD_PRELOAD": library}, capture_output=True,
                          text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for sample in ("coding", "mixed"):
        got, want = (contents(run / f"results/{sample}/embeddings.h5") for run in (demo_workdir, finished_demo))
        assert got[0] == want[0] and np.array_equal(got[1], want[1])
    logs = "".join(path.read_text() for path in demo_workdir.glob("logs/*/embed_*/*.log"))
    assert logs and ("the lease alone protects" in logs) == (variant == "enosys")
