"""Chunks and six-frame translation, vectorised over a batch of chunks.

Two modes. `virnucpro` reproduces the original byte for byte, quirks included: the total overlap
is divided by n (not n - 1), so the last chunk is often short; a codon with an ambiguity code is
dropped from the protein; the nucleotide kept for a frame is one base longer than its codons.
`fixed` repairs them: full-length, evenly overlapping chunks; ambiguous codons become X; the
nucleotide is exactly the codons.

How a batch is translated (`find_frames`), all in numpy over the batch's concatenated reads: every
position gets a codon index 16*c0 + 4*c1 + c2 from 2-bit base codes (AMBIGUOUS where a base is not
ACGT) and a stop bit per strand; the stop bits of each chunk's three codon phases are OR-reduced
with `np.bitwise_or.reduceat`. Reverse frame k of a chunk of length L reads the phase (L - k) mod 3
backwards, so one pass over the forward strand decides all six frames of every chunk. Only the
frames without a stop, usually a minority, are spelled out: each is every third codon index (a
bytes slice) put through a 256-byte codon table with one C-level `bytes.translate`.
"""

import numpy as np

COMPAT_MODES = ("virnucpro", "fixed")
FRAME_NAMES = ("F1", "F2", "F3", "R1", "R2", "R3")

# Standard genetic code (NCBI table 1), written in TCAG order.
_TCAG_AMINO = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
GENETIC_CODE = {a + b + c: _TCAG_AMINO[16 * i + 4 * j + k]
                for i, a in enumerate("TCAG") for j, b in enumerate("TCAG") for k, c in enumerate("TCAG")}

# Base codes straight from the byte, either case: (byte >> 1) & 3 is A0 C1 T2 G3. Other letters get a
# code too; codons that hold one are marked AMBIGUOUS afterwards.
CODE_ORDER = "ACTG"
AMBIGUOUS = 0xFF  # codon index of a codon with a non-ACGT base, or running past the sequence's end
FORWARD_STOP, REVERSE_STOP = 1, 2
_COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}


def _codon(index):
    return "".join(CODE_ORDER[(index >> shift) & 3] for shift in (4, 2, 0))


def _reverse_complement(codon):
    return "".join(_COMPLEMENT[base] for base in reversed(codon))


def _tables():
    amino_forward, amino_reverse = bytearray(b"X" * 256), bytearray(b"X" * 256)
    for index in range(64):
        codon = _codon(index)
        amino_forward[index] = ord(GENETIC_CODE[codon])
        amino_reverse[index] = ord(GENETIC_CODE[_reverse_complement(codon)])
    return bytes(amino_forward), bytes(amino_reverse)


# Amino acid of a codon index on the forward strand / of the codon read on the reverse strand at the
# same place; AMBIGUOUS maps to X (deleted instead in virnucpro mode).
AMINO_FORWARD, AMINO_REVERSE = _tables()
# The codon indices that are stops on each strand (TAA TAG TGA, and TTA CTA TCA read backwards).
STOPS_FORWARD = [i for i in range(64) if AMINO_FORWARD[i] == ord("*")]
STOPS_REVERSE = [i for i in range(64) if AMINO_REVERSE[i] == ord("*")]
_NOT_ACGT = np.ones(256, dtype=bool)
_NOT_ACGT[list(b"ACGTacgt")] = False
# Reverse strand, as the original: upper-case, then complement ACGT only (N stays N, R stays R).
_REVERSE = bytes.maketrans(b"ACGTacgtbdefhijklmnopqrsuvwxyz", b"TGCATGCABDEFHIJKLMNOPQRSUVWXYZ")


def chunk_layout(lengths, chunk_length, compat):
    """(read index, start) of every chunk of reads of `lengths` bp, reads in order (each chunk is
    seq[start:start + chunk_length]).

    VirNucPro's overlap R = n * chunk_length - length is split over n steps, so only n - 1 of them
    are used (the quirk) and the last chunk is often short. Its steps are
    [lower + 1] * need + [lower] * (n - 1 - need) + [0], so the shift before chunk i is
    (lower + 1) * min(i, need) + lower * max(0, i - need). `fixed` spreads n full chunks evenly.
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
    lower = overlap // n_r  # int(R / n) of the original: R and n are not negative
    need = overlap - (n_r - 1) * lower
    shift = (lower + 1) * np.minimum(i, need) + lower * np.maximum(0, i - need)
    return read, i * chunk_length - shift


def codon_index(sequence):
    """Codon index at every position of `sequence` (bytes), plus 3 trailing AMBIGUOUS entries."""
    size = len(sequence)
    index = np.full(size + 3, AMBIGUOUS, dtype=np.uint8)
    if size < 3:
        return index
    base = np.frombuffer(sequence, dtype=np.uint8)
    code = np.right_shift(base, 1)
    np.bitwise_and(code, 3, out=code)
    body = index[: size - 2]
    np.multiply(code[:-2], 16, out=body)
    part = np.multiply(code[1:-1], 4)
    body += part
    body += code[2:]
    if sequence.translate(None, b"ACGTacgt"):  # some N or other ambiguity code: its codons are unknown
        odd = np.flatnonzero(_NOT_ACGT.take(base))
        for back in range(3):
            index[odd[odd >= back] - back] = AMBIGUOUS
    return index


def stop_flags(index):
    """FORWARD_STOP | REVERSE_STOP at every position: six comparisons, cheaper than a numpy table lookup."""
    flags = []
    for codons in (STOPS_FORWARD, STOPS_REVERSE):
        hit = index == codons[0]
        for codon in codons[1:]:
            hit |= index == codon
        flags.append(hit.view(np.uint8))
    forward, reverse = flags
    reverse += reverse  # 0/1 -> 0/REVERSE_STOP
    forward |= reverse  # FORWARD_STOP is 1
    return forward


def _phase_stops(stops, offsets, lengths):
    """OR of the stop bits over each chunk's codons in each phase k (codons at offset + k + 3t):
    (chunks, 3) uint8. reduceat over (first, last + 1) pairs reduces each chunk's own span even
    where chunks overlap. `stops` ends in 3 zeros, so a chunk's span never reaches the end of a phase
    array and each (first, last + 1) pair is a real slice."""
    n = len(offsets)
    out = np.zeros((n, 3), dtype=np.uint8)
    last = offsets + lengths - 3  # start of the chunk's last whole codon
    rows = np.arange(n)
    bounds = np.empty(2 * n, dtype=np.int64)
    for phase in range(3):
        column = stops[phase::3]  # the positions that are `phase` mod 3
        k = (phase - offsets) % 3  # the chunk's own codon phase that falls on this column
        first = offsets + k
        a = (first - phase) // 3
        bounds[0::2] = a
        bounds[1::2] = np.maximum((last - phase) // 3 + 1, a + 1)
        np.minimum(bounds, len(column) - 1, out=bounds)  # only chunks without a codon reach past the end
        reduced = np.bitwise_or.reduceat(column, bounds)[0::2]
        out[rows, k] = np.where(first <= last, reduced, 0)
    return out


def find_frames(sequence, offsets, lengths, compat):
    """The surviving frames of the chunks sequence[offsets[i] : offsets[i] + lengths[i]], in output
    order (chunks in order, then F1, F2, F3, R1, R2, R3), as lists:
    (chunk, frame 0..5, start, end, protein, nucleotide); start/end are the half-open coordinates of
    the nucleotide on the forward chunk; protein and nucleotide are upper-case bytes."""
    if compat not in COMPAT_MODES:
        raise ValueError(f"compat must be one of {COMPAT_MODES}, not {compat!r}")
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if not len(offsets):
        return [], [], [], [], [], []
    index = codon_index(sequence)
    phases = _phase_stops(stop_flags(index), offsets, lengths)
    alive = np.empty((len(offsets), 6), dtype=bool)
    rows = np.arange(len(offsets))
    for k in range(3):
        whole_codon = lengths - k >= 3
        alive[:, k] = whole_codon & (phases[:, k] & FORWARD_STOP == 0)
        # reverse frame k reads the codons that start at L - k - 3, L - k - 6, ... of the forward chunk
        alive[:, 3 + k] = whole_codon & (phases[rows, (lengths - k) % 3] & REVERSE_STOP == 0)
    chunk_of, frame_of = np.nonzero(alive)
    if not len(chunk_of):
        return [], [], [], [], [], []

    # Spell out the survivors. Each protein is a slice of every third codon index (backwards for the
    # reverse strand) through a 256-byte table: C loops, one per frame, no Python per codon.
    codons = index.tobytes()
    offset, length = offsets[chunk_of], lengths[chunk_of]
    k = frame_of % 3
    count = (length - k) // 3
    forward = frame_of < 3
    first = np.where(forward, offset + k, offset + length - k - 3)
    stop = np.where(forward, first + 3 * count, first - 3 * count)
    fixed = compat == "fixed"
    drop = b"" if fixed else bytes([AMBIGUOUS])  # the original skips codons not in its table
    order = np.flatnonzero(forward), np.flatnonzero(~forward)
    proteins = np.empty(len(chunk_of), dtype=object)
    proteins[order[0]] = [codons[a:b:3].translate(AMINO_FORWARD, drop)
                          for a, b in zip(first[order[0]].tolist(), stop[order[0]].tolist())]
    proteins[order[1]] = [codons[a : b if b >= 0 else None : -3].translate(AMINO_REVERSE, drop)
                          for a, b in zip(first[order[1]].tolist(), stop[order[1]].tolist())]
    residues = np.fromiter(map(len, proteins), dtype=np.int64, count=len(proteins))
    if not residues.all():  # every codon ambiguous: the original writes nothing
        keep = np.flatnonzero(residues)
        chunk_of, frame_of, proteins, residues = chunk_of[keep], frame_of[keep], proteins[keep], residues[keep]
        offset, length, k, forward = offset[keep], length[keep], k[keep], forward[keep]
        order = np.flatnonzero(forward), np.flatnonzero(~forward)
    extra = 0 if fixed else 1  # the original keeps one base more than the codons
    span = np.minimum(k + 3 * residues + extra, length) - k
    start = np.where(forward, k, length - k - span)
    end = start + span
    a, b = offset + start, offset + end
    nucleotides = np.empty(len(chunk_of), dtype=object)
    nucleotides[order[0]] = [sequence[x:y].upper() for x, y in zip(a[order[0]].tolist(), b[order[0]].tolist())]
    nucleotides[order[1]] = [sequence[x:y].translate(_REVERSE)[::-1]
                             for x, y in zip(a[order[1]].tolist(), b[order[1]].tolist())]
    return (chunk_of.tolist(), frame_of.tolist(), start.tolist(), end.tolist(), proteins.tolist(),
            nucleotides.tolist())
