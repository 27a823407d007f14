"""Many samples in parts: `virnucflow run-in-parts` (docs/cluster.md, "Many samples").

Each sample's prepare is a checkpoint, and after every finished checkpoint Snakemake re-examines its
whole DAG, so the scheduler's own time grows with the square of the samples in one run. Cut into
parts of a few dozen samples it stays flat per sample. This module cuts the sample sheet into part
sheets (`split_sheet`, pure; `write_parts`), runs Snakemake on each part in turn with the same
arguments and `--config samples=<part>`, then once on the whole sheet for the report
(`run_in_parts`). A part that finished is recorded beside its sheet (`<part>.done`: the part's rows
and the arguments), so running the same command again after a failure skips it; the run over the
whole sheet brings anything else up to date.
"""

import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path

from .atomic import atomic_open
from .errors import VirnucflowError
from .samples import read_sample_sheet

log = logging.getLogger(__name__)


def split_sheet(text, part_size):
    """The texts of the part sheets of a sample sheet's `text`: each the header line (with any comment
    lines above it) and the next `part_size` sample rows, in the sheet's order. Blank lines and
    comment lines between rows are left out (the workflow ignores them)."""
    if part_size < 1:
        raise VirnucflowError(f"part size {part_size}: give at least 1 sample per part")
    head, rows = [], []
    for line in text.splitlines():
        if not any(h.strip() and not h.startswith("#") for h in head):
            head.append(line)  # up to and including the header line
        elif line.strip() and not line.startswith("#"):
            rows.append(line)
    head = [line for line in head if line.strip()]
    return ["".join(f"{line}\n" for line in head + rows[start:start + part_size])
            for start in range(0, len(rows), part_size)]


def part_paths(sheet, count, folder):
    """Where the `count` part sheets of `sheet` go: FOLDER/<sheet name>.part001.tsv, ..."""
    return [Path(folder) / f"{Path(sheet).stem}.part{index:03d}.tsv" for index in range(1, count + 1)]


def write_parts(sheet, part_size, folder):
    """Check the sheet, write its part sheets into `folder` and return their paths. A part sheet whose
    text is unchanged is not rewritten; parts of an earlier, longer sheet are removed."""
    read_sample_sheet(sheet)  # a bad sheet fails here, with the workflow's own message
    texts = split_sheet(Path(sheet).read_text(), part_size)
    paths = part_paths(sheet, len(texts), folder)
    Path(folder).mkdir(parents=True, exist_ok=True)
    for path, text in zip(paths, texts):
        if not path.is_file() or path.read_text() != text:
            with atomic_open(path) as handle:
                handle.write(text)
            _marker(path).unlink(missing_ok=True)
    stem = Path(sheet).stem
    for stale in Path(folder).glob(f"{stem}.part[0-9][0-9][0-9]*"):
        if stale.with_suffix(".tsv") not in paths:
            stale.unlink()
    return paths


def with_samples(snakemake_args, sheet):
    """`snakemake_args` with `samples=<sheet>` added to their --config (or a --config of its own)."""
    # --config=a=1 and -Ca=1 as --config a=1: Snakemake keeps only its last --config, so samples=
    # must join the user's own values, not follow them in a --config of its own.
    args = []
    for arg in snakemake_args:
        attached = arg[len("--config="):] if arg.startswith("--config=") else arg[2:] if arg[:2] == "-C" else ""
        args += ["--config", attached] if attached else [arg]
    if any(arg.startswith("samples=") for arg in args):
        raise VirnucflowError("give the sample sheet with --samples, not as samples=... in the snakemake arguments")
    for flag in ("--config", "-C"):
        if flag in args:
            at = len(args) - args[::-1].index(flag)
            return args[:at] + [f"samples={sheet}"] + args[at:]
    return args + ["--config", f"samples={sheet}"]


def _marker(part):
    return Path(part).with_suffix(".done")


def _stamp(part, snakemake_args):
    digest = hashlib.sha256(Path(part).read_bytes()).hexdigest()
    return json.dumps({"part_sha256": digest, "snakemake_args": list(snakemake_args)}) + "\n"


def run_in_parts(sheet, part_size, snakemake_args, folder="parts", snakemake=None, run=subprocess.run):
    """Run Snakemake on each part of `sheet` in turn, then on the whole sheet; raise at the first failure.

    `snakemake`: the command (default: this Python's `-m snakemake`); `run`: how to run it (tests).
    Parts that finished earlier with the same rows and arguments are skipped."""
    snakemake = list(snakemake or [sys.executable, "-m", "snakemake"])
    parts = write_parts(sheet, part_size, folder)
    resume = "fix the cause and run the same command again: parts that finished are skipped"
    for index, part in enumerate(parts, start=1):
        stamp = _stamp(part, snakemake_args)
        if _marker(part).is_file() and _marker(part).read_text() == stamp:
            log.info("part %d of %d (%s): finished before, skipped", index, len(parts), part)
            continue
        samples = list(read_sample_sheet(part))
        log.info("part %d of %d (%s): samples %s .. %s (%d)", index, len(parts), part, samples[0], samples[-1],
                 len(samples))
        status = run(snakemake + with_samples(snakemake_args, Path(part).resolve())).returncode
        if status != 0:
            raise VirnucflowError(f"part {index} of {len(parts)} ({part}, samples {samples[0]} .. {samples[-1]}) "
                                  f"failed: snakemake exit status {status}; {resume} (after a hard kill, run "
                                  "snakemake --unlock with the same arguments first)")
        with atomic_open(_marker(part)) as handle:
            handle.write(stamp)
    log.info("every part done: snakemake on the whole sheet (%s) for the report", sheet)
    status = run(snakemake + with_samples(snakemake_args, Path(sheet).resolve())).returncode
    if status != 0:
        raise VirnucflowError(f"the run over the whole sheet ({sheet}) failed: snakemake exit status {status}; "
                              f"{resume}")
