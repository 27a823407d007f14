"""`snakemake --report` on finished runs: the HTML report says what was run and how it was validated, and
stays small whatever the number of reads (no per-read file is bundled)."""

import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import copy_workflow, run_snakemake
from benchmarks.synthetic import synthetic_reads, write_fasta

PARTIAL = "merge:\n  allow_missing: true\n"


def build_report(workdir, name, *options):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--configfile", "config/demo.yaml", *options,
                           "--report", name], cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return workdir / name


def new_workdir(root, demo_models_dir):
    workdir = copy_workflow(root)
    shutil.copytree(demo_models_dir, workdir / "resources")
    return workdir


@pytest.fixture
def demo_run(finished_demo_copy):
    """The session's demo run, its report built with merge.allow_missing: true (which changes nothing when
    no id is missing but is said in the report)."""
    (finished_demo_copy / "config/partial.yaml").write_text(PARTIAL)
    return finished_demo_copy


def test_the_html_report_tells_how_the_samples_were_validated(demo_run):
    report = build_report(demo_run, "report.zip", "config/partial.yaml")
    with zipfile.ZipFile(report) as bundle:
        names = bundle.namelist()
        text = "\n".join(bundle.read(name).decode("utf-8", "replace") for name in names
                         if name.endswith((".html", ".js", ".rst")))
    assert "merge.allow_missing: true" in text and "Every sample was validated" not in text
    assert "UNTRAINED MODELS: the embeddings of coding, mixed were computed with random-weight models" in text
    assert "a read is virus when any of its chunks is" in text
    # Counts, plots and a bounded table of virus reads; no per-read file.
    assert any(name.endswith("/virus_reads.html") for name in names)
    assert not any(name.endswith(("read_calls.tsv", "predictions.tsv", "virus_reads.tsv", ".fa.gz")) for name in names)


@pytest.mark.workflow
def test_the_report_of_20000_reads_is_about_the_size_of_the_demos(demo_run, tmp_path, demo_models_dir):
    """Both built by `snakemake --report` from real runs: the demo (48 reads in 2 samples) and one sample
    of 20,000 synthetic reads through the same tiny models (short reads, one embed job per model)."""
    demo = build_report(demo_run, "report.html", "config/partial.yaml").stat().st_size
    workdir = new_workdir(tmp_path / "big", demo_models_dir)
    write_fasta(workdir / "big.fa.gz", synthetic_reads(20_000, 150, 300, coding_fraction=0.1, seed=1))
    (workdir / "big.tsv").write_text("sample\tfasta\nbig\tbig.fa.gz\n")
    config = {"samples": "big.tsv", "shard_residues": 10_000_000}
    run_snakemake(workdir, config=config)
    with open(workdir / "results/big/read_calls.tsv") as handle:
        calls = [line.rsplit("\t", 1)[1].strip() for line in list(handle)[1:]]
    assert len(calls) == 20_000 and calls.count("virus") > 1000  # the report's table is full
    big = build_report(workdir, "report.html", "--config", *(f"{k}={v}" for k, v in config.items())).stat().st_size
    print(f"report.html: demo {demo:,} bytes, 20,000 reads {big:,} bytes ({big / demo:.3f}x)")
    assert big <= 1.15 * demo, (demo, big)
