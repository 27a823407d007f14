"""DNABERT-S on disk: the published repo layout (config.json, weights, tokenizer.json), the pooled
encoder, and deterministic random-weight models with a trained BPE tokenizer for tests and demos.
"""

import json
import random
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import ModelError
from .batches import pack, pad
from .dnabert_s import DNABERTS

SPECIAL_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]  # ids 0..4, as DNABERT-2/S's tokenizer
CONFIG_KEYS = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"]
HEAD_PREFIXES = ("cls.", "pooler.")  # MLM and pooler heads: not part of the encoder


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


def _read_config(folder):
    path = Path(folder) / "config.json"
    if not path.exists():
        raise ModelError(f"{folder}: no config.json; give a DNABERT-S folder (config.json, weights, tokenizer.json)")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a readable JSON file ({exc}); re-download it") from None
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        raise ModelError(f"{path}: no {missing[0]}; this is not a DNABERT-S (BERT) config")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise ModelError(f"{path}: hidden_size {config['hidden_size']} is not a multiple of "
                         f"num_attention_heads {config['num_attention_heads']}")
    return config


def dnabert_s_width(folder):
    """Features per sequence (the hidden size) of a DNABERT-S folder, checked for its three parts."""
    config = _read_config(folder)
    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise ModelError(f"{folder}: no tokenizer.json; give the complete DNABERT-S folder (config.json, weights, "
                         "tokenizer.json)")
    if not any((folder / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
        raise ModelError(f"{folder}: no model.safetensors or pytorch_model.bin; download the complete repository")
    return int(config["hidden_size"])


def _read_weights(folder):
    """State dict of model.safetensors (preferred) or pytorch_model.bin, read without running pickles."""
    folder = Path(folder)
    path = folder / "model.safetensors"
    if path.exists():
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), path
        except Exception as exc:  # noqa: BLE001 - any failure is a bad file
            raise ModelError(f"{path}: cannot read the weights ({exc}); re-download them") from None
    path = folder / "pytorch_model.bin"
    if not path.exists():
        raise ModelError(f"{folder}: no model.safetensors or pytorch_model.bin; download the complete repository")
    try:  # a zip checkpoint (the published one) is memory-mapped: no second copy of the weights in RAM
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)), path
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        raise ModelError(f"{path}: cannot read the weights ({exc}); re-download them") from None


def load_dnabert_s_module(folder):
    """DNABERTS (fp32, CPU, eval) with the published weights of `folder`."""
    config = _read_config(folder)
    raw, weights_path = _read_weights(folder)
    # Keys with or without the "bert." prefix (BertModel vs BertForMaskedLM); heads are not used.
    state = {k.removeprefix("bert."): v for k, v in raw.items()}
    state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    with torch.device("meta"):  # no memory and no random values for weights the checkpoint replaces
        model = DNABERTS(
            vocab_size=config["vocab_size"], hidden=config["hidden_size"], layers=config["num_hidden_layers"],
            num_heads=config["num_attention_heads"], intermediate=config["intermediate_size"],
            type_vocab_size=config.get("type_vocab_size", 2), eps=config.get("layer_norm_eps", 1e-12), init=False,
        )
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise ModelError(f"{weights_path}: missing key {missing[0]} ({len(missing)} missing); "
                         "the weights are incomplete or not DNABERT-S, re-download them")
    for key, value in expected.items():
        if state[key].shape != value.shape:
            raise ModelError(f"{weights_path}: {key} has shape {tuple(state[key].shape)}, "
                             f"config.json says {tuple(value.shape)}")
    model.load_state_dict({k: state[k].float() for k in expected}, assign=True)
    return model.eval()


class DnabertSEncoder:
    """Embeds DNA the VirNucPro way: mean of the last hidden states over all tokens, [CLS] and
    [SEP] included, padding excluded. attention: 'padded', 'packed', or 'auto' (packed on CUDA)."""

    pooling = "mean of last hidden states over all tokens incl. [CLS]/[SEP]"

    def __init__(self, model, tokenizer, name, device="cpu", dtype=torch.float32, attention="auto"):
        if attention not in ("auto", "padded", "packed"):
            raise ModelError(f"attention {attention!r} is not one of auto, padded, packed")
        self.name = name
        self.dim = model.hidden
        # The published DNABERT-S tokenizer.json pads every sequence to 2000 tokens and cuts longer
        # ones; transformers switches both off for VirNucPro's plain tokenizer(seq) call, so do we.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = dtype
        self.attention = ("packed" if self.device.type == "cuda" else "padded") if attention == "auto" else attention
        self.model = model.to(device=self.device, dtype=dtype)
        self.pad_id = tokenizer.token_to_id("[PAD]")
        if self.attention == "packed" and self.device.type == "cuda":
            self._check_packed()

    def _check_packed(self):
        """Compile the packed kernel now, so that a GPU or toolchain without it falls back to
        padded before any row is made (and the output's attributes say which one ran). Two token
        counts: the second call recompiles for dynamic shapes, which later batches then reuse."""
        try:
            self.embed([self.tokenize("ACGT" * 8), self.tokenize("GATTACA")])
            self.embed([self.tokenize("ACGT" * 40), self.tokenize("GATTACA" * 9), self.tokenize("CAT")])
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - any compiler failure
            warnings.warn(f"packed attention (compiled flex_attention) failed on {self.device}: "
                          f"{type(exc).__name__}: {exc}; using padded attention")
            self.attention = "padded"

    def tokenize(self, sequence):
        """VirNucPro's tokenizer(seq)["input_ids"]: [CLS] + BPE tokens + [SEP]."""
        return self.tokenizer.encode(sequence).ids

    @torch.inference_mode()
    def embed(self, batch):
        """batch: token-id lists -> (B, dim) float32 on CPU; a row does not depend on the others."""
        lengths = torch.tensor([len(ids) for ids in batch], device=self.device)
        if self.attention == "packed":
            tokens, cu_seqlens = pack(batch, self.device)
            hidden = self.model.forward_packed(tokens, cu_seqlens).float()  # (total tokens, dim)
            owner = torch.repeat_interleave(torch.arange(len(batch), device=self.device), lengths)
            sums = torch.zeros(len(batch), self.dim, device=self.device).index_add_(0, owner, hidden)
        else:
            tokens, mask = pad(batch, self.pad_id, self.device)
            hidden = self.model(tokens, mask).float()  # (B, tokens, dim)
            sums = (hidden * mask[:, :, None]).sum(1)
        return (sums / lengths[:, None]).cpu()


def load_dnabert_s(source_dir, device="cpu", dtype=torch.float32, attention="auto", name=None):
    """The DNABERT-S encoder of a folder in the published layout (zhihan1996/DNABERT-S)."""
    tokenizer = load_tokenizer(source_dir)
    model = load_dnabert_s_module(source_dir)
    if tokenizer.get_vocab_size() > model.embeddings.word_embeddings.num_embeddings:
        raise ModelError(f"{source_dir}: tokenizer.json has {tokenizer.get_vocab_size()} tokens, the model "
                         f"{model.embeddings.word_embeddings.num_embeddings}; tokenizer and weights do not match")
    return DnabertSEncoder(model, tokenizer, name or Path(source_dir).name, device, dtype, attention)


def train_tokenizer(vocab_size, seed=0, reads=400, length=600):
    """A BPE tokenizer trained on seeded random DNA, shaped like DNABERT-2/S's: the same special
    tokens and ids, Whitespace pre-tokenizer and "[CLS] $A [SEP]" post-processor."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    rng = random.Random(seed)
    corpus = ["".join(rng.choice("ACGT") for _ in range(length)) for _ in range(reads)]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tokenizer


def dnabert_s_config(hidden, layers, heads, intermediate, vocab_size):
    """config.json with the keys of the published DNABERT-S config (less its auto_map, which
    points at remote code that this layout does not ship)."""
    return {
        "_name_or_path": "virnucflow random-weight DNABERT-S (UNTRAINED, for tests and demos)",
        "alibi_starting_size": 512, "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.0,
        "classifier_dropout": None, "gradient_checkpointing": False, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "hidden_size": hidden, "initializer_range": 0.02,
        "intermediate_size": intermediate, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
        "model_type": "bert", "num_attention_heads": heads, "num_hidden_layers": layers, "pad_token_id": 0,
        "position_embedding_type": "absolute", "torch_dtype": "float32", "transformers_version": "4.28.0",
        "type_vocab_size": 2, "use_cache": True, "vocab_size": vocab_size,
    }


def write_tokenizer_files(tokenizer, out_dir):
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json as in the published repo,
    whose tokenizer.json also carries padding (fixed 2000, [PAD]) and truncation (2000)."""
    out_dir = Path(out_dir)
    tokenizer.enable_truncation(2000)
    tokenizer.enable_padding(length=2000, pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    tokenizer.save(str(out_dir / "tokenizer.json"))
    special = {"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]",
               "unk_token": "[UNK]"}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    config = {"clean_up_tokenization_spaces": True, **special, "model_max_length": 1000000000000000019884624838656,
              "tokenizer_class": "PreTrainedTokenizerFast"}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_random_dnabert_s(out_dir, hidden=48, layers=2, heads=6, intermediate=96, vocab_size=256, seed=0):
    """A deterministic random-weight DNABERT-S in the published layout (config.json,
    pytorch_model.bin with BertModel keys, pooler included, tokenizer files). UNTRAINED."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(vocab_size, seed)
    vocab_size = tokenizer.get_vocab_size()
    torch.manual_seed(seed)
    model = DNABERTS(vocab_size=vocab_size, hidden=hidden, layers=layers, num_heads=heads, intermediate=intermediate)
    state = dict(model.state_dict())
    state["pooler.dense.weight"] = torch.empty(hidden, hidden)
    state["pooler.dense.bias"] = torch.empty(hidden)
    with torch.no_grad():
        for name, param in state.items():
            if "LayerNorm" in name or "layernorm" in name:  # near 1 (weight) and 0 (bias), not exactly
                param.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(param))
            else:
                param.copy_(torch.randn_like(param) * (0.5 / param.shape[-1] ** 0.5 if param.ndim > 1 else 0.05))
    torch.save(state, out_dir / "pytorch_model.bin")
    config = dnabert_s_config(hidden, layers, heads, intermediate, vocab_size)
    (out_dir / "config.json").write_text(json.dumps(config, indent=4, sort_keys=True) + "\n")
    write_tokenizer_files(tokenizer, out_dir)
    return out_dir
