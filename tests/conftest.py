"""Shared fixtures: where the reference data lives, and running the real Snakefile in a temp folder.

`finished_demo` is the demo workflow run once, end to end, for the whole session: tests read it and
never write into it; a test that runs Snakemake again on a finished run takes `finished_demo_copy`.
Tests that need a whole run of their own are marked `workflow` (in `make test-all`, not the gate)."""

import shutil
from pathlib import Path

import pytest

from benchmarks.workflow import WORKFLOW_FILES, copy_workflow  # noqa: F401  (the tests import them from here)

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference" / "virnucpro"


@pytest.fixture
def reference_dir():
    """../shared/reference/virnucpro (outputs of the original VirNucPro); skip where a clone lacks it."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference outputs not found at {REFERENCE} (only present beside the team's checkout)")
    return REFERENCE


def run_snakemake(workdir, configfile="config/demo.yaml", targets=(), forcerun=(), config=None, cores=2,
                  rerun_incomplete=False):
    """Run the copied Snakefile in `workdir` through the Snakemake API; raise on failure."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        ExecutionSettings,
        OutputSettings,
        ResourceSettings,
    )

    workdir = Path(workdir)
    with SnakemakeApi(OutputSettings(quiet=None, show_failed_logs=True)) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=cores, resources={"gpu": 1}),
            config_settings=ConfigSettings(configfiles=[workdir / configfile], config=config or {}),
            snakefile=workdir / "Snakefile",
            workdir=workdir,
        )
        dag = workflow.dag(
            DAGSettings(targets=set(targets), forcerun=set(forcerun), force_incomplete=rerun_incomplete)
        )
        dag.execute_workflow(executor="local", execution_settings=ExecutionSettings(latency_wait=1))


@pytest.fixture(scope="session")
def demo_models_dir(tmp_path_factory):
    """The tiny demo models, built once per test session by the workflow's own code."""
    from virnucflow.demo import write_demo_models

    root = tmp_path_factory.mktemp("demo_models")
    models = root / "resources" / "demo_models"
    write_demo_models(models / "dnabert_s_tiny", models / "esm2_t2_tiny.pt", models / "classifier_tiny.pth")
    return root / "resources"


@pytest.fixture
def demo_workdir(tmp_path, demo_models_dir):
    """A fresh workflow copy with the demo models already built."""
    workdir = copy_workflow(tmp_path / "run")
    shutil.copytree(demo_models_dir, workdir / "resources")
    return workdir


@pytest.fixture(scope="session")
def finished_demo(tmp_path_factory, demo_models_dir):
    """The demo, run once for the session as `make demo` runs it. Read-only: copy it to change it."""
    workdir = copy_workflow(tmp_path_factory.mktemp("finished_demo") / "run")
    shutil.copytree(demo_models_dir, workdir / "resources")
    run_snakemake(workdir)
    return workdir


def copy_run(workdir, dest):
    """A copy of the run in `workdir` that Snakemake sees as finished too (times and its records kept)."""
    shutil.copytree(workdir, dest, symlinks=True)
    return Path(dest)


@pytest.fixture
def finished_demo_copy(finished_demo, tmp_path):
    """A copy of the finished demo run of this session, for a test to change and run again."""
    return copy_run(finished_demo, tmp_path / "run")
