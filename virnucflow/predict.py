"""Viral calls with VirNucPro's classifier: per frame and per chunk as the original, per read beyond it.

Outputs (tab-separated, one header line):
- `predictions.tsv` = VirNucPro's prediction_results.txt: `Sequence_ID Prediction score1 score2`, one row
  per scored frame in frames.tsv order; score1 = P(others), score2 = P(virus), written as the original
  writes them (str of the float32 softmax); Prediction is `virus` when score2 > score1 (a tie is
  `others`, as torch.max picks the first class).
- `chunk_calls.tsv` = VirNucPro's prediction_results_highestscore.csv: `Modified_ID Is_Virus` (the
  frame id minus its 2-character frame suffix; True when max score2 >= max score1 over the chunk's
  frames), plus `max_score1 max_score2 frames`. Chunks without a scored frame have no row, as upstream.
- `read_calls.tsv`: one row per input read, described below.

Read-level rule (not in VirNucPro, which stops at chunks): a read is `virus` when at least one of its
chunks is called virus by VirNucPro's own chunk rule (max score2 >= max score1 over the chunk's
frames); `others` when it has scored frames but no virus chunk; `no_frames` when none of its chunks
kept a frame (the original drops such reads silently); `not_scored` when it has frames but none of
them is in embeddings.h5 (only possible with `allow_missing: true`). Columns: read_id, length, chunks,
chunks_with_frames, virus_chunks, max_virus_score (highest score2 over the read's frames, empty when
none was scored), call. Any-chunk is the sensitive choice: VirNucPro scores chunks independently and
was trained on chunk-sized fragments, so a read longer than a chunk that carries a virus in one part
(a prophage, a viral fragment of a chimeric contig) keeps its virus call; for a stricter call, filter
on `virus_chunks / chunks_with_frames` or on `max_virus_score`.
"""

import logging
from pathlib import Path

from .atomic import atomic_open
from .classifier import load_classifier, score
from .embeddings import open_embeddings
from .errors import InputError
from .workfiles import read_frames, read_reads

log = logging.getLogger(__name__)
SHOW = 10  # ids named in a log line or message
PREDICTIONS_HEADER = "Sequence_ID\tPrediction\tscore1\tscore2\n"
CHUNK_CALLS_HEADER = "Modified_ID\tIs_Virus\tmax_score1\tmax_score2\tframes\n"
READ_CALLS_HEADER = "read_id\tlength\tchunks\tchunks_with_frames\tvirus_chunks\tmax_virus_score\tcall\n"
CALLS = ("virus", "others", "no_frames", "not_scored")


def predict_sample(embeddings_h5, frames_tsv, reads_tsv, classifier, out_dir=None, *, chunk_length,
                   predictions_tsv=None, chunk_calls_tsv=None, read_calls_tsv=None, trained_chunk=None,
                   batch_rows=8192):
    """Score every frame of `embeddings_h5` and write predictions.tsv, chunk_calls.tsv and read_calls.tsv
    (into `out_dir` or the explicit paths), streaming `batch_rows` rows at a time; all three appear
    together or not at all. `chunk_length`: of the run, checked against the classifier's (None: the one
    recorded in the embeddings file). `trained_chunk`: the classifier's, when its file name does not
    say. Frames of frames.tsv absent from the embeddings (allow_missing) are counted and logged.
    Returns counts: frames, virus_frames, missing (with missing_first), chunks, and reads per call."""
    paths = _outputs(out_dir, predictions_tsv, chunk_calls_tsv, read_calls_tsv)
    with open_embeddings(embeddings_h5) as merged, \
            atomic_open(paths[0]) as pred_out, atomic_open(paths[1]) as chunk_out, atomic_open(paths[2]) as read_out:
        if chunk_length is None and "chunk_length" in merged.attrs:
            chunk_length = int(merged.attrs["chunk_length"])
        # An empty sample's file may have no columns at all: nothing to check the classifier against.
        model = load_classifier(classifier, input_dim=merged.dim if len(merged) or merged.dim else None,
                                chunk_length=chunk_length, trained_chunk=trained_chunk)
        pred_out.write(PREDICTIONS_HEADER)
        chunk_out.write(CHUNK_CALLS_HEADER)
        frames = _FramesAlongside(frames_tsv, embeddings_h5)
        chunks = _ChunkTally(chunk_out)
        virus_frames = 0
        for start in range(0, len(merged), batch_rows):
            ids = merged.read_ids(start, start + batch_rows)
            probabilities = score(model, merged.embeddings[start : start + batch_rows])  # (rows, 2) float32
            lines = []
            for row, (frame_id, (p_other, p_virus)) in enumerate(zip(ids, probabilities), start):
                read_id = frames.read_of(frame_id, row)
                # str() of numpy float32 gives the original's digits (shortest round trip); an f-string
                # field alone would format them as float64 (17 digits).
                label = "virus" if p_virus > p_other else "others"
                virus_frames += label == "virus"
                lines.append(f"{frame_id}\t{label}\t{str(p_other)}\t{str(p_virus)}\n")
                chunks.add(frame_id[:-2], read_id, p_other, p_virus)  # VirNucPro's Modified_ID: F1..R3 removed
            pred_out.write("".join(lines))
        chunks.close()
        frames.finish()
        calls = _write_read_calls(read_out, reads_tsv, chunks.per_read)
    counts = {"frames": len(merged), "virus_frames": virus_frames, "chunks": chunks.chunks,
              "virus_chunks": chunks.virus_chunks, "missing": frames.missing, "missing_first": frames.missing_first,
              **calls}
    log.info("%d frames scored (%d virus); %d chunks (%d virus); reads: %d virus, %d others, %d without frames",
             counts["frames"], counts["virus_frames"], counts["chunks"], counts["virus_chunks"], calls["virus"],
             calls["others"], calls["no_frames"])
    if counts["missing"]:
        log.warning("%d frames of %s have no embedding and were not scored (allow_missing), first %d: %s; "
                    "%d reads have no scored frame (call not_scored)", counts["missing"], frames_tsv,
                    len(counts["missing_first"]), ", ".join(counts["missing_first"]), calls["not_scored"])
    return counts


class _FramesAlongside:
    """frames.tsv read in step with the rows of embeddings.h5 (both in input order): frames that the
    embeddings lack (left out of the merge with allow_missing) are counted as missing."""

    def __init__(self, frames_tsv, embeddings_h5):
        self.frames_tsv, self.embeddings_h5 = frames_tsv, embeddings_h5
        self.rows = read_frames(frames_tsv)
        self.matched = 0  # rows of frames.tsv matched to an embedding
        self.missing, self.missing_first = 0, []

    def read_of(self, frame_id, row):
        """The read of the frame of embeddings row `row`."""
        for frame in self.rows:
            if frame.frame_id == frame_id:
                self.matched += 1
                return frame.read_id
            self._missing(frame.frame_id)
        raise InputError(f"{self.embeddings_h5}: row {row} ({frame_id}) is not among the frames of {self.frames_tsv} "
                         f"after row {self.matched}; the embeddings come from another prepare run: rerun merge")

    def finish(self):
        for frame in self.rows:
            self._missing(frame.frame_id)

    def _missing(self, frame_id):
        self.missing += 1
        if len(self.missing_first) < SHOW:
            self.missing_first.append(frame_id)


class _ChunkTally:
    """VirNucPro's chunk calls, written to `out` as a chunk's frames arrive (they are consecutive), and per
    read: [virus chunks, highest virus score] (`per_read`, reads with a scored frame only)."""

    def __init__(self, out):
        self.out = out
        self.current = None  # [chunk_id, read_id, max score1, max score2, frames] of the chunk being read
        self.chunks = self.virus_chunks = 0
        self.per_read = {}

    def add(self, chunk_id, read_id, p_other, p_virus):
        chunk = self.current
        if chunk is None or chunk[0] != chunk_id:
            self.close()
            chunk = self.current = [chunk_id, read_id, p_other, p_virus, 0]
        chunk[2], chunk[3], chunk[4] = max(chunk[2], p_other), max(chunk[3], p_virus), chunk[4] + 1

    def close(self):
        """Write the chunk being read, if any."""
        if self.current is None:
            return
        chunk_id, read_id, max1, max2, n = self.current
        self.current = None
        is_virus = bool(max2 >= max1)  # VirNucPro's determine_virus
        self.out.write(f"{chunk_id}\t{is_virus}\t{str(max1)}\t{str(max2)}\t{n}\n")
        self.chunks += 1
        self.virus_chunks += is_virus
        entry = self.per_read.setdefault(read_id, [0, max2])
        entry[0] += is_virus
        entry[1] = max(entry[1], max2)


def _write_read_calls(out, reads_tsv, per_read):
    """read_calls.tsv: a call for every read of reads.tsv (module docstring); returns reads per call."""
    calls = dict.fromkeys(CALLS, 0)
    out.write(READ_CALLS_HEADER)
    listed = 0
    for read in read_reads(reads_tsv):
        virus_chunks, best = per_read.get(read.read_id, (0, None))
        if best is not None:
            listed += 1
            call = "virus" if virus_chunks else "others"
        else:
            call = "not_scored" if read.chunks_with_frames else "no_frames"
        calls[call] += 1
        out.write(f"{read.read_id}\t{read.length}\t{read.chunks}\t{read.chunks_with_frames}\t{virus_chunks}\t"
                  f"{'' if best is None else str(best)}\t{call}\n")
    if listed != len(per_read):
        raise InputError(f"{reads_tsv}: {len(per_read) - listed} reads with scored frames are not listed; "
                         "frames.tsv and reads.tsv come from different prepare runs: rerun prepare")
    return calls


def _outputs(out_dir, predictions_tsv, chunk_calls_tsv, read_calls_tsv):
    paths = [predictions_tsv, chunk_calls_tsv, read_calls_tsv]
    names = ["predictions.tsv", "chunk_calls.tsv", "read_calls.tsv"]
    if out_dir is not None:
        paths = [p or Path(out_dir) / name for p, name in zip(paths, names)]
    if any(p is None for p in paths):
        raise TypeError("predict_sample needs out_dir or all of predictions_tsv, chunk_calls_tsv, read_calls_tsv")
    return [Path(p) for p in paths]

