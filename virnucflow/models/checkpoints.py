"""Model files on disk, for both models: the weight files of a Hugging Face folder (one file or
shards), their tensors (safetensors, or torch pickles read without running code), and config.json.

A torch pickle is read by torch's weights-only unpickler: tensors, containers and plain values.
Anything else a file names is refused in one line that says so, or (fair-esm's metadata only, see
`torch_load`) read as an inert stand-in. Nothing here ever retries with weights_only=False.
"""

import argparse
import json
import pickle
import re
import zipfile
from pathlib import Path

import torch

from ..errors import ModelError

SINGLE_AND_INDEX = (("model.safetensors", "model.safetensors.index.json"),
                    ("pytorch_model.bin", "pytorch_model.bin.index.json"))
MAX_STAND_INS = 32  # classes a checkpoint may name beyond the allow-list before it is refused


def read_config(folder):
    """config.json of a Hugging Face folder as a dict; a ModelError when it is absent or not JSON."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ModelError(f"{folder}: no config.json; give the complete model folder (config.json and weights)")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable ({exc}); download the model again") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path}: not a model config (a JSON {type(config).__name__}); download the model again")
    return config


def is_untrained(path):
    """True for a model written by `random_weights` (its marker: "UNTRAINED" in config.json's
    `_name_or_path`, or in the pickle of a .pt file, read without unpickling)."""
    path = Path(path)
    try:
        if path.is_dir():
            return "UNTRAINED" in str(read_config(path).get("_name_or_path", ""))
        with zipfile.ZipFile(path) as archive:  # torch.save's format: the pickle is small, tensors apart
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") or name == "data.pkl"]
            return any(b"UNTRAINED" in archive.read(name) for name in pickles)
    except (ModelError, OSError, zipfile.BadZipFile):
        return False


def weight_files(folder):
    """The weight files of a Hugging Face folder: model.safetensors, pytorch_model.bin, or the shards
    their index names (all present); a ModelError when there are none or a shard is missing."""
    folder = Path(folder)
    for single, index in SINGLE_AND_INDEX:
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            try:
                shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ModelError(f"{folder / index}: unreadable shard index ({exc}); "
                                 "download the model again") from None
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise ModelError(f"{folder}: shard {missing[0]} is missing; download the model again")
            return [folder / s for s in shards]
    raise ModelError(f"{folder}: no model.safetensors or pytorch_model.bin; download the complete model")


def read_tensors(path):
    """(key, tensor) of one weight file: safetensors (one tensor at a time), or a pickled state dict
    (read without stand-ins: a state dict holds tensors only, so any other class is refused)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    yield key, handle.get_tensor(key)
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"{path}: cannot read these weights ({exc}); download the model again") from None
        return
    state = torch_load(path, stand_ins=False)
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a state dict (a {type(state).__name__}); download the model again")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"{path}: {key} is not a tensor; the file is damaged or not model weights; "
                             "download the model again")
        yield key, value


class _StandIn:
    """What a checkpoint gets for a class it names that is not allowlisted: an object that keeps the
    pickled fields as attributes and does nothing else (calling it, or building it, runs no code)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        for part in state if isinstance(state, tuple) else (state,):
            if isinstance(part, dict):
                self.__dict__.update(part)


def torch_load(path, stand_ins=True):
    """torch.load(weights_only=True) of a checkpoint, memory-mapped when it is a zip (no second copy
    of the weights in RAM).

    The published fair-esm files keep their training config as an argparse.Namespace, allowlisted
    here. With `stand_ins`, each other class a file names is mapped to an inert stand-in and the load
    retried, so that metadata of another code base reads as attributes and nothing in it runs.
    Refused (ModelError): a global of a module torch blocks (os, sys, ...), an unknown global without
    `stand_ins`, more than MAX_STAND_INS of them, or any other construct outside the allow-list.
    """
    allowed = [argparse.Namespace]  # and one stand-in per other class the file names
    mmap = zipfile.is_zipfile(path)
    while True:
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as exc:
            words = _unpickler_words(exc)
            unknown = re.search(r"GLOBAL (\S+) was not an allowed global", words)
            too_many = len(allowed) - 1 >= MAX_STAND_INS
            if not (unknown and stand_ins) or too_many:
                raise _refusal(path, words, too_many) from None
            name = _global_name(unknown[1])
            allowed.append((type(name.rsplit(".", 1)[-1], (_StandIn,), {}), name))
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{path}: cannot read this checkpoint ({reason}); download it again") from None


def _global_name(printed):
    return printed if "." in printed else "builtins." + printed  # torch prints builtins bare


def _unpickler_words(exc):
    """The weights-only unpickler's own message, without the advice torch wraps around it (which
    differs between versions and suggests weights_only=False, wrong for a file that runs code)."""
    inner = exc.__context__  # torch re-raises the unpickler's error `from None`: still its context
    text = str(inner if isinstance(inner, pickle.UnpicklingError) else exc)
    text = text.split("WeightsUnpickler error:")[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    kept = [line for line in lines
            if not line.startswith(("Weights only load failed", "Check the documentation", "(1)", "(2)"))
            and "weights_only` set to `False`" not in line]
    return " ".join(kept or lines[:1])


def _refusal(path, words, too_many=False):
    """One line for a pickle torch stopped before it ran anything (or a damaged one)."""
    named = re.search(r"GLOBAL (\S+)", words)
    if too_many:
        reason = f"it names more than {MAX_STAND_INS} classes or functions outside the allow-list"
    elif named:
        reason = f"it names {_global_name(named[1])}, which is not part of a model checkpoint"
    elif "Unsupported operand" in words or not words:  # not a pickle, or a damaged one
        return ModelError(f"{path}: cannot read this checkpoint (not a torch file: {words or 'empty'}); "
                          "download it again")
    else:
        reason = f"it builds objects outside the allow-list ({words[:160]})"
    return ModelError(f"{path}: refused to load: {reason}; unpickling it could run code. Use the model's "
                      "published weights (download them again)")
