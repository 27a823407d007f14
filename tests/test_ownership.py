"""One embed job owns an output at a time: the sidecar's lock, a second job that waits for it and then
reuses or resumes, and the assembly that checks the sidecar again before it writes."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import virnucflow.sidecar as sidecar_module
from helpers import embed_options, finished_batches
from virnucflow.embed import embed_shard
from virnucflow.embeddings import open_embeddings, verify_checksums
from virnucflow.models.random_weights import write_random_dnabert_s
from virnucflow.sidecar import Sidecar, SidecarDamaged, SidecarLock, remove_sidecar
from benchmarks.synthetic import synthetic_reads

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dna_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return [str(write_random_dnabert_s(root / f"dnabert{seed}", seed=seed)) for seed in (1, 2)]


@pytest.fixture
def shard(tmp_path):
    """A nucleotide shard of 120 ids: 9 batches at a budget of 1500 tokens."""
    reads = synthetic_reads(120, 30, 600, coding_fraction=1.0, seed=5, prefix="g")
    (tmp_path / "s.fna").write_text("".join(f">{rid}\n{seq}\n" for rid, seq in reads))
    return tmp_path / "s.fna"


def contents(path):
    with open_embeddings(path) as shard:
        return shard.read_ids(), shard.embeddings[:], dict(shard.attrs)


def embed(fasta, out, model, **options):
    return embed_shard(fasta, out, **embed_options("dna", model=model, device="cpu", token_budget=1500,
                                                   **options))


JOB = """
import json, logging, sys
sys.path.insert(0, sys.argv[1])
from virnucflow.embed import embed_shard
fasta, out, log_file, options = sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
logging.getLogger("virnucflow").setLevel(logging.INFO)
logging.getLogger("virnucflow").addHandler(logging.FileHandler(log_file))
embed_shard(fasta, out, **options)
"""


def start(fasta, out, model, log, token_budget=1500):
    """`virnucflow embed` in its own process, as a workflow job runs it."""
    options = embed_options("dna", model=model, device="cpu", token_budget=token_budget, stats_json=f"{out}.json")
    return subprocess.Popen([sys.executable, "-c", JOB, str(REPO), str(fasta), str(out), str(log),
                             json.dumps(options)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(condition, timeout=120, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise TimeoutError(f"{what} never came")


def text(path):
    return Path(path).read_text() if Path(path).exists() else ""


# --- the lock ------------------------------------------------------------------------------------

def test_a_second_job_waits_and_says_every_minute_who_holds_the_lock(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(sidecar_module, "WAIT_LOG_SECONDS", 0.3)
    monkeypatch.setattr(sidecar_module, "WAIT_POLL_SECONDS", 0.02)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    folder = tmp_path / "out.h5.partial"
    holder = SidecarLock(folder).acquire()
    second = SidecarLock(folder)
    thread = threading.Thread(target=second.acquire)
    with caplog.at_level(logging.INFO, logger="virnucflow"):
        thread.start()
        wait_until(lambda: sum("is locked by another job" in r.message for r in caplog.records) >= 3, 30)
        assert thread.is_alive()  # still waiting
        # The holder finishes: it removes the sidecar, lock file included, and lets go.
        remove_sidecar(folder, holder)
        holder.release()
        thread.join(30)
    assert not thread.is_alive() and second.fd is not None
    waits = [r.message for r in caplog.records if "is locked by another job" in r.message]
    assert f"pid {os.getpid()} on host {socket.gethostname()} (Slurm job 4242) since " in waits[0]
    assert "waiting for" in waits[-1] and "got the lock" in caplog.text
    # The waiting job holds a new lock file: a third job waits for it, not for the removed one.
    assert (folder / "lock").exists() and second.still_ours()
    assert json.loads((folder / "lock").read_text())["slurm_job_id"] == "4242"
    second.release()


HOLD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from virnucflow.sidecar import SidecarLock
SidecarLock(sys.argv[2]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_holder_killed_with_sigkill_frees_the_lock_at_once(tmp_path):
    folder = tmp_path / "out.h5.partial"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(REPO), str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        info = json.loads((folder / "lock").read_text())
        assert info["pid"] == proc.pid and info["host"] == socket.gethostname()
    finally:
        proc.kill()
        proc.wait()
    started = time.monotonic()
    with SidecarLock(folder) as lock:
        assert lock.still_ours()
    assert time.monotonic() - started < 5


# --- two embed jobs on one shard --------------------------------------------------------------------

def test_two_embed_jobs_on_one_shard_end_with_the_same_correct_file(dna_models, shard):
    """The older job paused (SIGSTOP) in the middle of its batches while a newer one starts on the same
    shard: the newer waits for the lock, and reuses the file once the older one finishes."""
    folder, out = shard.parent, shard.parent / "s.h5"
    older = start(shard, out, dna_models[0], folder / "older.log")
    newer = None
    try:
        wait_until(lambda: finished_batches(f"{out}.partial") >= 2 or older.poll() is not None, what="2 batches")
        assert older.poll() is None, older.communicate()[1][-2000:]
        os.kill(older.pid, signal.SIGSTOP)
        newer = start(shard, out, dna_models[0], folder / "newer.log", token_budget=5000)
        wait_until(lambda: "is locked by another job" in text(folder / "newer.log"), what="the newer job's wait")
        time.sleep(1)  # the newer job stays waiting while the older one is stopped
        assert newer.poll() is None and not out.exists()
        os.kill(older.pid, signal.SIGCONT)
        assert older.wait(300) == 0, older.communicate()[1][-2000:]
        assert newer.wait(300) == 0, newer.communicate()[1][-2000:]
    finally:
        for proc in (older, newer):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.wait()
    log = text(folder / "newer.log")
    assert f"pid {older.pid} on host {socket.gethostname()}" in log
    assert "reusing" in log and "written by the earlier job" in log
    stats = json.loads((folder / "s.h5.json").read_text())
    assert stats["reused"] and stats["waited_seconds"] > 0 and stats["sequences"] == 120
    embed(shard, folder / "clean.h5", dna_models[0])
    ids, rows, attrs = contents(out)
    clean_ids, clean_rows, clean_attrs = contents(folder / "clean.h5")
    assert ids == clean_ids and np.array_equal(rows, clean_rows) and attrs == clean_attrs  # bitwise
    assert not Path(f"{out}.partial").exists()


def test_a_job_waiting_for_one_that_is_killed_resumes_from_its_sidecar(dna_models, shard):
    folder, out = shard.parent, shard.parent / "s.h5"
    first = start(shard, out, dna_models[0], folder / "first.log")
    wait_until(lambda: finished_batches(f"{out}.partial") >= 2 or first.poll() is not None, what="2 batches")
    os.kill(first.pid, signal.SIGSTOP)
    second = start(shard, out, dna_models[0], folder / "second.log")
    wait_until(lambda: "is locked by another job" in text(folder / "second.log"), what="the second job's wait")
    first.kill()  # SIGKILL: the kernel drops its lock
    first.wait()
    assert second.wait(300) == 0, second.communicate()[1][-2000:]
    stats = json.loads((folder / "s.h5.json").read_text())
    assert stats["resumed"] >= 2 and not stats.get("reused")
    embed(shard, folder / "clean.h5", dna_models[0])
    assert np.array_equal(contents(out)[1], contents(folder / "clean.h5")[1])


def test_an_output_is_reused_only_when_its_provenance_is_this_jobs(dna_models, shard, caplog):
    folder, out = shard.parent, shard.parent / "s.h5"
    embed(shard, out, dna_models[0])
    written = out.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="virnucflow"):
        stats = embed(shard, out, dna_models[0], stats_json=folder / "again.json")
    assert stats["reused"] and out.stat().st_mtime_ns == written and "reusing" in caplog.text
    assert json.loads((folder / "again.json").read_text())["reused"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="virnucflow"):
        stats = embed(shard, out, dna_models[1])  # another model: computed again
    assert not stats.get("reused") and "model, model_revision differ" in caplog.text
    assert contents(out)[2]["model"] == dna_models[1]
    # A damaged file is not reused either.
    with open_embeddings(out) as shard_file:
        offset = shard_file.embeddings.id.get_chunk_info(0).byte_offset
    with open(out, "r+b") as handle:
        handle.seek(offset + 5)
        byte = handle.read(1)
        handle.seek(offset + 5)
        handle.write(bytes([byte[0] ^ 0x10]))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="virnucflow"):
        stats = embed(shard, out, dna_models[1])
    assert not stats.get("reused") and "do not match their embeddings_sum64" in caplog.text
    with open_embeddings(out) as shard_file:
        assert verify_checksums(shard_file) == []


# --- the assembly ----------------------------------------------------------------------------------

def test_the_assembly_checks_every_batch_again_before_it_writes(dna_models, shard, monkeypatch):
    """A byte of rows.f32 flipped after the sidecar was loaded (and after its batches were checked then)
    is found before the file is written; the sidecar is cut there and a rerun gives the clean file."""
    folder, out = shard.parent, shard.parent / "s.h5"
    verify = Sidecar.verify

    def damage_then_verify(self):
        first = self.entries[0]["rows"]
        with open(self.folder / "rows.f32", "r+b") as rows:
            rows.seek((first + 1) * self.row_bytes + 3)  # the second batch's second row
            byte = rows.read(1)
            rows.seek((first + 1) * self.row_bytes + 3)
            rows.write(bytes([byte[0] ^ 0x01]))
        return verify(self)

    monkeypatch.setattr(Sidecar, "verify", damage_then_verify)
    with pytest.raises(SidecarDamaged, match=r"s\.h5\.partial: the rows of batch 2 no longer match their CRC32 "
                                             r".*rerun the job to recompute the rest"):
        embed(shard, out, dna_models[0])
    assert not out.exists()
    lines = Path(f"{out}.partial/batches.jsonl").read_text().splitlines()
    assert len(lines) == 1  # cut before the damaged batch
    monkeypatch.setattr(Sidecar, "verify", verify)
    stats = embed(shard, out, dna_models[0])
    assert stats["resumed"] == json.loads(lines[0])["rows"]
    embed(shard, folder / "clean.h5", dna_models[0])
    assert np.array_equal(contents(out)[1], contents(folder / "clean.h5")[1])
