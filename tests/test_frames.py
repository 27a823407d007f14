"""Chunking and six-frame translation against the original's outputs and the rules in virnucpro.md."""

import csv
import gzip
import math
import random
from pathlib import Path

import numpy as np
import pytest

from helpers import chunk_records, chunk_starts, run_prepare, six_frames
from virnucflow import prepare
from virnucflow.frames import chunk_layout

# --- a slow, obviously-correct reading of the rules in virnucpro.md, to compare the fast code with ---
CODE = {a + b + c: "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"[16 * i + 4 * j + k]
        for i, a in enumerate("TCAG") for j, b in enumerate("TCAG") for k, c in enumerate("TCAG")}


def rule_chunks(seq, cs, compat):
    n = math.ceil(len(seq) / cs)
    if compat == "fixed":  # n full chunks spread evenly: the overlap divided by n - 1
        return [0] if n == 1 else [math.floor(i * (len(seq) - cs) / (n - 1)) for i in range(n)]
    r = n * cs - len(seq)
    lower = int(r / n)
    need = r - (n - 1) * lower
    steps = [lower + 1] * need + [lower] * (n - 1 - need) + [0]
    return [i * cs - sum(steps[:i]) for i in range(n)]


def rule_frames(chunk, compat):
    """[(name, strand, start, end, protein, nucleotide)] with start/end on the forward chunk."""
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
                nucleotide = strand[k : k + extra + 3 * len(protein)]
                start = k if name == "F" else len(chunk) - k - len(nucleotide)
                out.append((f"{name}{k + 1}", "+" if name == "F" else "-", start, start + len(nucleotide), protein,
                            nucleotide))
    return out


def fasta_records(path):
    """(id, sequence) of a FASTA file (plain or .gz), lines joined (chunked500.fa is wrapped at 60 columns)."""
    out = []
    for line in read_text(path).splitlines(keepends=True):
        line = line.rstrip("\n")
        if line.startswith(">"):
            out.append([line[1:], ""])
        else:
            out[-1][1] += line
    return [tuple(r) for r in out]


def read_text(path):
    data = Path(path).read_bytes()
    return (gzip.decompress(data) if str(path).endswith(".gz") else data).decode()


def tsv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_reference_chunks_and_frames_are_byte_identical(reference_dir, tmp_path):
    folders = sorted(p for p in reference_dir.iterdir() if p.is_dir())
    assert {f.name for f in folders} >= {"with_orfs", "fixed_500bp", "sequences_small"}
    for folder in folders:
        expected_chunks = fasta_records(folder / "chunked500.fa")
        assert list(chunk_records(folder / "input.fa", 500)) == expected_chunks, folder.name
        out = tmp_path / folder.name
        summary = run_prepare(folder / "input.fa", out, sample=folder.name, chunk_length=500)
        for ours, theirs in (("00000.fna", "identified_nucleotide.fa"), ("00000.faa", "identified_protein.faa")):
            expected = (folder / theirs).read_bytes() if (folder / theirs).exists() else b""
            assert (out / "shards" / ours).read_bytes() == expected, (folder.name, theirs)
        assert summary["chunks"] == len(expected_chunks)
        if folder.name == "sequences_small":  # random 500 bp reads: no frame survives
            assert summary["frames"] == 0 and (out / "frames.tsv").read_text().count("\n") == 1


@pytest.mark.parametrize("cs", [300, 500])
def test_multi_chunk_reads_equal_the_original_code(tmp_path, cs):
    """Vectors made by running the original's own functions (tests/data/virnucpro_original/README.md)."""
    vectors = Path(__file__).parent / "data" / "virnucpro_original"
    assert list(chunk_records(vectors / "input.fa.gz", cs)) == fasta_records(vectors / f"chunked{cs}.fa.gz")
    summary = run_prepare(vectors / "input.fa.gz", tmp_path, sample="s", chunk_length=cs, batch_bytes=30000)
    nucleotides = read_text(vectors / f"identified{cs}_nucleotide.fa.gz")
    assert (tmp_path / "shards/00000.faa").read_text() == read_text(vectors / f"identified{cs}_protein.faa.gz")
    assert (tmp_path / "shards/00000.fna").read_text() == nucleotides
    # the vectors say something: many frames, reverse ones, and kept frames whose ambiguous codons were dropped
    records = fasta_records(vectors / f"identified{cs}_nucleotide.fa.gz")
    assert summary["frames"] == len(records) > 100
    assert any(name.endswith(("R1", "R2", "R3")) for name, _ in records)
    assert any(set(seq) - set("ACGT") for _, seq in records)


@pytest.mark.parametrize(
    "length, cs, starts",
    [
        (1, 500, [0]),
        (299, 300, [0]),
        (300, 300, [0]),
        (301, 300, [0, 150]),  # n=2, R=299, lower=149, need=150: one step of lower+1 = 150
        (500, 500, [0]),
        (501, 500, [0, 250]),  # R=499, lower=249, need=250: step 250
        (800, 500, [0, 399]),  # the documented quirk: [0,500) and [399,800), the last chunk 401 bp
        (999, 500, [0, 499]),  # R=1, lower=0, need=1: step 1
        (1000, 500, [0, 500]),
        (1001, 500, [0, 333, 666]),  # R=499, lower=166, need=167: steps 167, 167
        (4999, 500, [0, 499, 999, 1499, 1999, 2499, 2999, 3499, 3999, 4499]),  # R=1: one step of 1, then 0s
        (5000, 500, [0, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500]),
        (1001, 300, [0, 250, 500, 750]),  # n=4, R=199, lower=49, need=52: steps 50, 50, 50
    ],
)
def test_virnucpro_chunk_starts_by_hand(length, cs, starts):
    assert chunk_starts(length, cs) == starts


@pytest.mark.parametrize(
    "length, cs, starts",
    [
        (299, 300, [0]),
        (300, 300, [0]),
        (301, 300, [0, 1]),  # two full chunks: [0,300) and [1,301)
        (800, 500, [0, 300]),  # [0,500) and [300,800): both 500 bp
        (999, 500, [0, 499]),
        (1001, 500, [0, 250, 501]),  # (1001-500)/2 = 250.5 -> 250, then 501
        (4999, 500, [0, 499, 999, 1499, 1999, 2499, 2999, 3499, 3999, 4499]),
    ],
)
def test_fixed_chunk_starts_by_hand(length, cs, starts):
    assert chunk_starts(length, cs, "fixed") == starts
    assert all(min(cs, length) == min(cs, length - s) for s in starts)  # every chunk full length


@pytest.mark.parametrize("compat", ["virnucpro", "fixed"])
@pytest.mark.parametrize("cs", [300, 500, 7])
def test_vectorised_chunk_layout_equals_the_per_read_rule(compat, cs):
    lengths = list(range(1, 5001 if cs > 100 else 400))
    reads, starts = chunk_layout(lengths, cs, compat)
    expected = [(r, s) for r, length in enumerate(lengths) for s in rule_chunks("N" * length, cs, compat)]
    assert list(zip(reads.tolist(), starts.tolist())) == expected


def test_chunk_records_of_an_800bp_read(tmp_path):
    seq = "".join(random.Random(8).choice("ACGT") for _ in range(800))
    path = tmp_path / "r.fa"
    path.write_text(f">r7 desc\n{seq}\n")
    assert list(chunk_records(path, 500)) == [("r7_chunk_1", seq[:500]), ("r7_chunk_2", seq[399:])]
    assert list(chunk_records(path, 500, "fixed")) == [("r7_chunk_1", seq[:500]), ("r7_chunk_2", seq[300:])]


def test_ambiguous_codons_dropped_in_virnucpro_mode_and_x_in_fixed():
    virnucpro = {name: (p, n) for name, p, n in six_frames("ATGNNNGCC")}
    fixed = {name: (p, n) for name, p, n in six_frames("ATGNNNGCC", "fixed")}
    assert virnucpro["F1"] == ("MA", "ATGNNNG")  # 3*2 + 1 bases: the nucleotide quirk
    assert fixed["F1"] == ("MXA", "ATGNNNGCC")
    assert virnucpro["R1"] == ("GH", "GGCNNNC")  # reverse complement GGC NNN CAT: N stays N
    assert six_frames("NNNNNNNN") == []  # every codon dropped: the protein is empty, no frame
    assert six_frames("NNNN", "fixed") == [(name, "X", "NNN") for name in ("F1", "F2", "R1", "R2")]


def test_iupac_codes_are_not_complemented_and_lower_case_is_upper_cased():
    frames = {name: (p, n) for name, p, n in six_frames("atgRaaYgccgc")}
    assert frames["F1"] == ("MR", "ATGRAAY")  # ATG RAA YGC CGC: the codons with R and Y are dropped
    # reverse complement GCG GCY TTR CAT: Y and R are not complemented, as in the original
    assert frames["R1"] == ("AH", "GCGGCYT")


def test_terminal_stop_disqualifies_and_short_chunks_have_no_frames():
    assert "F1" not in {name for name, _, _ in six_frames("ATGGCCTAA")}  # MA*
    assert six_frames("AC") == [] and six_frames("A") == []


def random_reads(rng, count):
    special = [1, 2, 3, 299, 300, 301, 500, 501, 800, 999, 1000, 1001, 4999, 5000]
    sense = [c for c in CODE if CODE[c] != "*"]
    reads = []
    for i in range(count):
        length = special[i] if i < len(special) else rng.randint(1, 5000)
        kind = i % 4
        if kind == 0:  # coding on the forward strand: frame F1 of every chunk that starts in phase survives
            seq = "".join(rng.choice(sense) for _ in range(length // 3 + 1))[:length]
        elif kind == 1:  # coding on the reverse strand, with a sprinkle of N and IUPAC codes
            seq = "".join(rng.choice(sense) for _ in range(length // 3 + 1))[:length]
            seq = "".join({"A": "T", "C": "G", "G": "C", "T": "A"}[c] for c in reversed(seq))
            seq = "".join(rng.choice("NRYKMSWBDHV") if rng.random() < 0.01 else c for c in seq)
        else:  # random DNA with N, other codes and lower case
            seq = "".join(rng.choice("ACGT" * 30 + "acgtNnRYKMSWBDHVU") for _ in range(length))
        reads.append((f"read{i}", seq.lower() if i % 7 == 3 else seq))
    return reads


@pytest.mark.parametrize("compat", ["virnucpro", "fixed"])
@pytest.mark.parametrize("cs", [300, 500])
def test_random_reads_match_the_rules_through_the_whole_stage(tmp_path, compat, cs):
    rng = random.Random(cs + len(compat))
    reads = random_reads(rng, 160)
    path = tmp_path / "reads.fa"
    path.write_text("".join(f">{i} x\n" + "\n".join(s[j : j + 61] for j in range(0, len(s), 61)) + "\n"
                            for i, s in reads))
    out = tmp_path / "out"
    # small batches: many batches, reads cut across block edges
    run_prepare(path, out, sample="s", chunk_length=cs, compat=compat, shard_residues=5000, batch_bytes=20000)

    expected_rows, expected_reads = [], []
    for read_id, seq in reads:
        starts = rule_chunks(seq, cs, compat)
        with_frames = frames = 0
        for n, start in enumerate(starts, start=1):
            found = rule_frames(seq[start : start + cs], compat)
            for name, strand, a, b, protein, nucleotide in found:
                expected_rows.append((f"{read_id}_chunk_{n}{name}", read_id, str(n), strand, name[1], str(start + a),
                                      str(start + b), str(len(protein)), protein, nucleotide))
            with_frames += bool(found)
            frames += len(found)
        ambiguous = sum(base not in "ACGTUacgtu" for base in seq)  # N and the other IUPAC codes
        expected_reads.append((read_id, str(len(seq)), str(len(starts)), str(with_frames), str(frames), str(ambiguous)))

    rows = tsv(out / "frames.tsv")
    shards = sorted({int(r["shard"]) for r in rows})
    proteins, nucleotides = {}, {}
    for i in shards:
        proteins.update(fasta_records(out / "shards" / f"{i:05d}.faa"))
        nucleotides.update(fasta_records(out / "shards" / f"{i:05d}.fna"))
    got = [(r["frame_id"], r["read_id"], r["chunk"], r["strand"], r["frame"], r["start"], r["end"], r["residues"],
            proteins[r["frame_id"]], nucleotides[r["frame_id"]]) for r in rows]
    assert got == expected_rows
    assert [tuple(r.values()) for r in tsv(out / "reads.tsv")] == expected_reads
    assert len(expected_rows) > 200 and {r[3] for r in expected_rows} == {"+", "-"}  # the check says something
    assert sum(int(r[-1]) > 0 for r in expected_reads) > 20


def test_a_read_longer_than_a_translation_group_gives_the_same_frames(tmp_path, monkeypatch):
    rng = random.Random(5)
    sense = [c for c in CODE if CODE[c] != "*"]
    seq = "".join(rng.choice(sense) for _ in range(20000))  # 60 kbp, coding: many frames
    path = tmp_path / "long.fa"
    path.write_text(f">long\n{seq}\n>short\nATGGCC\n")
    run_prepare(path, tmp_path / "whole", sample="s")
    monkeypatch.setattr(prepare, "GROUP_BASES", 1000)  # translate 2-3 chunks at a time
    run_prepare(path, tmp_path / "groups", sample="s")
    for name in ("frames.tsv", "reads.tsv", "shards/00000.fna", "shards/00000.faa"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "groups" / name).read_bytes()
    assert len(tsv(tmp_path / "whole" / "frames.tsv")) >= 120


def test_codon_tables_match_the_standard_code():
    from virnucflow.frames import AMINO_FORWARD, AMINO_REVERSE, codon_index

    for codon, amino in CODE.items():
        index = int(codon_index(codon.encode())[0])
        rc = "".join({"A": "T", "C": "G", "G": "C", "T": "A"}[c] for c in reversed(codon))
        assert chr(AMINO_FORWARD[index]) == amino and chr(AMINO_REVERSE[index]) == CODE[rc]
        assert int(codon_index(codon.lower().encode())[0]) == index
    assert np.all(codon_index(b"ANGT")[:2] == 0xFF)
