"""The work folder of a sample: written by prepare, read by embed, merge, predict and the report.

    work/{sample}/frames.tsv      one row per kept frame, in input order (FRAME_COLUMNS)
    work/{sample}/reads.tsv       one row per input read, in input order (READ_COLUMNS); `ambiguous`:
                                  its bases other than A, C, G, T, U (either case): N and the other
                                  IUPAC ambiguity codes
    work/{sample}/summary.json    prepare's counts, settings and rates
    work/{sample}/shards/{i:05d}.fna, .faa
                                  shard i: a contiguous run of frames.tsv's rows (its `shard` column),
                                  the nucleotide (.fna) and the protein (.faa) of each frame, one
                                  unwrapped sequence line per record

The whole folder is written under a temporary name beside it and moved into place at the end,
summary.json last, so a folder with a summary.json is complete and a failure leaves nothing behind.
"""

import collections
import contextlib
import json
import os
import shutil
from pathlib import Path

from .atomic import rename_into_place, temporary_path
from .errors import InputError

FRAME_COLUMNS = ("frame_id", "read_id", "chunk", "strand", "frame", "start", "end", "residues", "shard")
READ_COLUMNS = ("read_id", "length", "chunks", "chunks_with_frames", "frames", "ambiguous")
FRAMES_HEADER = "\t".join(FRAME_COLUMNS) + "\n"
READS_HEADER = "\t".join(READ_COLUMNS) + "\n"
_FRAME_ROW = b"%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\n"
_READ_ROW = b"%s\t%d\t%d\t%d\t%d\t%d\n"

Frame = collections.namedtuple("Frame", FRAME_COLUMNS)  # a row of frames.tsv: ids str, numbers int
Read = collections.namedtuple("Read", READ_COLUMNS)  # a row of reads.tsv: id str, numbers int


def shard_name(index):
    return f"{index:05d}"


# --- writing -------------------------------------------------------------------------------------

class ShardWriter:
    """Cuts the stream of frames into contiguous shards; a shard closes once it holds `limit` residues."""

    def __init__(self, folder, limit):
        self.folder = Path(folder)
        self.folder.mkdir()
        self.limit = limit
        self.index = 0
        self.residues = 0
        self._open()

    def _open(self):
        name = shard_name(self.index)
        self.files = (open(self.folder / f"{name}.fna", "wb"), open(self.folder / f"{name}.faa", "wb"))

    def write(self, frame_ids, nucleotides, proteins, residues):
        """Write a batch of frames (ids and sequences as bytes); returns the shard index of each frame."""
        index_of, start = [], 0
        cuts = self._cuts(residues)
        for stop in cuts + [len(frame_ids)]:
            if stop > start:
                self._write(frame_ids[start:stop], nucleotides[start:stop], proteins[start:stop])
                index_of.extend([self.index] * (stop - start))
            if stop < len(frame_ids):
                self.close()
                self.index += 1
                self._open()
            start = stop
        return index_of

    def _cuts(self, residues):
        cuts, total, limit = [], self.residues, self.limit
        for i, count in enumerate(residues):
            if total >= limit:
                cuts.append(i)
                total = 0
            total += count
        self.residues = total
        return cuts

    def _write(self, frame_ids, nucleotides, proteins):
        headers = [b">" + i for i in frame_ids]
        for handle, sequences in zip(self.files, (nucleotides, proteins)):
            lines = [b""] * (2 * len(headers))
            lines[0::2] = headers
            lines[1::2] = sequences
            handle.write(b"\n".join(lines))
            handle.write(b"\n")

    def close(self):
        for handle in self.files:
            handle.close()  # closing twice is harmless

    @property
    def count(self):
        return self.index + 1


class WorkFolderWriter:
    """Writes a sample's work folder in a temporary folder of `out_dir/shards` (an `atomic` temporary, so
    a later prepare removes it when this job was killed); `finish(summary)` moves the files into place.
    Use as a context manager: leaving the block without `finish` leaves nothing behind."""

    def __init__(self, out_dir, shard_residues):
        self.out_dir = Path(out_dir)
        self._made_out_dir = not self.out_dir.exists()  # removed again if the job fails
        self.tmp = temporary_path(self.out_dir / "shards")
        self.tmp.mkdir(parents=True)
        self._files = contextlib.ExitStack()
        try:
            self.shards = ShardWriter(self.tmp / "shards", shard_residues)
            self._files.callback(self.shards.close)
            self._frames = self._files.enter_context(open(self.tmp / "frames.tsv", "wb"))
            self._reads = self._files.enter_context(open(self.tmp / "reads.tsv", "wb"))
        except BaseException:
            self._close()
            raise
        self._frames.write(FRAMES_HEADER.encode())
        self._reads.write(READS_HEADER.encode())

    def write_frames(self, rows):
        """Rows of frames.tsv: (frame_id, read_id, chunk, strand, frame, start, end, residues, shard),
        ids and strand as bytes, the rest int."""
        self._frames.write(b"".join([_FRAME_ROW % row for row in rows]))

    def write_reads(self, rows):
        """Rows of reads.tsv: (read_id bytes, length, chunks, chunks_with_frames, frames, ambiguous)."""
        self._reads.write(b"".join([_READ_ROW % row for row in rows]))

    def finish(self, summary):
        """Write summary.json and rename everything into out_dir; summary.json goes last, so its
        presence means the rest is there."""
        self._files.close()
        (self.tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        out_dir = self.out_dir
        out_dir.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(out_dir / "summary.json")
        if (out_dir / "shards").exists():
            os.replace(out_dir / "shards", self.tmp / "old_shards")  # a folder cannot replace a non-empty one
        rename_into_place(self.tmp / "shards", out_dir / "shards")
        for name in ("frames.tsv", "reads.tsv", "summary.json"):
            os.replace(self.tmp / name, out_dir / name)

    def _close(self):
        self._files.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self._made_out_dir:
            with contextlib.suppress(OSError):
                self.out_dir.rmdir()  # only when empty: the job failed before finish

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._close()
        return False


# --- reading -------------------------------------------------------------------------------------

@contextlib.contextmanager
def _table(path, name, columns, writer="prepare"):
    """(open file after its header, index of each of `columns`) of a TSV that stage `writer` wrote."""
    with open(path, "rb") as handle:
        header = handle.readline().rstrip(b"\r\n").split(b"\t")
        wanted = [column.encode() for column in columns]
        if not header[0] or any(column not in header for column in wanted):
            absent = ", ".join(c.decode() for c in wanted if c not in header)
            what = f"{name} written by prepare" if writer == "prepare" else name
            raise InputError(f"{path}: not a {what} (no column {absent}); rerun {writer} for this sample")
        yield handle, [header.index(column) for column in wanted]


def _short_row(path, number, fields, writer="prepare"):
    return InputError(f"{path}, line {number}: {len(fields)} columns, fewer than its header; rerun {writer} for "
                      "this sample")


def table_rows(path, name, columns, writer="prepare"):
    """(line number, [fields of `columns`] as bytes) per data row of a TSV that stage `writer` wrote
    (prepare's work files; predict's read_calls.tsv, by its header), streamed."""
    with _table(path, name, columns, writer) as (handle, at):
        for number, line in enumerate(handle, 2):
            fields = line.rstrip(b"\r\n").split(b"\t")
            if fields == [b""]:
                continue
            try:
                yield number, [fields[i] for i in at]
            except IndexError:
                raise _short_row(path, number, fields, writer) from None


def _typed(path, number, fields, columns, numeric):
    try:
        return [int(value) if column in numeric else value.decode() for column, value in zip(columns, fields)]
    except ValueError:
        raise InputError(f"{path}, line {number}: not a number where one is expected; rerun prepare for this "
                         "sample") from None


def read_frames(frames_tsv):
    """Yield a `Frame` per row of frames.tsv, in file order (= input order)."""
    numeric = {"chunk", "frame", "start", "end", "residues", "shard"}
    for number, fields in table_rows(frames_tsv, "frames.tsv", FRAME_COLUMNS):
        yield Frame(*_typed(frames_tsv, number, fields, FRAME_COLUMNS, numeric))


def frames_by_shard(frames_tsv):
    """(shard index, frame ids as bytes) per shard, streamed from frames.tsv; shards are contiguous runs."""
    current, ids, done = None, [], set()
    with _table(frames_tsv, "frames.tsv", ("frame_id", "shard")) as (handle, (id_at, shard_at)):
        for number, line in enumerate(handle, 2):  # the merge's hot loop: no more than a split per line
            fields = line.rstrip(b"\r\n").split(b"\t")
            try:
                index = int(fields[shard_at])
            except (IndexError, ValueError):
                if fields == [b""]:
                    continue
                raise InputError(f"{frames_tsv}, line {number}: no shard number in column 'shard'; "
                                 "rerun prepare for this sample") from None
            if index != current:
                if current is not None:
                    yield current, ids
                if index in done:
                    raise InputError(f"{frames_tsv}, line {number}: shard {index} is split into runs that are "
                                     "not contiguous; rerun prepare for this sample")
                done.add(index)
                current, ids = index, []
            ids.append(fields[id_at])
    if current is not None:
        yield current, ids


def read_reads(reads_tsv):
    """Yield a `Read` per row of reads.tsv, in file order (= input order)."""
    numeric = set(READ_COLUMNS[1:])
    for number, fields in table_rows(reads_tsv, "reads.tsv", READ_COLUMNS):
        yield Read(*_typed(reads_tsv, number, fields, READ_COLUMNS, numeric))


def read_summary(summary_json):
    """prepare's summary.json as a dict: sample, chunk_length, compat, reads, bases, chunks,
    chunks_with_frames, chunks_without_frames, frames, residues, shards, rates ..."""
    try:
        return json.loads(Path(summary_json).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{summary_json}: not a readable summary.json ({exc}); rerun prepare for this "
                         "sample") from None


def read_shard_fasta(path):
    """(ids, sequences) of a shard FASTA written by prepare."""
    ids, seqs, lines = [], [], None
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if line.startswith(">"):
                if lines is not None:
                    seqs.append("".join(lines))
                ids.append(line[1:])
                lines = []
            elif line:
                if lines is None:
                    raise InputError(f"{path}, line {number}: sequence before the first '>' header; "
                                     "the shard is damaged, rerun prepare")
                lines.append(line)
    if lines is not None:
        seqs.append("".join(lines))
    for record, (sid, seq) in enumerate(zip(ids, seqs), 1):
        if not sid or not seq:
            raise InputError(f"{path}, record {record} ({sid or 'no id'}): empty id or sequence; "
                             "the shard is damaged, rerun prepare")
    return ids, seqs
