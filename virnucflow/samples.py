"""The sample sheet: sample name -> FASTA path, checked before any job starts (the FASTA files
themselves are checked by `virnucflow.preflight`)."""

import csv
import re
from pathlib import Path

from .errors import InputError

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Names the workflow uses beside the samples' folders: results/report/ (the report) and the files
# logs/report_plots.log and logs/demo_models.log. Compared without case (case-insensitive file systems).
RESERVED = {"report": "results/report/ holds the report",
            "report_plots.log": "logs/report_plots.log is the report's log",
            "demo_models.log": "logs/demo_models.log is the demo models' log"}


def read_sample_sheet(path):
    """Return {sample: fasta path} from a TSV with columns `sample` and `fasta`.

    Names must be safe path components (they become directories); paths are relative to the
    directory Snakemake runs in, like every other path of the workflow.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: sample sheet not found; set `samples:` in the config to a TSV with columns sample, fasta")
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(handle, delimiter="\t") if row and not row[0].startswith("#")]
    if not rows or [c.strip() for c in rows[0][:2]] != ["sample", "fasta"]:
        raise InputError(f"{path}: the first line must be the header 'sample<TAB>fasta'")
    samples = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise InputError(f"{path}: row {line_no} needs a sample name and a FASTA path separated by a tab")
        name, fasta = row[0].strip(), row[1].strip()
        if not SAFE_NAME.match(name):
            raise InputError(
                f"{path}: row {line_no}: sample name {name!r} is not a safe path component; "
                "use letters, digits, '.', '_' or '-' and start with a letter or digit"
            )
        if name.lower() in RESERVED:
            raise InputError(f"{path}: row {line_no}: sample name {name!r} is reserved ({RESERVED[name.lower()]}, and "
                             f"the sample's files would mix with it); rename the sample, e.g. {name}_1")
        if name in samples:
            raise InputError(f"{path}: row {line_no}: sample {name!r} is listed twice; give each sample one row")
        samples[name] = fasta
    if not samples:
        raise InputError(f"{path}: no samples listed; add rows 'name<TAB>path/to/reads.fa'")
    return samples
