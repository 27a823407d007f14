"""virnucflow as a module of another workflow: the user's Snakefile `module`-imports it and runs the demo."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, copy_workflow
from virnucflow.embeddings import open_embeddings


@pytest.mark.workflow
def test_the_workflow_runs_as_a_module_of_another_workflow(tmp_path, demo_models_dir):
    upstream = copy_workflow(tmp_path / "virnucflow")  # where snakedeploy would put it
    outer = tmp_path / "analysis"
    (outer / "config").mkdir(parents=True)
    shutil.copy(REPO / "tests/module/Snakefile", outer / "Snakefile")
    shutil.copytree(REPO / "config/example", outer / "data")
    shutil.copytree(demo_models_dir, outer / "resources")
    (outer / "samples.tsv").write_text("sample\tfasta\ncoding\tdata/coding.fa\n")
    demo = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    demo["samples"] = "samples.tsv"
    (outer / "config/outer.yaml").write_text(yaml.safe_dump(
        {"virnucflow_snakefile": str(upstream / "Snakefile"), "virnucflow": demo}))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2"], cwd=outer, capture_output=True,
                          text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    with open_embeddings(outer / "results/coding/embeddings.h5") as merged:
        frames = len(merged)
    assert frames > 0 and (outer / "results/coding/frame_count.txt").read_text() == f"{frames}\n"
    assert (outer / "results/coding/read_calls.tsv").stat().st_size > 0
    assert (outer / "results/report/summary.tsv").exists()
    assert not (upstream / "results").exists()  # outputs land in the user's workflow, not in the module's
