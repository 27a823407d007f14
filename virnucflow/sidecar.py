"""The sidecar of an embed job: its lock, its batch plan and its finished batches, kept beside its output
(`{output}.partial/`, not a Snakemake output) until the output is in place, so a killed job resumes
where it stopped, and two jobs never write the same output.

    lock                   flocked by the job that owns the output, for the whole job, where the file
                           system has flock; it names the holder (host, pid, Slurm or LSF job id, since
                           when) for a job that waits for it.
    lease                  held by the same job, always (virnucflow.lease): it holds where flock fails
                           (Lustre `noflock`) or locks one node only (Lustre `localflock`, NFS
                           `local_lock=all`), and a job that has lost it stops.
    plan.<token>.json      what the rows are computed from (input hash, model, precision ...: `key`; a
                           plan made from anything else is ignored and cleared) and the batches (lists of
                           input indices) with the token budget they were made with. A resumed job follows
                           the plan it finds, whatever the current budget, so that its rows are bitwise
                           those of an uninterrupted run.
    rows.<token>.f32       the rows of every finished batch, back to back (float32, `dim` wide).
    batches.<token>.jsonl  one line per finished batch, written after its rows: input indices, row count,
                           CRC32 of the rows, skipped sequences (position in the batch, reason), and
                           `pieces` (sizes of the parts it was computed in) when it ran out of memory and
                           was split. A line cut short by a kill, or rows that do not match their CRC, end
                           the valid part.
    plan.json, rows.f32, batches.jsonl   symbolic links to the current holder's files, for a person
                           (or a test) who watches a job's progress; the job itself never reads them.

`<token>` is the holder's lease token: a job writes only files named by its own token, so a job that
lost its lease (paused past its lease, then woken) can never change what the new holder assembles. A
new holder copies the CRC-checked batches of the earlier holder with the most rows into its own files
(never renaming the earlier holder's, which may still be alive and appending), then deletes the other
tokens' files.

The flock is dropped by the kernel when its holder dies, SIGKILL included, and so is the lease at once
on the holder's host (its pid is gone); a holder on another host that stops renewing is passed after
lease.STALE_PERIODS periods. The holder removes the sidecar, lock file included, while it still holds
both; a job that was waiting then finds the file it locked gone, and locks a new one.
"""

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import time
from pathlib import Path

import numpy as np

from .atomic import atomic_open, remove_temporary, reporting_disk_full, writer_gone
from .checksums import crc32
from .errors import VirnucflowError
from .lease import LEASE, Lease, LeaseLost, describe_holder, holder_info, lease_period

log = logging.getLogger(__name__)
SIDECAR_FORMAT = 3  # 2: plan.json and the lock; 3: the lease, files named by the holder's token
LOCK = "lock"
LINKS = {"plan": "plan.json", "rows": "rows.f32", "index": "batches.jsonl"}  # kind -> the watchers' name
WAIT_LOG_SECONDS = 60  # a waiting job says who holds the lock this often
WAIT_POLL_SECONDS = 1.0
NO_FLOCK = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK)  # the file system has no flock
_told_no_flock = False  # the warning that the lease alone protects: once per process


class SidecarDamaged(VirnucflowError):
    """The sidecar changed on disk after it was loaded (a row or a line no longer matches)."""


class _Waiting:
    """The line a waiting job logs every WAIT_LOG_SECONDS: who holds the folder, and for how long it waited."""

    def __init__(self, folder):
        self.folder, self.started, self.last = folder, time.monotonic(), None

    def say(self, holder, frees):
        now = time.monotonic()
        if self.last is None or now - self.last >= WAIT_LOG_SECONDS:
            waited = "" if self.last is None else f" (waiting for {now - self.started:.0f} s)"
            log.warning("%s is locked by another job embedding this shard: %s%s; waiting for it to finish (%s)",
                        self.folder, describe_holder(holder), waited, frees)
            self.last = now


def _say_no_flock(folder, error):
    global _told_no_flock
    if not _told_no_flock:
        _told_no_flock = True
        log.warning("%s: this file system has no flock (%s): the lease alone protects this sidecar (and the "
                    "sidecars of this job's other outputs)", folder, os.strerror(error.errno))


class SidecarLock:
    """Exclusive ownership of the sidecar `folder` (and so of the output it belongs to): the flock on
    `lock` where the file system has flock, and the lease (renewed every `lease_seconds`, see
    virnucflow.lease) always. `acquire()` waits for a job that holds either, logging who that is every
    WAIT_LOG_SECONDS; `release()` (or the process's death) lets the next one in. Use `with lock:`; a job
    that fails after another took its lease over fails with LeaseLost, whatever broke."""

    def __init__(self, folder, lease_seconds=None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.period = lease_period(lease_seconds)
        self.fd = None
        self.lease = None
        self.waited = 0.0  # seconds this job waited for another one

    def _open(self):
        with reporting_disk_full(self.path, 4096):
            self.folder.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def still_ours(self, fd=None):
        """The file we locked is still the one at the path (the previous holder may have removed it)."""
        fd = self.fd if fd is None else fd
        try:
            here, ours = os.stat(self.path), os.fstat(fd)
        except FileNotFoundError:
            return False
        return (here.st_dev, here.st_ino) == (ours.st_dev, ours.st_ino)

    def holder(self):
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None

    def acquire(self):
        waiting = _Waiting(self.folder)
        self._flock(waiting)
        lease = Lease(self.folder, self.period)
        frees = (f"a killed holder on this host frees it at once, one on another host after "
                 f"{lease.stale_seconds:g} s without renewing its lease")
        try:
            while not lease.try_take():
                waiting.say(lease.seen, frees)
                time.sleep(min(WAIT_POLL_SECONDS, self.period / 2))
        except BaseException:
            self._unlock()
            raise
        self.lease = lease
        self.waited = time.monotonic() - waiting.started
        if waiting.last is not None:
            log.info("got the lock of %s after %.0f s", self.folder, self.waited)
        return self

    def try_acquire(self):
        """One attempt, without waiting: True when this job holds the sidecar now (flock and lease)."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in NO_FLOCK:
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise
            fd = None  # the lease alone
        if fd is not None and not self.still_ours(fd):
            os.close(fd)
            return False
        self.fd, lease = fd, Lease(self.folder, self.period)
        if not lease.try_take():
            self._unlock()
            return False
        self.lease = lease
        return True

    def _flock(self, waiting):
        """Hold the flock on `lock`, waiting for it; nothing where the file system has no flock."""
        while True:
            fd = self._open()
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError as error:
                        if error.errno in NO_FLOCK:
                            _say_no_flock(self.folder, error)
                            os.close(fd)
                            return
                        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                            raise
                    waiting.say(self.holder(), "a killed holder frees it at once")
                    time.sleep(WAIT_POLL_SECONDS)
            except BaseException:
                os.close(fd)
                raise
            if self.still_ours(fd):
                break
            os.close(fd)  # the holder finished and removed the sidecar: lock the new one
        self.fd = fd
        with contextlib.suppress(OSError):  # only for the message of a job that waits: not essential
            data = json.dumps(holder_info()).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)

    def check(self):
        """Raise LeaseLost when another job took this job's lease over."""
        if self.lease is not None:
            self.lease.check()

    def release(self):
        if self.lease is not None:
            self.lease.release()
        self._unlock()

    def _unlock(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, exc_type, exc, tb):
        lost = None
        if isinstance(exc, Exception) and not isinstance(exc, LeaseLost) and self.lease and not self.lease.released:
            try:
                self.check()  # a job whose lease was taken over says so, whatever the failure it met
            except LeaseLost as error:
                lost = error
        self.release()
        if lost is not None:
            raise lost from exc
        return False


class Sidecar:
    """Finished batches of a job in `folder`, for rows computed as `key` says, `dim` columns wide, in files
    named by `lock.lease.token`. The caller holds `lock` (a SidecarLock; None: a fresh token, unchecked).

    `plan` {"token_budget", "batches"} is the stored plan, or `make_plan()`'s for a new sidecar.
    `positions` {input index: row in the rows file} and `skipped` {input index: reason} say what is done;
    `entries` are the lines of the batches file. Appending is a read of the lease (still this job's?) and
    two unbuffered writes per batch, no new file, which costs next to nothing on a network file system;
    the kernel keeps written data when the process is killed.
    """

    def __init__(self, folder, key, dim, make_plan, lock=None):
        self.folder = Path(folder)
        self.lock = lock
        self.token = lock.lease.token if lock is not None and lock.lease is not None else secrets.token_hex(8)
        self.paths = {kind: self.folder / _name(kind, self.token) for kind in LINKS}
        self.dim = dim
        self.row_bytes = 4 * dim
        self.positions = {}  # input index -> row in the rows file
        self.skipped = {}  # input index -> reason
        self.entries = []
        self.rows = 0
        self.key = {"format": SIDECAR_FORMAT, "dim": dim, **key}
        self.sequences = int(key.get("sequences", 0))
        self._rows_fd = self._index_fd = None
        self.check()
        earlier, stored = self._earlier()
        plan = stored or make_plan()
        self.plan = {"token_budget": plan["token_budget"], "batches": plan["batches"]}
        try:
            self._make(earlier)
        except BaseException:
            self.close()
            raise
        self.check()
        self._remove_others()
        self._link()

    def _make(self, earlier):
        """Write this job's plan and open its files, with the batches of the `earlier` holder's (a token)."""
        with reporting_disk_full(self.folder / LINKS["plan"], self._needed):
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_open(self.paths["plan"]) as handle:
                json.dump({"key": self.key, **self.plan}, handle, separators=(",", ":"))
        with reporting_disk_full(self.folder / LINKS["rows"], self._needed):
            self._rows_fd = _open_new(self.paths["rows"])
            self._index_fd = _open_new(self.paths["index"])
            if earlier is not None:
                self._adopt(earlier)

    def check(self):
        """Raise LeaseLost when another job took the lease over: this job must not change anything then."""
        if self.lock is not None:
            self.lock.check()

    def _needed(self):
        """Bytes this job still writes, about: the sidecar's missing rows, then the whole output file."""
        return (2 * self.sequences - self.rows) * self.row_bytes + 4096

    def _earlier(self):
        """(token, plan) of the earlier holder whose files hold the most rows made as this job makes them;
        (None, None) when there is none (a sidecar made otherwise is ignored, and the log says so)."""
        found, other = [], None
        for path in sorted(self.folder.glob("plan.*.json")):
            token, stored = path.name[len("plan."):-len(".json")], _read_json(path)
            if token == self.token or not isinstance(stored, dict):
                continue
            if stored.get("key") == self.key and _valid_plan(stored, self.sequences):
                found.append((self._rows_claimed(token), token, stored))
            elif isinstance(stored.get("key"), dict):
                other = stored["key"]
        manifest = _read_json(self.folder / "manifest.json")  # a sidecar of format 2
        if other is None and isinstance(manifest, dict):
            other = manifest
        if found:
            _, token, stored = max(found)
            return token, {"token_budget": stored["token_budget"], "batches": stored["batches"]}
        if other is not None:
            differs = sorted(k for k in set(self.key) | set(other) if other.get(k) != self.key.get(k))
            log.info("ignoring the sidecar %s: it was made for another input, model or precision (%s differ); "
                     "starting from the first batch", self.folder, ", ".join(differs))
        return None, None

    def _rows_claimed(self, token):
        """Rows the complete lines of `token`'s batches file vouch for, as far as its rows file is long."""
        rows = 0
        with contextlib.suppress(OSError):
            size = os.path.getsize(self.folder / _name("rows", token)) // max(self.row_bytes, 1)
            with open(self.folder / _name("index", token), "rb") as index:
                for raw in index:
                    entry = _parse_entry(raw)
                    if entry is None or rows + entry["rows"] > size:
                        break
                    rows += entry["rows"]
        return rows

    def _adopt(self, token):
        """Copy the batches of `token`'s files whose rows match their CRC32 into this job's files, up to the
        first that does not (a kill cut it short, or the disk changed it). That holder may still be alive
        and appending: what it adds after the last complete line is not copied."""
        try:
            with open(self.folder / _name("rows", token), "rb") as rows, \
                    open(self.folder / _name("index", token), "rb") as index:
                for raw, entry, data in _BatchScan(rows, list(index), self.row_bytes):
                    _write_all(self._rows_fd, data)
                    _write_all(self._index_fd, raw)
                    self._record(entry)
        except FileNotFoundError:  # that holder finished or cleared its files just now
            pass

    def _remove_others(self):
        """Delete what is not this job's: earlier holders' files, a sidecar of format 2, stale links and
        claims; the lock, the lease and the claims on this job's lease stay."""
        keep = {LOCK, LEASE, *(path.name for path in self.paths.values())}
        for path in self.folder.iterdir():
            name = path.name
            if name in keep or name.startswith(f"{LEASE}.") or name.startswith(f"takeover.{self.token}."):
                continue
            with contextlib.suppress(OSError):
                path.unlink()

    def _link(self):
        """Point plan.json, rows.f32 and batches.jsonl at this job's files (where the file system has symbolic
        links: only people and tests read them)."""
        for kind, name in LINKS.items():
            temporary = self.folder / f".{name}.{self.token}"
            try:
                os.symlink(self.paths[kind].name, temporary)
                os.replace(temporary, self.folder / name)
            except OSError:
                with contextlib.suppress(OSError):
                    temporary.unlink()

    def _record(self, entry):
        for offset, input_index in enumerate(entry["indices"]):
            self.positions[input_index] = self.rows + offset
        for offset, reason in entry["skipped"]:
            self.skipped[entry["indices"][offset]] = reason
        self.entries.append(entry)
        self.rows += entry["rows"]

    def append(self, indices, vectors, skipped, pieces=None):
        """Record a finished batch: input `indices`, their rows, (position, reason) of skips, and the
        sizes of the `pieces` it was computed in when it was split after running out of memory."""
        data = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
        entry = {"indices": [int(i) for i in indices], "rows": len(indices), "crc32": crc32(data),
                 "skipped": [[int(p), str(r)] for p, r in skipped]}
        if pieces:
            entry["pieces"] = [int(p) for p in pieces]
        self.check()
        with reporting_disk_full(self.folder / LINKS["rows"], self._needed):
            _write_all(self._rows_fd, data)  # the rows reach the kernel before the line that vouches for them
            _write_all(self._index_fd, (json.dumps(entry) + "\n").encode())
        self._record(entry)

    def verify(self):
        """Check every batch's row count and CRC against the batches file again, on what is on disk now: the
        assembly reads the rows after this. A mismatch cuts the sidecar there (a rerun recomputes the
        rest) and raises SidecarDamaged."""
        self.check()
        rows_path, index_path = self.paths["rows"], self.paths["index"]
        lines = index_path.read_bytes().splitlines(keepends=True)
        problem, good_rows, good_bytes = None, 0, 0
        if os.path.getsize(rows_path) != self.rows * self.row_bytes:
            problem = f"{rows_path.name} holds {os.path.getsize(rows_path)} bytes, not {self.rows * self.row_bytes}"
        with open(rows_path, "rb") as rows:
            scan = _BatchScan(rows, lines, self.row_bytes, self.entries, index_path.name)
            for raw, entry, _ in scan:
                good_rows += entry["rows"]
                good_bytes += len(raw)
        if scan.problem and not (problem and scan.problem.startswith("line ")):
            problem = scan.problem  # a bad batch is named before a rows file of the wrong size, a changed line after
        if problem is None and len(lines) != len(self.entries):
            problem = f"{index_path.name} has {len(lines)} lines, not {len(self.entries)}"
        if problem:
            self.close()
            self.check()  # cut only this job's own files, while they are the current ones
            os.truncate(index_path, good_bytes)
            os.truncate(rows_path, good_rows * self.row_bytes)
            raise SidecarDamaged(f"{self.folder}: {problem} (changed on disk after this job wrote it); the sidecar "
                                 "was cut before that batch: rerun the job to recompute the rest")

    def read_rows(self):
        """All rows written so far, (rows, dim), mapped from disk."""
        if self.rows == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.memmap(self.paths["rows"], dtype="<f4", mode="r", shape=(self.rows, self.dim))

    def split_batches(self):
        """Finished batches that were computed in pieces after running out of memory."""
        return [entry for entry in self.entries if entry.get("pieces")]

    def close(self):
        for name in ("_rows_fd", "_index_fd"):
            fd = getattr(self, name, None)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)

    def remove(self, lock=None):
        """Delete the sidecar (see `remove_sidecar`)."""
        self.close()
        remove_sidecar(self.folder, lock)


class _BatchScan:
    """The batches of a sidecar in turn, (line, entry, rows' bytes), while each is whole and its rows match
    its CRC32 (and, given `entries`, its line is still the entry this job wrote); then `problem` says why the
    scan stopped (None: at the end). `rows`: the rows file open for reading; `lines`: the batches file's."""

    def __init__(self, rows, lines, row_bytes, entries=None, index_name="the batches file"):
        self.rows, self.lines, self.row_bytes = rows, lines, row_bytes
        self.entries, self.index_name = entries, index_name
        self.problem = None

    def __iter__(self):
        count = len(self.lines) if self.entries is None else len(self.entries)
        for number in range(count):
            raw = self.lines[number] if number < len(self.lines) else b""
            entry = _parse_entry(raw)
            if entry is None or (self.entries is not None and entry != self.entries[number]):
                self.problem = f"line {number + 1} of {self.index_name} changed"
                return
            data = self.rows.read(entry["rows"] * self.row_bytes)
            if len(data) != entry["rows"] * self.row_bytes:
                self.problem = f"batch {number + 1} has {len(data) // max(self.row_bytes, 1)} rows, not {entry['rows']}"
                return
            if crc32(data) != entry["crc32"]:
                self.problem = f"the rows of batch {number + 1} no longer match their CRC32"
                return
            yield raw, entry, data


def remove_sidecar(folder, lock=None):
    """Delete a sidecar folder: its files, then (when `lock` holds it) the lease and the lock file if it is
    still the one `lock` holds (a waiting job then locks a new file), then the folder if nothing new
    appeared in it. A `lock` whose lease was taken over deletes nothing: LeaseLost."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    if lock is not None:
        lock.check()
    for path in folder.iterdir():
        if path.name not in (LOCK, LEASE):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    if lock is not None and lock.lease is not None:
        lock.lease.release()
    # Only the holder unlinks the lock file, so it is ours until this unlink; nothing after it.
    if lock is not None and lock.lease is not None and (lock.fd is None or lock.still_ours()):
        with contextlib.suppress(FileNotFoundError):
            lock.path.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


def remove_orphaned_sidecars(embed_dir, shards):
    """Delete what embed jobs left in `embed_dir` for shards not among `shards` (the sample was prepared
    again into other shards, so no job will finish them): their sidecars (`{shard}.{kind}.h5.partial`),
    unless a live job holds one, and the temporaries of their outputs whose writers are gone. Returns the
    paths removed."""
    keep, removed = {str(shard) for shard in shards}, []
    embed_dir = Path(embed_dir)
    if not embed_dir.is_dir():
        return removed
    for path in sorted(embed_dir.iterdir()):
        shard = path.name.lstrip(".").split(".", 1)[0]
        if shard in keep:
            continue
        if path.name.endswith(".h5.partial") and path.is_dir():
            lock = SidecarLock(path)
            if lock.try_acquire():
                remove_sidecar(path, lock)
                lock.release()
                removed.append(path)
        elif path.name.startswith(".") and ".tmp." in path.name and writer_gone(path):
            remove_temporary(path)
            removed.append(path)
    return removed


def _name(kind, token):
    return {"plan": f"plan.{token}.json", "rows": f"rows.{token}.f32", "index": f"batches.{token}.jsonl"}[kind]


def _open_new(path):
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _valid_plan(plan, sequences):
    try:
        indices = sorted(i for batch in plan["batches"] for i in batch)
        return int(plan["token_budget"]) > 0 and indices == list(range(sequences))
    except (TypeError, KeyError, ValueError):
        return False


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _parse_entry(raw):
    if not raw.endswith(b"\n"):
        return None
    try:
        entry = json.loads(raw)
        if entry["rows"] != len(entry["indices"]):
            return None
        return entry
    except (ValueError, KeyError, TypeError):
        return None
