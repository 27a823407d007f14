"""DNABERT-S on disk: the published repo layout (config.json, weights, tokenizer.json), the pooled
encoder, and deterministic random-weight models with a trained BPE tokenizer for tests and demos.
"""

import json
import random
from pathlib import Path

import torch

from ..errors import ModelError
from .batches import pack, pad
from .dnabert_s import DNABERTS

SPECIAL_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]  # ids 0..4, as DNABERT-2's tokenizer


def load_tokenizer(folder):
    from tokenizers import Tokenizer

    path = Path(folder) / "tokenizer.json"
    if not path.exists():
        raise ModelError(f"{folder}: no tokenizer.json; download the complete DNABERT-S repository")
    return Tokenizer.from_file(str(path))


def _read_weights(folder):
    folder = Path(folder)
    if (folder / "model.safetensors").exists():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors")), folder / "model.safetensors"
    path = folder / "pytorch_model.bin"
    if not path.exists():
        raise ModelError(f"{folder}: no model.safetensors or pytorch_model.bin; download the complete repository")
    try:
        return torch.load(path, map_location="cpu", weights_only=True), path
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        raise ModelError(f"{path}: cannot read the weights ({exc}); re-download them") from None


def load_dnabert_s_module(folder):
    """DNABERTS (fp32, CPU, eval) with the published weights of `folder`."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.exists():
        raise ModelError(f"{folder}: no config.json; give a DNABERT-S folder (config.json, weights, tokenizer.json)")
    config = json.loads(config_path.read_text())
    raw, weights_path = _read_weights(folder)
    # Keys with or without the "bert." prefix (BertForMaskedLM vs BertModel); heads are not used.
    state = {k.removeprefix("bert."): v for k, v in raw.items() if not k.startswith(("cls.", "pooler.", "bert.pooler."))}
    model = DNABERTS(
        vocab_size=config["vocab_size"], hidden=config["hidden_size"], layers=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"], intermediate=config["intermediate_size"],
        type_vocab_size=config.get("type_vocab_size", 2), eps=config.get("layer_norm_eps", 1e-12),
    )
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise ModelError(f"{weights_path}: missing key {missing[0]} ({len(missing)} missing); the weights are incomplete")
    for key, value in expected.items():
        if state[key].shape != value.shape:
            raise ModelError(f"{weights_path}: {key} has shape {tuple(state[key].shape)}, config says {tuple(value.shape)}")
    model.load_state_dict({k: state[k] for k in expected})
    return model.eval()


class DnabertSEncoder:
    """Embeds DNA the VirNucPro way: mean of the last hidden states over all tokens, [CLS] and
    [SEP] included, padding excluded."""

    pooling = "mean of last hidden states over all tokens incl. [CLS]/[SEP]"

    def __init__(self, model, tokenizer, name, device="cpu", dtype=torch.float32, attention="auto"):
        self.name = name
        self.dim = model.hidden
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = dtype
        self.attention = ("packed" if self.device.type == "cuda" else "padded") if attention == "auto" else attention
        self.model = model.to(device=self.device, dtype=dtype)
        self.pad_id = tokenizer.token_to_id("[PAD]") or 0

    def tokenize(self, sequence):
        return self.tokenizer.encode(sequence).ids

    @torch.inference_mode()
    def embed(self, batch):
        lengths = [len(ids) for ids in batch]
        if self.attention == "packed":
            tokens, cu = pack(batch, self.device)
            hidden = self.model.forward_packed(tokens, cu).float()
            sums = torch.zeros(len(batch), self.dim, device=self.device)
            owner = torch.repeat_interleave(torch.arange(len(batch), device=self.device), cu[1:] - cu[:-1])
            sums.index_add_(0, owner, hidden)
        else:
            tokens, mask = pad(batch, self.pad_id, self.device)
            hidden = self.model(tokens, mask).float()
            sums = (hidden * mask[:, :, None]).sum(1)
        return (sums / torch.tensor(lengths, device=self.device)[:, None]).cpu()


def load_dnabert_s(source_dir, device="cpu", dtype=torch.float32, attention="auto", name=None):
    model = load_dnabert_s_module(source_dir)
    return DnabertSEncoder(model, load_tokenizer(source_dir), name or Path(source_dir).name, device, dtype, attention)


def train_tokenizer(vocab_size, seed=0, reads=400, length=600):
    """A BPE tokenizer trained on seeded random DNA, shaped like DNABERT-2's ([CLS] $A [SEP])."""
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


def write_random_dnabert_s(out_dir, hidden=48, layers=2, heads=6, intermediate=96, vocab_size=256, seed=0):
    """A deterministic random-weight DNABERT-S in the published layout (config.json,
    pytorch_model.bin with BertModel keys, tokenizer.json). UNTRAINED: for tests and the demo."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(vocab_size, seed)
    torch.manual_seed(seed)
    model = DNABERTS(vocab_size=tokenizer.get_vocab_size(), hidden=hidden, layers=layers, num_heads=heads,
                     intermediate=intermediate)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm" in name or "layernorm" in name:
                param.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(param))
            else:
                param.copy_(torch.randn_like(param) * (0.5 / param.shape[-1] ** 0.5 if param.ndim > 1 else 0.05))
    torch.save(model.state_dict(), out_dir / "pytorch_model.bin")
    config = {
        "architectures": ["BertModel"], "model_type": "bert", "alibi_starting_size": 512,
        "attention_probs_dropout_prob": 0.0, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": hidden, "intermediate_size": intermediate, "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512, "num_attention_heads": heads, "num_hidden_layers": layers,
        "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": tokenizer.get_vocab_size(),
        "_comment": "virnucflow tiny random-weight DNABERT-S: UNTRAINED, for tests and the demo",
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1000000000,
         "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
         "mask_token": "[MASK]"}, indent=2, sort_keys=True) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(
        {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
         "mask_token": "[MASK]"}, indent=2, sort_keys=True) + "\n")
    return out_dir
