"""ESM-2 on disk: the alphabet, both checkpoint layouts, the pooled encoder, and random test models.

Layouts: fair-esm's torch hub file (`esm2_t36_3B_UR50D.pt`: {"model": state dict with
`encoder.sentence_encoder.` prefixes, "cfg": {"model": {...}}}) and Hugging Face's
`facebook/esm2_*` folder (config.json + model.safetensors or pytorch_model.bin). Neither is
loaded by executing a pickle.
"""

import json
import pickle
import re
from pathlib import Path

import torch

from ..errors import ModelError
from .batches import pack, pad
from .esm2 import ESM2

# fair-esm's ESM-1b alphabet: 4 specials, 27 residue symbols, padding to a multiple of 8, <mask>.
PREPEND = ["<cls>", "<pad>", "<eos>", "<unk>"]
RESIDUES = list("LAGVSERTIDPKQNFYMHWCXBUZO.-")
TOKENS = PREPEND + RESIDUES + ["<null_1>", "<mask>"]
TOKEN_ID = {tok: i for i, tok in enumerate(TOKENS)}
CLS, PAD, EOS, UNK, MASK = (TOKEN_ID[t] for t in ["<cls>", "<pad>", "<eos>", "<unk>", "<mask>"])
POOL_MAX_RESIDUES = 1024  # VirNucPro averages residues 1..min(L, 1024)

# Hugging Face key -> fair-esm key, per layer (the HF names of the same tensors).
HF_LAYER_KEYS = {
    "attention.self.query": "self_attn.q_proj",
    "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj",
    "attention.output.dense": "self_attn.out_proj",
    "attention.LayerNorm": "self_attn_layer_norm",
    "intermediate.dense": "fc1",
    "output.dense": "fc2",
    "LayerNorm": "final_layer_norm",
}
# Heads of the published sizes, for checkpoints whose config was not readable.
PUBLISHED_HEADS = {320: 20, 480: 20, 640: 20, 1280: 20, 2560: 40, 5120: 40}


def tokenize(sequence):
    """fair-esm's encoding: <cls> + one token per residue (unknown -> <unk>) + <eos>."""
    return [CLS] + [TOKEN_ID.get(c, UNK) for c in sequence] + [EOS]


class _Opaque:
    """Stands in for any class a checkpoint's pickle names (argparse.Namespace, omegaconf ...):
    it only keeps the pickled state, nothing runs."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


class _DataOnlyUnpickler(pickle.Unpickler):
    """torch's restricted loader first; this one reads checkpoints whose metadata holds other classes."""

    SAFE = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
            ("torch._utils", "_rebuild_parameter"), ("torch", "FloatStorage"), ("torch", "HalfStorage"),
            ("torch", "BFloat16Storage"), ("torch", "LongStorage")}

    def find_class(self, module, name):
        if (module, name) in self.SAFE:
            return super().find_class(module, name)
        return _Opaque


def _torch_load(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # The published hub files carry their training config as an object; read it as data only.
        import types

        module = types.SimpleNamespace(Unpickler=_DataOnlyUnpickler, load=pickle.load, __name__="safe_pickle")
        try:
            return torch.load(path, map_location="cpu", weights_only=False, pickle_module=module)
        except Exception as exc:  # noqa: BLE001 - any failure here is a bad checkpoint
            raise ModelError(f"{path}: cannot read this checkpoint ({exc}); re-download it") from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise ModelError(f"{path}: cannot read this checkpoint ({exc}); re-download it") from None


def _cfg_value(cfg, key):
    if isinstance(cfg, dict):
        return cfg.get(key)
    if isinstance(cfg, _Opaque):
        state = getattr(cfg, "state", None)
        if isinstance(state, dict):
            return state.get(key) or (state.get("_content", {}).get(key) if isinstance(state.get("_content"), dict) else None)
    return getattr(cfg, key, None)


def _from_fair_esm(path):
    data = _torch_load(path)
    if not isinstance(data, dict) or "model" not in data:
        raise ModelError(f"{path}: not a fair-esm checkpoint (no 'model' entry); give an ESM-2 .pt file or folder")
    prefix = re.compile(r"^(encoder\.sentence_encoder\.|encoder\.)")
    state = {prefix.sub("", k): v for k, v in data["model"].items()}
    cfg = data.get("cfg")
    cfg = _cfg_value(cfg, "model") if cfg is not None else None
    heads = _cfg_value(cfg, "encoder_attention_heads") if cfg is not None else None
    dropout = _cfg_value(cfg, "token_dropout") if cfg is not None else None
    return state, heads, True if dropout is None else bool(dropout)


def _from_hf(folder):
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    weights = folder / "model.safetensors"
    if weights.exists():
        from safetensors.torch import load_file

        raw = load_file(str(weights))
    elif (folder / "pytorch_model.bin").exists():
        raw = _torch_load(folder / "pytorch_model.bin")
    else:
        raise ModelError(f"{folder}: no model.safetensors or pytorch_model.bin; download the complete model")
    state = {}
    for key, value in raw.items():
        key = key.removeprefix("esm.")
        if key.startswith("embeddings.word_embeddings."):
            state["embed_tokens." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("encoder.emb_layer_norm_after."):
            state["emb_layer_norm_after." + key.rsplit(".", 1)[1]] = value
        elif match := re.match(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias|inv_freq)$", key):
            layer, name, leaf = match.groups()
            if name == "attention.self.rotary_embeddings":
                state[f"layers.{layer}.self_attn.rot_emb.inv_freq"] = value
            elif name in HF_LAYER_KEYS:
                state[f"layers.{layer}.{HF_LAYER_KEYS[name]}.{leaf}"] = value
    return state, config.get("num_attention_heads"), bool(config.get("token_dropout", True))


def load_esm2_module(source):
    """An ESM2 module (fp32, CPU, eval) with the weights of `source`: a fair-esm .pt or an HF folder."""
    source = Path(source)
    if source.is_dir():
        if not (source / "config.json").exists():
            raise ModelError(f"{source}: no config.json; give a Hugging Face ESM-2 folder or a fair-esm .pt file")
        state, heads, token_dropout = _from_hf(source)
    elif source.is_file():
        state, heads, token_dropout = _from_fair_esm(source)
    else:
        raise ModelError(f"{source}: ESM-2 model not found")
    if "embed_tokens.weight" not in state:
        raise ModelError(f"{source}: missing key embed_tokens.weight; the checkpoint is incomplete or not ESM-2")
    vocab, dim = state["embed_tokens.weight"].shape
    layers = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("layers.")), default=-1)
    heads = heads or PUBLISHED_HEADS.get(dim)
    if not heads:
        raise ModelError(f"{source}: cannot tell the number of attention heads; use a checkpoint with its config")
    model = ESM2(layers, dim, heads, alphabet_size=vocab, token_dropout=token_dropout)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("rot_emb.inv_freq")]
    if missing:
        raise ModelError(f"{source}: missing key {missing[0]} ({len(missing)} missing); the checkpoint is incomplete")
    for key in expected:
        if key in state and state[key].shape != expected[key].shape:
            raise ModelError(f"{source}: {key} has shape {tuple(state[key].shape)}, expected {tuple(expected[key].shape)}")
    model.load_state_dict({k: state[k] for k in expected if k in state}, strict=False)
    return model.eval()


class Esm2Encoder:
    """Embeds proteins the VirNucPro way: mean of a layer over residues 1..min(L, 1024)."""

    def __init__(self, model, name, device="cpu", dtype=torch.float32, layer=None, attention="auto"):
        self.name = name
        self.dim = model.embed_dim
        self.layer = model.num_layers if layer is None or layer == -1 else layer
        self.device = torch.device(device)
        self.dtype = dtype
        if attention == "auto":
            attention = "packed" if self.device.type == "cuda" and dtype != torch.float32 else "padded"
        self.attention = attention
        self.model = model.to(device=self.device, dtype=dtype)
        self.pooling = "mean of layer {} over residues 1..min(L,{})".format(self.layer, POOL_MAX_RESIDUES)

    def tokenize(self, sequence):
        return tokenize(sequence)

    @torch.inference_mode()
    def embed(self, batch):
        """(B, dim) float32 on CPU for a list of token-id lists."""
        lengths = [len(ids) for ids in batch]
        if self.attention == "packed":
            tokens, cu = pack(batch, self.device)
            hidden = self.model.forward_packed(tokens, cu, max(lengths), repr_layer=self.layer)
            starts = cu[:-1].tolist()
        else:
            tokens, _ = pad(batch, PAD, self.device)
            width = tokens.shape[1]
            hidden = self.model(tokens, repr_layer=self.layer)
            hidden = hidden.reshape(-1, hidden.shape[-1])
            starts = [row * width for row in range(len(batch))]
        out = []
        for start, length in zip(starts, lengths):
            residues = min(length - 2, POOL_MAX_RESIDUES)
            out.append(hidden[start + 1 : start + 1 + residues].float().mean(0))
        return torch.stack(out).cpu()


def load_esm2(source, device="cpu", dtype=torch.float32, layer=None, attention="auto", name=None):
    model = load_esm2_module(source)
    return Esm2Encoder(model, name or Path(source).name, device=device, dtype=dtype, layer=layer, attention=attention)


def write_random_esm2(path, layout="fair-esm", num_layers=2, embed_dim=64, attention_heads=4, seed=0):
    """A deterministic random-weight ESM-2 in fair-esm's .pt layout or Hugging Face's folder layout."""
    torch.manual_seed(seed)
    model = ESM2(num_layers, embed_dim, attention_heads)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" in name:  # LayerNorms near identity with a little spread, like trained ones
                param.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(param))
            else:
                param.copy_(torch.randn_like(param) * (0.5 / param.shape[-1] ** 0.5 if param.ndim > 1 else 0.05))
    state = model.state_dict()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "fair-esm":
        cfg = {"model": {"encoder_layers": num_layers, "encoder_embed_dim": embed_dim,
                         "encoder_attention_heads": attention_heads, "token_dropout": True}}
        torch.save({"model": {f"encoder.sentence_encoder.{k}": v for k, v in state.items()}, "cfg": cfg}, path)
        return path
    if layout != "hf":
        raise ValueError(f"layout must be 'fair-esm' or 'hf', not {layout!r}")
    from safetensors.torch import save_file

    reverse = {v: k for k, v in HF_LAYER_KEYS.items()}
    hf = {}
    for key, value in state.items():
        if key == "embed_tokens.weight":
            hf["esm.embeddings.word_embeddings.weight"] = value
        elif key.startswith("emb_layer_norm_after."):
            hf["esm.encoder." + key] = value
        else:
            _, layer, rest = key.split(".", 2)
            module, leaf = rest.rsplit(".", 1)
            if module == "self_attn.rot_emb":
                hf[f"esm.encoder.layer.{layer}.attention.self.rotary_embeddings.inv_freq"] = value
            else:
                hf[f"esm.encoder.layer.{layer}.{reverse[module]}.{leaf}"] = value
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in hf.items()}, str(path / "model.safetensors"))
    config = {
        "architectures": ["EsmForMaskedLM"], "model_type": "esm", "hidden_size": embed_dim,
        "num_hidden_layers": num_layers, "num_attention_heads": attention_heads,
        "intermediate_size": 4 * embed_dim, "vocab_size": len(TOKENS), "pad_token_id": PAD, "mask_token_id": MASK,
        "position_embedding_type": "rotary", "token_dropout": True, "layer_norm_eps": 1e-05,
        "emb_layer_norm_before": False, "max_position_embeddings": 1026, "hidden_act": "gelu",
    }
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path
