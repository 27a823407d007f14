"""Rows of an embedding file's `embeddings`, read in any order into columns of a caller's float32 buffer:
the merge's reader (one shard's rows joined by id, in frames.tsv order).

A file written by `embeddings.EmbeddingWriter` is plain float32 in chunks of whole rows, so a row is
`dim * 4` bytes at a known file offset: those are read with preadv straight into the buffer (any row
order, GIL released, ~30x faster than h5py's point selections for shuffled rows). Any other layout
(compressed, foreign) or dtype (a float16 result) is read through h5py in blocks of consecutive rows.
"""

import os

import h5py
import numpy as np

from .errors import InputError

IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


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
