"""HDF5 embedding files: the shards written by the embed jobs and the merged result of a sample.

Layout: `sequence_ids` (N,) variable-length UTF-8 and `embeddings` (N, D) in chunks of whole rows,
plus attributes (model, dim, pooling, precision, package version ...). `embeddings` is float32
(little-endian), except in a merged result written with `merge.dtype: float16`, where it is IEEE
half precision (`<f2`, half the bytes; the merge records `dtype` among the attributes); shards are
always float32. Readers that compute take `EmbeddingFile.read_rows` (float32 whatever is stored).
`complete = True` is written last and the file is renamed into place, so a reader that finds
`complete` has a whole file. `skipped_ids` / `skipped_reasons` list the sequences an embed job left
out (on_error: skip).

Checksums (`ids_sha256`, `embeddings_crc32`, `embeddings_sum64`: virnucflow.checksums) are written by
`EmbeddingWriter` into every file (shards and merged results) from the rows as stored, and checked by
`verify_checksums`. The disk space of a file is reserved when it is made (virnucflow.atomic.reserve).

Writer (`EmbeddingWriter`) and reader (`open_embeddings`) live here together; a fast reader of rows in any
order, which relies on the writer's layout, is virnucflow.rows.
"""

import concurrent.futures
import contextlib
import functools
import os
import sys
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .atomic import (DiskFull, atomic_path, discard_writes, disk_full_errno, release_reservation, reporting_disk_full,
                     reserve)
from .checksums import VERIFIED, Checksums, RowsVerifier, ids_mismatch
from .errors import InputError

ID_DTYPE = h5py.string_dtype(encoding="utf-8")
ROWS_PER_CHUNK = 1024  # HDF5 chunk of `embeddings`: whole rows, at most this many and about 1 MiB
ID_CHUNK = 4096  # ids per chunk of `sequence_ids` (16-byte references to the text)
ID_BYTES = 128  # what an id's text may cost in the file (heap object and its text), generously
THREADED_CHECKSUM_BYTES = 1 << 20  # blocks from this size are checksummed beside the HDF5 write
DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}  # how `embeddings` may be stored
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504: a larger value cannot be stored as float16
FLOAT16_ROUNDS_TO_INF = 65520.0  # halfway from 65504 to 2**16: from here on, float16 rounds to infinity
UNCLOSED = []  # files HDF5 could not close after a full disk (a job then ends without finalising HDF5)


def _vfd(h5file):
    """The file descriptor HDF5 writes `h5file` through (None where its driver has none)."""
    try:
        return h5file.id.get_vfd_handle()
    except (AttributeError, OSError, ValueError, RuntimeError):
        return None


class EmbeddingWriter:
    """Append rows to a new embedding file; it appears at `path` only after `close()` succeeds.

    Use as a context manager: on an exception nothing is left at `path`. `expected_rows`: how many rows
    the file will have: reserved on disk when the file is made (else as rows come), so that a disk too
    full fails early, as a `DiskFull` naming the size, and never inside HDF5's close. `dtype`: how the
    rows are stored, "float32" or "float16" (rows are given as float32 and rounded to the nearest
    float16; a value beyond float16's range is an `InputError`); the checksums are of the stored bytes.
    """

    def __init__(self, path, dim, attrs=None, expected_rows=None, dtype="float32"):
        self.path = Path(path)
        self.dim = int(dim)
        if dtype not in DTYPES:
            raise ValueError(f"{self.path}: dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        self.dtype = DTYPES[dtype]
        self.rows = 0
        self.expected_rows = expected_rows
        self.skipped = []  # (id, reason) of sequences left out with on_error: skip
        self._extra = {}  # more id datasets, written at close
        self._checksums = Checksums()
        self._row_chunk = max(1, min(ROWS_PER_CHUNK, (1 << 20) // max(self.dtype.itemsize * self.dim, 1)))
        with reporting_disk_full(self.path, self._needed), contextlib.ExitStack() as stack:
            # a failure here closes and removes the temporary file
            tmp = stack.enter_context(atomic_path(self.path))
            stack.callback(release_reservation, tmp)  # after HDF5 closed the file, before the rename
            self._file = stack.enter_context(h5py.File(tmp, "w"))
            try:
                self._ids = self._file.create_dataset(
                    "sequence_ids", shape=(0,), maxshape=(None,), dtype=ID_DTYPE, chunks=(ID_CHUNK,)
                )
                self._emb = self._file.create_dataset(
                    "embeddings",
                    shape=(0, self.dim),
                    maxshape=(None, self.dim) if self.dim else None,
                    dtype=self.dtype,
                    chunks=(self._row_chunk, self.dim) if self.dim else None,  # width 0 (no frame): contiguous
                )
                self.attrs = self._file.attrs  # more attributes may be added before close()
                self.attrs["dim"] = self.dim
                self.attrs["package_version"] = __version__
                for key, value in (attrs or {}).items():
                    self.attrs[key] = value
                if expected_rows is not None:
                    reserve(_vfd(self._file), self._needed())
            except BaseException as error:
                if disk_full_errno(error):
                    discard_writes(_vfd(self._file))
                raise
            self._stack = stack.pop_all()

    def _needed(self, adding=0):
        """Bytes the whole file takes, generously, for its rows (expected, or written so far): whole chunks of
        rows and of id references, the ids' text, and 64 KiB of HDF5's own structures. Reserved on disk."""
        rows = max(self.expected_rows or 0, self.rows + adding)
        row_chunk = self._row_chunk if self.dim else max(rows, 1)
        return (-(-rows // row_chunk) * row_chunk * self.dtype.itemsize * self.dim
                + -(-rows // ID_CHUNK) * ID_CHUNK * 16 + rows * ID_BYTES + (64 << 10))

    def append(self, ids, embeddings, row_sums=None):
        """Append rows: `ids` (n,) strings and `embeddings` (n, dim); `row_sums`: their `row_sums64` when
        the caller has them (the merge adds up the shards' while it checks them, where
        `checksums.sums_add_up`; never used for a file stored as float16, whose sums are of the rounded rows)."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim or len(ids) != embeddings.shape[0]:
            raise ValueError(
                f"{self.path}: expected {len(ids)} rows of dim {self.dim}, got shape {embeddings.shape}"
            )
        n = len(ids)
        if n == 0:
            return
        if self.dtype != np.float32:
            embeddings, row_sums = self._rounded(embeddings), None
        start, end = self.rows, self.rows + n
        # The checksums of what was handed over, in row order, computed while HDF5 writes the same rows
        # (both release the GIL: a merge's CRC-32 and sums cost no wall time); done before returning,
        # so the caller may reuse its buffer.
        checksums = (_checksum_thread().submit(self._checksums.add, ids, embeddings, start, row_sums)
                     if embeddings.nbytes >= THREADED_CHECKSUM_BYTES else None)
        try:
            with reporting_disk_full(self.path, lambda: self._needed(n)):
                # Reserved before HDF5 holds anything it may fail to write (a failure at close is not recoverable).
                reserve(_vfd(self._file), self._needed(n))
                self._ids.resize((end,))
                self._emb.resize((end, self.dim))
                self._ids[start:end] = list(ids)
                self._emb[start:end] = embeddings
        finally:
            if checksums is not None:
                checksums.result()
        if checksums is None:
            self._checksums.add(ids, embeddings, start, row_sums)
        self.rows = end

    def _rounded(self, rows):
        """`rows` (float32) as the file stores them (float16); a finite value that float16 cannot hold is refused
        (it would be stored as infinity), naming the first."""
        with np.errstate(over="ignore"):  # found below, with the value named
            stored = rows.astype(self.dtype)
        # Values from 65520 on round to infinity; two float32 passes are ~10x faster than np.isinf on float16.
        if not (rows.max() < FLOAT16_ROUNDS_TO_INF and rows.min() > -FLOAT16_ROUNDS_TO_INF):  # NaN: checked too
            overflow = np.isinf(stored) & np.isfinite(rows)
            if not overflow.any():
                return stored
            row, column = (int(i[0]) for i in np.nonzero(overflow))
            raise InputError(f"{self.path}: row {self.rows + row} holds {rows[row, column]:g} in column {column}, "
                             f"beyond float16's range (+-{FLOAT16_MAX:g}); set merge.dtype: float32")
        return stored

    def skip(self, sequence_id, reason):
        """Record a sequence that could not be embedded, so that validation reports it."""
        self.skipped.append((str(sequence_id), str(reason)))

    def add_ids(self, name, ids):
        """A dataset of ids besides the rows (e.g. `oom_split_ids`), written at close."""
        self._extra[name] = [str(sid) for sid in ids]

    def checksums(self):
        """{ids_sha256, embeddings_crc32, embeddings_sum64} of the rows appended so far."""
        return self._checksums.values()

    def close(self):
        """Write the skipped ids, the checksums and `complete`, close the file and rename it into place."""
        with reporting_disk_full(self.path, self._needed):
            try:
                ids = [sid for sid, _ in self.skipped]
                reasons = [why for _, why in self.skipped]
                self._file.create_dataset("skipped_ids", data=ids, dtype=ID_DTYPE, shape=(len(ids),))
                self._file.create_dataset("skipped_reasons", data=reasons, dtype=ID_DTYPE, shape=(len(ids),))
                for name, values in self._extra.items():
                    self._file.create_dataset(name, data=values, dtype=ID_DTYPE, shape=(len(values),))
                self.attrs["rows"] = self.rows
                for key, value in self.checksums().items():
                    self.attrs[key] = value
                self.attrs["complete"] = True
            except BaseException:
                self.abort(sys.exc_info())
                raise
            try:
                self._stack.close()
            except BaseException as error:
                if disk_full_errno(error):  # HDF5 could not write at close: its state is not recoverable
                    UNCLOSED.append(str(self.path))
                raise

    def abort(self, exc_info=(None, None, None)):
        """Close and remove the temporary file; nothing appears at `path`."""
        exc_type, exc, tb = exc_info
        if disk_full_errno(exc):
            discard_writes(_vfd(self._file))
        with contextlib.suppress(BaseException):
            self._stack.__exit__(exc_type or RuntimeError, exc or RuntimeError("aborted"), tb)
        if isinstance(exc, DiskFull):
            exc.update_free()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort((exc_type, exc, tb))
        return False


@functools.cache
def _checksum_thread():
    """The one worker that checksums large blocks, made on first use (a forked child makes its own)."""
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="checksums")


os.register_at_fork(after_in_child=_checksum_thread.cache_clear)


class EmbeddingFile:
    """A complete embedding file opened for reading."""

    def __init__(self, path, handle):
        self.path = Path(path)
        self.file = handle
        self.ids = handle["sequence_ids"].asstr()
        self.embeddings = handle["embeddings"]
        self.attrs = handle.attrs
        self.dim = int(self.embeddings.shape[1])

    def __len__(self):
        return int(self.embeddings.shape[0])

    def skipped(self):
        """(id, reason) pairs of sequences the embed job left out (on_error: skip)."""
        if "skipped_ids" not in self.file:
            return []
        ids = self.file["skipped_ids"].asstr()[:]
        reasons = self.file["skipped_reasons"].asstr()[:]
        return list(zip(ids, reasons))

    def read_ids(self, start=0, stop=None):
        """Ids of rows [start, stop) as a list of str."""
        return list(self.ids[start:stop])

    def read_rows(self, start=0, stop=None):
        """Rows [start, stop) as float32, whatever the file stores (float16 widens exactly)."""
        return np.asarray(self.embeddings[start:stop], dtype=np.float32)

    def id_bytes(self):
        """All ids as a fixed-width bytes array (compact, sortable)."""
        raw = self.file["sequence_ids"][()]
        return raw.astype("S") if len(raw) else np.empty(0, dtype="S1")


def verify_checksums(shard, block_rows=4096):
    """Read a whole file and check its ids and rows against the checksums written with them; returns the
    problems found (empty: intact). A file without checksums (another tool's, an older virnucflow's)
    is a problem too: it cannot be vouched for."""
    missing = [key for key in VERIFIED if key not in shard.attrs]
    if missing:
        return [f"it has no {' or '.join(missing)} (written by another tool or an older virnucflow)"]
    problems = []
    ids = ids_mismatch(shard.file["sequence_ids"][()].tolist(), shard.attrs["ids_sha256"])
    if ids:
        problems.append(f"its sequence_ids do not match their ids_sha256 {ids}")
    # nothing added before: the rows come in file order, consecutive
    if not RowsVerifier(shard.attrs, len(shard)).intact(lambda at: shard.embeddings[int(at[0]) : int(at[-1]) + 1], block_rows):
        problems.append("its embeddings do not match their embeddings_sum64")
    return problems


@contextlib.contextmanager
def open_embeddings(path):
    """Open a finished embedding file; a missing, incomplete or corrupt file is an `InputError`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: embedding file not found; rerun the job that writes it")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(
            f"{path}: not a readable HDF5 file ({exc}); delete it and rerun the job that writes it"
        ) from None
    try:
        if not handle.attrs.get("complete", False):
            raise InputError(
                f"{path}: embedding file is incomplete (no 'complete' attribute); "
                "delete it and rerun the job that writes it"
            )
        if "sequence_ids" not in handle or "embeddings" not in handle:
            raise InputError(f"{path}: missing 'sequence_ids' or 'embeddings'; delete it and rerun its job")
        emb = handle["embeddings"]
        if emb.ndim != 2 or emb.shape[0] != handle["sequence_ids"].shape[0]:
            raise InputError(
                f"{path}: {handle['sequence_ids'].shape[0]} ids but embeddings of shape {emb.shape}; "
                "delete it and rerun its job"
            )
        yield EmbeddingFile(path, handle)
    finally:
        handle.close()
