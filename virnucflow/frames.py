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


def _table(ambiguous):
    """Amino acid for every codon of base codes 0..4 (index 25a + 5b + c); `ambiguous` where a code is 4."""
    table = np.full(125, ambiguous, dtype=np.uint8)
    for a in range(4):
        for b in range(4):
            for c in range(4):
                table[25 * a + 5 * b + c] = CODON_TABLE[16 * a + 4 * b + c]
    return table


TABLE_VIRNUCPRO = _table(0)  # 0 marks a codon the original drops
TABLE_FIXED = _table(ord("X"))


def _translate_group(matrix, table):
    """Translate the three frames of equal-length rows of base codes: [(acids (rows, codons)), ...]."""
    rows, length = matrix.shape
    out = []
    for shift in range(3):
        codons = (length - shift) // 3
        triplets = matrix[:, shift : shift + 3 * codons].reshape(rows, codons, 3)
        index = 25 * triplets[:, :, 0].astype(np.uint8) + 5 * triplets[:, :, 1] + triplets[:, :, 2]
        out.append(table[index])
    return out


def translate_chunks(chunks, compat="virnucpro"):
    """Six-frame translation of a batch of chunks (bytes, any case); returns the surviving frames
    in output order: chunks in order, then F1, F2, F3, R1, R2, R3.

    Chunks of equal length are translated together as one (rows, length) matrix, so every codon
    of every frame is one strided view: no per-codon Python and no index arrays.
    """
    fixed = compat == "fixed"
    table = TABLE_FIXED if fixed else TABLE_VIRNUCPRO
    by_length = {}
    for index, chunk in enumerate(chunks):
        by_length.setdefault(len(chunk), []).append(index)
    found = []  # (chunk_index, frame, protein, nucleotide, start, end)
    for length, members in by_length.items():
        if length < 3:
            continue
        raw = UPPER[np.frombuffer(b"".join([chunks[i] for i in members]), dtype=np.uint8)].reshape(-1, length)
        reverse = COMPLEMENT[raw[:, ::-1]]
        for strand, bases in ((0, raw), (1, reverse)):
            codes = BASE_CODE[bases]
            for shift, acids in enumerate(_translate_group(codes, table)):
                dropped = acids == 0
                residues = acids.shape[1] - dropped.sum(axis=1)
                kept = ~(acids == STOP).any(axis=1) & (residues > 0)
                for row in np.flatnonzero(kept):
                    p = int(residues[row])
                    protein = acids[row].tobytes() if p == acids.shape[1] else acids[row][~dropped[row]].tobytes()
                    span = min(shift + 3 * p + (0 if fixed else 1), length) - shift
                    nucleotide = bases[row, shift : shift + span].tobytes()
                    if strand == 0:
                        start, end = shift, shift + span
                    else:
                        start, end = length - shift - span, length - shift
                    found.append((members[row], 3 * strand + shift, protein, nucleotide, start, end))
    found.sort(key=lambda f: (f[0], f[1]))
    return [Frame(*f) for f in found]
