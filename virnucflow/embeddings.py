"""HDF5 embedding files: the shards written by the embed jobs and the merged result of a sample.

Layout: `sequence_ids` (N,) variable-length UTF-8 and `embeddings` (N, D) in chunks of whole rows,
plus attributes (model, dim, pooling, precision, package version ...). `embeddings` is float32
(little-endian), except in a merged result written with `merge.dtype: float16`, where it is IEEE
half precision (`<f2`, half the bytes; the merge records `dtype` among the attributes); shards are
always float32. Readers that compute take `EmbeddingFile.read_rows` (float32 whatever is stored).
`complete = True` is written last and the file is renamed into place, so a reader that finds
`complete` has a whole file. `skipped_ids` / `skipped_reasons` list the sequences an embed job left
out (on_error: skip).

Checksums, written by `EmbeddingWriter` into every file (shards and merged results) from the rows as
stored (after the conversion to float16, where the file holds float16), so that damage after writing
is found by whoever reads the file:
- `ids_sha256`: SHA-256 of the ids in row order, each followed by "\\n" (UTF-8).
- `embeddings_crc32`: CRC-32 (zlib) of the little-endian bytes of `embeddings` as stored (float32, or
  float16), in row order (`zlib.crc32(f["embeddings"][:].tobytes())`); the standard check of a copy.
- `embeddings_sum64`: two unsigned 64-bit sums (`RowsChecksum`), position-weighted, that the merge
  verifies while it reads rows in any order at memory speed (a CRC costs a second pass of ~1 s per GB).
  Each row's stored bytes are read as little-endian uint64 words (a row whose bytes are not a multiple
  of 8 ends in a word padded with zero bytes); r_i = the sum of row i's words; the attribute is the
  text "<sum_i r_i> <sum_i (i + 1) * r_i>", both mod 2**64 as 16 hexadecimal digits. Any change within
  one 8-byte word (a flipped bit or byte) changes the first sum; rows moved or swapped change the second.

Writer (`EmbeddingWriter`), reader (`open_embeddings`) and a fast row reader (`RowReader`) that
relies on the writer's layout live here together.
"""

import concurrent.futures
import contextlib
import errno
import functools
import hashlib
import os
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .atomic import DiskFull, atomic_path, disk_full_errno, reporting_disk_full
from .errors import InputError

ID_DTYPE = h5py.string_dtype(encoding="utf-8")
ROWS_PER_CHUNK = 1024  # HDF5 chunk of `embeddings`: whole rows, at most this many and about 1 MiB
IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)
ID_CHUNK = 4096  # ids per chunk of `sequence_ids` (16-byte references to the text)
ID_BYTES = 128  # what an id's text may cost in the file (heap object and its text), generously
_FALLOC_FL_KEEP_SIZE = 1
THREADED_CHECKSUM_BYTES = 1 << 20  # blocks from this size are checksummed beside the HDF5 write
DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}  # how `embeddings` may be stored
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504: a larger value cannot be stored as float16
FLOAT16_ROUNDS_TO_INF = 65520.0  # halfway from 65504 to 2**16: from here on, float16 rounds to infinity
UNCLOSED = []  # files HDF5 could not close after a full disk (a job then ends without finalising HDF5)


def _reserve(h5file, nbytes):
    """Reserve `nbytes` on disk for an HDF5 file being written (Linux fallocate, keeping the file's size):
    a disk too full for the whole file fails here, before HDF5 has anything it cannot write later. A
    file system without fallocate (NFSv3 ...) is written without a reservation."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fallocate = libc.fallocate
        fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
        fd = h5file.id.get_vfd_handle()
    except (AttributeError, OSError, ValueError, RuntimeError):
        return
    if fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, int(nbytes)) != 0:
        number = ctypes.get_errno()
        if number in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(number, os.strerror(number))


def _release_reservation(path):
    """Give back the reserved blocks HDF5 did not use (those past the end of the file)."""
    with contextlib.suppress(OSError):
        os.truncate(path, os.path.getsize(path))


def _write_to_memory(h5file):
    """After a write failed for lack of space, point the file's descriptor at an anonymous memory file: the
    writes HDF5 still does when it closes the file (which is then deleted) succeed instead of failing again,
    which leaves HDF5 in a state that crashes the process at exit."""
    with contextlib.suppress(AttributeError, OSError, ValueError, RuntimeError):
        fd = h5file.id.get_vfd_handle()
        spare = os.memfd_create("virnucflow-discarded")
        os.dup2(spare, fd)
        os.close(spare)


def id_lines(ids):
    """The bytes `ids_sha256` hashes: each id (str or UTF-8 bytes, all of one kind) followed by a newline."""
    ids = list(ids)
    if not ids:
        return b""
    if isinstance(ids[0], str):
        return ("\n".join(ids) + "\n").encode()
    return b"\n".join(ids) + b"\n"


def row_sums64(block):
    """Sum mod 2**64 of each row's bytes read as little-endian uint64 words (rows whose bytes are not a
    multiple of 8 padded with zero bytes): the r_i of `embeddings_sum64`. `block`: (n, d) float32 or
    float16 whose rows are contiguous (any row stride)."""
    block = np.asarray(block)
    if block.shape[0] == 0 or block.shape[1] == 0:
        return np.zeros(block.shape[0], dtype=np.uint64)
    size = block.dtype.itemsize  # 4 (float32) or 2 (float16)
    lanes = 8 // size  # values per uint64 word
    words = block.view(f"<u{size}")
    if words.shape[1] % lanes == 0:
        with contextlib.suppress(ValueError):  # rows not 8-byte aligned: the sums by lane below
            return words.view("<u8").sum(axis=1)
    # word k of a row = sum over lanes j of its value lanes*k + j shifted by 8*size*j bits: the sum of each
    # lane's values, shifted (mod 2**64 either way).
    sums = words[:, 0::lanes].sum(axis=1, dtype=np.uint64)
    for lane in range(1, lanes):
        sums += words[:, lane::lanes].sum(axis=1, dtype=np.uint64) << np.uint64(8 * size * lane)
    return sums


class RowsChecksum:
    """`embeddings_sum64` of a file, fed rows in any order with their row numbers (each row once)."""

    def __init__(self):
        self.sums = np.zeros(2, dtype=np.uint64)

    def add(self, positions, block=None, sums=None):
        """Rows `block` (n, d) that are rows `positions` (n,) of the file, or their `row_sums64` if known;
        returns those row sums."""
        sums = row_sums64(block) if sums is None else sums
        weights = np.asarray(positions, dtype=np.uint64) + np.uint64(1)
        self.sums += np.array([sums.sum(dtype=np.uint64), (sums * weights).sum(dtype=np.uint64)], dtype=np.uint64)
        return sums

    def value(self):
        """The attribute's text: both sums as 16 hexadecimal digits."""
        return " ".join(f"{int(v):016x}" for v in self.sums)


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
        self._ids_sha256, self._crc32, self._sum64 = hashlib.sha256(), 0, RowsChecksum()
        self._row_chunk = max(1, min(ROWS_PER_CHUNK, (1 << 20) // max(self.dtype.itemsize * self.dim, 1)))
        with reporting_disk_full(self.path, self._needed), contextlib.ExitStack() as stack:
            # a failure here closes and removes the temporary file
            tmp = stack.enter_context(atomic_path(self.path))
            stack.callback(_release_reservation, tmp)  # after HDF5 closed the file, before the rename
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
                    _reserve(self._file, self._needed())
            except BaseException as error:
                if disk_full_errno(error):
                    _write_to_memory(self._file)
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
        the caller has them (the merge adds up the shards' while it checks them; not used for a file stored
        as float16, whose sums are of the rounded rows)."""
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
        checksums = (_checksum_thread().submit(self._add_checksums, ids, embeddings, start, end, row_sums)
                     if embeddings.nbytes >= THREADED_CHECKSUM_BYTES else None)
        try:
            with reporting_disk_full(self.path, lambda: self._needed(n)):
                # Reserved before HDF5 holds anything it may fail to write (a failure at close is not recoverable).
                _reserve(self._file, self._needed(n))
                self._ids.resize((end,))
                self._emb.resize((end, self.dim))
                self._ids[start:end] = list(ids)
                self._emb[start:end] = embeddings
        finally:
            if checksums is not None:
                checksums.result()
        if checksums is None:
            self._add_checksums(ids, embeddings, start, end, row_sums)
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

    def _add_checksums(self, ids, embeddings, start, end, row_sums):
        self._ids_sha256.update(id_lines(ids))
        if not embeddings.flags.c_contiguous or embeddings.dtype.byteorder == ">":
            # only a strided or big-endian block is copied; the others are hashed where they are
            embeddings = np.ascontiguousarray(embeddings, dtype=embeddings.dtype.newbyteorder("<"))
        self._crc32 = zlib.crc32(embeddings, self._crc32)
        self._sum64.add(np.arange(start, end), embeddings, row_sums)

    def skip(self, sequence_id, reason):
        """Record a sequence that could not be embedded, so that validation reports it."""
        self.skipped.append((str(sequence_id), str(reason)))

    def add_ids(self, name, ids):
        """A dataset of ids besides the rows (e.g. `oom_split_ids`), written at close."""
        self._extra[name] = [str(sid) for sid in ids]

    def checksums(self):
        """{ids_sha256, embeddings_crc32, embeddings_sum64} of the rows appended so far."""
        return {"ids_sha256": self._ids_sha256.hexdigest(), "embeddings_crc32": self._crc32,
                "embeddings_sum64": self._sum64.value()}

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
            _write_to_memory(self._file)
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


CHECKSUMS = ("ids_sha256", "embeddings_sum64")  # what a reader verifies (embeddings_crc32: for copies)


def verify_checksums(shard, block_rows=4096):
    """Read a whole file and check its ids and rows against the checksums written with them; returns the
    problems found (empty: intact). A file without checksums (another tool's, an older virnucflow's)
    is a problem too: it cannot be vouched for."""
    missing = [key for key in CHECKSUMS if key not in shard.attrs]
    if missing:
        return [f"it has no {' or '.join(missing)} (written by another tool or an older virnucflow)"]
    problems = []
    ids_sha256 = hashlib.sha256(id_lines(shard.file["sequence_ids"][()].tolist())).hexdigest()
    if ids_sha256 != shard.attrs["ids_sha256"]:
        problems.append(f"its sequence_ids do not match their ids_sha256 ({ids_sha256[:12]}.. != "
                        f"{str(shard.attrs['ids_sha256'])[:12]}..)")
    checksum = RowsChecksum()
    for start in range(0, len(shard), block_rows):
        block = shard.embeddings[start : start + block_rows]
        checksum.add(np.arange(start, start + len(block)), block)
    if checksum.value() != shard.attrs["embeddings_sum64"]:
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


class RowReader:
    """Copies rows of one file's `embeddings`, in any order, into columns of a caller's buffer.

    Files written by `EmbeddingWriter` are plain float32 in chunks of whole rows, so a row is
    `dim * 4` bytes at a known file offset: those are read with preadv straight into the buffer
    (any row order, GIL released, ~30x faster than h5py's point selections for shuffled rows).
    Any other layout (compressed, foreign) or dtype (a float16 result) goes through h5py, and numpy
    widens its values into the float32 buffer. Use as a context manager.
    """

    def __init__(self, embedding_file):
        self.path, self.dataset = embedding_file.path, embedding_file.embeddings
        self.row_bytes = 4 * embedding_file.dim
        self.fd, self.chunk_offsets, self.chunk_rows = None, None, None
        layout = self._layout()
        if layout is not None:
            self.chunk_rows, self.chunk_offsets = layout
            self.fd = os.open(self.path, os.O_RDONLY)
            if hasattr(os, "posix_fadvise"):  # the kernel reads the file ahead, so rows in any order come from memory
                os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_WILLNEED)
            if not self._layout_reads_like_h5py():
                self.close()

    def _layout(self):
        """(rows per chunk, file offset of each chunk) of a plain float32 dataset in whole-row chunks, or None."""
        ds = self.dataset
        n = ds.shape[0]
        if n == 0 or ds.dtype != np.dtype("<f4") or self.row_bytes == 0:
            return None
        plist = ds.id.get_create_plist()
        if plist.get_nfilters() or plist.get_external_count():
            return None
        if plist.get_layout() == h5py.h5d.CONTIGUOUS:
            offset = ds.id.get_offset()
            return None if offset is None else (n, np.array([offset], dtype=np.int64))
        if plist.get_layout() != h5py.h5d.CHUNKED or ds.chunks[1] != ds.shape[1]:
            return None
        rows = ds.chunks[0]
        offsets = np.full(-(-n // rows), -1, dtype=np.int64)
        whole = rows * self.row_bytes

        def visit(info):
            if info.size == whole and info.filter_mask == 0:
                offsets[info.chunk_offset[0] // rows] = info.byte_offset

        try:
            ds.id.chunk_iter(visit)
        except (AttributeError, RuntimeError, NotImplementedError):  # older HDF5: one call per chunk
            for i in range(ds.id.get_num_chunks()):
                visit(ds.id.get_chunk_info(i))
        return None if (offsets < 0).any() else (rows, offsets)

    def _layout_reads_like_h5py(self):
        """The offsets are only trusted when they give the same bytes as h5py (first and last row)."""
        n = self.dataset.shape[0]
        rows = [0, n - 1] if n > 1 else [0]
        probe = np.empty((len(rows), self.row_bytes // 4), dtype=np.float32)
        try:
            self._preadv(np.array(rows), probe, slice(None))
        except (InputError, OSError):
            return False
        return np.array_equal(probe.view(np.uint32), self.dataset[rows].view(np.uint32))

    def _preadv(self, rows, out, columns):
        offsets = self.chunk_offsets[rows // self.chunk_rows] + (rows % self.chunk_rows) * self.row_bytes
        order = np.argsort(offsets, kind="stable")
        offsets = offsets[order]
        order = order.tolist()
        # Runs of rows that lie end to end in the file: one preadv each, scattered into the buffer.
        breaks = [0, *(np.flatnonzero(np.diff(offsets) != self.row_bytes) + 1).tolist(), len(order)]
        for start, stop in zip(breaks[:-1], breaks[1:]):
            for part in range(start, stop, IOV_MAX):
                targets = [out[row, columns] for row in order[part : min(stop, part + IOV_MAX)]]
                got = os.preadv(self.fd, targets, int(offsets[part]))
                if got != len(targets) * self.row_bytes:
                    raise InputError(f"{self.path}: file ends inside its embeddings (truncated); delete it and "
                                     "rerun its embed job")

    def read(self, rows, out, columns):
        """out[i, columns] = embeddings[rows[i]] for every i."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return
        if self.fd is not None:
            return self._preadv(rows, out, columns)
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        breaks = [0, *(np.flatnonzero(np.diff(ordered) != 1) + 1).tolist(), len(rows)]
        for start, stop in zip(breaks[:-1], breaks[1:]):
            for part in range(start, stop, 1024):  # bounded temporary per h5py read
                end = min(stop, part + 1024)
                out[order[part:end], columns] = self.dataset[int(ordered[part]) : int(ordered[end - 1]) + 1]

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
