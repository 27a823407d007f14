"""The cost before the download: `snakemake -n` prints its estimate even when the load-time checks then stop
on models and a classifier that are not downloaded yet, and names the command that downloads them."""

import os
import subprocess
import sys

import pytest

from conftest import copy_workflow


@pytest.mark.workflow
def test_a_dry_run_without_the_models_prints_the_estimate_then_names_the_download(tmp_path):
    workdir = copy_workflow(tmp_path / "run")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch"),
           "VIRNUCFLOW_CLASSIFIER_CACHE": str(tmp_path / "classifiers"), "HF_HUB_OFFLINE": "1"}
    # The shipped config (DNABERT-S, ESM-2 3B, classifier: virnucpro), on the demo's reads.
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1",
                           "--config", "samples=config/demo_samples.tsv"],
                          cwd=workdir, env=env, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    lines = output.splitlines()
    estimate = next(i for i, line in enumerate(lines) if line.startswith("estimate (first "))
    assert lines[estimate + 1].startswith("  coding: 24 reads, 37 frames, ")
    assert any(line.startswith("  total: ") for line in lines)
    classifier = next(i for i, line in enumerate(lines) if line.startswith("classifier: virnucpro: 500_model.pth"))
    assert estimate < classifier and "`virnucflow download-models virnucpro`" in lines[classifier]
    model = next(line for line in lines if line.startswith("models.esm2: "))
    assert "make download-models" in model
    assert not (workdir / "work").exists() and not (workdir / "results").exists()
