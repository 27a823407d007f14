"""The reads called virus, out of the workflow: as sequences (`virus_reads.fa.gz` per sample) and as one
table over all samples (`virus_reads.tsv`).

Both follow read_calls.tsv (predict's file, read here by its header), so the threshold
calls.min_virus_score applies to them as to the calls. Memory stays flat whatever the number of reads:
read_calls.tsv and the input reads are both in input order, so they are walked side by side and every
read's id is checked against its row.

- `virus_reads.fa.gz`: the virus reads in input order, each as its input header line (FASTA '>' or
  FASTQ '@' replaced by '>') and its sequence on one line; gzip without a name or time in its header,
  so the same calls give the same bytes.
- `virus_reads.tsv`: `sample read_id length max_virus_score virus_chunks chunks_with_frames
  ambiguous_fraction`, samples in sheet order, reads in input order, values as read_calls.tsv writes them.
"""

import gzip
import logging
import os

from .atomic import atomic_open
from .calls import read_call_rows
from .errors import InputError
from .fasta import read_records

log = logging.getLogger(__name__)
TABLE_COLUMNS = ("sample", "read_id", "length", "max_virus_score", "virus_chunks", "chunks_with_frames",
                 "ambiguous_fraction")
VIRUS = b"virus"
WRITE_BYTES = 1 << 20  # FASTA text gathered before a write to the gzip stream
COMPRESSLEVEL = 6  # gzip's own default: about 3x faster than Python's 9 for a few % more bytes


def write_virus_reads(read_calls_tsv, reads, fasta_gz):
    """Write the reads that `read_calls_tsv` calls virus, taken from the sample's input `reads` (a path, or
    the list of 1 or 2 paths of the sample sheet), to `fasta_gz`, whole or not at all. Returns the numbers
    of reads and of virus reads."""
    paths = [reads] if isinstance(reads, (str, os.PathLike)) else list(reads)
    source = " + ".join(str(p) for p in paths)
    counted = _Counted(read_records(paths))
    written = 0
    with atomic_open(fasta_gz, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=COMPRESSLEVEL, mtime=0) as out:
        parts, size = [], 0
        for header, sequence in virus_records(read_calls_tsv, counted, source):
            parts += (b">", header, b"\n", sequence, b"\n")
            size += len(header) + len(sequence) + 3
            written += 1
            if size >= WRITE_BYTES:
                out.write(b"".join(parts))
                parts, size = [], 0
        out.write(b"".join(parts))
    log.info("%s: %d of %d reads called virus, written to %s", read_calls_tsv, written, counted.n, fasta_gz)
    return {"reads": counted.n, "virus": written}


def virus_records(read_calls_tsv, records, source="the input"):
    """(header, sequence) of each read that `read_calls_tsv` calls virus, in input order. `records`: the
    sample's (read_id, header, sequence), in input order, as bytes (fasta.read_records); consumed one at
    a time, as read_calls.tsv is, so memory does not grow with the reads. A record whose id is not the
    row's, or a record or row without its partner, is an InputError naming both files."""
    rows = read_call_rows(read_calls_tsv, ("read_id", "call"))
    record = 0
    for record, (read_id, header, sequence) in enumerate(records, 1):
        row = next(rows, None)
        if row is None:
            raise InputError(f"{source}: record {record} ({_show(read_id)}) has no row in {read_calls_tsv}, which "
                             f"ends after {record - 1} reads; {_RERUN}")
        line, (row_id, call) = row
        if row_id != read_id:
            raise InputError(f"{read_calls_tsv}, line {line}: read {_show(row_id)}, but record {record} of {source} "
                             f"is {_show(read_id)}; {_RERUN}")
        if call == VIRUS:
            yield header, sequence
    row = next(rows, None)
    if row is not None:
        raise InputError(f"{read_calls_tsv}, line {row[0]}: read {_show(row[1][0])} is not in {source}, which ends "
                         f"after {record} records; {_RERUN}")


_RERUN = "read_calls.tsv was made from other reads: rerun the sample's prepare and predict (--forcerun prepare)"


def write_virus_table(samples, read_calls, table_tsv):
    """`table_tsv`: the virus reads of every sample (`read_calls`: one read_calls.tsv per sample, in the
    order of `samples`), one row each (TABLE_COLUMNS), streamed. Returns the number of rows."""
    samples, read_calls = list(samples), list(read_calls)
    if len(samples) != len(read_calls):
        raise ValueError(f"{len(read_calls)} read_calls files for {len(samples)} samples")
    wanted = TABLE_COLUMNS[1:] + ("call",)
    rows = 0
    with atomic_open(table_tsv, "wb") as out:
        out.write("\t".join(TABLE_COLUMNS).encode() + b"\n")
        for sample, path in zip(samples, read_calls):
            name = sample.encode()
            lines = []
            for _, values in read_call_rows(path, wanted):
                if values[-1] == VIRUS:
                    lines.append(b"\t".join((name, *values[:-1])) + b"\n")
                    if len(lines) >= 10_000:
                        out.writelines(lines)
                        rows, lines = rows + len(lines), []
            out.writelines(lines)
            rows += len(lines)
    log.info("%d virus reads of %d samples written to %s", rows, len(samples), table_tsv)
    return rows


class _Counted:
    """An iterator that counts what has passed through it."""

    def __init__(self, items):
        self.items, self.n = iter(items), 0

    def __iter__(self):
        for item in self.items:
            self.n += 1
            yield item


def _show(read_id):
    text = read_id.decode("utf-8", "replace")
    return repr(text if len(text) <= 60 else text[:57] + "...")
