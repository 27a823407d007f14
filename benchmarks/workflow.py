"""A copy of the workflow as a user has it, its demo config resized by a YAML overlay; and the job
seconds per rule of a run in such a copy. Shared by the tests (tests/conftest.py) and the benchmarks."""

import csv
import shutil
from collections import defaultdict
from pathlib import Path

import yaml

from benchmarks import REPO

WORKFLOW_FILES = ["Snakefile", "rules", "scripts", "config", "envs", "profiles", "report", "virnucflow"]
DEMO_CONFIG = "config/demo.yaml"


def merged(base, overlay):
    """`base` with `overlay` on top: nested dicts merged key by key, any other value replaced."""
    result = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def write_config(dest, overlay, configfile=DEMO_CONFIG):
    """`dest/configfile`: the copy's demo config with `overlay` merged in; returns its path."""
    dest = Path(dest)
    config = merged(yaml.safe_load((dest / DEMO_CONFIG).read_text()), overlay)
    (dest / configfile).write_text(yaml.safe_dump(config, sort_keys=False))
    return dest / configfile


def copy_workflow(dest, overlay=None, configfile=DEMO_CONFIG, extra=()):
    """A fresh copy of the workflow in `dest` (plus the repository files named in `extra`); with an
    `overlay` (a dict), `configfile` in the copy is the demo config with the overlay merged in."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in [*WORKFLOW_FILES, *extra]:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    if overlay is not None:
        write_config(dest, overlay, configfile)
    return dest


def stage_seconds(root):
    """{rule: [job seconds summed, jobs]} from the Snakemake benchmark files of a run in `root`."""
    stages = defaultdict(lambda: [0.0, 0])
    for bench in Path(root).glob("logs/**/*.benchmark.tsv"):
        rule = bench.parent.name if bench.parent.name.startswith("embed") else bench.name.split(".")[0]
        with open(bench) as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        stages[rule][0] += float(row["s"])
        stages[rule][1] += 1
    return stages
