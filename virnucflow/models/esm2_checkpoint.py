"""ESM-2 on disk: the alphabet, both checkpoint layouts, the pooled encoder, and random test models.

Layouts:
- fair-esm's torch hub file (`esm2_t36_3B_UR50D.pt`): {"model": state dict with
  `encoder.sentence_encoder.` (encoder) and `encoder.` (lm_head) prefixes, "cfg": {"model":
  argparse.Namespace(encoder_layers=..., encoder_embed_dim=..., encoder_attention_heads=...,
  token_dropout=...), ...}}, read as fair-esm's esm/pretrained.py reads it;
- Hugging Face's `facebook/esm2_*` folder: config.json + model.safetensors or pytorch_model.bin
  (or their sharded index), keys `esm.encoder.layer.N.attention.self.query.weight` ...,
  with or without the `esm.` prefix.
Neither is loaded by running code from the file: torch.load(weights_only=True) only.
"""

import argparse
import json
import pickle
import re
import zipfile
from pathlib import Path

import torch

from ..errors import ModelError
from .batches import pack, pad
from .esm2 import ESM2, flash_varlen, packed_positions, rotary_frequencies

# fair-esm's ESM-1b alphabet: 4 specials, 25 residue symbols, '.', '-', padding to a multiple of 8, <mask>.
PREPEND = ["<cls>", "<pad>", "<eos>", "<unk>"]
RESIDUES = list("LAGVSERTIDPKQNFYMHWCXBUZO.-")
TOKENS = PREPEND + RESIDUES + ["<null_1>", "<mask>"]
TOKEN_ID = {tok: i for i, tok in enumerate(TOKENS)}
CLS, PAD, EOS, UNK, MASK = (TOKEN_ID[t] for t in ["<cls>", "<pad>", "<eos>", "<unk>", "<mask>"])
POOL_MAX_RESIDUES = 1024  # VirNucPro averages residues 1..min(L, 1024); the model still sees all of them

# Heads of the published sizes (embed_dim -> heads), for a fair-esm file whose config is unreadable.
PUBLISHED_HEADS = {320: 20, 480: 20, 640: 20, 1280: 20, 2560: 40, 5120: 40}

# Hugging Face module -> fair-esm module, within layer N.
HF_LAYER_MODULES = {
    "attention.self.query": "self_attn.q_proj",
    "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj",
    "attention.output.dense": "self_attn.out_proj",
    "attention.LayerNorm": "self_attn_layer_norm",
    "intermediate.dense": "fc1",
    "output.dense": "fc2",
    "LayerNorm": "final_layer_norm",
}
FAIR_LAYER_MODULES = {fair: hf for hf, fair in HF_LAYER_MODULES.items()}
HF_LEAVES = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}  # old LayerNorm names
HF_IGNORED = ("lm_head.", "contact_head.", "pooler.", "classifier.", "embeddings.position_ids")
FAIR_IGNORED = ("lm_head.", "contact_head.")


def tokenize(sequence):
    """fair-esm's encoding: <cls> + one token per residue (anything unknown -> <unk>) + <eos>."""
    return [CLS] + [TOKEN_ID.get(c, UNK) for c in sequence] + [EOS]


# --- reading files without running code -------------------------------------------------------


class _StandIn:
    """What a checkpoint gets for a class it names that is not allowlisted: an object that keeps the
    pickled fields as attributes and does nothing else (calling it, or building it, runs no code)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        for part in state if isinstance(state, tuple) else (state,):
            if isinstance(part, dict):
                self.__dict__.update(part)


def _torch_load(path):
    """torch.load(weights_only=True): tensors, containers and plain values only.

    The published fair-esm files keep their training config as an argparse.Namespace, allowlisted
    here (fair-esm itself calls plain torch.load, which since torch 2.6 refuses it). A checkpoint
    from elsewhere may name other classes; each is mapped to an inert stand-in and the load retried,
    so its metadata reads as attributes and nothing in the file is executed.
    """
    allowed = [argparse.Namespace]
    mmap = zipfile.is_zipfile(path)  # a zip checkpoint is memory-mapped: no second copy of the weights in RAM
    for _ in range(32):
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as exc:
            found = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
            if not found:
                reason = str(exc).strip().splitlines()[-1]
                raise ModelError(f"{path}: cannot read this checkpoint ({reason}); download it again") from None
            name = found.group(1) if "." in found.group(1) else "builtins." + found.group(1)  # torch prints builtins bare
            allowed.append((type(name.rsplit(".", 1)[-1], (_StandIn,), {}), name))
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{path}: cannot read this checkpoint ({reason}); download it again") from None
    raise ModelError(f"{path}: this checkpoint names too many unknown classes to be read safely")


def _field(obj, name):
    """cfg entries are attributes (Namespace) or keys (dict), depending on who wrote the file."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _number(obj, name):
    """A number or flag from a config; None for anything else (absent, or a stand-in)."""
    value = _field(obj, name)
    return value if isinstance(value, (bool, int, float)) else None


class _Checkpoint:
    """What a layout reader hands over: module-named tensors, the hyperparameters the file states
    (None where it is silent), and the file's own name for each module key, for error messages."""

    def __init__(self, where, tensors, hparams, file_key):
        self.where, self.tensors, self.hparams, self.file_key = where, tensors, hparams, file_key


def _read_fair_esm(path):
    data = _torch_load(path)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ModelError(f"{path}: not a fair-esm checkpoint (no 'model' state dict); give an ESM-2 .pt file "
                         "or a Hugging Face ESM-2 folder")
    cfg = data.get("cfg")
    args = _field(cfg, "model") if cfg is not None else data.get("args")  # ESM-2 files: cfg["model"]
    hparams = {
        "num_layers": _number(args, "encoder_layers"),
        "embed_dim": _number(args, "encoder_embed_dim"),
        "heads": _number(args, "encoder_attention_heads"),
        "token_dropout": _number(args, "token_dropout"),
        "layer_norm_eps": 1e-5,  # fair-esm's ESM1bLayerNorm is torch's LayerNorm at its default eps
    }
    keys = list(data["model"])
    prefix = next((p for p in ("encoder.sentence_encoder.", "encoder.") if any(k.startswith(p) for k in keys)), "")
    strip = re.compile(r"^(encoder\.sentence_encoder\.|encoder\.)")  # as fair-esm's upgrade_state_dict

    def tensors():
        for key, value in data["model"].items():
            name = strip.sub("", key)
            if not name.startswith(FAIR_IGNORED):
                yield key, [name], value

    return _Checkpoint(path, tensors(), hparams, lambda name: prefix + name)


def hf_weight_files(folder):
    """The weight files of a Hugging Face folder: model.safetensors, pytorch_model.bin, or the shards
    an index names (all present); ModelError when there are none or a shard is missing."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            try:
                shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, AttributeError) as exc:
                raise ModelError(f"{folder / index}: unreadable shard index ({exc}); download the model again") from None
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise ModelError(f"{folder}: shard {missing[0]} is missing; download the model again")
            return [folder / s for s in shards]
    raise ModelError(f"{folder}: no model.safetensors or pytorch_model.bin; download the complete model")


def _read_hf_file(path):
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    yield key, handle.get_tensor(key)
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"{path}: cannot read these weights ({exc}); download the model again") from None
    else:
        state = _torch_load(path)
        if not isinstance(state, dict):
            raise ModelError(f"{path}: not a state dict; download the model again")
        yield from state.items()


def _read_hf(folder):
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{config_path}: unreadable ({exc}); download the model again") from None
    if config.get("position_embedding_type") != "rotary" or config.get("emb_layer_norm_before"):
        raise ModelError(f"{config_path}: not ESM-2 (position_embedding_type={config.get('position_embedding_type')!r}, "
                         f"emb_layer_norm_before={config.get('emb_layer_norm_before')!r}); ESM-1 and ESM-1b are not supported")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ModelError(f"{config_path}: hidden_act {config['hidden_act']!r}; ESM-2 uses gelu")
    for key, expected in (("pad_token_id", PAD), ("mask_token_id", MASK), ("vocab_size", len(TOKENS))):
        if config.get(key, expected) != expected:
            raise ModelError(f"{config_path}: {key} is {config[key]}, the ESM-2 alphabet has {expected}")
    vocab = folder / "vocab.txt"
    if vocab.is_file() and vocab.read_text().split() != TOKENS:
        raise ModelError(f"{vocab}: not the ESM-2 alphabet; this tokenizer is not supported")
    num_layers = config.get("num_hidden_layers")
    hparams = {
        "num_layers": num_layers,
        "embed_dim": config.get("hidden_size"),
        "heads": config.get("num_attention_heads"),
        # transformers' EsmConfig defaults, for a config.json that leaves them out
        "token_dropout": config.get("token_dropout", False),
        "layer_norm_eps": config.get("layer_norm_eps", 1e-12),
        "rope_theta": config.get("rope_theta", 10000.0),
    }
    files = hf_weight_files(folder)
    prefix = ""  # "esm." when the file is an EsmForMaskedLM's (as facebook/esm2_*), "" for a bare EsmModel's

    def tensors():
        nonlocal prefix
        for path in files:
            for key, value in _read_hf_file(path):
                if key.startswith("esm."):
                    prefix = "esm."
                names = _module_keys(key.removeprefix("esm."), num_layers)
                if names is not None:
                    yield key, names, value

    return _Checkpoint(folder, tensors(), hparams, lambda name: prefix + _hf_key(name))


def _module_keys(key, num_layers):
    """fair-esm module keys for a Hugging Face key ([] or several for a shared buffer), None to skip."""
    if key.startswith(HF_IGNORED):
        return None
    if key == "embeddings.word_embeddings.weight":
        return ["embed_tokens.weight"]
    if match := re.fullmatch(r"encoder\.emb_layer_norm_after\.(\w+)", key):
        return ["emb_layer_norm_after." + HF_LEAVES.get(match[1], match[1])]
    # transformers 5 keeps one rotary module and saves its buffer as encoder.layer.*.(...).inv_freq
    if re.fullmatch(r"(encoder\.layer\.\*\.attention\.self\.)?rotary_embeddings\.inv_freq", key):
        return [f"layers.{i}.self_attn.rot_emb.inv_freq" for i in range(num_layers or 0)]
    if match := re.fullmatch(r"encoder\.layer\.(\d+)\.attention\.self\.rotary_embeddings\.inv_freq", key):
        return [f"layers.{match[1]}.self_attn.rot_emb.inv_freq"]
    if (match := re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)\.(\w+)", key)) and match[2] in HF_LAYER_MODULES:
        return [f"layers.{match[1]}.{HF_LAYER_MODULES[match[2]]}.{HF_LEAVES.get(match[3], match[3])}"]
    return ["hf:" + key]  # not ESM-2's: reported as unexpected


def _hf_key(name):
    """The Hugging Face key (without the esm. prefix) of a fair-esm module key."""
    if name.startswith("hf:"):
        return name[3:]
    if name == "embed_tokens.weight":
        return "embeddings.word_embeddings.weight"
    if name.startswith("emb_layer_norm_after."):
        return "encoder." + name
    _, layer, rest = name.split(".", 2)
    module, leaf = rest.rsplit(".", 1)
    if module == "self_attn.rot_emb":
        return f"encoder.layer.{layer}.attention.self.rotary_embeddings.inv_freq"
    return f"encoder.layer.{layer}.{FAIR_LAYER_MODULES[module]}.{leaf}"


# --- building the model -----------------------------------------------------------------------


def _read_checkpoint(source):
    source = Path(source)
    if source.is_dir():
        if not (source / "config.json").is_file():
            raise ModelError(f"{source}: no config.json; give a Hugging Face ESM-2 folder or a fair-esm .pt file")
        return _read_hf(source)
    if source.is_file():
        return _read_fair_esm(source)
    raise ModelError(f"{source}: ESM-2 model not found; give a fair-esm .pt file or a Hugging Face ESM-2 folder")


def esm2_width(source):
    """Features per sequence (the hidden size) of an ESM-2 checkpoint, read without loading its weights
    (a .pt file is memory-mapped and only its table of contents is read)."""
    checkpoint = _read_checkpoint(source)
    if isinstance(checkpoint.hparams.get("embed_dim"), int):
        return checkpoint.hparams["embed_dim"]
    for key, names, value in checkpoint.tensors:
        if "embed_tokens.weight" in names and isinstance(value, torch.Tensor) and value.ndim == 2:
            return int(value.shape[1])
    raise ModelError(f"{checkpoint.where}: no embed_tokens.weight; the checkpoint is incomplete or not ESM-2")


def load_esm2_module(source, dtype=torch.float32):
    """An ESM2 module (CPU, eval, weights in `dtype`, rotary frequencies in float32) with the
    weights of `source`: a fair-esm .pt file or a Hugging Face folder."""
    checkpoint = _read_checkpoint(source)
    where, file_key, hparams = checkpoint.where, checkpoint.file_key, checkpoint.hparams

    state = {}
    for key, names, value in checkpoint.tensors:  # one tensor at a time: the checkpoint's dtype never coexists whole with ours
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"{where}: {key} is not a tensor; the checkpoint is damaged or not ESM-2")
        for name in names:
            state[name] = value.to(torch.float32 if name.endswith("inv_freq") else dtype)

    if "embed_tokens.weight" not in state:
        raise ModelError(f"{where}: missing key {file_key('embed_tokens.weight')}; the checkpoint is incomplete or not ESM-2")
    vocab, embed_dim = state["embed_tokens.weight"].shape
    if vocab != len(TOKENS):
        raise ModelError(f"{where}: a vocabulary of {vocab} tokens; the ESM-2 alphabet has {len(TOKENS)}")
    num_layers = hparams["num_layers"] or 1 + max((int(k.split(".")[1]) for k in state if k.startswith("layers.")), default=-1)
    heads = hparams["heads"] or PUBLISHED_HEADS.get(embed_dim)
    if not heads:
        raise ModelError(f"{where}: the number of attention heads is not stated; use a checkpoint with its config")
    token_dropout = True if hparams["token_dropout"] is None else bool(hparams["token_dropout"])
    with torch.device("meta"):  # no memory and no random values for weights the checkpoint replaces
        model = ESM2(num_layers, embed_dim, heads, token_dropout=token_dropout, layer_norm_eps=hparams["layer_norm_eps"],
                     init=False)

    expected = model.state_dict()
    head_dim = embed_dim // heads
    for key in expected:  # some Hugging Face files leave the (computable) rotary buffers out
        if key.endswith("rot_emb.inv_freq") and key not in state:
            state[key] = rotary_frequencies(head_dim, hparams.get("rope_theta", 10000.0))
    missing = [k for k in expected if k not in state]
    if missing:
        raise ModelError(f"{where}: missing key {file_key(missing[0])} ({len(missing)} missing); "
                         f"the checkpoint is incomplete or not a {num_layers}-layer ESM-2; download it again")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise ModelError(f"{where}: unexpected key {file_key(unexpected[0])}; not a {num_layers}-layer ESM-2 checkpoint")
    for key, value in expected.items():
        if state[key].shape != value.shape:
            raise ModelError(f"{where}: {file_key(key)} has shape {tuple(state[key].shape)}, "
                             f"expected {tuple(value.shape)}; the checkpoint does not match its config")
    model.load_state_dict(state, assign=True)
    return model.eval()


# --- the encoder the embedding jobs use -------------------------------------------------------


def _pool(hidden, segment, position, residues):
    """VirNucPro's pooling: per sequence, the mean of its rows at positions 1..residues.

    hidden (rows, dim); segment, position (rows,): the sequence of each row and its index in it;
    residues (B,): min(L, 1024) per sequence -> (B, dim) float32. The kept rows are laid out as
    (B, max residues, dim) and summed with torch's pairwise sum, as fair-esm's `.mean(0)`: a plain
    running sum over 1024 similar rows drifts by 1e-5. Batches are token-budgeted, so the grid is
    no larger than the batch itself.
    """
    keep = (position >= 1) & (position <= residues[segment])
    grid = torch.zeros((len(residues), int(residues.max()), hidden.shape[-1]), device=hidden.device)
    grid[segment[keep], position[keep] - 1] = hidden[keep].float()
    return grid.sum(1) / residues[:, None]


def _resolve_layer(layer, num_layers):
    """None -> the last layer; negative counts from the end as in fair-esm's extract.py (-1 = last)."""
    if layer is None:
        return num_layers
    resolved = layer + num_layers + 1 if layer < 0 else layer
    if not 0 <= resolved <= num_layers:
        raise ModelError(f"layer {layer} does not exist: this ESM-2 has layers 0..{num_layers}")
    return resolved


class Esm2Encoder:
    """Embeds proteins the VirNucPro way: the representation of one layer (default: the last,
    after the final LayerNorm), averaged over residues 1..min(L, 1024); BOS, EOS, padding excluded."""

    def __init__(self, model, name, device="cpu", dtype=torch.float32, layer=None, attention="auto"):
        self.name = str(name)
        self.revision = "unknown"  # set by models.resolve from the snapshot or the file digest
        self.dim = model.embed_dim
        self.layer = _resolve_layer(layer, model.num_layers)
        self.device = torch.device(device)
        self.dtype = dtype
        if attention == "auto":
            flash = self.device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and flash_varlen()
            attention = "packed" if flash else "padded"
        if attention not in ("padded", "packed"):
            raise ValueError(f"attention must be 'auto', 'padded' or 'packed', not {attention!r}")
        self.attention = attention
        for param in model.parameters():  # weights to `dtype`; the rotary buffers stay float32
            param.data = param.data.to(dtype)
        self.model = model.to(self.device).eval()
        self.pooling = f"mean of layer {self.layer} over residues 1..min(L,{POOL_MAX_RESIDUES})"

    def tokenize(self, sequence):
        return tokenize(sequence)

    @torch.inference_mode()
    def embed(self, batch):
        """(B, dim) float32 on CPU for a list of token-id lists (from `tokenize`)."""
        lengths = torch.tensor([len(ids) for ids in batch], device=self.device)
        if bool((lengths < 3).any()):
            raise ValueError("a protein needs at least one residue between <cls> and <eos>")
        residues = (lengths - 2).clamp(max=POOL_MAX_RESIDUES)
        if self.attention == "packed":
            tokens, cu_seqlens = pack(batch, self.device)
            hidden = self.model.forward_packed(tokens, cu_seqlens, max(len(ids) for ids in batch), self.layer)
            segment, position = packed_positions(cu_seqlens)  # (total,) each
        else:
            tokens, _ = pad(batch, PAD, self.device)
            batch_size, width = tokens.shape
            hidden = self.model(tokens, self.layer).flatten(0, 1)  # (batch * width, dim), row by row
            segment = torch.arange(batch_size, device=self.device).repeat_interleave(width)
            position = torch.arange(width, device=self.device).repeat(batch_size)
        return _pool(hidden, segment, position, residues).cpu()


def load_esm2(source, device="cpu", dtype=torch.float32, layer=None, attention="auto", name=None):
    """An Esm2Encoder for a fair-esm .pt file or a Hugging Face ESM-2 folder."""
    model = load_esm2_module(source, dtype=dtype)
    source = Path(source)
    name = name or (source.stem if source.is_file() else source.name)
    return Esm2Encoder(model, name, device=device, dtype=dtype, layer=layer, attention=attention)


# --- deterministic random models in the published layouts -------------------------------------


def _random_state(num_layers, embed_dim, attention_heads, seed):
    """fair-esm-named random weights (encoder + lm_head), the same on every run for the same arguments."""
    with torch.device("meta"):  # shapes only
        shapes = ESM2(num_layers, embed_dim, attention_heads, init=False).state_dict()
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, meta in shapes.items():
        if name.endswith("rot_emb.inv_freq"):
            state[name] = rotary_frequencies(embed_dim // attention_heads)
        elif "layer_norm" in name:  # near identity with some spread, like trained LayerNorms
            noise = 0.1 * torch.randn(meta.shape, generator=generator)
            state[name] = noise + (1.0 if name.endswith("weight") else 0.0)
        elif meta.ndim > 1:  # scaled so activations neither vanish nor blow up through the layers
            state[name] = torch.randn(meta.shape, generator=generator) * (0.5 / meta.shape[-1] ** 0.5)
        else:
            state[name] = 0.05 * torch.randn(meta.shape, generator=generator)
    state["embed_tokens.weight"][PAD] = 0.0  # nn.Embedding's padding row
    # lm_head, as the published files carry it (fair-esm refuses a file without it); unused here
    state["lm_head.weight"] = state["embed_tokens.weight"]
    state["lm_head.bias"] = torch.zeros(len(TOKENS))
    state["lm_head.dense.weight"] = torch.randn(embed_dim, embed_dim, generator=generator) / embed_dim**0.5
    state["lm_head.dense.bias"] = torch.zeros(embed_dim)
    state["lm_head.layer_norm.weight"] = torch.ones(embed_dim)
    state["lm_head.layer_norm.bias"] = torch.zeros(embed_dim)
    return state


def write_random_esm2(path, layout="fair-esm", num_layers=2, embed_dim=64, attention_heads=4, seed=0):
    """A random-weight ESM-2 in fair-esm's .pt layout (`path` is the file) or Hugging Face's
    (`path` is the folder: config.json, model.safetensors, vocab.txt). Same bytes for the same arguments."""
    if layout not in ("fair-esm", "hf"):
        raise ValueError(f"layout must be 'fair-esm' or 'hf', not {layout!r}")
    if embed_dim % attention_heads:
        raise ValueError(f"embed_dim {embed_dim} is not a multiple of attention_heads {attention_heads}")
    state = _random_state(num_layers, embed_dim, attention_heads, seed)
    path = Path(path)
    if layout == "fair-esm":
        cfg = argparse.Namespace(encoder_layers=num_layers, encoder_embed_dim=embed_dim,
                                 encoder_ffn_embed_dim=4 * embed_dim, encoder_attention_heads=attention_heads,
                                 token_dropout=True)
        model = {("encoder." if k.startswith("lm_head.") else "encoder.sentence_encoder.") + k: v
                 for k, v in state.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model, "cfg": {"model": cfg}}, path)
        return path

    from safetensors.torch import save_file

    weights = {}
    for key, value in state.items():
        if key != "lm_head.weight":  # tied to the word embeddings; Hugging Face does not save it
            weights[key if key.startswith("lm_head.") else "esm." + _hf_key(key)] = value
    weights["esm.contact_head.regression.weight"] = torch.zeros(1, num_layers * attention_heads)
    weights["esm.contact_head.regression.bias"] = torch.zeros(1)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sorted(weights.items())}, str(path / "model.safetensors"),
              metadata={"format": "pt"})
    config = {  # the keys of facebook/esm2_*'s config.json
        "architectures": ["EsmForMaskedLM"], "attention_probs_dropout_prob": 0.0, "classifier_dropout": None,
        "emb_layer_norm_before": False, "esmfold_config": None, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
        "hidden_size": embed_dim, "initializer_range": 0.02, "intermediate_size": 4 * embed_dim,
        "is_folding_model": False, "layer_norm_eps": 1e-05, "mask_token_id": MASK, "max_position_embeddings": 1026,
        "model_type": "esm", "num_attention_heads": attention_heads, "num_hidden_layers": num_layers,
        "pad_token_id": PAD, "position_embedding_type": "rotary", "token_dropout": True, "torch_dtype": "float32",
        "use_cache": True, "vocab_list": None, "vocab_size": len(TOKENS),
    }
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (path / "vocab.txt").write_text("\n".join(TOKENS) + "\n")
    return path
