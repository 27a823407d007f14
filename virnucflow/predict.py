"""Viral calls with VirNucPro's classifier: per frame and per chunk as the original, per read beyond it.

Read-level rule (not in VirNucPro): a read is `virus` when at least one of its chunks is called
virus by VirNucPro's own chunk rule (max virus score of the chunk's frames >= max other score),
`others` when it has frames but no virus chunk, and `no_frames` when no chunk kept a frame (the
original drops such reads silently). `max_virus_score` is the highest score2 over all its frames.
"""

import contextlib
import csv
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .atomic import atomic_open
from .errors import ModelError
from .shards import open_embeddings

HIDDEN = 512


class MLPClassifier(nn.Module):
    """VirNucPro's MLP: Linear(D, 512) -> BatchNorm1d -> ReLU -> Dropout(0.5) -> Linear(512, 2).
    Attribute names are the original's, so its pickles and state dicts load into this class."""

    def __init__(self, input_dim, hidden_dim=HIDDEN, num_class=2):
        super().__init__()
        self.hidden_layer = nn.Linear(input_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim)
        self.output_layer = nn.Linear(hidden_dim, num_class)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        x = F.relu(self.bn1(self.hidden_layer(x)))
        return self.output_layer(self.dropout(x))


# Everything a whole-module pickle of the original classifier may name; nothing else is loaded.
_ALLOWED = [
    (MLPClassifier, "__main__.MLPClassifier"),
    nn.Linear, nn.BatchNorm1d, nn.Dropout, nn.ReLU,
    nn.modules.linear.Linear, nn.modules.batchnorm.BatchNorm1d, nn.modules.dropout.Dropout,
]


def load_classifier(path, input_dim=None, chunk_length=None):
    """The classifier in eval mode, from the original whole-module pickle or a state_dict, loaded
    without executing code: any other class or call in the file is refused."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: classifier not found; set `classifier:` to VirNucPro's 500_model.pth or 300_model.pth")
    try:
        with torch.serialization.safe_globals(_ALLOWED):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        reason = f"it calls {found.group(1)}" if found else "content outside the allow-list"
        raise ModelError(
            f"{path}: refused to load: the file holds more than a VirNucPro classifier ({reason}); "
            "loading it could run code. Use the published 300_model.pth / 500_model.pth or a state_dict"
        ) from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise ModelError(f"{path}: not a readable classifier ({exc}); re-download it") from None
    state = loaded.state_dict() if isinstance(loaded, nn.Module) else loaded
    if not isinstance(state, dict) or "hidden_layer.weight" not in state:
        raise ModelError(f"{path}: not a VirNucPro classifier (no hidden_layer.weight); check the file")
    model = MLPClassifier(state["hidden_layer.weight"].shape[1], state["hidden_layer.weight"].shape[0],
                          state["output_layer.weight"].shape[0])
    model.load_state_dict(state)
    model.eval()
    dim = model.hidden_layer.in_features
    if input_dim is not None and dim != input_dim:
        raise ModelError(f"{path}: classifier takes {dim} features but the embeddings have {input_dim}; "
                         "use the classifier made for these models (DNABERT-S 768 + ESM-2 3B 2560 = 3328)")
    trained_for = next((cs for cs in (300, 500) if path.name.startswith(f"{cs}_")), None)
    if chunk_length is not None and trained_for is not None and trained_for != chunk_length:
        raise ModelError(f"{path}: this classifier was trained on {trained_for} bp chunks but the run used "
                         f"chunk_length {chunk_length}; use {chunk_length}_model.pth or rerun with chunk_length {trained_for}")
    return model


@contextlib.contextmanager
def _class_in_main(cls):
    """Make `cls` pickle as __main__.MLPClassifier, as the original's training script saved it."""
    main = sys.modules["__main__"]
    saved = cls.__module__, getattr(main, "MLPClassifier", None)
    cls.__module__ = "__main__"
    main.MLPClassifier = cls
    try:
        yield
    finally:
        cls.__module__ = saved[0]
        if saved[1] is None:
            del main.MLPClassifier
        else:
            main.MLPClassifier = saved[1]


def write_demo_classifier(path, input_dim, seed=0):
    """A tiny deterministic classifier, UNTRAINED, saved as the original saves its models (the whole
    module pickled, class under __main__). For tests and `make demo`; its calls mean nothing."""
    torch.manual_seed(seed)
    model = MLPClassifier(input_dim)
    with torch.no_grad():
        model.bn1.running_mean.normal_(0, 0.1)
        model.bn1.running_var.uniform_(0.5, 1.5)
        model.output_layer.weight.mul_(8.0)  # spread the demo's scores over [0, 1] instead of ~0.5
    model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _class_in_main(MLPClassifier):
        torch.save(model, path)
    return path


def score(model, features):
    """softmax(model(x)) as float32 numpy: columns P(others), P(virus)."""
    with torch.inference_mode():
        return F.softmax(model(torch.from_numpy(np.asarray(features, dtype=np.float32))), dim=1).numpy()


def _read_tsv(path):
    with open(path, newline="") as handle:
        yield from csv.DictReader(handle, delimiter="\t")


def predict_sample(embeddings_h5, frames_tsv, reads_tsv, classifier, *, predictions_tsv, chunk_calls_tsv,
                   read_calls_tsv, chunk_length=None, batch_rows=65536, log=None):
    """Write predictions.tsv, chunk_calls.tsv and read_calls.tsv; streams in batches of rows."""
    with open_embeddings(embeddings_h5) as merged:
        model = load_classifier(classifier, input_dim=merged.dim, chunk_length=chunk_length)
        frames = _read_tsv(frames_tsv)
        per_read = {}  # read_id -> [virus_chunks, max_virus_score] for reads seen so far
        chunk = None  # [chunk_id, read_id, max1, max2, frames]
        counts = {"frames": 0, "missing": 0, "virus_frames": 0}
        with atomic_open(predictions_tsv) as pred_out, atomic_open(chunk_calls_tsv) as chunk_out:
            pred_out.write("Sequence_ID\tPrediction\tscore1\tscore2\n")
            chunk_out.write("Modified_ID\tIs_Virus\tmax_score1\tmax_score2\tframes\n")

            def close_chunk():
                if chunk is None:
                    return
                chunk_id, read_id, max1, max2, n = chunk
                is_virus = max2 >= max1
                chunk_out.write(f"{chunk_id}\t{is_virus}\t{str(max1)}\t{str(max2)}\t{n}\n")
                entry = per_read.setdefault(read_id, [0, None])
                entry[0] += int(is_virus)
                entry[1] = max2 if entry[1] is None else max(entry[1], max2)

            for start in range(0, len(merged), batch_rows):
                ids = merged.read_ids(start, start + batch_rows)
                probabilities = score(model, merged.embeddings[start : start + batch_rows])
                lines = []
                for frame_id, (p_other, p_virus) in zip(ids, probabilities):
                    row = next(frames)
                    while row["frame_id"] != frame_id:  # a frame left out with allow_missing
                        counts["missing"] += 1
                        row = next(frames)
                    label = "virus" if p_virus > p_other else "others"
                    counts["virus_frames"] += label == "virus"
                    # str() of the float32 scores, as the original writes them (shortest round-trip form).
                    lines.append(f"{frame_id}\t{label}\t{str(p_other)}\t{str(p_virus)}\n")
                    chunk_id = frame_id[:-2]  # VirNucPro's Modified_ID: the frame suffix removed
                    if chunk is None or chunk[0] != chunk_id:
                        close_chunk()
                        chunk = [chunk_id, row["read_id"], p_other, p_virus, 0]
                    chunk[2], chunk[3], chunk[4] = max(chunk[2], p_other), max(chunk[3], p_virus), chunk[4] + 1
                pred_out.write("".join(lines))
                counts["frames"] += len(ids)
            close_chunk()
            counts["missing"] += sum(1 for _ in frames)
    calls = {"virus": 0, "others": 0, "no_frames": 0}
    with atomic_open(read_calls_tsv) as reads_out:
        reads_out.write("read_id\tlength\tchunks\tchunks_with_frames\tvirus_chunks\tmax_virus_score\tcall\n")
        for read in _read_tsv(reads_tsv):
            virus_chunks, best = per_read.get(read["read_id"], (0, None))
            call = "no_frames" if best is None else ("virus" if virus_chunks else "others")
            calls[call] += 1
            reads_out.write(f"{read['read_id']}\t{read['length']}\t{read['chunks']}\t{read['chunks_with_frames']}\t"
                            f"{virus_chunks}\t{'' if best is None else str(best)}\t{call}\n")
    if log:
        log.info("%d frames scored (%d virus), %d expected frames absent; reads: %d virus, %d others, %d without "
                 "frames", counts["frames"], counts["virus_frames"], counts["missing"], calls["virus"],
                 calls["others"], calls["no_frames"])
    return {**counts, **calls}
