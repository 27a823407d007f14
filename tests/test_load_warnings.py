"""Warnings when the workflow loads, for a run that can go ahead but may not mean what the user thinks:
short reads against the chunk length, and compat: fixed with a published classifier."""

import subprocess
import sys

import pytest

from benchmarks.synthetic import synthetic_reads, write_fasta
from conftest import copy_workflow
from virnucflow.estimate import estimate_sample, median_read_length
from virnucflow.preflight import load_warnings
from virnucflow.schema import defaults


def reads_of_length(path, length, n=40, seed=3):
    write_fasta(path, synthetic_reads(n, length, length, coding_fraction=1.0, seed=seed, prefix="r"))
    return str(path)


def config(**changes):
    settings = defaults()
    settings.update(samples="unused.tsv", **changes)
    return settings


def test_short_reads_are_one_line_naming_the_samples_and_the_choices(tmp_path):
    samples = {f"gut_{i}": [reads_of_length(tmp_path / f"g{i}_R1.fa", 150, seed=i),
                            reads_of_length(tmp_path / f"g{i}_R2.fa", 150, seed=i + 50)] for i in range(7)}
    samples["long"] = reads_of_length(tmp_path / "long.fa", 500)
    lines = load_warnings(config(chunk_length=500), samples)
    assert len(lines) == 1 and "\n" not in lines[0]
    line = lines[0]
    assert "7 sample(s) (gut_0 150 bp, gut_1 150 bp, gut_2 150 bp, gut_3 150 bp, gut_4 150 bp and 2 more)" in line
    assert "long" not in line.split("chunk_length")[0]
    assert "chunk_length 500" in line and "chunk_length: 300 with classifier: virnucpro" in line
    assert "merge overlapping pairs" in line and "one chunk of its own length" in line


def test_reads_over_60_percent_of_the_chunk_or_at_300_are_not_warned(tmp_path):
    samples = {"a": reads_of_length(tmp_path / "a.fa", 300), "b": reads_of_length(tmp_path / "b.fa", 150)}
    assert load_warnings(config(chunk_length=500), {"a": samples["a"]}) == []  # 300 >= 0.6 x 500
    assert load_warnings(config(chunk_length=300, classifier="virnucpro"), samples)[0].startswith(
        "short reads: the median length of the first reads of 1 sample(s) (b 150 bp)")


def test_files_the_checks_refuse_are_left_to_them(tmp_path):
    (tmp_path / "bad.fa").write_text("not a reads file\n")
    assert load_warnings(config(), {"missing": str(tmp_path / "none.fa"), "bad": str(tmp_path / "bad.fa")}) == []


@pytest.mark.parametrize("classifier", ["virnucpro", "/cache/500_model.pth", "models/300_model.pth"])
def test_compat_fixed_with_a_published_classifier_is_warned(tmp_path, classifier):
    lines = load_warnings(config(compat="fixed", classifier=classifier), {})
    assert len(lines) == 1 and "compat: fixed with the published classifier" in lines[0]
    assert load_warnings(config(compat="virnucpro", classifier=classifier), {}) == []
    assert load_warnings(config(compat="fixed", classifier="mine/retrained.pth"), {}) == []


def test_the_estimate_gives_the_median_read_length_of_the_records_it_reads(tmp_path):
    paths = [reads_of_length(tmp_path / "r1.fa", 150), reads_of_length(tmp_path / "r2.fa", 151, seed=9)]
    assert median_read_length(paths) == 150.5
    assert estimate_sample("s", paths, 500, "virnucpro").median_length == 150.5


@pytest.mark.workflow
def test_a_dry_run_warns_of_short_reads_and_shows_their_length(tmp_path, demo_models_dir):
    workdir = copy_workflow(tmp_path / "run")
    (workdir / "resources").symlink_to(demo_models_dir)
    reads_of_length(workdir / "short.fa", 150)
    (workdir / "short.tsv").write_text("sample\treads\nshort\tshort.fa\n")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "config/demo.yaml",
                           "--config", "samples=short.tsv"], cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stdout + proc.stderr
    assert "median read 150 bp" in said and "short reads: the median length" in said
