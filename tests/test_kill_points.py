"""A kill at any stage leaves nothing behind (issue 25): for every rule of the workflow, the whole run
is SIGKILLed the moment a job of that rule has written a temporary and not yet renamed it
(tests/kill_points: a hook in `virnucflow.atomic.before_rename`), then `--unlock` and
`--rerun-incomplete`, as README "Resuming" says. The resume succeeds, nothing hidden is left under
work/, results/ or resources/ (Snakemake's own `.snakemake_timestamp` aside) and the results equal an uninterrupted
run's.

Workflow-level (two runs per rule): `make test-all`.
"""

import gzip
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, copy_workflow
from kill_points.sitecustomize import environment
from virnucflow.embeddings import open_embeddings

pytestmark = pytest.mark.workflow

# The demo's gzipped sample alone, as R1 of a pair, in a few shards: every rule runs, in a third of the demo's jobs.
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--configfile", "config/demo.yaml", "--cores", "2",
             "--config", "samples=config/kill_samples.tsv", "shard_residues=4000"]
SAMPLE = "mixed"
# Files whose bytes do not depend on when or how fast the run went.
RESULTS = ["predictions.tsv", "chunk_calls.tsv", "chunk_scores.tsv", "read_calls.tsv", "pair_calls.tsv",
           "validation.json", "missing_ids.txt"]


def workflow_rules():
    """The rules and checkpoints of the workflow, as its rules/*.smk declare them (`all` has no job)."""
    names = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        names += re.findall(r"^(?:rule|checkpoint) (\w+):", smk.read_text(), flags=re.MULTILINE)
    return names


STAGES = workflow_rules()


def snakemake(workdir, *args, env=None):
    return subprocess.run([*SNAKEMAKE, *args], cwd=workdir, capture_output=True, text=True, env=env,
                          start_new_session=True)  # a session of its own: the hook kills its whole group


def outcome(workdir):
    """What a user takes away from the demo: per sample, the merged rows and the calls files; the viral reads."""
    found = {}
    folder = workdir / "results" / SAMPLE
    with open_embeddings(folder / "embeddings.h5") as merged:
        found["embeddings"] = (merged.read_ids(), merged.embeddings[:])
    for name in RESULTS:
        found[name] = (folder / name).read_bytes()
    found["virus_reads"] = gzip.decompress((folder / "virus_reads.fa.gz").read_bytes())
    found["virus_reads.tsv"] = (workdir / "results/virus_reads.tsv").read_bytes()
    found["summary.tsv"] = (workdir / "results/report/summary.tsv").read_bytes()
    return found


def same(found, expected):
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        if key == "embeddings":
            assert found[key][0] == value[0] and np.array_equal(found[key][1], value[1]), key  # bitwise
        else:
            assert found[key] == value, key


def workflow_copy(root, demo_models_dir, models_built=True):
    workdir = copy_workflow(root)
    example = workdir / "config/example"
    mates = gzip.decompress((example / "mixed.fa.gz").read_bytes()).decode().replace("\n>", "\n\0>").split("\0")
    complement = str.maketrans("ACGTNacgtn", "TGCANtgcan")  # R2: each read reverse-complemented, same id
    (example / "mixed_R2.fa").write_text("".join(
        f"{head}\n{body.replace(chr(10), '')[::-1].translate(complement)}\n"
        for head, body in (record.split("\n", 1) for record in mates)))
    (workdir / "config/kill_samples.tsv").write_text(
        f"sample\treads\treads2\n{SAMPLE}\tconfig/example/mixed.fa.gz\tconfig/example/mixed_R2.fa\n")
    if models_built:
        shutil.copytree(demo_models_dir, workdir / "resources")
    return workdir


def hidden_leftovers(workdir):
    """Hidden files or folders, and embed sidecars, anywhere under work/, results/ and resources/."""
    return sorted(str(path.relative_to(workdir)) for top in ("work", "results", "resources")
                  for path in (workdir / top).rglob("*")
                  if (path.name.startswith(".") and path.name != ".snakemake_timestamp")
                  or path.name.endswith(".partial"))


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, demo_models_dir):
    workdir = workflow_copy(tmp_path_factory.mktemp("clean") / "run", demo_models_dir)
    proc = snakemake(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return outcome(workdir)


def test_the_stages_are_the_workflows_rules(tmp_path, demo_models_dir):
    """The list the kill tests run through is every rule Snakemake sees, but `all`."""
    proc = snakemake(workflow_copy(tmp_path / "run", demo_models_dir), "--list-rules")
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = {line.strip() for line in proc.stdout.splitlines() if re.fullmatch(r"\s*\w+\s*", line)}
    assert sorted(listed - {"all"}) == sorted(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_a_kill_at_any_stage_leaves_nothing_behind(tmp_path, demo_models_dir, clean_run, stage):
    # demo_models: the run builds the models, and is killed as it renames them
    workdir = workflow_copy(tmp_path / "run", demo_models_dir, models_built=stage != "demo_models")
    killed = snakemake(workdir, env=environment(stage))
    assert killed.returncode == -signal.SIGKILL, f"no job of {stage} reached its rename: {killed.stderr[-2000:]}"
    left = hidden_leftovers(workdir)
    assert left, f"the kill during {stage} left no temporary: the hook fired too late to test anything"

    assert snakemake(workdir, "--unlock").returncode == 0
    resumed = snakemake(workdir, "--rerun-incomplete")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    assert hidden_leftovers(workdir) == []
    same(outcome(workdir), clean_run)
