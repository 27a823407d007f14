"""The published DNABERT-S repository (zhihan1996/DNABERT-S: config.json, weights, tokenizer.json)
-> a DNABERTS module and its tokenizer. Files are read by `checkpoints` (no code in them runs)."""

from pathlib import Path

import torch

from ..errors import ModelError
from .checkpoints import read_config, read_tensors, weight_files
from .dnabert_s import DNABERTS, DnabertSConfig

CONFIG_KEYS = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"]
HEAD_PREFIXES = ("cls.", "pooler.")  # MLM and pooler heads: not part of the encoder


def load_dnabert_s_module(folder):
    """DNABERTS (fp32, CPU, eval) with the published weights of `folder` (one file or shards)."""
    config = _read_config(folder)
    files = weight_files(folder)
    where = files[0] if len(files) == 1 else Path(folder)
    state = {}
    for path in files:
        for key, value in read_tensors(path):
            key = key.removeprefix("bert.")  # BertModel's keys, or BertForMaskedLM's with the prefix
            if not key.startswith(HEAD_PREFIXES):
                state[key] = value
    with torch.device("meta"):  # no memory and no random values for weights the checkpoint replaces
        model = DNABERTS(DnabertSConfig(
            hidden=config["hidden_size"], layers=config["num_hidden_layers"], heads=config["num_attention_heads"],
            intermediate=config["intermediate_size"], vocab_size=config["vocab_size"],
            type_vocab_size=config.get("type_vocab_size", 2), eps=config.get("layer_norm_eps", 1e-12)), init=False)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise ModelError(f"{where}: missing key {missing[0]} ({len(missing)} missing); "
                         "the weights are incomplete or not DNABERT-S, re-download them")
    for key, value in expected.items():
        if state[key].shape != value.shape:
            raise ModelError(f"{where}: {key} has shape {tuple(state[key].shape)}, "
                             f"config.json says {tuple(value.shape)}")
    model.load_state_dict({k: state[k].float() for k in expected}, assign=True)
    return model.eval()


def load_tokenizer(folder):
    """The repo's tokenizer.json through the `tokenizers` library (DnabertSEncoder sets it up to
    encode as VirNucPro's transformers call)."""
    from tokenizers import Tokenizer

    path = Path(folder) / "tokenizer.json"
    if not path.exists():
        raise ModelError(f"{folder}: no tokenizer.json; download the complete DNABERT-S repository")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        raise ModelError(f"{path}: cannot read the tokenizer ({exc}); re-download it") from None
    for token in ("[CLS]", "[SEP]", "[PAD]"):
        if tokenizer.token_to_id(token) is None:
            raise ModelError(f"{path}: no {token} token; this is not a DNABERT-2/S tokenizer")
    return tokenizer


def dnabert_s_width(folder):
    """Features per sequence (the hidden size) of a DNABERT-S folder, checked for its three parts."""
    config = _read_config(folder)
    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise ModelError(f"{folder}: no tokenizer.json; give the complete DNABERT-S folder (config.json, weights, "
                         "tokenizer.json)")
    weight_files(folder)
    return int(config["hidden_size"])


def _read_config(folder):
    if not (Path(folder) / "config.json").is_file():
        raise ModelError(f"{folder}: no config.json; give a DNABERT-S folder (config.json, weights, tokenizer.json)")
    config = read_config(folder)
    path = Path(folder) / "config.json"
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        raise ModelError(f"{path}: no {missing[0]}; this is not a DNABERT-S (BERT) config")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise ModelError(f"{path}: hidden_size {config['hidden_size']} is not a multiple of "
                         f"num_attention_heads {config['num_attention_heads']}")
    return config
