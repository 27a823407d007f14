"""The sample sheet: sample name -> its reads file(s), checked before any job starts (the files
themselves are checked by `virnucflow.preflight`)."""

import csv
import io
import re
from pathlib import Path

from .errors import InputError

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Names the workflow uses beside the samples' folders (results/report/, results/virus_reads.tsv) and
# logs/*.log files of its own. Compared without case (case-insensitive file systems).
RESERVED = {"report": "results/report/ holds the report",
            "report_plots.log": "logs/report_plots.log is the report's log",
            "demo_models.log": "logs/demo_models.log is the demo models' log",
            "virus_reads.tsv": "results/virus_reads.tsv is the table of every sample's viral reads",
            "virus_reads_table.log": "logs/virus_reads_table.log is that table's log"}
READS = ("reads", "fasta")  # the second column's name; `fasta` is its older name
MATES = ("reads2", "fasta2")  # the optional column of R2 files (paired-end), anywhere after the second


def read_sample_sheet(path):
    """Return {sample: [reads path]} or, for paired-end samples, {sample: [R1 path, R2 path]}, from a TSV
    with columns `sample`, `reads` (or `fasta`) and optionally `reads2` (or `fasta2`). A spreadsheet's
    "CSV UTF-8" is read too: a UTF-8 byte order mark is dropped, and a header without a tab makes the
    sheet comma-separated (or semicolon-separated, without a comma either).

    Names must be safe path components (they become directories); paths are relative to the
    directory Snakemake runs in, like every other path of the workflow. A sample with an empty
    `reads2` cell is single-end, so one sheet may mix both.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: sample sheet not found; set `samples:` in the config to a TSV with columns sample, "
                         "reads (and reads2 for paired-end)")
    text = _sheet_text(path)
    rows = [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
            if any(cell.strip() for cell in row) and not row[0].startswith("#")]
    header = [column.strip() for column in rows[0]] if rows else []
    if header[:1] != ["sample"] or len(header) < 2 or header[1] not in READS:
        raise InputError(f"{path}: the first line must be the header 'sample<TAB>reads' (or 'sample<TAB>fasta'), "
                         "with 'reads2' as a further column for paired-end samples")
    mates = [i for i, column in enumerate(header) if column in MATES]
    if len(mates) > 1:
        raise InputError(f"{path}: the header has {len(mates)} columns of R2 files "
                         f"({', '.join(header[i] for i in mates)}); keep one, named reads2")
    mate = mates[0] if mates else None
    samples = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise InputError(f"{path}: row {line_no} needs a sample name and a reads path separated by a tab")
        name, reads = row[0].strip(), row[1].strip()
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
        files = [reads]
        reads2 = row[mate].strip() if mate is not None and mate < len(row) else ""
        if reads2:
            if reads2 == reads:
                raise InputError(f"{path}: row {line_no}: sample {name!r} names {reads} as both R1 and R2; give the "
                                 f"R2 file in {header[mate]}, or leave it empty for single-end reads")
            files.append(reads2)
        samples[name] = files
    if not samples:
        raise InputError(f"{path}: no samples listed; add rows 'name<TAB>path/to/reads.fq.gz'")
    return samples


def _sheet_text(path):
    """The sheet's text: UTF-8, a byte order mark dropped; UTF-16 (a spreadsheet's "Unicode text") refused."""
    data = Path(path).read_bytes()
    encoding = ("UTF-16 little-endian" if data[:2] == b"\xff\xfe" else "UTF-16 big-endian" if data[:2] == b"\xfe\xff"
                else "UTF-16 or UTF-32 (it has NUL bytes)" if b"\0" in data else None)
    if encoding:
        raise InputError(f"{path}: the sample sheet is {encoding}; save it as tab-separated text or as \"CSV UTF-8\" "
                         "(a spreadsheet's Save As)")
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data  # the UTF-8 byte order mark
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise InputError(f"{path}: the sample sheet is not UTF-8 (byte {data[error.start]:#04x} on line {line}); save "
                         "it as tab-separated UTF-8 text or as \"CSV UTF-8\"") from None


def _delimiter(text):
    """A tab; where the header line (the first that is no comment) has none, a comma, or a semicolon (a
    spreadsheet's CSV where the comma is the decimal mark)."""
    header = next((line for line in text.splitlines() if line.strip() and not line.startswith("#")), "")
    return next((mark for mark in "\t,;" if mark in header), "\t")
