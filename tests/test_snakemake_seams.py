"""Every use of Snakemake beyond its documented Snakefile language (virnucflow.snakemake_seams), run
against the installed Snakemake in a tiny workflow of its own: a release that changes one fails here,
naming it, before a user's `snakemake -n` does."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import snakemake

from virnucflow import snakemake_seams

SNAKEFILE = """
import json, sys
from virnucflow import snakemake_seams as seams

rule all:
    input: "out/a.txt"

rule make:
    input: "in.txt"
    output: "out/{name}.txt", "out/{name}.log"
    shell: "echo a > {output[0]}; echo b > {output[1]}; sleep $SLEEP_AFTER_WRITING"

# last, as rules/preflight.smk: every rule is known
command = seams.snakemake_command(sys.argv)
if workflow.is_main_process:
    print("SEAMS " + json.dumps({
        "gpu_slots": seams.gpu_slots(workflow, lambda: 3),
        "runs_no_job": seams.runs_no_job(command),
        "dry_run": seams.is_dry_run(command),
        "made": [None if p is None else [p.rule, p.finished]
                 for p in map(lambda f: seams.made_by_rule(workflow, f), ["out/a.txt", "in.txt"])],
    }), flush=True)
"""


@pytest.fixture
def workflow_dir(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "in.txt").write_text("in\n")
    return tmp_path


def run(workdir, *args, sleep=0, background=False):
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", *args]
    env = dict(os.environ, SLEEP_AFTER_WRITING=str(sleep))
    if background:
        return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    return proc, seen(proc.stdout + proc.stderr)


def seen(output):
    lines = [line for line in output.splitlines() if line.startswith("SEAMS ")]
    assert lines, f"the Snakefile printed nothing: {output[-2000:]}"
    return json.loads(lines[0][len("SEAMS "):])


def test_the_installed_snakemake_is_one_the_seams_know():
    major = int(snakemake.__version__.split(".")[0])
    assert major == int(snakemake_seams.TESTED_SNAKEMAKE.split(".")[0]), (
        f"snakemake {snakemake.__version__}: the seams were written for {snakemake_seams.TESTED_SNAKEMAKE}")


def test_gpu_slots_of_a_local_run_and_none_on_a_cluster(workflow_dir):
    """gpu_slots: workflow.global_resources['_nodes'] tells a local run; register_resource adds the slots."""
    assert run(workflow_dir, "-n")[1]["gpu_slots"] == 3, "gpu_slots: a local run registers one slot per GPU"
    assert run(workflow_dir, "-n", "--resources", "gpu=2")[1]["gpu_slots"] == 2, "gpu_slots: --resources gpu=N"
    cluster = run(workflow_dir, "-n", "--executor", "cluster-generic", "--cluster-generic-submit-cmd", "true",
                  "--jobs", "4")[1]
    assert cluster["gpu_slots"] is None, "gpu_slots: an executor with --jobs is no local run"


@pytest.mark.parametrize("args, option, dry", [
    (["-n"], None, True), (["--unlock"], "unlock", False), (["--list-rules"], "list_rules", False),
    (["--dry-run", "--rerun-incomplete"], None, True),
])
def test_the_command_line_as_snakemake_parses_it(workflow_dir, args, option, dry):
    """snakemake_command: snakemake.cli.get_argument_parser and the names it stores options under."""
    found = run(workflow_dir, *args)[1]
    assert (found["runs_no_job"], found["dry_run"]) == (option, dry), f"snakemake_command of {args}"


def test_a_rules_product_is_known_and_finished_only_without_snakemakes_incomplete_marker(workflow_dir):
    """made_by_rule: workflow.rules, is_producer, get_wildcards, expand_output, and the file names of
    .snakemake/incomplete/ markers (a job killed after writing its outputs is not finished)."""
    assert run(workflow_dir, "-n")[1]["made"] == [["make", False], None], "made_by_rule: a product not made yet"
    proc = run(workflow_dir, sleep=60, background=True)
    deadline = time.monotonic() + 60
    while not (workflow_dir / "out/a.log").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # both outputs written, the job not finished
    proc.wait()
    assert (workflow_dir / "out/a.txt").exists()
    os.chdir(workflow_dir)
    try:
        assert snakemake_seams.marked_incomplete("out/a.txt"), "marked_incomplete: .snakemake/incomplete/ names"
    finally:
        os.chdir(os.path.dirname(__file__))
    assert run(workflow_dir, "--unlock")[1]["made"] == [["make", False], None], "made_by_rule: a killed job's output"
    run(workflow_dir, "--rerun-incomplete")
    assert run(workflow_dir, "-n")[1]["made"] == [["make", True], None], "made_by_rule: a finished product"


def test_the_inputs_snakemake_recorded_for_a_file(workflow_dir):
    """recorded_inputs: .snakemake/metadata/ records, named as the incomplete markers are."""
    run(workflow_dir)
    os.chdir(workflow_dir)
    try:
        assert snakemake_seams.recorded_inputs("out/a.txt") == ["in.txt"], "recorded_inputs: metadata's input list"
        assert snakemake_seams.recorded_inputs("in.txt") is None  # no job made it
    finally:
        os.chdir(os.path.dirname(__file__))
