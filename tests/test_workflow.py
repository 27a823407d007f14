"""The real Snakefile, run through the Snakemake API on the bundled example reads with tiny models."""

import csv
import gzip
import json
import shutil

import h5py
import numpy as np
import pytest

from conftest import run_snakemake
from helpers import write_embeddings
from virnucflow.embeddings import open_embeddings


def read_tsv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def fasta_ids(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as handle:
        return [line[1:].split()[0] for line in handle if line.startswith(">")]


def fasta_records(path):
    """(header line without '>', unwrapped sequence) of every record."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as handle:
        records = []
        for line in handle:
            if line.startswith(">"):
                records.append([line[1:].rstrip("\n"), ""])
            else:
                records[-1][1] += line.strip()
    return [tuple(r) for r in records]


def test_demo_runs_end_to_end_and_accounts_for_every_id(finished_demo):
    demo_workdir = finished_demo  # the session's one run of the demo (conftest)
    for sample, fasta in [("coding", "config/example/coding.fa"), ("mixed", "config/example/mixed.fa.gz")]:
        frames = [row["frame_id"] for row in read_tsv(demo_workdir / f"work/{sample}/frames.tsv")]
        assert frames, f"{sample}: the example reads should keep some frames"
        with open_embeddings(demo_workdir / f"results/{sample}/embeddings.h5") as merged:
            assert merged.read_ids() == frames  # every expected id, once, in frames.tsv order
            assert merged.dim == 48 + 64  # tiny DNABERT-S block then tiny ESM-2 block
            assert np.isfinite(merged.embeddings[:]).all()
        validation = json.loads((demo_workdir / f"results/{sample}/validation.json").read_text())
        assert validation["missing"] == 0 and validation["ok"] and "duplicates" not in validation
        read_calls = read_tsv(demo_workdir / f"results/{sample}/read_calls.tsv")
        assert [row["read_id"] for row in read_calls] == fasta_ids(demo_workdir / fasta)
        predictions = read_tsv(demo_workdir / f"results/{sample}/predictions.tsv")
        assert [row["Sequence_ID"] for row in predictions] == frames
        assert {row["call"] for row in read_calls} <= {"virus", "others", "ambiguous", "no_frames"}
        assert all(0 <= float(row["ambiguous_fraction"]) <= 1 for row in read_calls)
        chunk_scores = read_tsv(demo_workdir / f"results/{sample}/chunk_scores.tsv")
        assert [row["Modified_ID"] for row in chunk_scores] == list(dict.fromkeys(f[:-2] for f in frames))
        chunk_calls = read_tsv(demo_workdir / f"results/{sample}/chunk_calls.tsv")  # VirNucPro's, sorted by id
        assert [(r["Modified_ID"], r["Is_Virus"]) for r in chunk_calls] == sorted(
            (r["Modified_ID"], r["Is_Virus"]) for r in chunk_scores)
        # The virus reads out: exactly read_calls' virus reads, in input order, with their header lines.
        virus = {row["read_id"] for row in read_calls if row["call"] == "virus"}
        assert virus and len(virus) < len(read_calls)
        expected = "".join(f">{header}\n{seq}\n" for header, seq in fasta_records(demo_workdir / fasta)
                           if header.split()[0] in virus)
        with gzip.open(demo_workdir / f"results/{sample}/virus_reads.fa.gz", "rt") as handle:
            assert handle.read() == expected
    table = read_tsv(demo_workdir / "results/virus_reads.tsv")
    assert [(row["sample"], row["read_id"]) for row in table] == [
        (sample, row["read_id"]) for sample in ("coding", "mixed")
        for row in read_tsv(demo_workdir / f"results/{sample}/read_calls.tsv") if row["call"] == "virus"]
    assert list(table[0]) == ["sample", "read_id", "length", "max_virus_score", "virus_chunks", "chunks_with_frames",
                              "ambiguous_fraction"]
    assert (demo_workdir / "results/report/summary.tsv").stat().st_size > 0
    page = (demo_workdir / "results/report/summary.html").read_text()
    assert all(f"<td>{sample}</td>" in page for sample in ("coding", "mixed"))


def test_min_virus_score_reruns_the_read_calls_and_the_virus_reads_follow(finished_demo_copy):
    """calls.min_virus_score is a param of rule calls: changing it on a finished run reruns the read calls,
    and the viral reads follow; VirNucPro's files do not change."""
    demo_workdir = finished_demo_copy
    table = read_tsv(demo_workdir / "results/virus_reads.tsv")
    before = {name: {s: (demo_workdir / f"results/{s}/{name}").read_bytes() for s in ("coding", "mixed")}
              for name in ("predictions.tsv", "chunk_calls.tsv", "read_calls.tsv")}
    threshold = float(sorted(row["max_virus_score"] for row in table)[len(table) // 2])
    run_snakemake(demo_workdir, config={"calls": {"min_virus_score": threshold}})
    for name in ("predictions.tsv", "chunk_calls.tsv"):
        assert {s: (demo_workdir / f"results/{s}/{name}").read_bytes() for s in before[name]} == before[name]
    table = read_tsv(demo_workdir / "results/virus_reads.tsv")
    assert table and len(table) < sum(1 for s in ("coding", "mixed")
                                      for row in read_tsv(demo_workdir / f"results/{s}/read_calls.tsv")
                                      if row["max_virus_score"])
    assert all(float(row["max_virus_score"]) >= threshold for row in table)
    for sample in ("coding", "mixed"):
        virus = [row["read_id"] for row in read_tsv(demo_workdir / f"results/{sample}/read_calls.tsv")
                 if row["call"] == "virus"]
        assert virus == [row["read_id"] for row in table if row["sample"] == sample]
        assert fasta_ids(demo_workdir / f"results/{sample}/virus_reads.fa.gz") == virus
    assert (demo_workdir / "results/report/summary.tsv").stat().st_size > 0
    page = (demo_workdir / "results/report/summary.html").read_text()
    assert all(f"<td>{sample}</td>" in page for sample in ("coding", "mixed"))


def test_missing_id_fails_the_dag_and_leaves_no_result(finished_demo_copy):
    demo_workdir = finished_demo_copy  # results/coding/validation.json made by the demo run
    # Drop one id from both shards of one shard pair, as a lost batch would.
    lost = None
    for kind in ("dna", "protein"):
        shard = demo_workdir / f"work/coding/embed/00000.{kind}.h5"
        with open_embeddings(shard) as original:
            ids, rows, attrs = original.read_ids(), original.embeddings[:], dict(original.attrs)
        lost = lost or ids[0]
        keep = [i for i, sid in enumerate(ids) if sid != lost]
        attrs.pop("complete", None)
        write_embeddings(shard, [ids[i] for i in keep], rows[keep], attrs)

    with pytest.raises(Exception):
        run_snakemake(demo_workdir, targets=["results/coding/validation.json"], forcerun=["merge"])
    assert not (demo_workdir / "results/coding/embeddings.h5").exists()
    assert not (demo_workdir / "results/coding/validation.json").exists()
    log = (demo_workdir / "logs/coding/merge.log").read_text()
    assert "1 of" in log and "have no embedding" in log and lost in log


def test_a_bad_record_fails_prepare_with_a_one_line_error_and_no_output(demo_workdir):
    """A problem deep in a file (past what the check at workflow start reads) is prepare's to find."""
    reads = demo_workdir / "config/example/late_error.fa"
    reads.write_text(">read1\nACGT\n>read2\nACGJT\n")
    (demo_workdir / "config/demo_samples.tsv").write_text("sample\tfasta\nbad\tconfig/example/late_error.fa\n")
    with pytest.raises(Exception):
        run_snakemake(demo_workdir, targets=["work/bad/frames.tsv"])
    errors = [line for line in (demo_workdir / "logs/bad/prepare.log").read_text().splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "late_error.fa: record 2 ('read2'): character 'J'" in errors[0]
    assert not (demo_workdir / "work/bad/frames.tsv").exists()
    assert not (demo_workdir / "work/bad/shards").exists()


@pytest.mark.parametrize(
    "sheet, message",
    [
        ("sample\tfasta\nbad/name\tconfig/example/coding.fa\n", "not a safe path component"),
        ("sample\tfasta\ns1\tconfig/example/nope.fa\n", "not found"),
        ("sample\tfasta\ns1\tconfig/example/coding.fa\ns1\tconfig/example/coding.fa\n", "listed twice"),
        ("sample\tfasta\nreport\tconfig/example/coding.fa\n", "row 2: sample name 'report' is reserved"),
    ],
)
def test_sample_sheet_errors_stop_before_any_job(demo_workdir, sheet, message):
    (demo_workdir / "config/demo_samples.tsv").write_text(sheet)
    with pytest.raises(Exception, match=message):
        run_snakemake(demo_workdir)
    assert not (demo_workdir / "work").exists()
