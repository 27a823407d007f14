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

from .atomic import atomic_open, atomic_path
from .errors import InputError, ModelError
from .shards import open_embeddings

HIDDEN = 512
SHOW = 10  # ids named in a log line or message
PREDICTIONS_HEADER = "Sequence_ID\tPrediction\tscore1\tscore2\n"
CHUNK_CALLS_HEADER = "Modified_ID\tIs_Virus\tmax_score1\tmax_score2\tframes\n"
READ_CALLS_HEADER = "read_id\tlength\tchunks\tchunks_with_frames\tvirus_chunks\tmax_virus_score\tcall\n"
CALLS = ("virus", "others", "no_frames", "not_scored")


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
        x = self.hidden_layer(x)  # (rows, 512)
        x = F.relu(self.bn1(x))  # eval mode: the running statistics of training
        return self.output_layer(self.dropout(x))  # (rows, 2): logits of others, virus


# The only names a classifier file may use besides plain tensors and dicts (torch's weights_only
# unpickler already knows OrderedDict, set, Parameter and the tensor rebuild functions). The
# original training script pickled the whole module with its class defined in __main__.
_ALLOWED = [
    (MLPClassifier, "__main__.MLPClassifier"),
    MLPClassifier,  # virnucflow.predict.MLPClassifier: a module saved from this package
    nn.Linear, nn.BatchNorm1d, nn.Dropout, nn.ReLU,
]
_LAYERS = {"hidden_layer": nn.Linear, "bn1": nn.BatchNorm1d, "output_layer": nn.Linear}


def trained_chunk_length(path, override=None):
    """Chunk length the classifier was trained on: `override`, else from the published file names
    (300_model.pth, 500_model.pth), else None (unknown: not checked)."""
    if override:
        return int(override)
    found = re.match(r"(\d+)_model\b", Path(path).name)
    return int(found.group(1)) if found else None


def _refuse(path, exc):
    """A ModelError for a file torch's weights-only unpickler stopped before it ran anything."""
    text = str(exc)
    detail = text.split("WeightsUnpickler error:")[-1].strip().splitlines()[0] if "WeightsUnpickler" in text else ""
    found = re.search(r"GLOBAL (\S+)", text)
    if found:
        reason = f"it names {found.group(1)}, which is not part of a classifier"
    elif "persistent_load" in detail:  # torch < 1.6 pickled whole modules with their source code
        return ModelError(f"{path}: a whole module in torch's legacy (pre-1.6) format, which carries source code "
                          "and cannot be loaded safely; where you trust it, re-save it as a state_dict with "
                          "torch.save(model.state_dict(), path)")
    elif "Unsupported operand" in text or not detail:
        return ModelError(f"{path}: not a classifier file torch can read safely ({detail or 'not a pickle'}); "
                          "re-download 300_model.pth / 500_model.pth")
    else:
        reason = f"it builds objects outside the allow-list ({detail[:160]})"
    return ModelError(f"{path}: refused to load: {reason}; unpickling it could run code. Use the published "
                      "300_model.pth / 500_model.pth or a state_dict saved with torch.save(model.state_dict(), path)")


def _state_of_pickled_module(module, path):
    """Tensors of a whole pickled MLPClassifier, read from its attribute dicts: no method of the
    unpickled object runs (its hook dicts came from the file)."""
    state, eps = {}, None
    children = vars(module).get("_modules")
    if not isinstance(children, dict) or set(children) - {*_LAYERS, "dropout"}:
        found = ", ".join(children) if isinstance(children, dict) else type(children).__name__
        raise ModelError(f"{path}: not VirNucPro's MLP (layers: {found}); use 300_model.pth / 500_model.pth")
    for name, layer_type in _LAYERS.items():
        child = children.get(name)
        if type(child) is not layer_type:
            raise ModelError(f"{path}: not a VirNucPro classifier ({name} is {type(child).__name__}, expected "
                             f"{layer_type.__name__}); use 300_model.pth / 500_model.pth")
        parameters, buffers = vars(child).get("_parameters"), vars(child).get("_buffers")
        if not isinstance(parameters, dict) or not isinstance(buffers, dict):
            raise ModelError(f"{path}: {name} of the pickled classifier has no parameter dict; check the file")
        tensors = {**parameters, **buffers}
        state.update({f"{name}.{key}": value for key, value in tensors.items() if value is not None})
        if name == "bn1":
            eps = vars(child).get("eps")
    return state, eps


def load_classifier(path, input_dim=None, chunk_length=None, trained_chunk=None):
    """The classifier in eval mode, from the original whole-module pickle or a state_dict, loaded
    without executing code: any other class or call in the file is refused with a ModelError.

    `input_dim` (features per frame) and `chunk_length` (of the run) are checked when given;
    `trained_chunk` overrides the chunk length read from the file name."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: classifier not found; set `classifier:` to VirNucPro's 500_model.pth or "
                         "300_model.pth")
    try:
        with torch.serialization.safe_globals(_ALLOWED):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refuse(path, exc) from None
    except Exception as exc:  # a truncated or foreign file: zip, storage or pickle errors of any kind
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(f"{path}: not a readable classifier ({type(exc).__name__}: {first}); re-download it") from None
    eps = None
    if isinstance(loaded, nn.Module):
        if type(loaded) is not MLPClassifier:
            raise ModelError(f"{path}: holds a {type(loaded).__name__}, not VirNucPro's MLPClassifier")
        state, eps = _state_of_pickled_module(loaded, path)
    elif isinstance(loaded, dict):
        state = loaded
    else:
        raise ModelError(f"{path}: holds a {type(loaded).__name__}, not a classifier or a state_dict")
    weights = {key: state.get(key) for key in ("hidden_layer.weight", "output_layer.weight")}
    if not all(isinstance(w, torch.Tensor) and w.ndim == 2 for w in weights.values()):
        raise ModelError(f"{path}: not a VirNucPro classifier (no hidden_layer.weight / output_layer.weight "
                         "matrices); check the file")
    if any(not isinstance(value, torch.Tensor) for value in state.values()):
        raise ModelError(f"{path}: a state_dict entry is not a tensor; check the file")
    dim, hidden = weights["hidden_layer.weight"].shape[1], weights["hidden_layer.weight"].shape[0]
    classes = weights["output_layer.weight"].shape[0]
    if classes != 2:
        raise ModelError(f"{path}: classifier has {classes} outputs; VirNucPro's has 2 (others, virus)")
    model = MLPClassifier(dim, hidden, classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ModelError(f"{path}: weights do not fit VirNucPro's MLP ({detail})") from None
    if isinstance(eps, float):
        model.bn1.eps = eps
    model.eval()
    if input_dim is not None and dim != input_dim:
        raise ModelError(f"{path}: classifier takes {dim} features but the embeddings have {input_dim}; use the "
                         "classifier made for these models (DNABERT-S 768 + ESM-2 3B 2560 = 3328)")
    trained = trained_chunk_length(path, trained_chunk)
    if chunk_length is not None and trained is not None and trained != int(chunk_length):
        raise ModelError(f"{path}: this classifier was trained on {trained} bp chunks but the run used "
                         f"chunk_length {chunk_length}; use {chunk_length}_model.pth or rerun with chunk_length "
                         f"{trained} (or state the classifier's chunk length explicitly if its name misleads)")
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
    """A tiny deterministic classifier, UNTRAINED (random weights: its calls mean nothing), saved as
    the original saves its models: the whole module pickled, class under __main__. For tests and
    `make demo`. The same arguments give the same bytes."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(seed)
        model = MLPClassifier(input_dim)
        with torch.no_grad():
            model.bn1.running_mean.normal_(0, 0.1)
            model.bn1.running_var.uniform_(0.5, 1.5)
            model.output_layer.weight.mul_(8.0)  # spread the demo's scores over [0, 1] instead of ~0.5
    model.eval()
    path = Path(path)
    # Saved through a file handle, so the archive's inner folder is "archive/" whatever the name.
    with _class_in_main(MLPClassifier), atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(model, handle)
    return path


def score(model, features):
    """softmax(model(x)) as float32 numpy: columns P(others), P(virus)."""
    with torch.inference_mode():
        return F.softmax(model(torch.from_numpy(np.asarray(features, dtype=np.float32))), dim=1).numpy()


def _tsv_rows(path, needed):
    """Rows of a TSV written by prepare, as dicts; a missing column is an InputError."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        absent = [name for name in needed if name not in (reader.fieldnames or [])]
        if absent:
            raise InputError(f"{path}: no column {', '.join(absent)}; it must be the file prepare wrote (rerun it)")
        yield from reader


def _outputs(out_dir, predictions_tsv, chunk_calls_tsv, read_calls_tsv):
    paths = [predictions_tsv, chunk_calls_tsv, read_calls_tsv]
    names = ["predictions.tsv", "chunk_calls.tsv", "read_calls.tsv"]
    if out_dir is not None:
        paths = [p or Path(out_dir) / name for p, name in zip(paths, names)]
    if any(p is None for p in paths):
        raise TypeError("predict_sample needs out_dir or all of predictions_tsv, chunk_calls_tsv, read_calls_tsv")
    return [Path(p) for p in paths]


def predict_sample(embeddings_h5, frames_tsv, reads_tsv, classifier, out_dir=None, *, predictions_tsv=None,
                   chunk_calls_tsv=None, read_calls_tsv=None, chunk_length=None, trained_chunk=None,
                   batch_rows=8192, log=None):
    """Score every frame of `embeddings_h5` and write predictions.tsv, chunk_calls.tsv and read_calls.tsv
    (into `out_dir` or the explicit paths), streaming `batch_rows` rows at a time; all three appear
    together or not at all. `chunk_length` defaults to the one recorded in the embeddings file.
    Frames of frames.tsv absent from the embeddings (allow_missing) are counted and logged.
    Returns counts: frames, virus_frames, missing (with missing_first), chunks, and reads per call."""
    paths = _outputs(out_dir, predictions_tsv, chunk_calls_tsv, read_calls_tsv)
    counts = {"frames": 0, "virus_frames": 0, "chunks": 0, "virus_chunks": 0, "missing": 0, "missing_first": []}
    per_read = {}  # read_id -> [virus chunks, max score2] of reads with a scored frame
    with open_embeddings(embeddings_h5) as merged, \
            atomic_open(paths[0]) as pred_out, atomic_open(paths[1]) as chunk_out, atomic_open(paths[2]) as read_out:
        if chunk_length is None and "chunk_length" in merged.attrs:
            chunk_length = int(merged.attrs["chunk_length"])
        # An empty sample's file may have no columns at all: nothing to check the classifier against.
        model = load_classifier(classifier, input_dim=merged.dim if len(merged) or merged.dim else None,
                                chunk_length=chunk_length, trained_chunk=trained_chunk)
        pred_out.write(PREDICTIONS_HEADER)
        chunk_out.write(CHUNK_CALLS_HEADER)
        frames = _tsv_rows(frames_tsv, ("frame_id", "read_id"))
        frame_number = 0  # data rows of frames.tsv consumed

        def missing(frame_id):
            counts["missing"] += 1
            if len(counts["missing_first"]) < SHOW:
                counts["missing_first"].append(frame_id)

        chunk = None  # [chunk_id, read_id, max score1, max score2, frames] of the chunk being read

        def close_chunk():
            if chunk is None:
                return
            chunk_id, read_id, max1, max2, n = chunk
            is_virus = bool(max2 >= max1)  # VirNucPro's determine_virus
            chunk_out.write(f"{chunk_id}\t{is_virus}\t{str(max1)}\t{str(max2)}\t{n}\n")
            counts["chunks"] += 1
            counts["virus_chunks"] += is_virus
            entry = per_read.setdefault(read_id, [0, max2])
            entry[0] += is_virus
            entry[1] = max(entry[1], max2)

        for start in range(0, len(merged), batch_rows):
            ids = merged.read_ids(start, start + batch_rows)
            probabilities = score(model, merged.embeddings[start : start + batch_rows])  # (rows, 2) float32
            lines = []
            for offset, (frame_id, (p_other, p_virus)) in enumerate(zip(ids, probabilities)):
                row = next(frames, None)
                while row is not None and row["frame_id"] != frame_id:  # left out of the merge (allow_missing)
                    missing(row["frame_id"])
                    row = next(frames, None)
                if row is None:
                    raise InputError(f"{embeddings_h5}: row {start + offset} ({frame_id}) is not among the frames of "
                                     f"{frames_tsv} after row {frame_number}; the embeddings come from another "
                                     "prepare run: rerun merge")
                frame_number += 1
                # str() of numpy float32 gives the original's digits (shortest round trip); an f-string
                # field alone would format them as float64 (17 digits).
                label = "virus" if p_virus > p_other else "others"
                counts["virus_frames"] += label == "virus"
                lines.append(f"{frame_id}\t{label}\t{str(p_other)}\t{str(p_virus)}\n")
                chunk_id = frame_id[:-2]  # VirNucPro's Modified_ID: the frame suffix (F1..R3) removed
                if chunk is None or chunk[0] != chunk_id:
                    close_chunk()
                    chunk = [chunk_id, row["read_id"], p_other, p_virus, 0]
                chunk[2], chunk[3], chunk[4] = max(chunk[2], p_other), max(chunk[3], p_virus), chunk[4] + 1
            pred_out.write("".join(lines))
            counts["frames"] += len(ids)
        close_chunk()
        for row in frames:
            missing(row["frame_id"])

        calls = dict.fromkeys(CALLS, 0)
        read_out.write(READ_CALLS_HEADER)
        listed = 0
        for read in _tsv_rows(reads_tsv, ("read_id", "length", "chunks", "chunks_with_frames")):
            virus_chunks, best = per_read.get(read["read_id"], (0, None))
            if best is not None:
                listed += 1
                call = "virus" if virus_chunks else "others"
            else:
                call = "not_scored" if int(read["chunks_with_frames"]) else "no_frames"
            calls[call] += 1
            read_out.write(f"{read['read_id']}\t{read['length']}\t{read['chunks']}\t{read['chunks_with_frames']}\t"
                           f"{virus_chunks}\t{'' if best is None else str(best)}\t{call}\n")
        if listed != len(per_read):
            raise InputError(f"{reads_tsv}: {len(per_read) - listed} reads with scored frames are not listed; "
                             "frames.tsv and reads.tsv come from different prepare runs: rerun prepare")
    counts.update(calls)
    if log:
        log.info("%d frames scored (%d virus); %d chunks (%d virus); reads: %d virus, %d others, %d without frames",
                 counts["frames"], counts["virus_frames"], counts["chunks"], counts["virus_chunks"], calls["virus"],
                 calls["others"], calls["no_frames"])
        if counts["missing"]:
            log.warning("%d frames of %s have no embedding and were not scored (allow_missing), first %d: %s; "
                        "%d reads have no scored frame (call not_scored)", counts["missing"], frames_tsv,
                        len(counts["missing_first"]), ", ".join(counts["missing_first"]), calls["not_scored"])
    return counts
