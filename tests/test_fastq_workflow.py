"""FASTQ and paired-end samples through the real Snakefile (Snakemake API, tiny demo models)."""

import csv
import gzip

from conftest import run_snakemake

RESULTS = ["predictions.tsv", "chunk_calls.tsv", "chunk_scores.tsv", "read_calls.tsv"]


def fasta_records(path):
    text = path.read_text()
    return [(block.split("\n", 1)[0], block.split("\n", 1)[1].replace("\n", "")) for block in text.split(">")[1:]]


def write_fastq(path, records):
    with gzip.open(path, "wt") as handle:
        for head, seq in records:
            handle.write(f"@{head}\n{seq}\n+\n{'F' * len(seq)}\n")


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
    run_snakemake(demo_workdir, targets=[f"results/{s}/read_calls.tsv" for s in ("fasta", "fastq", "paired")],
                  config={"shard_residues": 10**7})  # one shard per sample: fewer jobs
    assert len((demo_workdir / "results/fasta/predictions.tsv").read_text().splitlines()) > 10  # frames were called
    for name in ["work/{}/frames.tsv", "work/{}/reads.tsv", *(f"results/{{}}/{r}" for r in RESULTS)]:
        assert (demo_workdir / name.format("fastq")).read_bytes() == (demo_workdir / name.format("fasta")).read_bytes()
    with open(demo_workdir / "results/paired/read_calls.tsv", newline="") as handle:
        calls = list(csv.DictReader(handle, delimiter="\t"))
    ids = [head.split()[0] for head, _ in records]
    assert [row["read_id"] for row in calls] == [f"{i}/1" for i in ids] + [f"{i}/2" for i in ids]
