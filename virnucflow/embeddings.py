"""HDF5 embedding files: the shards written by the embed jobs and the merged result of a sample.

Layout: `sequence_ids` (N,) variable-length UTF-8 and `embeddings` (N, D) float32, chunked by rows,
plus attributes (model, dim, pooling, precision, package version ...). `complete = True` is written
last and the file is renamed into place, so a reader that finds `complete` has a whole file.
"""

import contextlib
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .atomic import atomic_path
from .errors import InputError

ID_DTYPE = h5py.string_dtype(encoding="utf-8")
ROWS_PER_CHUNK = 1024


class EmbeddingWriter:
    """Append rows to a new embedding file; it appears at `path` only after `close()` succeeds.

    Use as a context manager: on an exception nothing is left at `path`.
    """

    def __init__(self, path, dim, attrs=None):
        self.path = Path(path)
        self.dim = int(dim)
        self.rows = 0
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._file = h5py.File(tmp, "w")
        chunk_rows = max(1, min(ROWS_PER_CHUNK, (1 << 20) // max(4 * self.dim, 1)))
        self._ids = self._file.create_dataset(
            "sequence_ids", shape=(0,), maxshape=(None,), dtype=ID_DTYPE, chunks=(4096,)
        )
        self._emb = self._file.create_dataset(
            "embeddings",
            shape=(0, self.dim),
            maxshape=(None, self.dim) if self.dim else None,
            dtype="float32",
            chunks=(chunk_rows, self.dim) if self.dim else None,  # a width-0 file (no frame at all) is contiguous
        )
        self.skipped = []  # (id, reason) of sequences left out with on_error: skip
        self.attrs = self._file.attrs  # more attributes may be added before close()
        self._file.attrs["dim"] = self.dim
        self._file.attrs["package_version"] = __version__
        for key, value in (attrs or {}).items():
            self._file.attrs[key] = value

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
        ids = [sid for sid, _ in self.skipped]
        reasons = [why for _, why in self.skipped]
        self._file.create_dataset("skipped_ids", data=ids, dtype=ID_DTYPE, shape=(len(ids),))
        self._file.create_dataset("skipped_reasons", data=reasons, dtype=ID_DTYPE, shape=(len(ids),))
        self._file.attrs["rows"] = self.rows
        self._file.attrs["complete"] = True
        self._file.close()
        self._atomic.__exit__(None, None, None)

    def abort(self, exc_info=(None, None, None)):
        with contextlib.suppress(Exception):
            self._file.close()
        exc_type, exc, tb = exc_info
        with contextlib.suppress(BaseException):
            self._atomic.__exit__(exc_type or RuntimeError, exc or RuntimeError("aborted"), tb)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort((exc_type, exc, tb))
        return False


def write_embeddings(path, ids, embeddings, attrs=None):
    """Write a whole embedding file at once (atomic)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    dim = embeddings.shape[1] if embeddings.ndim == 2 else int((attrs or {}).get("dim", 0))
    with EmbeddingWriter(path, dim, attrs) as writer:
        writer.append(list(ids), embeddings.reshape(len(ids), dim))


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
