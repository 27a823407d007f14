"""FASTQ and paired-end samples through the real Snakefile (Snakemake API, tiny demo models)."""

import csv
import gzip

import pytest

from conftest import run_snakemake

RESULTS = ["predictions.tsv", "chunk_calls.tsv", "chunk_scores.tsv", "read_calls.tsv"]


def fasta_records(path):
    text = path.read_text()
    return [(block.split("\n", 1)[0], block.split("\n", 1)[1].replace("\n", "")) for block in text.split(">")[1:]]


def write_fastq(path, records):
    with gzip.open(path, "wt") as handle:
        for head, seq in records:
            handle.write(f"@{head}\n{seq}\n+\n{'F' * len(seq)}\n")


@pytest.mark.workflow
def test_a_fastq_sample_gives_the_calls_of_its_fasta_and_mates_are_called_apart(demo_workdir):
    example = demo_workdir / "config/example"
    records = fasta_records(example / "coding.fa")[:6]  # a few reads: the test runs in well under a minute
    (example / "few.fa").write_text("".join(f">{head}\n{seq}\n" for head, seq in records))
    write_fastq(example / "coding.fq.gz", records)
    mates = [(head, seq[::-1].translate(str.maketrans("ACGTacgt", "TGCAtgca"))) for head, seq in records]
    write_fastq(example / "coding_R2.fq.gz", mates)
    (demo_workdir / "config/demo_samples.tsv").write_text(
        "sample\treads\treads2\n"
        "fasta\tconfig/example/few.fa\t\n"
        "fastq\tconfig/example/coding.fq.gz\t\n"
        "paired\tconfig/example/coding.fq.gz\tconfig/example/coding_R2.fq.gz\n")
    run_snakemake(demo_workdir, targets=[f"results/{s}/read_calls.tsv" for s in ("fasta", "fastq", "paired")]
                  + ["results/paired/pair_calls.tsv"], config={"shard_residues": 10**7})  # one shard per sample
    assert len((demo_workdir / "results/fasta/predictions.tsv").read_text().splitlines()) > 10  # frames were called
    for name in ["work/{}/frames.tsv", "work/{}/reads.tsv", *(f"results/{{}}/{r}" for r in RESULTS)]:
        assert (demo_workdir / name.format("fastq")).read_bytes() == (demo_workdir / name.format("fasta")).read_bytes()
    with open(demo_workdir / "results/paired/read_calls.tsv", newline="") as handle:
        calls = list(csv.DictReader(handle, delimiter="\t"))
    ids = [head.split()[0] for head, _ in records]
    assert [row["read_id"] for row in calls] == [f"{i}/1" for i in ids] + [f"{i}/2" for i in ids]
    # one call per pair: virus when either mate is, else others when either is, else R1's
    with open(demo_workdir / "results/paired/pair_calls.tsv", newline="") as handle:
        pairs = list(csv.DictReader(handle, delimiter="\t"))
    mate = {row["read_id"]: row["call"] for row in calls}
    assert [row["pair_id"] for row in pairs] == ids
    for row in pairs:
        r1, r2 = mate[row["pair_id"] + "/1"], mate[row["pair_id"] + "/2"]
        assert (row["r1_call"], row["r2_call"]) == (r1, r2)
        assert row["call"] == ("virus" if "virus" in (r1, r2) else "others" if "others" in (r1, r2) else r1)


def test_only_paired_samples_get_pair_calls(finished_demo):
    """The demo's samples are single-end: `all` asks no pair_calls.tsv of them."""
    assert not list(finished_demo.glob("results/*/pair_calls.tsv"))
    assert list(finished_demo.glob("results/*/read_calls.tsv"))
