"""Frame scores with VirNucPro's classifier (rule `predict`): embeddings.h5 -> predictions.tsv, VirNucPro's
prediction_results.txt (format: virnucflow.calls, which makes the chunk and read calls from it).

Memory is bounded by a batch of embeddings, whatever the sample's size.
"""

import logging
from pathlib import Path

from .atomic import atomic_open
from .calls import PREDICTIONS_HEADER, call_sample, prediction_lines
from .calls import MAX_AMBIGUOUS_FRACTION, MIN_VIRUS_SCORE, SORT_ROWS  # noqa: F401 (predict_sample's defaults)
from .classifier import load_classifier, score
from .embeddings import open_embeddings

log = logging.getLogger(__name__)


def score_sample(embeddings_h5, classifier, predictions_tsv, *, chunk_length, trained_chunk=None, batch_rows=8192):
    """Score every frame of `embeddings_h5` into `predictions_tsv`, streaming `batch_rows` rows at a time.
    `chunk_length`: of the run, checked against the classifier's (None: the one recorded in the embeddings
    file). `trained_chunk`: the classifier's, when its file name does not say. Returns counts: frames,
    virus_frames."""
    virus_frames = 0
    with atomic_open(predictions_tsv) as out, open_embeddings(embeddings_h5) as merged:
        if chunk_length is None and "chunk_length" in merged.attrs:
            chunk_length = int(merged.attrs["chunk_length"])
        # An empty sample's file may have no columns at all: nothing to check the classifier against.
        model = load_classifier(classifier, input_dim=merged.dim if len(merged) or merged.dim else None,
                                chunk_length=chunk_length, trained_chunk=trained_chunk)
        out.write(PREDICTIONS_HEADER)
        for start in range(0, len(merged), batch_rows):
            probabilities = score(model, merged.read_rows(start, start + batch_rows))  # (rows, 2) float32
            out.write("".join(prediction_lines(merged.read_ids(start, start + batch_rows), probabilities)))
            virus_frames += int((probabilities[:, 1] > probabilities[:, 0]).sum())
        frames = len(merged)
    log.info("%d frames scored (%d virus)", frames, virus_frames)
    return {"frames": frames, "virus_frames": virus_frames}


def predict_sample(embeddings_h5, frames_tsv, reads_tsv, classifier, out_dir=None, *, chunk_length,
                   predictions_tsv=None, chunk_calls_tsv=None, read_calls_tsv=None, chunk_scores_tsv=None,
                   max_ambiguous_fraction=MAX_AMBIGUOUS_FRACTION, min_virus_score=MIN_VIRUS_SCORE,
                   trained_chunk=None, batch_rows=8192, sort_rows=SORT_ROWS):
    """The workflow's `predict` and `calls` in one (the `virnucflow predict` command): predictions.tsv,
    chunk_calls.tsv, read_calls.tsv and, when asked for, chunk_scores.tsv (into `out_dir` or the explicit
    paths; with explicit paths, chunk_scores.tsv only if `chunk_scores_tsv` is given); all appear
    together or not at all. Options: `score_sample` and `calls.call_sample`. Returns both counts."""
    paths = _outputs(out_dir, predictions_tsv, chunk_calls_tsv, read_calls_tsv, chunk_scores_tsv)
    counts = score_sample(embeddings_h5, classifier, paths[0], chunk_length=chunk_length,
                          trained_chunk=trained_chunk, batch_rows=batch_rows)
    try:
        counts.update(call_sample(paths[0], frames_tsv, reads_tsv, chunk_calls_tsv=paths[1], read_calls_tsv=paths[2],
                                  chunk_scores_tsv=paths[3], max_ambiguous_fraction=max_ambiguous_fraction,
                                  min_virus_score=min_virus_score, sort_rows=sort_rows))
    except BaseException:
        paths[0].unlink(missing_ok=True)  # together or not at all
        raise
    return counts


def _outputs(out_dir, predictions_tsv, chunk_calls_tsv, read_calls_tsv, chunk_scores_tsv):
    paths = [predictions_tsv, chunk_calls_tsv, read_calls_tsv, chunk_scores_tsv]
    names = ["predictions.tsv", "chunk_calls.tsv", "read_calls.tsv", "chunk_scores.tsv"]
    if out_dir is not None:
        paths = [p or Path(out_dir) / name for p, name in zip(paths, names)]
    if any(p is None for p in paths[:3]):
        raise TypeError("predict_sample needs out_dir or all of predictions_tsv, chunk_calls_tsv, read_calls_tsv")
    return [Path(p) if p is not None else None for p in paths]
