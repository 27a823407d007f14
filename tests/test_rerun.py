"""What a settings change reruns after a finished run (README "Resuming": what reruns what), seen as a
user sees it: `snakemake -n` after one change. A setting that cannot change an output byte plans no
job; one that changes rows replans exactly the jobs whose outputs depend on it."""

import re
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import copy_run


def planned_jobs(workdir, changes):
    """{rule: count} that `snakemake -n` plans after the demo config is changed by `changes`
    ({"embed.dna_token_budget": 2048, ...})."""
    config = yaml.safe_load((workdir / "config/demo.yaml").read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        section = config
        for parent in parents:
            section = section.setdefault(parent, {})
        section[key] = value
    (workdir / "config/changed.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "config/changed.yaml"],
                          cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if "Nothing to be done" in proc.stdout + proc.stderr:
        return {}
    table = proc.stdout.split("Job stats:", 1)[1].split("total", 1)[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.M) if rule != "all"}


pytestmark = pytest.mark.workflow  # a dry run per test


@pytest.fixture(scope="module")
def finished(tmp_path_factory, finished_demo):
    """A copy of the session's demo run (conftest), for this module's config changes."""
    workdir = copy_run(finished_demo, tmp_path_factory.mktemp("rerun") / "run")
    shutil.copy(workdir / "resources/demo_models/esm2_t2_tiny.pt", workdir / "resources/esm2_copy.pt")
    assert planned_jobs(workdir, {}) == {}
    return workdir


# What a user changes after an out-of-memory message, a failed job or on another machine.
NOTHING_CHANGES = {
    "embed.dna_token_budget": 1024,
    "embed.protein_token_budget": 999,
    "embed.on_error": "skip",
    "embed.cpu_fallback": True,
    "embed.threads": 2,
    "embed.device": "auto",
    "embed.lock_lease_seconds": 30,
    "merge.buffer_rows": 7,
    "keep_shards": False,
}


@pytest.mark.parametrize("key", list(NOTHING_CHANGES))
def test_a_setting_that_changes_no_byte_reruns_nothing(finished, key):
    assert planned_jobs(finished, {key: NOTHING_CHANGES[key]}) == {}


DOWNSTREAM_OF_EMBEDDINGS = {"tabulate_embed_jobs": 2, "merge": 2, "predict": 2, "calls": 2, "virus_reads": 2,
                            "virus_reads_table": 1, "report_plots": 1}


@pytest.mark.parametrize("key, value, embed_jobs", [
    ("models.esm2", "resources/esm2_copy.pt", {"embed_protein": 7}),
    ("embed.esm_layer", 1, {"embed_protein": 7}),
    ("embed.precision", "bf16", {"embed_dna": 7, "embed_protein": 7}),
])
def test_a_setting_that_changes_rows_reruns_exactly_the_jobs_that_depend_on_it(finished, key, value, embed_jobs):
    planned = planned_jobs(finished, {key: value})
    assert planned == {**embed_jobs, **{rule: n for rule, n in DOWNSTREAM_OF_EMBEDDINGS.items() if rule in planned}}
    assert {"merge", "predict", "report_plots"} <= set(planned)


@pytest.mark.parametrize("key, value", [("chunk_length", 300), ("compat", "fixed"), ("shard_residues", 3000)])
def test_a_setting_that_changes_the_frames_reruns_prepare_and_all_after_it(finished, key, value):
    planned = planned_jobs(finished, {key: value})
    assert planned.get("prepare") == 2 and "demo_models" not in planned
    assert {"merge", "predict", "report_plots"} <= set(planned)


@pytest.mark.parametrize("key, value", [("calls.max_ambiguous_fraction", 0.5), ("calls.min_virus_score", 0.9)])
def test_a_calls_setting_reruns_the_calls_only(finished, key, value):
    """The calls are made from predictions.tsv: never the merge, predict or an embed job again."""
    planned = planned_jobs(finished, {key: value})
    assert planned == {"calls": 2, "virus_reads": 2, "virus_reads_table": 1, "report_plots": 1}
