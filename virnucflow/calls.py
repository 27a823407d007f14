"""VirNucPro's calls from the frame scores (rule `calls`): per chunk as the original, per read beyond it.

This module owns the calls files, writer and reader: predictions.tsv (written by rule `predict` through
`prediction_lines`, read here by `read_predictions`), chunk_calls.tsv, chunk_scores.tsv and read_calls.tsv.
The calls are made from predictions.tsv, frames.tsv and reads.tsv alone, so a change of a `calls.*`
setting reruns this step and never needs the embeddings again.

Files (tab-separated, one header line):
- `predictions.tsv` = VirNucPro's prediction_results.txt: `Sequence_ID Prediction score1 score2`, one row
  per scored frame in frames.tsv order; score1 = P(others), score2 = P(virus), written as the original
  writes them (str of the float32 softmax, read back here as the same float32); Prediction is `virus`
  when score2 > score1 (a tie is `others`, as torch.max picks the first class).
- `chunk_calls.tsv` = VirNucPro's prediction_results_highestscore.csv, byte for byte for the same
  predictions: `Modified_ID Is_Virus` (the frame id minus its 2-character frame suffix; True when max
  score2 >= max score1 over the chunk's frames), rows sorted by Modified_ID as the original's pandas
  groupby sorts them (code point order: `r10_chunk_1` before `r1_chunk_1`, `chunk_10` before
  `chunk_2`), an id holding a `"` quoted as pandas' to_csv quotes it. Chunks without a scored frame
  have no row, as upstream. The sort holds at most `sort_rows` rows in memory: longer samples are
  sorted in runs on disk, beside the file, and merged.
- `chunk_scores.tsv` (optional): the same chunks in input order with what the call rests on:
  `Modified_ID read_id frames max_score1 max_score2 Is_Virus`.
- `read_calls.tsv`: one row per input read, described below.
- `pair_calls.tsv` (paired-end samples): one row per pair, `pair_id r1_call r2_call call`, the pair's call
  `virus` when either mate's is, else `others` when either mate's is, else R1's; pairs in R1 order.

Read-level rule (not in VirNucPro, which stops at chunks): a read is `virus` when at least one of its
chunks is called virus by VirNucPro's own chunk rule (max score2 >= max score1 over the chunk's
frames); `others` when it has scored frames but no virus chunk; `ambiguous` instead of either when more
than `max_ambiguous_fraction` of its bases are N or another ambiguity code (VirNucPro drops every codon
that holds one, so the protein model saw little of such a read and its frames are mostly artefacts:
docs/outputs.md, "Read-level calls"); `no_frames` when none of its chunks kept a frame (the original drops such
reads silently); `not_scored` when it has frames but none of them was scored (none is in embeddings.h5: only
possible with `allow_missing: true`). Columns: read_id, length, ambiguous_fraction (bases other than ACGTU over
length, 4 decimals; the rule uses the exact ratio), chunks, chunks_with_frames, virus_chunks,
max_virus_score (highest score2 over the read's frames, empty when none was scored), call. Any-chunk is
the sensitive choice: VirNucPro scores chunks independently and was trained on chunk-sized fragments,
so a read longer than a chunk that carries a virus in one part (a prophage, a viral fragment of a
chimeric contig) keeps its virus call.

A threshold instead (`min_virus_score`, config calls.min_virus_score; None keeps the rule above): a
scored read that is not `ambiguous` is `virus` when its max_virus_score, the number as written in
read_calls.tsv, is >= min_virus_score, else `others` (so filtering the table on that column selects the
same reads). predictions.tsv, chunk_calls.tsv and chunk_scores.tsv do not depend on it.

Memory is bounded by the chunk sort's buffer, whatever the sample's size: predictions.tsv, frames.tsv
and reads.tsv are all in input order, so they are read side by side.
"""

import contextlib
import heapq
import itertools
import logging
import operator
import shutil
from pathlib import Path

import numpy as np

from .atomic import atomic_open, reporting_disk_full, temporary_path
from .errors import InputError
from .workfiles import read_frames, read_reads, table_rows

log = logging.getLogger(__name__)
SHOW = 10  # ids named in a log line or message
PREDICTIONS_HEADER = "Sequence_ID\tPrediction\tscore1\tscore2\n"
CHUNK_CALLS_HEADER = "Modified_ID\tIs_Virus\n"
CHUNK_SCORES_HEADER = "Modified_ID\tread_id\tframes\tmax_score1\tmax_score2\tIs_Virus\n"
READ_CALLS_HEADER = ("read_id\tlength\tambiguous_fraction\tchunks\tchunks_with_frames\tvirus_chunks\t"
                     "max_virus_score\tcall\n")
PAIR_CALLS_HEADER = "pair_id\tr1_call\tr2_call\tcall\n"
CALLS = ("virus", "others", "ambiguous", "no_frames", "not_scored")
MAX_AMBIGUOUS_FRACTION = 0.2  # the default of the config key calls.max_ambiguous_fraction (docs/configuration.md)
MIN_VIRUS_SCORE = None  # the default of calls.min_virus_score: VirNucPro's chunk rule decides the read call
SORT_ROWS = 1 << 20  # chunk calls sorted in memory at a time (about 150 MB); more go to runs on disk
MERGE_FILES = 64  # runs merged at once


def prediction_lines(frame_ids, probabilities):
    """Rows of predictions.tsv for frames `frame_ids` and their (P(others), P(virus)) float32 rows."""
    # str() of numpy float32 gives the original's digits (shortest round trip); an f-string field alone
    # would format them as float64 (17 digits).
    return [f"{frame_id}\t{'virus' if p_virus > p_other else 'others'}\t{str(p_other)}\t{str(p_virus)}\n"
            for frame_id, (p_other, p_virus) in zip(frame_ids, probabilities)]


def read_predictions(predictions_tsv, number=np.float32):
    """(frame id, score1, score2) of every row of a predictions.tsv (or the original's
    prediction_results.txt), the scores parsed by `number`: float32, the very values predict computed."""
    predictions_tsv = Path(predictions_tsv)
    with open(predictions_tsv, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\r\n").split("\t")
        if header[:4] != PREDICTIONS_HEADER.rstrip("\n").split("\t"):
            raise InputError(f"{predictions_tsv}: not a prediction_results.txt (its header is not "
                             f"{PREDICTIONS_HEADER.strip()!r})")
        for line_number, line in enumerate(handle, 2):
            fields = line.rstrip("\r\n").split("\t")
            if fields == [""]:
                continue
            try:
                yield fields[0], number(fields[2]), number(fields[3])
            except (IndexError, ValueError):
                raise InputError(f"{predictions_tsv}, line {line_number}: not 'Sequence_ID Prediction score1 score2' "
                                 "with two numbers") from None


def call_sample(predictions_tsv, frames_tsv, reads_tsv, *, chunk_calls_tsv, read_calls_tsv, chunk_scores_tsv=None,
                max_ambiguous_fraction=MAX_AMBIGUOUS_FRACTION, min_virus_score=MIN_VIRUS_SCORE, sort_rows=SORT_ROWS):
    """chunk_calls.tsv, read_calls.tsv and, when asked for, chunk_scores.tsv from a sample's predictions.tsv
    and its work files; all appear together or not at all. `max_ambiguous_fraction`: reads with a larger
    fraction of ambiguous bases are called `ambiguous` instead of virus/others. `min_virus_score`: None
    (VirNucPro's chunk rule: virus when a chunk is), or a read is virus when its highest frame score2 is at
    least this; it changes read_calls.tsv only. `sort_rows`: chunk calls sorted in memory at a time. Frames
    of frames.tsv that were not scored (left out of the merge with allow_missing) are counted and logged.
    Returns counts: frames, chunks, virus_chunks, missing (with missing_first), and reads per call."""
    if not 0 <= max_ambiguous_fraction <= 1:
        raise ValueError(f"max_ambiguous_fraction must be between 0 and 1, not {max_ambiguous_fraction!r}")
    if min_virus_score is not None and not 0 <= min_virus_score <= 1:
        raise ValueError(f"min_virus_score must be null or between 0 and 1, not {min_virus_score!r}")
    scored = 0
    with contextlib.ExitStack() as outputs:
        chunk_out, read_out = (outputs.enter_context(atomic_open(path)) for path in (chunk_calls_tsv, read_calls_tsv))
        scores_out = outputs.enter_context(atomic_open(chunk_scores_tsv)) if chunk_scores_tsv is not None else None
        frames = _FramesAlongside(frames_tsv, predictions_tsv)
        reads = _ReadCalls(read_out, reads_tsv, max_ambiguous_fraction, min_virus_score)
        with _SortedChunkCalls(chunk_calls_tsv, sort_rows, predictions_tsv) as sorted_calls:
            chunks = _ChunkTally(sorted_calls, reads, scores_out)
            for scored, (frame_id, p_other, p_virus) in enumerate(read_predictions(predictions_tsv), 1):
                # VirNucPro's Modified_ID: the frame id without F1..R3
                chunks.add(frame_id[:-2], frames.read_of(frame_id, scored - 1), p_other, p_virus)
            chunks.close()
            frames.finish()
            calls = reads.finish()
            sorted_calls.write(chunk_out)
    counts = {"frames": scored, "chunks": chunks.chunks, "virus_chunks": chunks.virus_chunks,
              "missing": frames.missing, "missing_first": frames.missing_first, **calls}
    rule = ("a virus chunk (VirNucPro's rule)" if min_virus_score is None else
            f"max_virus_score >= {min_virus_score:g}")
    log.info("%d chunks (%d virus); reads: %d virus (%s), %d others, %d ambiguous (more than %g of their bases "
             "ambiguous), %d without frames", counts["chunks"], counts["virus_chunks"], calls["virus"], rule,
             calls["others"], calls["ambiguous"], max_ambiguous_fraction, calls["no_frames"])
    if counts["missing"]:
        log.warning("%d frames of %s have no embedding and were not scored (allow_missing), first %d: %s; "
                    "%d reads have no scored frame (call not_scored)", counts["missing"], frames_tsv,
                    len(counts["missing_first"]), ", ".join(counts["missing_first"]), calls["not_scored"])
    return counts


def read_call_rows(read_calls_tsv, columns):
    """(line number, [fields of `columns`] as bytes) per row of a read_calls.tsv, streamed (found by its
    header, so columns added later do not break a reader)."""
    return table_rows(read_calls_tsv, "read_calls.tsv", columns, writer="calls")


def pair_call(r1_call, r2_call):
    """A pair's call from its mates': virus when either is, else others when either is, else R1's."""
    for call in ("virus", "others"):
        if call in (r1_call, r2_call):
            return call
    return r1_call


def write_pair_calls(read_calls_tsv, pair_calls_tsv):
    """pair_calls.tsv from a paired-end sample's read_calls.tsv, which lists every R1 mate (`ID/1`), then
    every R2 mate (`ID/2`) in the same order, as prepare reads the two files: the two halves are read
    side by side, so memory does not grow with the sample. Returns the number of pairs."""
    rows = sum(1 for _ in read_call_rows(read_calls_tsv, ("read_id",)))
    rerun = "pair_calls.tsv needs a paired-end sample's read calls, R1 mates then R2 mates; rerun its prepare and calls"
    if rows % 2:
        raise InputError(f"{read_calls_tsv}: {rows} reads, an odd number: {rerun}")
    half = rows // 2
    first = itertools.islice(read_call_rows(read_calls_tsv, ("read_id", "call")), half)
    second = itertools.islice(read_call_rows(read_calls_tsv, ("read_id", "call")), half, None)
    with atomic_open(pair_calls_tsv, "wb") as out:
        out.write(PAIR_CALLS_HEADER.encode())
        for (line1, (mate1, call1)), (line2, (mate2, call2)) in zip(first, second):
            pair_id = mate1[:-2]
            if not (mate1.endswith(b"/1") and mate2 == pair_id + b"/2"):
                raise InputError(f"{read_calls_tsv}, line {line2}: {mate2.decode()} is not the R2 mate of "
                                 f"{mate1.decode()} (line {line1}): {rerun}")
            call = pair_call(call1.decode(), call2.decode()).encode()
            out.write(b"\t".join((pair_id, call1, call2, call)) + b"\n")
    log.info("%d pairs called in %s", half, pair_calls_tsv)
    return half


def chunk_calls_from_predictions(predictions_tsv, chunk_calls_tsv, *, sort_rows=SORT_ROWS):
    """VirNucPro's prediction_results_highestscore.csv (our chunk_calls.tsv) from a prediction_results.txt
    (the original's, or our predictions.tsv), as the original derives it (its scores read as pandas reads
    them, float64); a chunk's frames must be consecutive rows, as both tools write them. Returns the
    number of chunks."""
    with atomic_open(chunk_calls_tsv) as out, \
            _SortedChunkCalls(chunk_calls_tsv, sort_rows, predictions_tsv) as sorted_calls:
        chunks = _ChunkTally(sorted_calls)
        for frame_id, p_other, p_virus in read_predictions(predictions_tsv, number=float):
            chunks.add(frame_id[:-2], None, p_other, p_virus)
        chunks.close()
        sorted_calls.write(out)
    return chunks.chunks


class _FramesAlongside:
    """frames.tsv read in step with the rows of predictions.tsv (both in input order): frames that were
    not scored (left out of the merge with allow_missing) are counted as missing."""

    def __init__(self, frames_tsv, predictions_tsv):
        self.frames_tsv, self.predictions_tsv = frames_tsv, predictions_tsv
        self.rows = read_frames(frames_tsv)
        self.matched = 0  # rows of frames.tsv matched to an embedding
        self.missing, self.missing_first = 0, []

    def read_of(self, frame_id, row):
        """The read of the frame scored in row `row` of predictions.tsv."""
        for frame in self.rows:
            if frame.frame_id == frame_id:
                self.matched += 1
                return frame.read_id
            self._missing(frame.frame_id)
        raise InputError(f"{self.predictions_tsv}: row {row} ({frame_id}) is not among the frames of {self.frames_tsv} "
                         f"after row {self.matched}; the scores come from another prepare run: rerun merge and predict")

    def finish(self):
        for frame in self.rows:
            self._missing(frame.frame_id)

    def _missing(self, frame_id):
        self.missing += 1
        if len(self.missing_first) < SHOW:
            self.missing_first.append(frame_id)


class _ChunkTally:
    """VirNucPro's chunk calls, made as a chunk's frames arrive (they are consecutive) and handed to the
    sorted chunk_calls.tsv, to the read calls and to chunk_scores.tsv (`scores_out`, when written)."""

    def __init__(self, sorted_calls, reads=None, scores_out=None):
        self.sorted_calls, self.reads, self.scores_out = sorted_calls, reads, scores_out
        if scores_out is not None:
            scores_out.write(CHUNK_SCORES_HEADER)
        self.current = None  # [chunk_id, read_id, max score1, max score2, frames] of the chunk being read
        self.chunks = self.virus_chunks = 0

    def add(self, chunk_id, read_id, p_other, p_virus):
        chunk = self.current
        if chunk is None or chunk[0] != chunk_id:
            self.close()
            chunk = self.current = [chunk_id, read_id, p_other, p_virus, 0]
        chunk[2], chunk[3], chunk[4] = max(chunk[2], p_other), max(chunk[3], p_virus), chunk[4] + 1

    def close(self):
        """Hand on the chunk being read, if any."""
        if self.current is None:
            return
        chunk_id, read_id, max1, max2, n = self.current
        self.current = None
        is_virus = bool(max2 >= max1)  # VirNucPro's determine_virus
        self.sorted_calls.add(chunk_id, is_virus)
        if self.scores_out is not None:
            self.scores_out.write(f"{chunk_id}\t{read_id}\t{n}\t{str(max1)}\t{str(max2)}\t{is_virus}\n")
        if self.reads is not None:
            self.reads.add_chunk(read_id, is_virus, max2)
        self.chunks += 1
        self.virus_chunks += is_virus


class _SortedChunkCalls:
    """The rows of chunk_calls.tsv, sorted by Modified_ID as pandas sorts the original's groupby keys, in
    bounded memory: `run_rows` rows are sorted in memory; beyond that, sorted runs go to a temporary
    folder beside `path` (removed on leaving the block) and are merged (heapq.merge), `MERGE_FILES` at a
    time. Chunk ids are unique (read ids are), so the order is total."""

    def __init__(self, path, run_rows, source):
        self.path, self.run_rows, self.source = Path(path), max(1, int(run_rows)), source
        self.rows = []  # (chunk_id, is_virus)
        self.runs = []
        self.folder, self.made = None, 0  # the runs' folder, runs written so far

    def add(self, chunk_id, is_virus):
        self.rows.append((chunk_id, is_virus))
        if len(self.rows) >= self.run_rows:
            self._spill()

    def write(self, out):
        """chunk_calls.tsv's header and rows, in order, to `out`."""
        out.write(CHUNK_CALLS_HEADER)
        previous = None
        for chunk_id, line in self._sorted():
            if chunk_id == previous:
                raise InputError(f"{self.source}: the frames of chunk {chunk_id} are not consecutive rows; VirNucPro "
                                 "and virnucflow write a chunk's frames one after the other")
            previous = chunk_id
            out.write(line)

    def _sorted(self):
        """(chunk_id, row of chunk_calls.tsv) in order."""
        if not self.runs:
            self.rows.sort(key=_FIRST)
            for chunk_id, is_virus in self.rows:
                yield chunk_id, _chunk_call(chunk_id, is_virus)
            return
        self._spill()
        while len(self.runs) > MERGE_FILES:
            first, self.runs = self.runs[:MERGE_FILES], self.runs[MERGE_FILES:]
            self.runs.append(self._new_run(self._merged(first)))
        for line in self._merged(self.runs):
            chunk_id = _run_line_id(line)
            yield chunk_id, line if '"' not in chunk_id else _chunk_call(chunk_id, line.endswith("\tTrue\n"))

    def _spill(self):
        if self.rows:
            self.rows.sort(key=_FIRST)
            self.runs.append(self._new_run(chunk_id + _IS_VIRUS[is_virus] for chunk_id, is_virus in self.rows))
            self.rows = []

    def _new_run(self, lines):
        """A run file holding `lines` (rows as 'chunk_id<TAB>True/False', in order)."""
        if self.folder is None:
            self.folder = temporary_path(self.path)  # a temporary of the calls file: found by a later job
            self.folder.mkdir()
        self.made += 1
        path = Path(self.folder) / f"{self.made}.tsv"
        written = [0]

        def counted(rows):
            for row in rows:
                written[0] += len(row)
                yield row

        with reporting_disk_full(path, lambda: written[0]), open(path, "w", encoding="utf-8") as handle:
            handle.writelines(counted(lines))  # a full disk names the sort's run file, not a traceback
        return path

    def _merged(self, runs):
        """The lines of `runs`, merged in order; each run file is deleted once read through."""
        with contextlib.ExitStack() as stack:
            files = [stack.enter_context(open(run, encoding="utf-8")) for run in runs]
            yield from heapq.merge(*files, key=_run_line_id)
        for run in runs:
            Path(run).unlink()

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc):
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        return False


_FIRST = operator.itemgetter(0)


def _run_line_id(line):
    return line[: line.rindex("\t")]


_IS_VIRUS = {True: "\tTrue\n", False: "\tFalse\n"}


def _chunk_call(chunk_id, is_virus):
    """A row of chunk_calls.tsv as pandas' to_csv(sep="\\t") writes it: an id holding the quote character
    is quoted, its quotes doubled (ids never hold a tab or a line break)."""
    if '"' in chunk_id:
        chunk_id = '"' + chunk_id.replace('"', '""') + '"'
    return chunk_id + _IS_VIRUS[is_virus]


class _ReadCalls:
    """read_calls.tsv, written while the chunks arrive: reads.tsv is read alongside (both are in input
    order), so a read's row is written once its last chunk has passed."""

    def __init__(self, out, reads_tsv, max_ambiguous_fraction, min_virus_score=None):
        self.out, self.reads_tsv, self.limit = out, reads_tsv, max_ambiguous_fraction
        self.min_virus_score = min_virus_score
        self.reads = read_reads(reads_tsv)
        self.current = None  # the Read whose chunks are arriving
        self.virus_chunks, self.best = 0, None
        self.calls = dict.fromkeys(CALLS, 0)
        out.write(READ_CALLS_HEADER)

    def add_chunk(self, read_id, is_virus, max_virus):
        if self.current is None or self.current.read_id != read_id:
            self._move_to(read_id)
        self.virus_chunks += is_virus
        self.best = max_virus if self.best is None else max(self.best, max_virus)

    def finish(self):
        """Rows for the last read with chunks and every read after it; returns reads per call."""
        if self.current is not None:
            self._write(self.current, self.virus_chunks, self.best)
            self.current = None
        for read in self.reads:
            self._write(read, 0, None)
        return self.calls

    def _move_to(self, read_id):
        if self.current is not None:
            self._write(self.current, self.virus_chunks, self.best)
        self.virus_chunks, self.best = 0, None
        for read in self.reads:
            if read.read_id == read_id:
                self.current = read
                return
            self._write(read, 0, None)
        raise InputError(f"{self.reads_tsv}: read {read_id} has scored frames but is not listed (in frames.tsv "
                         "order); frames.tsv and reads.tsv come from different prepare runs: rerun prepare")

    def _write(self, read, virus_chunks, best):
        best_text = "" if best is None else str(best)  # float32's shortest round trip, as the column shows it
        if best is None:
            call = "not_scored" if read.chunks_with_frames else "no_frames"
        elif read.ambiguous / read.length > self.limit:
            call = "ambiguous"
        elif self.min_virus_score is None:
            call = "virus" if virus_chunks else "others"
        else:
            # On the number as written, so that `max_virus_score >= t` on the table selects the same reads.
            call = "virus" if float(best_text) >= self.min_virus_score else "others"
        self.calls[call] += 1
        self.out.write(f"{read.read_id}\t{read.length}\t{read.ambiguous / read.length:.4f}\t{read.chunks}\t"
                       f"{read.chunks_with_frames}\t{virus_chunks}\t{best_text}\t{call}\n")
