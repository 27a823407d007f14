"""VirNucPro's classifier: its MLP, and its files (the original's whole-module pickles, or a state_dict)
loaded without running code from them."""

import pickle
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ModelError

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
        x = self.hidden_layer(x)  # (rows, 512)
        x = F.relu(self.bn1(x))  # eval mode: the running statistics of training
        return self.output_layer(self.dropout(x))  # (rows, 2): logits of others, virus


# The only names a classifier file may use besides plain tensors and dicts (torch's weights_only
# unpickler already knows OrderedDict, set, Parameter and the tensor rebuild functions). The
# original training script pickled the whole module with its class defined in __main__.
_ALLOWED = [
    (MLPClassifier, "__main__.MLPClassifier"),
    MLPClassifier,  # virnucflow.classifier.MLPClassifier: a module saved from this package
    (MLPClassifier, "virnucflow.predict.MLPClassifier"),  # saved from this package before the class moved here
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
                         f"chunk_length {chunk_length}; use VirNucPro's {chunk_length}_model.pth as `classifier`, or "
                         f"set `chunk_length: {trained}` (the run starts again from prepare); if the file was in fact "
                         f"trained on {chunk_length} bp chunks, rename it: the length is read from its name "
                         f"('{trained}_model...')")
    return model


def score(model, features):
    """softmax(model(x)) as float32 numpy: columns P(others), P(virus)."""
    with torch.inference_mode():
        return F.softmax(model(torch.from_numpy(np.asarray(features, dtype=np.float32))), dim=1).numpy()
