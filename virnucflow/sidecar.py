"""The sidecar of an embed job: its lock, its batch plan and its finished batches, kept beside its output
(`{output}.partial/`, not a Snakemake output) until the output is in place, so a killed job resumes
where it stopped, and two jobs never write the same output.

    lock           held (flock) by the one job that owns the output, for the whole job; it names the
                   holder (host, pid, Slurm or LSF job id, since when) for a job that waits for it.
    plan.json      the batches (lists of input indices) and the token budget they were made with,
                   written when the sidecar is made: a resumed job follows it, whatever the current
                   budget, so that its rows are bitwise those of an uninterrupted run.
    manifest.json  what the rows were computed from (input hash, model, precision ...): a sidecar
                   made from anything else is ignored and cleared. Written last when a sidecar is made.
    rows.f32       the rows of every finished batch, back to back (float32, `dim` wide).
    batches.jsonl  one line per finished batch, written after its rows: input indices, row count,
                   CRC32 of the rows, skipped sequences (position in the batch, reason), and `pieces`
                   (sizes of the parts it was computed in) when it ran out of memory and was split. A
                   line cut short by a kill, or rows that do not match their CRC, end the valid part;
                   the rest is cut off.

The lock is an flock on `lock`: the kernel drops it when its holder dies, SIGKILL included (on NFS the
client forwards it to the server, which drops it when the holder's host stops renewing its lease;
mounts with `nolock` or `local_lock=all` keep locks on one host only). The holder removes the
sidecar, lock file included, while it still holds the lock; a job that was waiting then finds the
file it locked gone, and locks a new one.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import time
import zlib
from pathlib import Path

import numpy as np

from .atomic import atomic_open, reporting_disk_full
from .errors import VirnucflowError
from .scheduler import scheduler_environment

log = logging.getLogger(__name__)
SIDECAR_FORMAT = 2  # 2: plan.json and the lock
LOCK = "lock"
WAIT_LOG_SECONDS = 60  # a waiting job says who holds the lock this often
WAIT_POLL_SECONDS = 1.0


class SidecarDamaged(VirnucflowError):
    """The sidecar changed on disk after it was loaded (a row or a line no longer matches)."""


def _holder():
    """Who holds a lock: written into the lock file for the message of a job that waits for it."""

    now, scheduler = time.time(), scheduler_environment()
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": scheduler.get("SLURM_JOB_ID"),
            "lsf_job_id": scheduler.get("LSB_JOBID"), "since": now,
            "since_text": datetime.datetime.fromtimestamp(now).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")}


def describe_holder(info):
    """'pid 12 on host n1 (Slurm job 7) since 2026-11-30 06:00:01 UTC' from a lock file's content."""
    if not info:
        return "a job that has not written its name yet"
    text = f"pid {info.get('pid')} on host {info.get('host')}"
    jobs = [f"Slurm job {info['slurm_job_id']}" if info.get("slurm_job_id") else None,
            f"LSF job {info['lsf_job_id']}" if info.get("lsf_job_id") else None]
    jobs = [j for j in jobs if j]
    if jobs:
        text += f" ({', '.join(jobs)})"
    return text + f" since {info.get('since_text', '?')}"


class SidecarLock:
    """Exclusive ownership of the sidecar `folder` (and so of the output it belongs to). `acquire()`
    waits for a job that holds it, logging who that is every WAIT_LOG_SECONDS; `release()` (or the
    process's death) lets the next one in. Use `with lock:`."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.fd = None
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
        started = time.monotonic()
        last_log = None
        while True:
            fd = self._open()
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError as error:
                        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                            raise
                    now = time.monotonic()
                    if last_log is None or now - last_log >= WAIT_LOG_SECONDS:
                        waited = "" if last_log is None else f" (waiting for {now - started:.0f} s)"
                        log.warning("%s is locked by another job embedding this shard: %s%s; waiting for it to "
                                    "finish (a killed holder frees it at once)", self.folder,
                                    describe_holder(self.holder()), waited)
                        last_log = now
                    time.sleep(WAIT_POLL_SECONDS)
            except BaseException:
                os.close(fd)
                raise
            if self.still_ours(fd):
                break
            os.close(fd)  # the holder finished and removed the sidecar: lock the new one
        self.fd = fd
        self.waited = time.monotonic() - started
        if last_log is not None:
            log.info("got the lock of %s after %.0f s", self.folder, self.waited)
        with contextlib.suppress(OSError):  # only for the message of a job that waits: not essential
            data = json.dumps(_holder()).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        return self

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


class Sidecar:
    """Finished batches of a job in `folder`, for rows computed as `key` says, `dim` columns wide. The
    caller holds the folder's `SidecarLock`.

    `plan` {"token_budget", "batches"} is the stored plan, or `make_plan()`'s for a new sidecar.
    `positions` {input index: row in rows.f32} and `skipped` {input index: reason} say what is done;
    `entries` are the lines of batches.jsonl. Appending is two unbuffered writes per batch and no
    new file, which costs next to nothing on a network file system; the kernel keeps written data
    when the process is killed.
    """

    def __init__(self, folder, key, dim, make_plan):
        self.folder = Path(folder)
        self.dim = dim
        self.row_bytes = 4 * dim
        self.positions = {}  # input index -> row in rows.f32
        self.skipped = {}  # input index -> reason
        self.entries = []
        self.rows = 0
        self.key = {"format": SIDECAR_FORMAT, "dim": dim, **key}
        self.sequences = int(key.get("sequences", 0))
        manifest = self.folder / "manifest.json"
        old, plan = _read_json(manifest), _read_json(self.folder / "plan.json")
        if old != self.key or not _valid_plan(plan, self.sequences):
            if old is not None and old != self.key:
                differs = sorted(k for k in set(self.key) | set(old) if old.get(k) != self.key.get(k))
                log.info("ignoring the sidecar %s: it was made for another input, model or precision "
                         "(%s differ); starting from the first batch", self.folder, ", ".join(differs))
            self._clear()
            plan = make_plan()
            with reporting_disk_full(self.folder / "plan.json", self._needed):
                self.folder.mkdir(parents=True, exist_ok=True)
                with atomic_open(self.folder / "plan.json") as handle:
                    json.dump(plan, handle, separators=(",", ":"))
                with atomic_open(manifest) as handle:  # last: a sidecar with a manifest has its plan
                    json.dump(self.key, handle, sort_keys=True)
        self.plan = plan
        self._load()
        self._rows_fd = os.open(self.folder / "rows.f32", os.O_WRONLY | os.O_APPEND)
        self._index_fd = os.open(self.folder / "batches.jsonl", os.O_WRONLY | os.O_APPEND)

    def _needed(self):
        """Bytes this job still writes, about: the sidecar's missing rows, then the whole output file."""
        return (2 * self.sequences - self.rows) * self.row_bytes + 4096

    def _clear(self):
        """Everything but the lock, which the caller holds."""
        if not self.folder.is_dir():
            return
        for path in self.folder.iterdir():
            if path.name != LOCK:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def _load(self):
        rows_path, index_path = self.folder / "rows.f32", self.folder / "batches.jsonl"
        rows_path.touch()
        index_path.touch()
        valid_index_bytes = 0
        with open(rows_path, "rb") as rows, open(index_path, "rb") as index:
            for raw in index:
                entry = _parse_entry(raw)
                if entry is None:
                    break
                data = rows.read(entry["rows"] * self.row_bytes)
                if len(data) != entry["rows"] * self.row_bytes or zlib.crc32(data) != entry["crc32"]:
                    break
                self._record(entry)
                valid_index_bytes += len(raw)
        # Cut off whatever a kill left half-written, so appends continue from a clean end.
        os.truncate(index_path, valid_index_bytes)
        os.truncate(rows_path, self.rows * self.row_bytes)

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
        entry = {"indices": [int(i) for i in indices], "rows": len(indices), "crc32": zlib.crc32(data),
                 "skipped": [[int(p), str(r)] for p, r in skipped]}
        if pieces:
            entry["pieces"] = [int(p) for p in pieces]
        with reporting_disk_full(self.folder / "rows.f32", self._needed):
            _write_all(self._rows_fd, data)  # the rows reach the kernel before the line that vouches for them
            _write_all(self._index_fd, (json.dumps(entry) + "\n").encode())
        self._record(entry)

    def verify(self):
        """Check every batch's row count and CRC against batches.jsonl again, on what is on disk now: the
        assembly reads rows.f32 after this. A mismatch cuts the sidecar there (a rerun recomputes the
        rest) and raises SidecarDamaged."""
        rows_path, index_path = self.folder / "rows.f32", self.folder / "batches.jsonl"
        lines = index_path.read_bytes().splitlines(keepends=True)
        problem, good_rows, good_bytes = None, 0, 0
        if os.path.getsize(rows_path) != self.rows * self.row_bytes:
            problem = f"rows.f32 holds {os.path.getsize(rows_path)} bytes, not {self.rows * self.row_bytes}"
        with open(rows_path, "rb") as rows:
            for number, entry in enumerate(self.entries):
                raw = lines[number] if number < len(lines) else b""
                on_disk = _parse_entry(raw)
                if on_disk != entry:
                    problem = problem or f"line {number + 1} of batches.jsonl changed"
                    break
                data = rows.read(entry["rows"] * self.row_bytes)
                if len(data) != entry["rows"] * self.row_bytes:
                    problem = f"batch {number + 1} has {len(data) // max(self.row_bytes, 1)} rows, not {entry['rows']}"
                    break
                if zlib.crc32(data) != entry["crc32"]:
                    problem = f"the rows of batch {number + 1} no longer match their CRC32"
                    break
                good_rows += entry["rows"]
                good_bytes += len(raw)
        if problem is None and len(lines) != len(self.entries):
            problem = f"batches.jsonl has {len(lines)} lines, not {len(self.entries)}"
        if problem:
            self.close()
            os.truncate(index_path, good_bytes)
            os.truncate(rows_path, good_rows * self.row_bytes)
            raise SidecarDamaged(f"{self.folder}: {problem} (changed on disk after this job wrote it); the sidecar "
                                 "was cut before that batch: rerun the job to recompute the rest")

    def read_rows(self):
        """All rows written so far, (rows, dim), mapped from disk."""
        if self.rows == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.memmap(self.folder / "rows.f32", dtype="<f4", mode="r", shape=(self.rows, self.dim))

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


def remove_sidecar(folder, lock=None):
    """Delete a sidecar folder: its files, then the lock file if it is still the one `lock` holds (a
    waiting job then locks a new file), then the folder if nothing new appeared in it."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.name != LOCK:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    # Only the holder unlinks the lock file, so it is ours until this unlink; nothing after it.
    if lock is not None and lock.fd is not None and lock.still_ours():
        with contextlib.suppress(FileNotFoundError):
            lock.path.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


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
