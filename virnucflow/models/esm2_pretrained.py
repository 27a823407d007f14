"""The published ESM-2 checkpoints -> an ESM2 module, as fair-esm's `esm/pretrained.py`.

Layouts:
- fair-esm's torch hub file (`esm2_t36_3B_UR50D.pt`): {"model": state dict with
  `encoder.sentence_encoder.` (encoder) and `encoder.` (lm_head) prefixes, "cfg": {"model":
  argparse.Namespace(encoder_layers=..., encoder_embed_dim=..., encoder_attention_heads=...,
  token_dropout=...), ...}}, read as fair-esm's esm/pretrained.py reads it;
- Hugging Face's `facebook/esm2_*` folder: config.json + model.safetensors or pytorch_model.bin
  (or their sharded index), keys `esm.encoder.layer.N.attention.self.query.weight` ...,
  with or without the `esm.` prefix, mapped to fair-esm's module names.
Files are read by `checkpoints` (no code in them runs). Keys are checked in fair-esm's names;
then each layer's q_proj, k_proj and v_proj are stacked into the model's qkv_proj (`fuse_qkv`).
"""

import re
from pathlib import Path

import torch

from ..errors import ModelError
from .checkpoints import read_config, read_tensors, torch_load, weight_files
from .esm2 import ESM2, Esm2Config, rotary_frequencies
from .esm2_alphabet import MASK, PAD, TOKENS

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
    layers = hparams["layers"] or 1 + max((int(k.split(".")[1]) for k in state if k.startswith("layers.")), default=-1)
    heads = hparams["heads"] or PUBLISHED_HEADS.get(embed_dim)
    if not heads:
        raise ModelError(f"{where}: the number of attention heads is not stated; use a checkpoint with its config")
    token_dropout = True if hparams["token_dropout"] is None else bool(hparams["token_dropout"])
    with torch.device("meta"):  # no memory and no random values for weights the checkpoint replaces
        model = ESM2(Esm2Config(layers, embed_dim, heads, token_dropout, hparams["layer_norm_eps"]), init=False)

    expected = checkpoint_shapes(model)
    head_dim = embed_dim // heads
    for key in expected:  # some Hugging Face files leave the (computable) rotary buffers out
        if key.endswith("rot_emb.inv_freq") and key not in state:
            state[key] = rotary_frequencies(head_dim, hparams.get("rope_theta", 10000.0))
    missing = [k for k in expected if k not in state]
    if missing:
        raise ModelError(f"{where}: missing key {file_key(missing[0])} ({len(missing)} missing); "
                         f"the checkpoint is incomplete or not a {layers}-layer ESM-2; download it again")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise ModelError(f"{where}: unexpected key {file_key(unexpected[0])}; not a {layers}-layer ESM-2 checkpoint")
    for key, shape in expected.items():
        if state[key].shape != shape:
            raise ModelError(f"{where}: {file_key(key)} has shape {tuple(state[key].shape)}, "
                             f"expected {tuple(shape)}; the checkpoint does not match its config")
    model.load_state_dict(fuse_qkv(state), assign=True)
    return model.eval()


def checkpoint_shapes(model):
    """fair-esm's key -> shape of each tensor of an ESM2 module, in fair-esm's order: each qkv_proj as
    the k_proj, v_proj and q_proj it stacks (fair-esm's MultiheadAttention declares them in that order)."""
    shapes = {}
    for key, value in model.state_dict().items():
        prefix, fused, leaf = key.partition("self_attn.qkv_proj.")
        if not fused:
            shapes[key] = value.shape
        elif leaf == "weight":  # with the three biases, each after its weight
            for name in ("k_proj", "v_proj", "q_proj"):
                shapes[f"{prefix}self_attn.{name}.weight"] = torch.Size((value.shape[0] // 3, value.shape[1]))
                shapes[f"{prefix}self_attn.{name}.bias"] = torch.Size((value.shape[0] // 3,))
    return shapes


def fuse_qkv(state):
    """A fair-esm-named state dict -> the module's: per layer, q_proj, k_proj and v_proj (weight and bias)
    concatenated into qkv_proj, rows [q | k | v]; one layer at a time, so the copies never coexist whole."""
    for key in [k for k in state if ".self_attn.q_proj." in k]:
        prefix, leaf = key.split("self_attn.q_proj.")
        state[f"{prefix}self_attn.qkv_proj.{leaf}"] = torch.cat(
            [state.pop(f"{prefix}self_attn.{name}.{leaf}") for name in ("q_proj", "k_proj", "v_proj")])
    return state


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


class _Checkpoint:
    """What a layout reader hands over: module-named tensors, the hyperparameters the file states
    (None where it is silent), and the file's own name for each module key, for error messages."""

    def __init__(self, where, tensors, hparams, file_key):
        self.where, self.tensors, self.hparams, self.file_key = where, tensors, hparams, file_key


def _read_checkpoint(source):
    source = Path(source)
    if source.is_dir():
        if not (source / "config.json").is_file():
            raise ModelError(f"{source}: no config.json; give a Hugging Face ESM-2 folder or a fair-esm .pt file")
        return _read_hf(source)
    if source.is_file():
        return _read_fair_esm(source)
    raise ModelError(f"{source}: ESM-2 model not found; give a fair-esm .pt file or a Hugging Face ESM-2 folder")


# --- fair-esm's .pt file ----------------------------------------------------------------------


def _read_fair_esm(path):
    data = torch_load(path)  # its cfg is an argparse.Namespace, or another code base's class (a stand-in)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ModelError(f"{path}: not a fair-esm checkpoint (no 'model' state dict); give an ESM-2 .pt file "
                         "or a Hugging Face ESM-2 folder")
    cfg = data.get("cfg")
    args = _field(cfg, "model") if cfg is not None else data.get("args")  # ESM-2 files: cfg["model"]
    hparams = {
        "layers": _number(args, "encoder_layers"),
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


def _field(obj, name):
    """cfg entries are attributes (Namespace) or keys (dict), depending on who wrote the file."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _number(obj, name):
    """A number or flag from a config; None for anything else (absent, or a stand-in)."""
    value = _field(obj, name)
    return value if isinstance(value, (bool, int, float)) else None


# --- Hugging Face's folder --------------------------------------------------------------------


def _read_hf(folder):
    config = read_config(folder)
    config_path = folder / "config.json"
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
    layers = config.get("num_hidden_layers")
    hparams = {
        "layers": layers,
        "embed_dim": config.get("hidden_size"),
        "heads": config.get("num_attention_heads"),
        # transformers' EsmConfig defaults, for a config.json that leaves them out
        "token_dropout": config.get("token_dropout", False),
        "layer_norm_eps": config.get("layer_norm_eps", 1e-12),
        "rope_theta": config.get("rope_theta", 10000.0),
    }
    files = weight_files(folder)
    prefix = ""  # "esm." when the file is an EsmForMaskedLM's (as facebook/esm2_*), "" for a bare EsmModel's

    def tensors():
        nonlocal prefix
        for path in files:
            for key, value in read_tensors(path):
                if key.startswith("esm."):
                    prefix = "esm."
                names = _module_keys(key.removeprefix("esm."), layers)
                if names is not None:
                    yield key, names, value

    return _Checkpoint(folder, tensors(), hparams, lambda name: prefix + hf_key(name))


def _module_keys(key, layers):
    """fair-esm module keys for a Hugging Face key ([] or several for a shared buffer), None to skip."""
    if key.startswith(HF_IGNORED):
        return None
    if key == "embeddings.word_embeddings.weight":
        return ["embed_tokens.weight"]
    if match := re.fullmatch(r"encoder\.emb_layer_norm_after\.(\w+)", key):
        return ["emb_layer_norm_after." + HF_LEAVES.get(match[1], match[1])]
    # transformers 5 keeps one rotary module and saves its buffer as encoder.layer.*.(...).inv_freq
    if re.fullmatch(r"(encoder\.layer\.\*\.attention\.self\.)?rotary_embeddings\.inv_freq", key):
        return [f"layers.{i}.self_attn.rot_emb.inv_freq" for i in range(layers or 0)]
    if match := re.fullmatch(r"encoder\.layer\.(\d+)\.attention\.self\.rotary_embeddings\.inv_freq", key):
        return [f"layers.{match[1]}.self_attn.rot_emb.inv_freq"]
    if (match := re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)\.(\w+)", key)) and match[2] in HF_LAYER_MODULES:
        return [f"layers.{match[1]}.{HF_LAYER_MODULES[match[2]]}.{HF_LEAVES.get(match[3], match[3])}"]
    return ["hf:" + key]  # not ESM-2's: reported as unexpected


def hf_key(name):
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
