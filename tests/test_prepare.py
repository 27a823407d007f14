"""The prepare stage: input checking, frames.tsv/reads.tsv/shards, nothing left behind on failure."""

import csv
import gzip
import json

import pytest

from virnucflow.errors import InputError
from virnucflow.prepare import prepare_sample
from virnucflow.synthetic import synthetic_reads, write_fasta


def tsv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def fasta_records(path):
    records, name = [], None
    for line in open(path):
        if line.startswith(">"):
            name = line[1:].strip()
        else:
            records.append((name, line.strip()))
    return records


@pytest.fixture
def reads_fa(tmp_path):
    path = tmp_path / "reads.fa.gz"
    write_fasta(path, synthetic_reads(200, 100, 2500, coding_fraction=0.6, seed=4))
    return path


def test_outputs_account_for_every_read_chunk_and_frame(tmp_path, reads_fa):
    out = tmp_path / "work"
    summary = prepare_sample(reads_fa, out, sample="s", chunk_length=500, shard_residues=3000)
    frames = tsv(out / "frames.tsv")
    reads = tsv(out / "reads.tsv")
    assert [r["read_id"] for r in reads] == [f"read{i}" for i in range(1, 201)]
    assert summary["reads"] == 200 and summary["frames"] == len(frames) > 0
    assert sum(int(r["frames"]) for r in reads) == len(frames)
    assert sum(int(r["chunks"]) for r in reads) == summary["chunks"]
    assert summary["chunks_without_frames"] == summary["chunks"] - summary["chunks_with_frames"] > 0
    # Shards: contiguous runs of frames.tsv, same ids in both files, cut by residues.
    shard_ids = sorted({int(f["shard"]) for f in frames})
    assert shard_ids == list(range(summary["shards"])) and summary["shards"] > 1
    in_order = []
    for i in shard_ids:
        nuc = fasta_records(out / "shards" / f"{i:05d}.fna")
        prot = fasta_records(out / "shards" / f"{i:05d}.faa")
        assert [n for n, _ in nuc] == [n for n, _ in prot]
        assert all(len(s) == 3 * len(p) + 1 or len(s) <= 3 * len(p) + 1 for (_, s), (_, p) in zip(nuc, prot))
        in_order += [n for n, _ in nuc]
        assert sum(len(p) for _, p in prot[:-1]) < 3000  # a shard closes once it reaches the budget
    assert in_order == [f["frame_id"] for f in frames]


def test_coordinates_point_at_the_frame_on_the_read(tmp_path):
    seq = "".join(["ATGGCC", "GATAAA"] * 70)[:800]  # 800 bp: chunks [0,500) and [399,800)
    path = tmp_path / "one.fa"
    path.write_text(f">r1 description\n{seq}\n")
    prepare_sample(path, tmp_path / "w", sample="s")
    comp = str.maketrans("ACGT", "TGCA")
    nucleotides = dict(fasta_records(tmp_path / "w/shards/00000.fna"))
    for frame in tsv(tmp_path / "w/frames.tsv"):
        start, end = int(frame["start"]), int(frame["end"])
        piece = seq[start:end] if frame["strand"] == "+" else seq[start:end].translate(comp)[::-1]
        assert piece == nucleotides[frame["frame_id"]]
        assert frame["read_id"] == "r1"
    assert {f["chunk"] for f in tsv(tmp_path / "w/frames.tsv")} == {"1", "2"}


def test_no_surviving_frame_gives_one_empty_shard(tmp_path):
    path = tmp_path / "stops.fa"
    path.write_text(">r1\n" + "CTAG" * 100 + "\n")  # period 4: TAG in every frame, both strands
    summary = prepare_sample(path, tmp_path / "w", sample="s")
    assert summary["frames"] == 0 and summary["chunks_without_frames"] == 1
    assert (tmp_path / "w/shards/00000.faa").read_text() == ""
    assert len(tsv(tmp_path / "w/frames.tsv")) == 0


BAD_INPUTS = {
    "empty": (b"", "file is empty"),
    "fastq": (b"@r1\nACGT\n+\nIIII\n", "FASTQ"),
    "binary": (bytes(range(256)) * 4, "binary"),
    "no_header": (b"ACGTACGT\n", "first record must start with '>'"),
    "no_sequence": (b">r1\nACGT\n>r2\n>r3\nACGT\n", "record 2 (r2) has no sequence"),
    "duplicate": (b">r1\nACGT\n>r2\nACGT\n>r1 again\nACGT\n", "records 1 and 3 have the same id 'r1'"),
    "not_iupac": (b">r1\nACGT\n>r2\nACGJT\n", "record 2 (r2): character 'J' at position 4"),
    "gzip_garbage": (b"\x1f\x8b\x08\x00garbage", "cannot be read"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_error_and_leaves_nothing(tmp_path, case):
    content, message = BAD_INPUTS[case]
    path = tmp_path / f"{case}.fa"
    path.write_bytes(content)
    out = tmp_path / "w"
    with pytest.raises(InputError) as error:
        prepare_sample(path, out, sample="s")
    text = str(error.value)
    assert "\n" not in text and str(path) in text and message in text
    assert not out.exists() or list(out.iterdir()) == []


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match="nope.fa: file not found"):
        prepare_sample(tmp_path / "nope.fa", tmp_path / "w", sample="s")


def test_lower_case_n_and_gzip_are_legal(tmp_path):
    path = tmp_path / "ok.fa.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(">r1\nacgtnnatggcc\nRYKMSWBDHV\n")
    summary = prepare_sample(path, tmp_path / "w", sample="s")
    assert summary["reads"] == 1 and summary["bases"] == 22
    assert json.loads((tmp_path / "w/summary.json").read_text())["reads"] == 1
