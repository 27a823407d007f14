"""Chunking and six-frame translation against the original's outputs and the rules in virnucpro.md."""

import math
import random

import pyfastx
import pytest

from virnucflow.frames import chunk_read, chunk_starts, translate_chunks
from virnucflow.prepare import iter_frames

# --- a slow, obviously-correct reading of the rules, to compare the vectorised code against ---
CODE = {}
for i, a in enumerate("TCAG"):
    for j, b in enumerate("TCAG"):
        for k, c in enumerate("TCAG"):
            CODE[a + b + c] = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"[16 * i + 4 * j + k]


def rule_chunks(seq, cs, compat):
    n = math.ceil(len(seq) / cs)
    if compat == "fixed":
        return [0] if n == 1 else [math.floor(i * (len(seq) - cs) / (n - 1)) for i in range(n)]
    r = n * cs - len(seq)
    lower = int(r / n)
    need = r - (n - 1) * lower
    steps = [lower + 1] * need + [lower] * (n - 1 - need) + [0]
    return [i * cs - sum(steps[:i]) for i in range(n)]


def rule_frames(chunk, compat):
    chunk = chunk.upper()
    rc = "".join({"A": "T", "C": "G", "G": "C", "T": "A"}.get(c, c) for c in reversed(chunk))
    out = []
    for name, strand in (("F", chunk), ("R", rc)):
        for k in range(3):
            protein = ""
            for i in range(k, len(strand) - 2, 3):
                codon = strand[i : i + 3]
                if codon in CODE:
                    protein += CODE[codon]
                elif compat == "fixed":
                    protein += "X"
            if protein and "*" not in protein:
                extra = 0 if compat == "fixed" else 1
                out.append((f"{name}{k + 1}", protein, strand[k : k + extra + 3 * len(protein)]))
    return out


def test_reference_chunks_and_frames_are_byte_identical(reference_dir):
    for folder in sorted(p for p in reference_dir.iterdir() if p.is_dir()):
        reads = list(pyfastx.Fastx(str(folder / "input.fa")))
        chunks = [c for read_id, seq in reads for c in chunk_read(read_id, seq, 500)]
        assert [(cid, seq) for cid, _, seq in chunks] == list(pyfastx.Fastx(str(folder / "chunked500.fa")))
        frames = translate_chunks([seq.encode() for _, _, seq in chunks])
        nucleotide = "".join(f">{chunks[f.chunk_index][0]}{f.name}\n{f.nucleotide.decode()}\n" for f in frames)
        protein = "".join(f">{chunks[f.chunk_index][0]}{f.name}\n{f.protein.decode()}\n" for f in frames)
        expected_nuc = folder / "identified_nucleotide.fa"
        expected_prot = folder / "identified_protein.faa"
        assert nucleotide == (expected_nuc.read_text() if expected_nuc.exists() else ""), folder.name
        assert protein == (expected_prot.read_text() if expected_prot.exists() else ""), folder.name


@pytest.mark.parametrize(
    "length, cs, starts",
    [
        (1, 500, [0]),
        (299, 300, [0]),
        (300, 300, [0]),
        (301, 300, [0, 150]),  # R=299, lower=149, need=150: the first step is lower+1 = 150
        (500, 500, [0]),
        (501, 500, [0, 250]),  # R=499, lower=249, need=250
        (800, 500, [0, 399]),  # the documented quirk: [0,500) and [399,800)
        (999, 500, [0, 499]),
        (1000, 500, [0, 500]),
        (1001, 500, [0, 333, 666]),  # R=499, lower=166, need=167: steps 167, 167
        (4999, 500, [0] + [i * 500 - 1 for i in range(1, 10)]),  # R=1: one step of 1, then 0s
        (5000, 500, [i * 500 for i in range(10)]),
    ],
)
def test_virnucpro_chunk_starts_by_hand(length, cs, starts):
    assert chunk_starts(length, cs) == starts


def test_hand_derived_starts_follow_the_formula():
    # 301 at 300: n=2, R=299, lower=int(299/2)=149, need=299-149=150 -> steps [150]*150 + [0]
    assert chunk_starts(301, 300) == [0, 300 - 150]
    # 1001 at 500: n=3, R=499, lower=166, need=499-332=167 -> steps [167]*167 -> starts 0, 333, 666
    assert chunk_starts(1001, 500) == [0, 333, 666]


def test_fixed_chunks_are_full_length_and_cover_the_read():
    for length in [1, 300, 301, 800, 999, 1001, 4999]:
        starts = chunk_starts(length, 300, "fixed")
        assert starts[0] == 0 and starts[-1] + min(300, length) == length
        assert all(b - a <= 300 for a, b in zip(starts, starts[1:]))


def test_ambiguous_codons_dropped_in_virnucpro_mode_and_x_in_fixed():
    chunk = b"ATGNNNGCC"  # M, (NNN), A
    virnucpro = {f.name: f for f in translate_chunks([chunk])}
    fixed = {f.name: f for f in translate_chunks([chunk], "fixed")}
    assert virnucpro["F1"].protein == b"MA" and virnucpro["F1"].nucleotide == b"ATGNNNG"  # 3*2 + 1 bases
    assert fixed["F1"].protein == b"MXA" and fixed["F1"].nucleotide == b"ATGNNNGCC"


def test_lower_case_is_upper_cased_and_terminal_stop_disqualifies():
    frames = {f.name: f for f in translate_chunks([b"atggcctaa"])}
    assert "F1" not in frames  # MA* has a stop at the end: the frame is dropped
    assert all(f.nucleotide.isupper() for f in frames.values())


@pytest.mark.parametrize("compat", ["virnucpro", "fixed"])
@pytest.mark.parametrize("cs", [300, 500])
def test_random_reads_match_the_rules(compat, cs):
    rng = random.Random(cs)
    reads = []
    for i in range(300):
        length = rng.choice([1, 2, 3, 299, 300, 301, 500, 501, 800, 999, 1000, 1001]) if i < 40 else rng.randint(1, 5000)
        alphabet = "ACGT" * 20 + "acgtNRYKMSWBDHV"
        if i % 3 == 0:  # coding-like: no stop in forward frame 1, so frames survive
            seq = "".join(rng.choice(["GCT", "ATG", "AAA", "CCG", "TGG", "GAT"]) for _ in range(length // 3 + 1))[:length]
        else:
            seq = "".join(rng.choice(alphabet) for _ in range(length))
        reads.append((f"r{i}", seq))
    got = []
    for read_id, _, _, frames in iter_frames(iter(reads), cs, compat, batch_bases=50_000):
        got += [(f"{read_id}_chunk_{n}{f.name}", f.protein.decode(), f.nucleotide.decode()) for n, _, f in frames]
    expected = []
    for read_id, seq in reads:
        for n, start in enumerate(rule_chunks(seq, cs, compat), start=1):
            for name, protein, nucleotide in rule_frames(seq[start : start + cs], compat):
                expected.append((f"{read_id}_chunk_{n}{name}", protein, nucleotide))
    assert got == expected
    assert len(expected) > 100  # the cases keep frames, so the comparison says something


@pytest.mark.parametrize("compat", ["virnucpro", "fixed"])
def test_vectorised_chunk_layout_equals_the_per_read_rule(compat):
    from virnucflow.frames import chunk_layout

    lengths = list(range(1, 5001))
    for cs in (300, 500):
        reads, starts = chunk_layout(lengths, cs, compat)
        expected = [(r, s) for r, length in enumerate(lengths) for s in chunk_starts(length, cs, compat)]
        assert list(zip(reads.tolist(), starts.tolist())) == expected
