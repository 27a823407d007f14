"""One embed job owns an output at a time: the sidecar's lock and lease, a second job that waits for it and
then reuses or resumes, and the assembly that checks the sidecar again before it writes."""

import errno
import json
import logging
import os
import re
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
from helpers import embed_options, finished_batches, text, wait_until
from virnucflow.embed import embed_shard
from virnucflow.embeddings import open_embeddings, verify_checksums
from virnucflow.errors import VirnucflowError
from virnucflow.lease import STALE_PERIODS, Lease, LeaseLost, lease_period
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


# --- the lease: ownership where flock does not hold ------------------------------------------------

PERIOD = 0.1


def take_within(lease, seconds):
    """Seconds until `lease.try_take()` succeeds, polling as a waiting job does; None if not within `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if lease.try_take():
            return time.monotonic() - started
        time.sleep(PERIOD / 5)
    return None


def write_lease(folder, **fields):
    """A lease file as another job left it."""
    folder.mkdir(parents=True, exist_ok=True)
    info = {"host": socket.gethostname(), "pid": os.getpid(), "token": "0123456789abcdef", "counter": 0,
            "period": PERIOD, "since_text": "then", **fields}
    (folder / "lease").write_text(json.dumps(info))


def test_the_lease_period_is_the_config_s_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv("VIRNUCFLOW_LOCK_LEASE_SECONDS", raising=False)
    assert lease_period(None) == 10 and lease_period(2.5) == 2.5
    monkeypatch.setenv("VIRNUCFLOW_LOCK_LEASE_SECONDS", "0.2")
    assert lease_period(30) == 0.2
    monkeypatch.setenv("VIRNUCFLOW_LOCK_LEASE_SECONDS", "0")
    with pytest.raises(VirnucflowError, match=r"^VIRNUCFLOW_LOCK_LEASE_SECONDS is '0': it must be a number of "
                                              r"seconds above 0$"):
        lease_period(30)


def test_a_renewed_lease_is_fresh_and_an_unrenewed_one_stale_whatever_the_file_times(tmp_path):
    """A waiter judges a lease by its counter, on its own clock: the clocks of two nodes differ, so a file
    time says nothing either way."""
    period = 0.2  # margin for a busy machine: the holder's thread may be late by a period or two
    holder, waiter = Lease(tmp_path, period), Lease(tmp_path, period)
    assert holder.try_take()
    try:
        deadline = time.monotonic() + 2 * STALE_PERIODS * period
        while time.monotonic() < deadline:
            os.utime(tmp_path / "lease", (0, 0))  # written in 1970, by the clock of the waiter's node
            assert not waiter.try_take()
            time.sleep(period / 5)
        assert holder.renewals >= STALE_PERIODS and holder.held
        holder._stop.set()  # the holder's job is paused: no more renewals, while its file looks written now
        holder._thread.join()
        started = time.monotonic()
        while not waiter.try_take():
            os.utime(tmp_path / "lease")
            time.sleep(period / 5)
        # 6 periods from the last renewal the waiter saw, up to a period before the holder stopped
        assert (STALE_PERIODS - 1) * period <= time.monotonic() - started < STALE_PERIODS * period + 2
        assert json.loads((tmp_path / "lease").read_text())["token"] == waiter.token
    finally:
        waiter.release()
        holder.release()


def test_a_lease_whose_holder_died_on_this_host_is_taken_over_at_once(tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_lease(tmp_path, pid=int(ended.stdout), period=60)
    waiter = Lease(tmp_path, 60)
    try:
        assert waiter.try_take()  # at the first look, not after 6 x 60 s
    finally:
        waiter.release()
    assert not (tmp_path / "lease").exists()
    # That pid on another host may be a live process there: its lease is judged by its renewals.
    write_lease(tmp_path, pid=int(ended.stdout), host="another-node", period=60)
    assert not Lease(tmp_path, 60).try_take()


def test_a_lease_of_another_host_is_taken_over_after_stale_periods_of_the_longer_period(tmp_path, caplog):
    write_lease(tmp_path, host="another-node", pid=1, token="aaaa")
    waiter = Lease(tmp_path, PERIOD)
    with caplog.at_level(logging.INFO, logger="virnucflow"):
        waited = take_within(waiter, 10)
    waiter.release()
    assert waited is not None and STALE_PERIODS * PERIOD <= waited < STALE_PERIODS * PERIOD + 2
    assert (f"took over the lease of {tmp_path} from pid 1 on host another-node since then: not renewed for "
            f"{STALE_PERIODS * PERIOD:g} s") in caplog.text
    # A holder that renews every 0.3 s (its own setting) is not stale after 6 x 0.1 s.
    write_lease(tmp_path, host="another-node", pid=1, token="bbbb", period=3 * PERIOD)
    waited = take_within(Lease(tmp_path, PERIOD), 10)
    assert waited is not None and waited >= STALE_PERIODS * 3 * PERIOD


def test_waiters_that_find_a_lease_stale_at_once_make_one_holder(tmp_path):
    write_lease(tmp_path, host="another-node", pid=1)
    waiters = [Lease(tmp_path, PERIOD) for _ in range(8)]
    assert not any(waiter.try_take() for waiter in waiters)  # each starts watching
    time.sleep(STALE_PERIODS * PERIOD + 0.1)
    barrier, took = threading.Barrier(len(waiters)), [None] * len(waiters)

    def attempt(number):
        barrier.wait()
        took[number] = waiters[number].try_take()

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(len(waiters))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert took.count(True) == 1 and took.count(False) == len(waiters) - 1
        winner = waiters[took.index(True)]
        assert json.loads((tmp_path / "lease").read_text())["token"] == winner.token
        # The others go on waiting: the new holder renews.
        deadline = time.monotonic() + 2 * STALE_PERIODS * PERIOD
        while time.monotonic() < deadline:
            assert not any(waiter.try_take() for waiter in waiters if waiter is not winner)
            time.sleep(PERIOD / 2)
    finally:
        for waiter in waiters:
            waiter.release()


HOLD_LEASE = """
import sys, time
sys.path.insert(0, sys.argv[1])
from virnucflow.lease import Lease, LeaseLost
lease = Lease(sys.argv[2], float(sys.argv[3]))
assert lease.try_take()
print("held", flush=True)
while True:
    try:
        lease.check()
    except LeaseLost as error:
        print(error, flush=True)
        time.sleep(1)  # its renewal thread has woken up too
        sys.exit(3)
    time.sleep(0.01)
"""


def test_a_holder_paused_past_its_lease_finds_it_lost_and_never_takes_it_back(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LEASE, str(REPO), str(tmp_path), str(PERIOD)],
                            stdout=subprocess.PIPE, text=True)
    waiter = Lease(tmp_path, PERIOD)
    try:
        assert proc.stdout.readline().strip() == "held"
        os.kill(proc.pid, signal.SIGSTOP)
        assert take_within(waiter, 10) is not None
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.wait(30) == 3
        # The holder it names is the lease as its check read it (once, on a loaded machine, its own): what
        # matters is the one line, and that the lease stays the new holder's (below).
        assert re.fullmatch(rf"another job took over the lease of {re.escape(str(tmp_path))} \(now held by pid "
                            rf"\d+ on host {re.escape(socket.gethostname())} since [^)]*\): this job stops; "
                            "the other job finishes the shard", proc.stdout.read().strip())
        info = json.loads((tmp_path / "lease").read_text())
        time.sleep(3 * PERIOD)
        later = json.loads((tmp_path / "lease").read_text())
        assert info["token"] == later["token"] == waiter.token and later["counter"] > info["counter"]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
        waiter.release()


def without_flock(monkeypatch):
    """flock fails as on Lustre mounted `noflock`, in this process."""

    def flock(fd, operation):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(sidecar_module.fcntl, "flock", flock)
    monkeypatch.setattr(sidecar_module, "_told_no_flock", False)


def test_a_job_that_lost_its_lease_changes_nothing_the_new_holder_assembles(tmp_path, monkeypatch, caplog):
    without_flock(monkeypatch)
    folder, rows = tmp_path / "out.h5.partial", np.arange(24, dtype=np.float32).reshape(6, 4)
    key = {"input_sha256": "ab", "sequences": 6}

    def plan():
        return {"token_budget": 10, "batches": [[0, 1], [2, 3], [4, 5]]}

    with caplog.at_level(logging.WARNING, logger="virnucflow"):
        old = SidecarLock(folder, lease_seconds=PERIOD).acquire()
        old_sidecar = Sidecar(folder, key, 4, plan, lock=old)
        old_sidecar.append([0, 1], rows[:2], [])
        old_sidecar.append([2, 3], rows[2:4], [])
        old.lease._stop.set()  # the old job is paused: no more renewals
        old.lease._thread.join()
        new = SidecarLock(folder, lease_seconds=PERIOD).acquire()
    warnings = [r.message for r in caplog.records if "has no flock" in r.message]
    assert len(warnings) == 1 and "the lease alone protects" in warnings[0]  # once per process
    new_sidecar = Sidecar(folder, key, 4, lambda: pytest.fail("the stored plan is followed"), lock=new)
    assert new_sidecar.positions == {0: 0, 1: 1, 2: 2, 3: 3}  # the old job's batches, copied
    # The old job wakes up: it stops before it writes a batch ...
    with pytest.raises(LeaseLost, match=r"another job took over the lease of .*: this job stops; the other job "
                                        r"finishes the shard$"):
        old_sidecar.append([4, 5], rows[4:] + 1, [])
    # ... and what it sent on its way before it knew lands in its own files, which the new job deleted.
    sidecar_module._write_all(old_sidecar._rows_fd, (rows[4:] + 1).tobytes())
    sidecar_module._write_all(old_sidecar._index_fd, b'{"indices": [4, 5], "rows": 2}\n')
    new_sidecar.append([4, 5], rows[4:], [])
    new_sidecar.verify()
    assert np.array_equal(new_sidecar.read_rows(), rows)
    assert sorted(p.name for p in folder.glob("rows.*")) == sorted(["rows.f32", f"rows.{new.lease.token}.f32"])
    with pytest.raises(LeaseLost):
        old_sidecar.verify()
    with pytest.raises(LeaseLost):
        remove_sidecar(folder, old)  # deletes nothing
    assert np.array_equal(new_sidecar.read_rows(), rows)
    new_sidecar.remove(new)
    new.release()
    old.release()
    assert not folder.exists()


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


# --- a sample prepared again into other shards ---------------------------------------------------------

def test_sidecars_of_shards_no_longer_planned_are_removed_unless_a_live_job_holds_one(tmp_path):
    from virnucflow.atomic import HOST
    from virnucflow.sidecar import remove_orphaned_sidecars

    embed = tmp_path / "embed"
    for name in ("1.dna.h5.partial", "3.dna.h5.partial", "3.protein.h5.partial"):
        (embed / name).mkdir(parents=True)
        (embed / name / "rows.0123.f32").write_bytes(b"\0" * 64)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = embed / f".3.dna.h5.tmp.{HOST}.{gone.stdout.strip()}.0123abcd"
    stale.write_bytes(b"half")
    live_tmp = embed / f".5.dna.h5.tmp.{HOST}.{os.getpid()}.0123abcd"  # a live writer's: kept
    live_tmp.write_bytes(b"half")
    held = embed / "4.protein.h5.partial"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(REPO), str(held)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        removed = remove_orphaned_sidecars(embed, range(3))  # shards 0, 1, 2 in the new plan
        assert sorted(p.name for p in removed) == sorted([stale.name, "3.dna.h5.partial", "3.protein.h5.partial"])
        assert sorted(p.name for p in embed.iterdir()) == sorted(["1.dna.h5.partial", "4.protein.h5.partial",
                                                                  live_tmp.name])
        assert (held / "lock").exists()  # the live job's sidecar untouched
    finally:
        holder.kill()
        holder.wait()
    assert [p.name for p in remove_orphaned_sidecars(embed, range(3))] == ["4.protein.h5.partial"]  # its holder died


def test_prepare_again_into_fewer_shards_removes_the_old_shards_sidecars(tmp_path):
    from helpers import run_prepare

    reads = synthetic_reads(60, 300, 600, coding_fraction=1.0, seed=2, prefix="r")
    (tmp_path / "r.fa").write_text("".join(f">{rid}\n{seq}\n" for rid, seq in reads))
    embed = tmp_path / "w" / "embed"
    (embed / "0.dna.h5.partial").mkdir(parents=True)
    (embed / "9.dna.h5.partial").mkdir()
    summary = run_prepare(tmp_path / "r.fa", tmp_path / "w", sample="s", embed_dir=embed)
    assert summary["shards"] < 9
    assert [p.name for p in embed.iterdir()] == ["0.dna.h5.partial"]
