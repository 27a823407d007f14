"""Chunks and six-frame translation, vectorised over many chunks at once.

Two modes. `virnucpro` reproduces the original byte for byte, quirks included: the total overlap
is divided by n (not n - 1), so the last chunk is often short; a codon with an ambiguity code is
dropped from the protein; the nucleotide kept for a frame is one base longer than its codons.
`fixed` repairs them: full-length, evenly overlapping chunks; ambiguous codons become X; the
nucleotide is exactly the codons.
"""

import math
from dataclasses import dataclass

import numpy as np

COMPAT_MODES = ("virnucpro", "fixed")

# Standard genetic code, codons indexed 16*a + 4*b + c with A=0, C=1, G=2, T=3.
_AMINO = "KNKNTTTTRSRSIIMIQHQHPPPPRRRRLLLLEDEDAAAAGGGGVVVV*Y*YSSSS*CWCLFLF"
CODON_TABLE = np.frombuffer(_AMINO.encode(), dtype=np.uint8)
STOP = ord("*")
UNKNOWN = 4  # any byte that is not A, C, G or T (after upper-casing)

BASE_CODE = np.full(256, UNKNOWN, dtype=np.uint8)
for _code, _base in enumerate(b"ACGT"):
    BASE_CODE[_base] = _code
# Complement of ACGT only; every other code stays as it is, as in the original.
COMPLEMENT = np.arange(256, dtype=np.uint8)
for _a, _b in [(b"A", b"T"), (b"C", b"G"), (b"G", b"C"), (b"T", b"A")]:
    COMPLEMENT[_a[0]] = _b[0]

UPPER = np.arange(256, dtype=np.uint8)
UPPER[ord("a") : ord("z") + 1] -= 32

FRAME_NAMES = ("F1", "F2", "F3", "R1", "R2", "R3")


def chunk_starts(length, chunk_length, compat="virnucpro"):
    """Start positions of the chunks of a read of `length` bp (each chunk is seq[start:start+cs])."""
    if length <= 0:
        raise ValueError("a read of length 0 has no chunks")
    n = math.ceil(length / chunk_length)
    if compat == "fixed":
        if n == 1:
            return [0]
        # n full chunks, the first at 0 and the last ending at the read's end, spread evenly.
        return [(i * (length - chunk_length)) // (n - 1) for i in range(n)]
    # VirNucPro: the overlap R is split over n steps, so only n-1 of them are used (the quirk).
    overlap = n * chunk_length - length
    lower = int(overlap / n)
    need = overlap - (n - 1) * lower
    steps = [lower + 1] * need + [lower] * (n - 1 - need) + [0]
    starts, shift = [], 0
    for i in range(n):
        starts.append(i * chunk_length - shift)
        shift += steps[i] if i < len(steps) else 0
    return starts


def chunk_layout(lengths, chunk_length, compat="virnucpro"):
    """`chunk_starts` for many reads at once: (read index, start) of every chunk, reads in order.

    VirNucPro's steps are [lower + 1] * need + [lower] * (n - 1 - need) + [0], so the shift before
    chunk i is (lower + 1) * min(i, need) + lower * max(0, i - need).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and lengths.min() <= 0:
        raise ValueError("a read of length 0 has no chunks")
    n = -(-lengths // chunk_length)
    read = np.repeat(np.arange(len(lengths)), n)
    i = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)  # chunk number within its read, from 0
    n_r, length_r = n[read], lengths[read]
    if compat == "fixed":
        spread = np.maximum(n_r - 1, 1)
        return read, np.where(n_r == 1, 0, (i * (length_r - chunk_length)) // spread)
    overlap = n_r * chunk_length - length_r
    lower = overlap // n_r  # int(R / n) of the original: R and n are positive
    need = overlap - (n_r - 1) * lower
    shift = (lower + 1) * np.minimum(i, need) + lower * np.maximum(0, i - need)
    return read, i * chunk_length - shift


def chunk_read(read_id, sequence, chunk_length, compat="virnucpro"):
    """VirNucPro's chunk records of one read: [(chunk_id, start, chunk_sequence)]."""
    return [
        (f"{read_id}_chunk_{i + 1}", start, sequence[start : start + chunk_length])
        for i, start in enumerate(chunk_starts(len(sequence), chunk_length, compat))
    ]


@dataclass
class Frame:
    """A surviving frame of a chunk."""

    chunk_index: int  # index into the batch of chunks
    frame: int  # 0..5 for F1, F2, F3, R1, R2, R3
    protein: bytes
    nucleotide: bytes
    start: int  # half-open coordinates of `nucleotide` on the (forward) chunk
    end: int

    @property
    def name(self):
        return FRAME_NAMES[self.frame]

    @property
    def strand(self):
        return "+" if self.frame < 3 else "-"


PAD = ord("#")  # fills rows up to the batch's longest chunk; codons touching it are never translated
BASE_CODE[PAD] = 5


def _table(ambiguous):
    """Amino acid for every codon of base codes 0..5 (index 36a + 6b + c): `ambiguous` where a code
    is 4 (not ACGT), 0 (not translated) where a code is 5 (padding)."""
    table = np.zeros(216, dtype=np.uint8)
    for a in range(6):
        for b in range(6):
            for c in range(6):
                if 5 in (a, b, c):
                    continue
                table[36 * a + 6 * b + c] = (
                    ambiguous if 4 in (a, b, c) else CODON_TABLE[16 * a + 4 * b + c]
                )
    return table


TABLE_VIRNUCPRO = _table(0)  # 0 also marks a codon the original drops (not in its table)
TABLE_FIXED = _table(ord("X"))
_COMPLEMENT_BYTES = bytes(COMPLEMENT)
_PADDING = bytes([PAD]) * 65536


def translate_chunks(chunks, compat="virnucpro"):
    """Six-frame translation of a batch of chunks (bytes, any case); returns the surviving frames
    in output order: chunks in order, then F1, F2, F3, R1, R2, R3.

    The batch is one (chunks, width) matrix, padded on the right, once per strand: every codon of
    every frame of every chunk is then a strided view, with no per-codon or per-chunk numpy work.
    """
    if not chunks:
        return []
    fixed = compat == "fixed"
    table = TABLE_FIXED if fixed else TABLE_VIRNUCPRO
    n = len(chunks)
    lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=n)
    width = max(int(lengths.max()), 3)
    upper = [c.upper() for c in chunks]
    strands = (
        b"".join([c + _PADDING[: width - len(c)] for c in upper]),
        b"".join([c.translate(_COMPLEMENT_BYTES)[::-1] + _PADDING[: width - len(c)] for c in upper]),
    )
    kept = np.zeros((n, 6), dtype=bool)
    blobs = [None] * 6
    for strand, text in enumerate(strands):
        codes = BASE_CODE[np.frombuffer(text, dtype=np.uint8).reshape(n, width)]
        # The amino acid of the codon starting at every column; frame k is then every third column from k.
        index = 36 * codes[:, :-2].astype(np.uint8) + 6 * codes[:, 1:-1] + codes[:, 2:]
        every = table[index]
        for shift in range(3):
            acids = every[:, shift::3][:, : (width - shift) // 3]
            residues = np.count_nonzero(acids, axis=1)
            frame = 3 * strand + shift
            kept[:, frame] = (residues > 0) & ~(acids == STOP).any(axis=1)
            rows = np.flatnonzero(kept[:, frame])
            picked = acids[rows]
            blobs[frame] = (picked[picked != 0].tobytes(), dict(zip(rows.tolist(), np.cumsum(residues[rows]).tolist())),
                            residues)

    frames = []
    extra = 0 if fixed else 1  # the original keeps one base more than the codons
    for chunk_index, frame in zip(*np.nonzero(kept)):
        chunk_index, frame = int(chunk_index), int(frame)
        blob, ends, residues = blobs[frame]
        p = int(residues[chunk_index])
        end = ends[chunk_index]
        shift, length = frame % 3, int(lengths[chunk_index])
        span = min(shift + 3 * p + extra, length) - shift
        row = chunk_index * width
        nucleotide = strands[frame // 3][row + shift : row + shift + span]
        if frame < 3:
            start, stop = shift, shift + span
        else:
            start, stop = length - shift - span, length - shift
        frames.append(Frame(chunk_index, frame, blob[end - p : end], nucleotide, start, stop))
    return frames
