"""The lease on an embed job's sidecar: ownership that holds where flock does not (Lustre mounted
`noflock` fails it, `localflock` and NFS `local_lock=all` keep it on one node).

The holder creates `{folder}/lease` exclusively (O_CREAT|O_EXCL) with its name (host, pid, scheduler
job id), a random token and a renewal counter; a thread adds one to the counter every `period`
seconds. A waiter never compares a file's time with its own clock (the nodes' clocks differ): it
watches (token, counter) with time.monotonic() and takes the lease over when it has not changed for
STALE_PERIODS periods, or at once when the holder ran on this host and its process is gone. Waiters
that decide at once each try to create `takeover.<old token>.<n>` exclusively; only the one that made
it replaces the lease (a claim whose maker was killed before that is passed by claim n + 1 after
STALE_PERIODS periods, or at once on its host).

The holder renews by writing into the file it made, through the descriptor it keeps (pwrite, then
fsync so that other nodes see it), never by renaming a new file over the path: a holder that was
paused while another job took the lease over writes into its own unlinked file, and can never undo
the take-over. Before each renewal it reads the lease at its path: another token there means the
lease was lost, and the job stops at its next `check()`.

What the file system must give: exclusive create and rename, visible on every node.
"""

import contextlib
import datetime
import json
import logging
import math
import os
import re
import secrets
import threading
import time
import zlib
from pathlib import Path

from .atomic import HOST, pid_alive, reporting_disk_full
from .errors import VirnucflowError
from .scheduler import scheduler_environment

log = logging.getLogger(__name__)
LEASE = "lease"
CLAIM = "takeover."
DEFAULT_PERIOD = 10.0
STALE_PERIODS = 6  # a lease not renewed for this many periods is taken over
PERIOD_VARIABLE = "VIRNUCFLOW_LOCK_LEASE_SECONDS"
_ROOM = 32  # bytes kept free in the file for the counter to grow: a renewal rewrites it in place
_TOKEN = re.compile(r"[0-9a-f]{1,64}")


class LeaseLost(VirnucflowError):
    """Another job took this job's lease over: this job must change neither the sidecar nor the output."""


def lease_period(configured=None):
    """Seconds between renewals: VIRNUCFLOW_LOCK_LEASE_SECONDS when set (tests use 0.2), else `configured`
    (config key embed.lock_lease_seconds), else 10."""
    text = os.environ.get(PERIOD_VARIABLE)
    value, source = (text, PERIOD_VARIABLE) if text else (configured, "embed.lock_lease_seconds")
    if value is None:
        return DEFAULT_PERIOD
    try:
        period = float(value)
    except (TypeError, ValueError):
        period = math.nan
    if not (period > 0 and math.isfinite(period)):
        raise VirnucflowError(f"{source} is {value!r}: it must be a number of seconds above 0")
    return period


def holder_info():
    """Who holds a lock or lease: written into it for the message of a job that waits for it."""
    now, scheduler = time.time(), scheduler_environment()
    return {"host": HOST, "pid": os.getpid(), "slurm_job_id": scheduler.get("SLURM_JOB_ID"),
            "lsf_job_id": scheduler.get("LSB_JOBID"), "since": now,
            "since_text": datetime.datetime.fromtimestamp(now).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")}


def describe_holder(info):
    """'pid 12 on host n1 (Slurm job 7) since 2026-11-30 06:00:01 UTC' from a lock or lease's content."""
    if not info:
        return "a job that has not written its name yet"
    text = f"pid {info.get('pid')} on host {info.get('host')}"
    jobs = [f"Slurm job {info['slurm_job_id']}" if info.get("slurm_job_id") else None,
            f"LSF job {info['lsf_job_id']}" if info.get("lsf_job_id") else None]
    jobs = [j for j in jobs if j]
    if jobs:
        text += f" ({', '.join(jobs)})"
    return text + f" since {info.get('since_text', '?')}"


def read_lease(path):
    """(content or None when it is not a JSON object, raw bytes); (None, None) when there is no lease."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None, None
    try:
        info = json.loads(raw)
    except ValueError:
        return None, raw
    return (info if isinstance(info, dict) else None), raw


def _state(info, raw):
    """(the lease's token as a claim names it, what changes at every renewal)."""
    token = str(info.get("token")) if info else ""
    if _TOKEN.fullmatch(token):
        return token, (token, info.get("counter"))
    return f"unreadable{zlib.crc32(raw):08x}", raw  # being written, or damaged: judged by its bytes


def _gone(info):
    """The process named in a lease or claim ran on this host and has ended."""
    try:
        return info["host"] == HOST and not pid_alive(int(info["pid"]))
    except (TypeError, KeyError, ValueError):
        return False


class Lease:
    """The lease of sidecar `folder`, renewed every `period` seconds while held. `try_take()` is one
    attempt to get it; `check()` raises LeaseLost once another job has it; `release()` gives it back."""

    def __init__(self, folder, period):
        self.folder = Path(folder)
        self.path = self.folder / LEASE
        self.period = float(period)
        self.token = secrets.token_hex(8)
        self.counter = 0
        self.renewals = 0
        self.cpu_seconds = 0.0  # of the renewal thread (benchmarks/lease.py)
        self.seen = None  # the lease a waiter saw last (for its message)
        self._info = None
        self._fd = None
        self._size = 0
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        self._watched = None  # (state, newest claim) a waiter saw, and since when (time.monotonic())
        self._watched_at = 0.0

    @property
    def held(self):
        return self._fd is not None and not self._lost.is_set()

    @property
    def released(self):
        return self._fd is None

    @property
    def stale_seconds(self):
        return STALE_PERIODS * self.period

    def try_take(self):
        """One attempt: create the lease, or take over one whose holder is gone or stopped renewing (as
        this object watched it on its earlier attempts). True when this job holds it now."""
        if self._create():
            return True
        info, raw = read_lease(self.path)
        if raw is None:  # released just now
            return self._create()
        self.seen = info
        token, renewal = _state(info, raw)
        claims = self._claims(token)
        watched, now = (renewal, claims[-1][0] if claims else None), time.monotonic()
        if watched != self._watched:
            self._watched, self._watched_at = watched, now
        theirs = _number((info or {}).get("period"))
        stale = now - self._watched_at >= STALE_PERIODS * max(self.period, theirs)
        blocking = _read_json(claims[-1][1]) if claims else info  # the newest claim, else the holder
        if stale or _gone(blocking):
            return self._take_over(token, renewal, claims[-1][0] + 1 if claims else 0)
        return False

    def _claims(self, token):
        """[(generation, path)] of the claims on `token`'s lease, oldest first."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.folder):
                head, _, generation = name.rpartition(".")
                if head == f"{CLAIM}{token}" and generation.isdigit():
                    found.append((int(generation), self.folder / name))
        return sorted(found)

    def _create(self):
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except FileNotFoundError:  # the holder before removed the folder with its sidecar
            self.folder.mkdir(parents=True, exist_ok=True)
            return self._create()
        self._hold(fd)
        return True

    def _take_over(self, token, renewal, generation):
        claim = self.folder / f"{CLAIM}{token}.{generation}"
        try:
            fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except (FileExistsError, FileNotFoundError):  # another waiter claimed it first, or it was released
            return False
        with contextlib.closing(os.fdopen(fd, "w")) as handle:
            json.dump(holder_info(), handle)
        info, raw = read_lease(self.path)
        if raw is None or _state(info, raw)[1] != renewal:  # renewed after all, or released: not stale
            with contextlib.suppress(OSError):
                claim.unlink()
            return False
        temporary = self.folder / f"{LEASE}.{self.token}.tmp"
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self._hold(fd, start=False)
            os.replace(temporary, self.path)
        except BaseException:
            self._close()
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        reason = "its process has ended" if _gone(info) else f"not renewed for {self.stale_seconds:g} s"
        log.warning("took over the lease of %s from %s: %s", self.folder, describe_holder(info), reason)
        self._start()
        return True

    def _hold(self, fd, start=True):
        self._fd, self._info, self.counter = fd, holder_info(), 0
        self._size = len(self._content()) + _ROOM
        with reporting_disk_full(self.path, self._size):
            self._write()
        if start:
            self._start()

    def _content(self):
        data = json.dumps({**self._info, "token": self.token, "counter": self.counter, "period": self.period})
        return data.encode().ljust(self._size)  # the same length every time: a rewrite in place leaves no tail

    def _write(self):
        data = self._content()
        written = 0
        while written < len(data):
            written += os.pwrite(self._fd, data[written:], written)
        os.fsync(self._fd)  # other nodes see it (NFS sends it to the server)

    def _start(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew, name=f"lease of {self.folder}", daemon=True)
        self._thread.start()

    def renew(self):
        """One renewal: read the lease and, while it is this job's, write it again with the counter one
        higher. False (and the lease lost) when another job has it now."""
        info, _ = read_lease(self.path)
        if not info or info.get("token") != self.token:
            self._lost.set()
            log.warning("%s: another job took over this job's lease (now %s); this job stops at its next step",
                        self.folder, describe_holder(info) if info else "no lease")
            return False
        self.counter += 1
        self._write()
        self.renewals += 1
        return True

    def _renew(self):
        started = time.thread_time()
        while not self._stop.wait(self.period):
            try:
                if not self.renew():
                    return
            except OSError:  # a passing file system error: try again next period (waiters judge staleness)
                pass
            finally:
                self.cpu_seconds = time.thread_time() - started

    def check(self):
        """Raise LeaseLost unless this job still holds the lease, as read at its path now."""
        try:
            info, _ = read_lease(self.path)
        except OSError:  # cannot tell now: the renewal thread's view stands
            if not self._lost.is_set():
                return
            info = None
        if not self._lost.is_set() and self._fd is not None and info and info.get("token") == self.token:
            return
        self._lost.set()
        who = f"now held by {describe_holder(info)}, which" if info else "its lease file is gone; the job that"
        raise LeaseLost(f"another job took over the lease of {self.folder} ({who} found this job's lease unrenewed "
                        f"for {self.stale_seconds:g} s or its process gone): this job stops; the other job finishes "
                        "the shard")

    def release(self):
        """Stop renewing; remove the lease if it is still this job's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._fd is not None and not self._lost.is_set():
            with contextlib.suppress(OSError):
                info, _ = read_lease(self.path)
                if info and info.get("token") == self.token:
                    self.path.unlink()
        self._close()

    def _close(self):
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _number(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
