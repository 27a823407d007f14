"""Write-then-rename, so that a killed job never leaves a file that looks finished; and a full disk
reported in one line.

Snakemake does not notice half-written outputs of jobs downstream of a checkpoint after a kill,
so every output of this package goes through `atomic_path`. A temporary is named
`.{name}.tmp.{host}.{pid}.{token}`: a later job for the same output removes it once its writer is
provably gone (`remove_stale_temporaries`), so a kill leaves nothing behind for good.

A write that fails because the file system is full (ENOSPC) or the user's quota is used up (EDQUOT)
raises `DiskFull`: one line naming the file, about how much was being written, and the free space
of its file system. h5py reports these as OSError or RuntimeError with `errno = 28` in the message
(no `errno` attribute), so both forms are recognised (`disk_full_errno`). A writer that knows a file's size
reserves it first (`reserve`), so that a disk too full fails before anything is half-written, and gives
back what it did not use (`release_reservation`).
"""

import contextlib
import errno
import glob
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path

from .errors import VirnucflowError

_FALLOC_FL_KEEP_SIZE = 1
FULL = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up"}
_H5_ERRNO = re.compile(r"errno = (\d+)")


class DiskFull(VirnucflowError):
    """A write failed for lack of space (ENOSPC) or quota (EDQUOT); nothing half-written is left."""

    def __init__(self, path, needed_bytes, number=errno.ENOSPC):
        self.path, self.needed, self.number = Path(path), needed_bytes, number
        super().__init__(self._message())

    def _message(self):
        mount = mount_of(self.path.parent)
        try:
            stat = os.statvfs(mount)
            free = _size(stat.f_bavail * stat.f_frsize)
        except OSError:
            free = "unknown"
        return (f"{self.path}: {FULL.get(self.number, FULL[errno.ENOSPC])} (needed about {_size(self.needed)}, "
                f"{free} free on {mount}); free space or point work/ or results/ elsewhere")

    def update_free(self):
        """Say the free space again, once the failed write's temporary file is gone."""
        self.args = (self._message(),)


def disk_full_errno(error):
    """ENOSPC or EDQUOT when `error` (or what caused it) is a write that found no space, else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in FULL:
            return error.errno
        if isinstance(error, (OSError, RuntimeError)):
            for number in _H5_ERRNO.findall(str(error)):
                if int(number) in FULL:
                    return int(number)
        error = error.__cause__ or error.__context__
    return None


def _size(nbytes):
    mb = max(nbytes, 0) / 1e6
    return f"{mb:.0f} MB" if mb >= 10 else f"{mb:.1f} MB" if mb >= 0.1 else f"{mb:.3f} MB"


def mount_of(path):
    """The mount point of the file system that holds `path` (or would hold it)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def disk_full(path, needed_bytes, number=errno.ENOSPC):
    """The one-line `DiskFull` for a write of about `needed_bytes` to `path` that found no space."""
    return DiskFull(path, needed_bytes, number)


@contextlib.contextmanager
def reporting_disk_full(path, needed_bytes):
    """Turn a full disk inside the block into `DiskFull` for `path`; `needed_bytes`: a number, or a
    function called only on failure (what the whole write needs, e.g. rows x dim x 4)."""
    try:
        yield
    except DiskFull:
        raise
    except (OSError, RuntimeError) as error:
        number = disk_full_errno(error)
        if number is None:
            raise
        needed = needed_bytes() if callable(needed_bytes) else needed_bytes
        raise disk_full(path, needed, number) from error


def reserve(fd, nbytes):
    """Reserve `nbytes` on disk for the file open as `fd` (Linux fallocate, keeping the file's size): a disk
    too full for the whole file fails here, as an OSError (ENOSPC, EDQUOT). A file system without fallocate
    (NFSv3 ...), or no `fd` (None), is written without a reservation."""
    if fd is None:
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fallocate = libc.fallocate
        fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    except (AttributeError, OSError, ValueError, RuntimeError):
        return
    if fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, int(nbytes)) != 0:
        number = ctypes.get_errno()
        if number in FULL:
            raise OSError(number, os.strerror(number))


def release_reservation(path):
    """Give back the reserved blocks a writer did not use (those past the end of the file)."""
    with contextlib.suppress(OSError):
        os.truncate(path, os.path.getsize(path))


def discard_writes(fd):
    """After a write failed for lack of space, point `fd` at an anonymous memory file: the writes a library
    still does when it closes the file (which is then deleted) succeed instead of failing again (HDF5 would
    otherwise be left in a state that crashes the process at exit)."""
    if fd is None:
        return
    with contextlib.suppress(AttributeError, OSError):
        spare = os.memfd_create("virnucflow-discarded")
        os.dup2(spare, fd)
        os.close(spare)


HOST = socket.gethostname()
# What follows `.{name}.tmp.` in a temporary's name (releases before 0.2 wrote the pid only: judged by age).
_WRITER = re.compile(r"(?P<host>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}")

# Called with (temporary, final path) just before a temporary is renamed into place. Tests plant a kill
# here (tests/kill_points); nothing else uses it.
before_rename = None


def _temporary_prefix(path):  # the one place that names the temporaries
    return f".{path.name}.tmp."


def temporary_path(path):
    """A new name beside `path` for writing it: `.{name}.tmp.{host}.{pid}.{token}` (host and pid tell a
    later job whether the writer is gone; the token keeps two writers in one process apart)."""
    path = Path(path)
    return path.with_name(f"{_temporary_prefix(path)}{HOST}.{os.getpid()}.{secrets.token_hex(4)}")


def rename_into_place(tmp, path):
    """`os.replace(tmp, path)`: the last step of every atomic write."""
    if before_rename is not None:
        before_rename(tmp, path)
    os.replace(tmp, path)


def pid_alive(pid):
    """True while process `pid` of this host runs (a zombie, killed but not yet reaped, is gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _newest_mtime(path):
    """The latest modification time in `path` (a file, or a folder and everything in it)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for folder, names, files in os.walk(path):
            for name in names + files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
    return newest


def writer_gone(temporary, max_age_seconds=None):
    """True when the writer of `temporary` can no longer be writing it: it ran on this host and its process
    has ended, or (another host, or a name without one) nothing in it changed for `max_age_seconds` (the
    rule's runtime, after which the scheduler has killed the job; None: never judged by age)."""
    match = _WRITER.fullmatch(temporary.name.rsplit(".tmp.", 1)[-1])
    if match and match["host"] == HOST:
        return not pid_alive(int(match["pid"]))
    if max_age_seconds is None:
        return False
    try:
        return time.time() - _newest_mtime(temporary) > max_age_seconds
    except FileNotFoundError:
        return False


def remove_temporary(path):
    """Delete a temporary, file or folder."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def remove_stale_temporaries(path, max_age_seconds=None, every=False):
    """Delete the temporaries of `path` (files or folders) whose writers are gone (`writer_gone`); with
    `every`, all of them, for a caller that knows no other process writes `path` now (it holds its lock).
    Returns the paths removed."""
    path = Path(path)
    removed = []
    for stale in sorted(path.parent.glob(f"{glob.escape(_temporary_prefix(path))}*")):
        if every or writer_gone(stale, max_age_seconds):
            remove_temporary(stale)
            removed.append(stale)
    return removed


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` (for a file or a folder); rename it onto `path` on success,
    delete it on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        rename_into_place(tmp, path)
    except BaseException:
        if tmp.exists() or tmp.is_symlink():
            remove_temporary(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """Open a temporary file for writing that becomes `path` only if the block completes. A full disk
    is a `DiskFull` naming `path` (needed: what had reached the file, plus a block)."""
    needed = [4096]
    try:
        with reporting_disk_full(path, lambda: needed[0]), atomic_path(path) as tmp:
            handle = open(tmp, mode, **kwargs)
            try:
                yield handle
                handle.close()  # inside: a failing final flush is this write's failure
            except BaseException:
                with contextlib.suppress(OSError, ValueError):
                    needed[0] += os.fstat(handle.fileno()).st_size
                with contextlib.suppress(OSError):
                    handle.close()
                raise
    except DiskFull as error:
        error.update_free()  # the temporary file is gone now
        raise
