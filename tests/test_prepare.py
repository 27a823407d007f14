"""The prepare stage: frames.tsv/reads.tsv/shards account for every read, errors leave nothing behind."""

import csv
import gzip
import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest

from helpers import run_prepare
from virnucflow import prepare
from virnucflow.errors import InputError
from virnucflow.fasta import ReadBatch, read_records
from benchmarks.synthetic import synthetic_reads, write_fasta
from virnucflow.workfiles import FRAMES_HEADER, READS_HEADER


def tsv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def fasta_records(path):
    lines = path.read_text().splitlines()
    assert all(line.startswith(">") for line in lines[0::2])  # one unwrapped sequence line per record
    return [(name[1:], seq) for name, seq in zip(lines[0::2], lines[1::2])]


@pytest.fixture
def reads_fa(tmp_path):
    path = tmp_path / "reads.fa.gz"
    write_fasta(path, synthetic_reads(200, 100, 2500, coding_fraction=0.6, seed=4))
    return path


def test_outputs_account_for_every_read_chunk_and_frame(tmp_path, reads_fa):
    out = tmp_path / "work"
    summary = run_prepare(reads_fa, out, sample="s", chunk_length=500, shard_residues=3000)
    assert (out / "frames.tsv").read_text().startswith(FRAMES_HEADER)
    assert (out / "reads.tsv").read_text().startswith(READS_HEADER)
    frames = tsv(out / "frames.tsv")
    reads = tsv(out / "reads.tsv")
    assert [r["read_id"] for r in reads] == [f"read{i}" for i in range(1, 201)]
    assert summary["reads"] == 200 and summary["frames"] == len(frames) > 0
    assert sum(int(r["frames"]) for r in reads) == len(frames)
    assert sum(int(r["chunks"]) for r in reads) == summary["chunks"]
    assert sum(int(r["chunks_with_frames"]) for r in reads) == summary["chunks_with_frames"]
    assert summary["chunks_without_frames"] == summary["chunks"] - summary["chunks_with_frames"] > 0
    assert summary["residues"] == sum(int(f["residues"]) for f in frames)
    assert summary["bases"] == sum(int(r["length"]) for r in reads)
    assert json.loads((out / "summary.json").read_text()) == summary
    assert {"sample", "chunk_length", "compat", "shards", "seconds", "reads_per_second", "mb_per_second"} <= summary.keys()
    assert summary["fasta_bytes"] == len(gzip.decompress(reads_fa.read_bytes()))


def test_shards_are_contiguous_runs_cut_once_they_reach_the_residue_budget(tmp_path, reads_fa):
    out = tmp_path / "work"
    summary = run_prepare(reads_fa, out, sample="s", shard_residues=3000)
    frames = tsv(out / "frames.tsv")
    assert sorted(p.name for p in (out / "shards").iterdir()) == [
        f"{i:05d}.{ext}" for i in range(summary["shards"]) for ext in ("faa", "fna")]
    assert summary["shards"] > 1
    in_order = []
    for i in range(summary["shards"]):
        nucleotides = fasta_records(out / "shards" / f"{i:05d}.fna")
        proteins = fasta_records(out / "shards" / f"{i:05d}.faa")
        assert [n for n, _ in nucleotides] == [n for n, _ in proteins]
        assert [f["frame_id"] for f in frames if f["shard"] == str(i)] == [n for n, _ in proteins]
        residues = [len(p) for _, p in proteins]
        if i < summary["shards"] - 1:
            assert sum(residues) >= 3000 > sum(residues[:-1])  # closed by the frame that reached the budget
        for (_, nucleotide), (_, protein) in zip(nucleotides, proteins):
            assert len(nucleotide) in (3 * len(protein), 3 * len(protein) + 1)  # +1: the original's quirk
        in_order += [n for n, _ in nucleotides]
    assert in_order == [f["frame_id"] for f in frames]


def test_coordinates_point_at_the_frame_on_the_read(tmp_path):
    seq = "".join(["ATGGCC", "GATAAA"] * 70)[:800]  # 800 bp: chunks [0,500) and [399,800)
    seq = seq[:300] + seq[300:].translate(str.maketrans("ACGT", "TGCA"))[::-1]  # coding on both strands
    path = tmp_path / "one.fa"
    path.write_text(f">r1 description\n{seq.lower()}\n")
    for compat in ("virnucpro", "fixed"):
        out = tmp_path / compat
        run_prepare(path, out, sample="s", compat=compat)
        comp = str.maketrans("ACGT", "TGCA")
        nucleotides = dict(fasta_records(out / "shards/00000.fna"))
        frames = tsv(out / "frames.tsv")
        for frame in frames:
            start, end = int(frame["start"]), int(frame["end"])
            piece = seq[start:end] if frame["strand"] == "+" else seq[start:end].translate(comp)[::-1]
            assert piece == nucleotides[frame["frame_id"]]
            assert frame["read_id"] == "r1"
        assert {f["strand"] for f in frames} == {"+", "-"}
        chunk2 = [int(f["start"]) for f in frames if f["chunk"] == "2" and f["strand"] == "+"]
        assert min(chunk2) == (399 if compat == "virnucpro" else 300)  # F1 of chunk 2 starts where it starts


def test_no_surviving_frame_gives_one_empty_shard_pair(tmp_path):
    path = tmp_path / "stops.fa"
    path.write_text(">r1\n" + "CTAG" * 100 + "\n")  # period 4: TAG in every frame, both strands
    summary = run_prepare(path, tmp_path / "w", sample="s")
    assert summary["frames"] == 0 and summary["chunks_without_frames"] == 1 and summary["shards"] == 1
    assert sorted(p.name for p in (tmp_path / "w/shards").iterdir()) == ["00000.faa", "00000.fna"]
    assert (tmp_path / "w/shards/00000.faa").read_text() == (tmp_path / "w/shards/00000.fna").read_text() == ""
    assert tsv(tmp_path / "w/frames.tsv") == []
    assert tsv(tmp_path / "w/reads.tsv") == [{"read_id": "r1", "length": "400", "chunks": "1",
                                              "chunks_with_frames": "0", "frames": "0", "ambiguous": "0"}]


def test_reads_tsv_counts_the_ambiguous_bases_of_every_read(tmp_path):
    """Anything but A, C, G, T, U in either case counts, across batch edges; such codons are dropped,
    so a read made mostly of N keeps frames of a few residues (what read_calls' `ambiguous` is for)."""
    rng = random.Random(3)
    coding = "".join(rng.choice(["GCT", "AAA", "CTG", "GGC", "TTC", "CAG"]) for _ in range(200))[:500]
    mostly_n = "".join(base if rng.random() < 0.3 else "N" for base in coding)
    reads = [("clean", coding), ("rna", coding.replace("T", "U").lower()), ("codes", "ACGTRYSWKMBDHVNryswkmbdhvn" * 3),
             ("mostly_n", mostly_n), ("all_n", "N" * 700), ("long", ("ACGTN" * 2000))]
    path = tmp_path / "reads.fa"
    path.write_text("".join(f">{name}\n{seq}\n" for name, seq in reads))
    summary = run_prepare(path, tmp_path / "w", sample="s", batch_bytes=1000)  # many batches
    counts = {r["read_id"]: int(r["ambiguous"]) for r in tsv(tmp_path / "w/reads.tsv")}
    assert counts == {"clean": 0, "rna": 0, "codes": 66, "mostly_n": mostly_n.count("N"), "all_n": 700, "long": 2000}
    assert summary["ambiguous_bases"] == sum(counts.values())
    frames = [f for f in tsv(tmp_path / "w/frames.tsv") if f["read_id"] == "mostly_n"]
    assert frames and max(int(f["residues"]) for f in frames) < 20 < 0.3 * 166  # (1 - 0.7)^3 of 166 codons: ~4


@pytest.mark.parametrize("ambiguous", [0, 3, 40, 3000])  # none, sparse (binned), dense (summed per read)
def test_ambiguous_bases_are_counted_per_read_however_many_there_are(ambiguous):
    rng = random.Random(ambiguous)
    bases = [rng.choice("ACGTUacgtu") for _ in range(6000)]
    for at in rng.sample(range(6000), ambiguous):
        bases[at] = rng.choice("NRYKMSWBDHVnrykmswbdhv")
    lengths = [1, 2999, 1, 1000, 1999]
    cuts = np.cumsum([0, *lengths])
    batch = ReadBatch(1, [b"r%d" % i for i in range(5)], "".join(bases).encode(), np.array(lengths), 6000)
    expected = [sum(b not in "ACGTUacgtu" for b in bases[a:z]) for a, z in zip(cuts[:-1], cuts[1:])]
    assert prepare._ambiguous_bases(batch).tolist() == expected and sum(expected) == ambiguous


BAD_INPUTS = {
    "empty": (b"", "file is empty"),
    "fastq_truncated": (b"@r1\nACGT\n+\nIIII\n@r2\nACGT\n", "record 2 is incomplete"),
    "binary": (bytes(range(256)) * 4, "binary"),
    "text_without_header": (b"ACGTACGT\n", "first line starts with '>' or '@'"),
    "no_sequence": (b">r1\nACGT\n>r2\n>r3\nACGT\n", "record 2 ('r2') has no sequence"),
    "duplicate": (b">r1\nACGT\n>r2\nACGT\n>r1 again\nACGT\n", "records 1 and 3 have the same id 'r1'"),
    "not_iupac": (b">r1\nACGT\n>r2\nACGJT\n", "record 2 ('r2'): character 'J' at position 4"),
    "gzip_garbage": (b"\x1f\x8b\x08\x00garbage", "damaged gzip data"),
    "truncated_gzip": (gzip.compress(b">r1\n" + "".join(random.Random(0).choices("ACGT", k=20000)).encode())[:2000],
                       "damaged gzip data"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_error_and_leaves_nothing(tmp_path, case):
    content, message = BAD_INPUTS[case]
    path = tmp_path / "in" / f"{case}.fa"
    path.parent.mkdir()
    path.write_bytes(content)
    out = tmp_path / "w"
    with pytest.raises(InputError) as error:
        run_prepare(path, out, sample="s", batch_bytes=64)
    text = str(error.value)
    assert "\n" not in text and str(path) in text and message in text
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no temporary folder left beside it


def test_a_late_error_leaves_an_earlier_result_untouched(tmp_path, reads_fa):
    out = tmp_path / "w"
    run_prepare(reads_fa, out, sample="s")
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tmp_path / "bad.fa"
    bad.write_bytes(b"".join(b">r%d\nACGT\n" % i for i in range(5000)) + b">r1\nACGT\n")  # duplicate at the end
    with pytest.raises(InputError, match="records 2 and 5001"):
        run_prepare(bad, out, sample="s", batch_bytes=1000)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.fa", "reads.fa.gz", "w"]


def test_a_rerun_replaces_every_output_including_old_shards(tmp_path, reads_fa):
    out = tmp_path / "w"
    first = run_prepare(reads_fa, out, sample="s", shard_residues=1000)
    second = run_prepare(reads_fa, out, sample="s", shard_residues=10**9)
    assert first["shards"] > 1 and second["shards"] == 1
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["00000.faa", "00000.fna"]


def test_progress_is_logged_with_rates(tmp_path, reads_fa, monkeypatch, caplog):
    monkeypatch.setattr(prepare, "REPORT_SECONDS", 0)
    with caplog.at_level(logging.INFO, logger="virnucflow"):
        run_prepare(reads_fa, tmp_path / "w", sample="s", batch_bytes=20000)
    progress = [r.getMessage() for r in caplog.records if "reads/s" in r.getMessage()]
    assert len(progress) > 2 and all("MB/s of input text" in line for line in progress)


def test_lower_case_n_and_gzip_are_legal(tmp_path):
    path = tmp_path / "ok.fa.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(">r1\nacgtnnatggcc\nRYKMSWBDHVU\n")
    summary = run_prepare(path, tmp_path / "w", sample="s")
    assert summary["reads"] == 1 and summary["bases"] == 23


# --- FASTQ and paired-end input ------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "config" / "example"


def as_fastq(fasta_path, out, newline="\n"):
    """The FASTQ of the reads of a FASTA file (headers kept whole, qualities invented), plain or .gz."""
    text = (gzip.open if fasta_path.suffix == ".gz" else open)(fasta_path, "rt").read()
    records = [(block.split("\n", 1)[0], block.split("\n", 1)[1].replace("\n", "")) for block in text.split(">")[1:]]
    body = "".join(f"@{head}{newline}{seq}{newline}+{newline}{'@' * len(seq)}{newline}" for head, seq in records)
    (gzip.open if out.suffix == ".gz" else open)(out, "wt", newline="").write(body)
    return out


def work_files(folder):
    """Every file prepare writes whose bytes depend on the reads: frames.tsv, reads.tsv, the shards."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "summary.json"}


@pytest.mark.parametrize("example", ["coding.fa", "mixed.fa.gz"])
def test_a_sample_given_as_fastq_gives_the_same_work_files_as_its_fasta(tmp_path, example):
    """The demo samples as FASTQ (plain, .gz, CRLF; any batch size) give byte-identical frames.tsv, reads.tsv
    and shards: the rest of the workflow cannot tell the two inputs apart."""
    fasta = EXAMPLES / example
    run_prepare(fasta, tmp_path / "fasta", sample="s", shard_residues=2000)
    expected = work_files(tmp_path / "fasta")
    assert {"frames.tsv", "reads.tsv", "shards/00001.faa"} <= expected.keys()
    for name, newline in (("r.fq", "\n"), ("r.fq.gz", "\n"), ("crlf.fastq.gz", "\r\n")):
        fastq = as_fastq(fasta, tmp_path / name, newline)
        for batch_bytes in (300, 1 << 20):
            out = tmp_path / f"{name}_{batch_bytes}"
            summary = run_prepare(fastq, out, sample="s", shard_residues=2000, batch_bytes=batch_bytes)
            assert work_files(out) == expected, (name, batch_bytes)
            assert summary["fasta_bytes"] == len(gzip.decompress(fastq.read_bytes()) if name.endswith(".gz")
                                                 else fastq.read_bytes())


def test_paired_end_mates_are_separate_reads_with_distinct_ids(tmp_path):
    """R1 then R2; equal ids become ID/1 and ID/2 in reads.tsv and frames.tsv, and read_records gives the
    same ids in the same order (for writing the viral reads out)."""
    reads = list(synthetic_reads(30, 100, 1200, coding_fraction=0.7, seed=9))
    r1, r2 = tmp_path / "s_R1.fq.gz", tmp_path / "s_R2.fq.gz"
    with gzip.open(r1, "wt") as one, gzip.open(r2, "wt") as two:
        for read_id, seq in reads:
            one.write(f"@{read_id} 1:N:0:ACGT\n{seq}\n+\n{'I' * len(seq)}\n")
            mate = seq[::-1].translate(str.maketrans("ACGT", "TGCA"))
            two.write(f"@{read_id} 2:N:0:ACGT\n{mate}\n+\n{'I' * len(mate)}\n")
    out = tmp_path / "w"
    summary = run_prepare([r1, r2], out, sample="s")
    ids = [row["read_id"] for row in tsv(out / "reads.tsv")]
    assert ids == [f"{i}/1" for i, _ in reads] + [f"{i}/2" for i, _ in reads]
    assert summary["reads"] == 60 and summary["bases"] == 2 * sum(len(seq) for _, seq in reads)
    frames = tsv(out / "frames.tsv")
    assert len({f["frame_id"] for f in frames}) == len(frames) > 0
    assert {f["read_id"] for f in frames} <= set(ids) and {f["read_id"][-2:] for f in frames} == {"/1", "/2"}
    assert [(i.decode(), h.decode()) for i, h, _ in read_records([r1, r2])][:1] == [("read1/1", "read1/1 1:N:0:ACGT")]
    assert [i.decode() for i, _, _ in read_records([str(r1), str(r2)])] == ids
