"""Every place the workflow relies on Snakemake beyond its documented Snakefile language: each use is
here, once, and tests/test_snakemake_seams.py runs each against the installed Snakemake, naming the
use that a new release breaks. Tested with Snakemake 9.x (TESTED_SNAKEMAKE; the Snakefile's
min_version is its floor).

- `gpu_slots`: whether this is a local run (no executor with its own job limit), read from
  `workflow.global_resources["_nodes"]`, and one `gpu` slot per GPU of the machine registered with
  `workflow.register_resource` when the user gave no `--resources gpu=N`.
- `made_by_rule`: whether a path is an output of a rule (`workflow.rules`, `Rule.is_producer`,
  `Rule.get_wildcards`, `Rule.expand_output`) and finished: every output of its job exists and none
  carries the marker of a job that started and did not finish (`.snakemake/incomplete/`, the default
  file persistence: the urlsafe base64 of the path, split at the folder's PC_NAME_MAX).
- `recorded_inputs`: the input files Snakemake recorded for the job that made a file
  (`.snakemake/metadata/`, named as the markers are), so that a dry run can tell the GPU work a
  changed input re-plans when the embeddings are gone (`estimate.recompute_lines`).
- The report's landing page (report/workflow.rst) reads the run's summary.tsv through the `files` that
  `snakemake --report` hands the page's template, to open on the untrained-models warning
  (tests/test_docs.py::test_the_demo_report_opens_on_the_warning; without them the page loses the warning
  only).
- `snakemake_command`: what the snakemake command line asked for (`snakemake.cli.get_argument_parser`),
  so that commands that run no job skip the load-time checks and a dry run prints the estimate.
"""

import argparse
import json
import os
import sys
from base64 import urlsafe_b64encode
from dataclasses import dataclass
from pathlib import Path

TESTED_SNAKEMAKE = "9.27.1"
INCOMPLETE = os.path.join(".snakemake", "incomplete")
METADATA = os.path.join(".snakemake", "metadata")

# Commands that run no job: the checks only matter before jobs run, and must not block Snakemake's own
# recovery (`--unlock` after a kill) or its bookkeeping. Names as snakemake's own parser stores them.
NO_JOB_OPTIONS = {"unlock", "cleanup_metadata", "report", "lint", "summary", "detailed_summary", "dag", "rulegraph",
                  "filegraph", "d3dag", "touch", "delete_all_output", "delete_temp_output", "cleanup_shadow",
                  "archive", "containerize", "generate_unit_tests", "print_compilation"}


@dataclass(frozen=True)
class Product:
    """A file that rule `rule` of the workflow makes; `finished`: every output of its job exists and
    Snakemake has not marked any of them incomplete."""

    rule: str
    finished: bool


def gpu_slots(workflow, count_gpus):
    """GPU slots of a local run, or None for a cluster run (an executor with --jobs: each embed job asks
    its scheduler for a GPU). A local run has the user's `--resources gpu=N`, else `count_gpus()`,
    registered once by the main process."""
    if workflow.global_resources["_nodes"].value is not None:
        return None
    if workflow.is_main_process and "gpu" not in workflow.global_resources:
        workflow.register_resource("gpu", count_gpus())
    slots = workflow.global_resources.get("gpu")
    return None if slots is None else slots.value


def made_by_rule(workflow, path):
    """A Product for a file that a rule of the workflow makes, else None."""
    producer = next((rule for rule in workflow.rules if rule.is_producer(path)), None)
    if producer is None:
        return None
    outputs = [str(output) for output in producer.expand_output(producer.get_wildcards(path))[0]]
    finished = all(os.path.exists(output) for output in outputs) and not any(map(marked_incomplete, outputs))
    return Product(producer.name, finished)


def marked_incomplete(path):
    """Snakemake's marker of an output whose job started and did not finish (with --persistence-backend
    db a killed build is seen by its missing outputs only)."""
    return os.path.exists(_record(INCOMPLETE, path))


def recorded_inputs(path):
    """The input files Snakemake recorded for the job that made `path` (its metadata record), or None
    where there is no record: what its `input` rerun trigger compares the job's inputs now with."""
    try:
        with open(_record(METADATA, path)) as handle:
            return [str(each) for each in json.load(handle)["input"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _record(folder, path):
    """Snakemake's file for `path` in one of its record folders: the urlsafe base64 of the path, split
    at the folder's PC_NAME_MAX (the default file persistence)."""
    key = urlsafe_b64encode(str(path).encode()).decode()
    piece = (os.pathconf(folder, "PC_NAME_MAX") if os.path.isdir(folder) else 255) - 1
    parts = [key[i : i + piece] for i in range(0, len(key), piece)]
    return os.path.join(folder, *(f"@{part}" for part in parts[:-1]), parts[-1])


def snakemake_command(argv):
    """snakemake's own parse of `argv` when its command-line program runs this process, else None: through
    the Python API, the host program's arguments say nothing about what Snakemake was asked to do."""
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    if Path(argv[0]).name != "snakemake" and not (main and main.name.split(".")[0] == "snakemake"):
        return None
    from snakemake.cli import get_argument_parser

    try:
        args, _ = get_argument_parser().parse_known_args(argv[1:])
    except SystemExit:  # --help, --version, or arguments snakemake itself refuses
        return None
    return args


def runs_no_job(command):
    """The option that makes a parsed snakemake command (snakemake_command) one that runs no job, or None."""
    for name, value in vars(command or argparse.Namespace()).items():
        if value and (name in NO_JOB_OPTIONS or name.startswith("list_")):
            return name
    return None


def is_dry_run(command):
    return bool(command is not None and command.dryrun)
