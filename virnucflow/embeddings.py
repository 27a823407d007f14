"""HDF5 embedding files: the shards written by the embed jobs and the merged result of a sample.

Layout: `sequence_ids` (N,) variable-length UTF-8 and `embeddings` (N, D) float32 in chunks of whole
rows, plus attributes (model, dim, pooling, precision, package version ...). `complete = True` is
written last and the file is renamed into place, so a reader that finds `complete` has a whole file.
`skipped_ids` / `skipped_reasons` list the sequences an embed job left out (on_error: skip).

Writer (`EmbeddingWriter`), reader (`open_embeddings`) and a fast row reader (`RowReader`) that
relies on the writer's layout live here together.
"""

import contextlib
import os
import sys
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .atomic import atomic_path
from .errors import InputError

ID_DTYPE = h5py.string_dtype(encoding="utf-8")
ROWS_PER_CHUNK = 1024  # HDF5 chunk of `embeddings`: whole rows, at most this many and about 1 MiB
IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


class EmbeddingWriter:
    """Append rows to a new embedding file; it appears at `path` only after `close()` succeeds.

    Use as a context manager: on an exception nothing is left at `path`.
    """

    def __init__(self, path, dim, attrs=None):
        self.path = Path(path)
        self.dim = int(dim)
        self.rows = 0
        self.skipped = []  # (id, reason) of sequences left out with on_error: skip
        with contextlib.ExitStack() as stack:  # a failure here closes and removes the temporary file
            tmp = stack.enter_context(atomic_path(self.path))
            self._file = stack.enter_context(h5py.File(tmp, "w"))
            rows_per_chunk = max(1, min(ROWS_PER_CHUNK, (1 << 20) // max(4 * self.dim, 1)))
            self._ids = self._file.create_dataset(
                "sequence_ids", shape=(0,), maxshape=(None,), dtype=ID_DTYPE, chunks=(4096,)
            )
            self._emb = self._file.create_dataset(
                "embeddings",
                shape=(0, self.dim),
                maxshape=(None, self.dim) if self.dim else None,
                dtype="float32",
                chunks=(rows_per_chunk, self.dim) if self.dim else None,  # width 0 (no frame at all): contiguous
            )
            self.attrs = self._file.attrs  # more attributes may be added before close()
            self.attrs["dim"] = self.dim
            self.attrs["package_version"] = __version__
            for key, value in (attrs or {}).items():
                self.attrs[key] = value
            self._stack = stack.pop_all()

    def append(self, ids, embeddings):
        """Append rows: `ids` (n,) strings and `embeddings` (n, dim)."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim or len(ids) != embeddings.shape[0]:
            raise ValueError(
                f"{self.path}: expected {len(ids)} rows of dim {self.dim}, got shape {embeddings.shape}"
            )
        n = len(ids)
        if n == 0:
            return
        start, end = self.rows, self.rows + n
        self._ids.resize((end,))
        self._emb.resize((end, self.dim))
        self._ids[start:end] = list(ids)
        self._emb[start:end] = embeddings
        self.rows = end

    def skip(self, sequence_id, reason):
        """Record a sequence that could not be embedded, so that validation reports it."""
        self.skipped.append((str(sequence_id), str(reason)))

    def close(self):
        """Write the skipped ids and `complete`, close the file and rename it into place."""
        try:
            ids = [sid for sid, _ in self.skipped]
            reasons = [why for _, why in self.skipped]
            self._file.create_dataset("skipped_ids", data=ids, dtype=ID_DTYPE, shape=(len(ids),))
            self._file.create_dataset("skipped_reasons", data=reasons, dtype=ID_DTYPE, shape=(len(ids),))
            self.attrs["rows"] = self.rows
            self.attrs["complete"] = True
        except BaseException:
            self.abort(sys.exc_info())
            raise
        self._stack.close()

    def abort(self, exc_info=(None, None, None)):
        """Close and remove the temporary file; nothing appears at `path`."""
        exc_type, exc, tb = exc_info
        with contextlib.suppress(BaseException):
            self._stack.__exit__(exc_type or RuntimeError, exc or RuntimeError("aborted"), tb)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort((exc_type, exc, tb))
        return False


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

    def id_bytes(self):
        """All ids as a fixed-width bytes array (compact, sortable)."""
        raw = self.file["sequence_ids"][()]
        return raw.astype("S") if len(raw) else np.empty(0, dtype="S1")


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
    Any other layout (compressed, foreign) goes through h5py. Use as a context manager.
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
