"""What a run will cost, printed by `snakemake -n` before it runs: the estimate against what prepare and
the embed jobs then count."""

import gzip
import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from helpers import run_prepare
from virnucflow.estimate import disk_bytes, estimate_sample, gpu_hours
from benchmarks.synthetic import synthetic_reads, write_fasta


@pytest.mark.parametrize("name", ["coding.fa", "mixed.fa.gz"])
def test_the_demo_inputs_are_estimated_as_prepare_counts_them(tmp_path, name):
    fasta = REPO / "config/example" / name
    actual = run_prepare(fasta, tmp_path / "work", sample="s", chunk_length=500, shard_residues=1500)
    estimate = estimate_sample("s", str(fasta), 500, "virnucpro")
    tolerance = 0.0 if name.endswith(".fa") else 0.1  # a .gz is scaled by its first text's gzip ratio
    for field in ("reads", "frames", "residues"):
        assert estimate.__dict__[field] == pytest.approx(actual[field], rel=tolerance, abs=1e-6), field


@pytest.mark.parametrize("suffix", [".fa", ".fa.gz"])
def test_a_large_input_is_estimated_from_its_first_records(tmp_path, suffix):
    """20,000 reads of 150-1,500 bp (13 MB): the estimate reads 256 KiB of them."""
    fasta = tmp_path / "big.fa"
    write_fasta(fasta, synthetic_reads(20_000, 150, 1500, coding_fraction=0.6, seed=5))
    if suffix == ".fa.gz":  # gzip's usual level (write_fasta's gzip.open takes level 9: ten seconds here)
        with open(fasta, "rb") as text, gzip.open(tmp_path / "big.fa.gz", "wb", compresslevel=6) as packed:
            shutil.copyfileobj(text, packed)
        fasta = tmp_path / "big.fa.gz"
    actual = run_prepare(fasta, tmp_path / "work", sample="s", chunk_length=500)
    estimate = estimate_sample("s", str(fasta), 500, "virnucpro")
    for field in ("reads", "frames", "residues"):
        assert estimate.__dict__[field] == pytest.approx(actual[field], rel=0.1), field


def test_gpu_hours_and_disk_follow_the_measured_rates():
    assert gpu_hours(75_024 * 3600, "protein") == pytest.approx(1.0)  # ESM-2 3B on one H200
    assert gpu_hours(75_024 * 3600, "protein", weight_bytes=11.4e9 / 4) == pytest.approx(0.25)  # a model 4x smaller
    shards, result, peak = disk_bytes(1_000_000, [768, 2560])
    assert result == pytest.approx(13.365e9, rel=0.001) and peak == shards + result  # measured: 13,365 B a frame
    assert disk_bytes(1_000_000, [768, 2560], "float16")[1] == pytest.approx(6.709e9, rel=0.001)


def test_a_dry_run_prints_the_estimate_and_the_embed_jobs_count_the_same_tokens(demo_workdir, finished_demo):
    """The estimate of a dry run before the demo ran, against the tokens its embed jobs counted (the
    session's demo run)."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "config/demo.yaml"],
                          cwd=demo_workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    line = next(line for line in output.splitlines() if line.startswith("  coding: "))
    assert line.startswith("  coding: 24 reads, 37 frames, 5.64 k ESM-2 tokens")
    assert " total: " in output

    tokens = {"dna": 0, "protein": 0}
    for stats in (finished_demo / "work/coding/embed").glob("*.json"):
        data = json.loads(stats.read_text())
        tokens[data["kind"]] += data["tokens"]
    assert f"{tokens['protein'] / 1000:.3g} k ESM-2 tokens" in line
    assert f"{tokens['dna'] / 1000:.3g} k DNABERT-S tokens" in line  # the demo's own tokenizer
