"""The checksums of embedding rows and their ids, and the one check of rows against them.

Written by `embeddings.EmbeddingWriter` into every embedding file (shards and merged results) from the rows
as stored (after the conversion to float16, where the file holds float16), so that damage after writing is
found by whoever reads the file; a sidecar batch (virnucflow.sidecar) carries the CRC-32 of its rows:
- `ids_sha256`: SHA-256 of the ids in row order, each followed by "\\n" (UTF-8).
- `embeddings_crc32`: CRC-32 (zlib) of the little-endian bytes of `embeddings` as stored (float32, or
  float16), in row order (`zlib.crc32(f["embeddings"][:].tobytes())`); the standard check of a copy.
- `embeddings_sum64`: two unsigned 64-bit sums (`RowsChecksum`), position-weighted, that a reader
  verifies while it reads rows in any order at memory speed (a CRC costs a second pass of ~1 s per GB).
  Each row's stored bytes are read as little-endian uint64 words (a row whose bytes are not a multiple
  of 8 ends in a word padded with zero bytes); r_i = the sum of row i's words; the attribute is the
  text "<sum_i r_i> <sum_i (i + 1) * r_i>", both mod 2**64 as 16 hexadecimal digits. Any change within
  one 8-byte word (a flipped bit or byte) changes the first sum; rows moved or swapped change the second.

The sum algebra, and what it assumes. Both sums are sums over rows, so rows may be added in any order and
in any parts (`RowsVerifier`: the merge checks the rows it reads anyway, in its own order). A row joined
side by side from two parts [a | b] has r = r(a) + r(b) only when the joined row stores the parts' bytes
unchanged (the same dtype: no rounding to float16) and a's bytes fill whole 8-byte words: otherwise a's
last word, padded with zeros on its own, shares its bytes with b's first values in the joined row.
`sums_add_up` is the one check of both; where it fails, the joined rows are summed again.
"""

import hashlib
import zlib

import numpy as np

WORD = 8  # bytes of one uint64 word of `embeddings_sum64`
VERIFIED = ("ids_sha256", "embeddings_sum64")  # what a reader verifies (embeddings_crc32: for copies)


def id_lines(ids):
    """The bytes `ids_sha256` hashes: each id (str or UTF-8 bytes, all of one kind) followed by a newline."""
    ids = list(ids)
    if not ids:
        return b""
    if isinstance(ids[0], str):
        return ("\n".join(ids) + "\n").encode()
    return b"\n".join(ids) + b"\n"


def ids_mismatch(ids, recorded):
    """None when `ids` (in row order) hash to the `ids_sha256` `recorded` (or none was), else the two hashes
    shortened, "(actual.. != recorded..)", for the caller's message."""
    if recorded is None:
        return None
    actual = hashlib.sha256(id_lines(ids)).hexdigest()
    return None if actual == str(recorded) else f"({actual[:12]}.. != {str(recorded)[:12]}..)"


def crc32(rows, value=0):
    """CRC-32 (zlib) of `rows` (bytes, or an array hashed as little-endian bytes in row order), continuing
    `value`: `embeddings_crc32` fed block by block, or a sidecar batch's `crc32`."""
    if isinstance(rows, np.ndarray) and (not rows.flags.c_contiguous or rows.dtype.byteorder == ">"):
        # only a strided or big-endian block is copied; the others are hashed where they are
        rows = np.ascontiguousarray(rows, dtype=rows.dtype.newbyteorder("<"))
    return zlib.crc32(rows, value)


def row_sums64(block):
    """Sum mod 2**64 of each row's bytes read as little-endian uint64 words (rows whose bytes are not a
    multiple of 8 padded with zero bytes): the r_i of `embeddings_sum64`. `block`: (n, d) float32 or
    float16 whose rows are contiguous (any row stride)."""
    block = np.asarray(block)
    if block.shape[0] == 0 or block.shape[1] == 0:
        return np.zeros(block.shape[0], dtype=np.uint64)
    size = block.dtype.itemsize  # 4 (float32) or 2 (float16)
    lanes = WORD // size  # values per uint64 word
    words = block.view(f"<u{size}")
    if words.shape[1] % lanes == 0:
        try:
            return words.view("<u8").sum(axis=1)
        except ValueError:  # rows not 8-byte aligned: the sums by lane below
            pass
    # word k of a row = sum over lanes j of its value lanes*k + j shifted by 8*size*j bits: the sum of each
    # lane's values, shifted (mod 2**64 either way).
    sums = words[:, 0::lanes].sum(axis=1, dtype=np.uint64)
    for lane in range(1, lanes):
        sums += words[:, lane::lanes].sum(axis=1, dtype=np.uint64) << np.uint64(8 * size * lane)
    return sums


def sums_add_up(left_columns, parts_dtype, stored_dtype):
    """Whether the `row_sums64` of rows joined from a left part of `left_columns` values and a right part, both
    `parts_dtype`, stored as `stored_dtype`, are the sums of the parts' row sums (the module's sum algebra)."""
    parts, stored = np.dtype(parts_dtype), np.dtype(stored_dtype)
    return parts == stored and int(left_columns) * parts.itemsize % WORD == 0


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


class Checksums:
    """The three checksums of a file being written, fed its ids and rows (as stored) in row order."""

    def __init__(self):
        self._ids, self._crc32, self._sum64 = hashlib.sha256(), 0, RowsChecksum()

    def add(self, ids, rows, start, row_sums=None):
        """Ids and rows (n, d) that are rows [start, start + n) of the file; `row_sums`: their `row_sums64`
        when known (only valid for the bytes stored: see `sums_add_up`)."""
        self._ids.update(id_lines(ids))
        self._crc32 = crc32(rows, self._crc32)
        self._sum64.add(np.arange(start, start + len(rows)), rows, row_sums)

    def values(self):
        """{ids_sha256, embeddings_crc32, embeddings_sum64} of what was added, as the file's attributes."""
        return {"ids_sha256": self._ids.hexdigest(), "embeddings_crc32": self._crc32,
                "embeddings_sum64": self._sum64.value()}


class RowsVerifier:
    """The rows of one file against the `embeddings_sum64` among its `attrs`, `rows` of them: `add` the rows
    a reader reads anyway (any order, each once), then `intact` reads the others and compares."""

    def __init__(self, attrs, rows):
        recorded = attrs.get("embeddings_sum64")
        self.recorded = None if recorded is None else str(recorded)
        self.checksum = RowsChecksum()
        self.seen = np.zeros(rows, dtype=bool)

    def add(self, positions, block, sums=None):
        """Rows `block` (as stored) at `positions` of the file; returns their `row_sums64`."""
        sums = row_sums64(block) if sums is None else sums
        if self.recorded is not None:
            self.checksum.add(positions, sums=sums)
            self.seen[positions] = True
        return sums

    def intact(self, read, block_rows):
        """Whether all rows match (None: nothing recorded to check against): the rows not added yet are read
        `block_rows` at a time, in file order, by `read(positions)`, which returns them as stored."""
        if self.recorded is None:
            return None
        rest = np.flatnonzero(~self.seen)
        for start in range(0, len(rest), max(1, int(block_rows))):
            part = rest[start : start + block_rows]
            self.add(part, read(part))
        return self.checksum.value() == self.recorded
