"""Random-weight models in the published layouts, for tests, the demo and benchmarks: UNTRAINED.

The same arguments give the same bytes, so tests and demo outputs are reproducible:
- `write_random_esm2`: fair-esm's .pt file or a Hugging Face facebook/esm2_* folder;
- `write_random_dnabert_s`: a zhihan1996/DNABERT-S folder, with a BPE tokenizer trained on random DNA.
"""

import argparse
import dataclasses
import json
import random
from pathlib import Path

import torch

from .dnabert_s import DNABERTS, DnabertSConfig
from .esm2 import ESM2, Esm2Config, rotary_frequencies
from .esm2_alphabet import MASK, PAD, TOKENS
from .esm2_pretrained import checkpoint_shapes, hf_key

SPECIAL_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]  # ids 0..4, as DNABERT-2/S's tokenizer
# Written into every model made here, where `checkpoints.is_untrained` finds it: the report warns.
UNTRAINED = "virnucflow random weights (UNTRAINED, for tests and demos)"
ESM2_SMALL = Esm2Config(layers=2, embed_dim=64, heads=4)
DNABERT_S_SMALL = DnabertSConfig(hidden=48, layers=2, heads=6, intermediate=96, vocab_size=256)


# --- ESM-2 ------------------------------------------------------------------------------------


def write_random_esm2(path, layout="fair-esm", config=ESM2_SMALL, seed=0):
    """A random-weight ESM-2 in fair-esm's .pt layout (`path` is the file) or Hugging Face's
    (`path` is the folder: config.json, model.safetensors, vocab.txt). Same bytes for the same arguments."""
    if layout not in ("fair-esm", "hf"):
        raise ValueError(f"layout must be 'fair-esm' or 'hf', not {layout!r}")
    if config.embed_dim % config.heads:
        raise ValueError(f"embed_dim {config.embed_dim} is not a multiple of heads {config.heads}")
    state = _random_esm2_state(config, seed)
    path = Path(path)
    if layout == "fair-esm":
        cfg = argparse.Namespace(encoder_layers=config.layers, encoder_embed_dim=config.embed_dim,
                                 encoder_ffn_embed_dim=4 * config.embed_dim, encoder_attention_heads=config.heads,
                                 token_dropout=True)
        model = {("encoder." if k.startswith("lm_head.") else "encoder.sentence_encoder.") + k: v
                 for k, v in state.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        # Through a file handle: the archive's inner folder is then "archive/", not the file's (temporary) name.
        with open(path, "wb") as handle:
            torch.save({"model": model, "cfg": {"model": cfg}, "virnucflow": UNTRAINED}, handle)
        return path

    from safetensors.torch import save_file

    weights = {}
    for key, value in state.items():
        if key != "lm_head.weight":  # tied to the word embeddings; Hugging Face does not save it
            weights[key if key.startswith("lm_head.") else "esm." + hf_key(key)] = value
    weights["esm.contact_head.regression.weight"] = torch.zeros(1, config.layers * config.heads)
    weights["esm.contact_head.regression.bias"] = torch.zeros(1)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sorted(weights.items())}, str(path / "model.safetensors"),
              metadata={"format": "pt"})
    config = {  # the keys of facebook/esm2_*'s config.json
        "_name_or_path": UNTRAINED, "architectures": ["EsmForMaskedLM"], "attention_probs_dropout_prob": 0.0, "classifier_dropout": None,
        "emb_layer_norm_before": False, "esmfold_config": None, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
        "hidden_size": config.embed_dim, "initializer_range": 0.02, "intermediate_size": 4 * config.embed_dim,
        "is_folding_model": False, "layer_norm_eps": 1e-05, "mask_token_id": MASK, "max_position_embeddings": 1026,
        "model_type": "esm", "num_attention_heads": config.heads, "num_hidden_layers": config.layers,
        "pad_token_id": PAD, "position_embedding_type": "rotary", "token_dropout": True, "torch_dtype": "float32",
        "use_cache": True, "vocab_list": None, "vocab_size": len(TOKENS),
    }
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (path / "vocab.txt").write_text("\n".join(TOKENS) + "\n")
    return path


def _random_esm2_state(config, seed):
    """fair-esm-named random weights (encoder + lm_head), the same on every run for the same arguments."""
    with torch.device("meta"):  # shapes only, in fair-esm's names and order
        shapes = checkpoint_shapes(ESM2(config, init=False))
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        if name.endswith("rot_emb.inv_freq"):
            state[name] = rotary_frequencies(config.head_dim)
        elif "layer_norm" in name:  # near identity with some spread, like trained LayerNorms
            noise = 0.1 * torch.randn(shape, generator=generator)
            state[name] = noise + (1.0 if name.endswith("weight") else 0.0)
        elif len(shape) > 1:  # scaled so activations neither vanish nor blow up through the layers
            state[name] = torch.randn(shape, generator=generator) * (0.5 / shape[-1] ** 0.5)
        else:
            state[name] = 0.05 * torch.randn(shape, generator=generator)
    state["embed_tokens.weight"][PAD] = 0.0  # nn.Embedding's padding row
    # lm_head, as the published files carry it (fair-esm refuses a file without it); unused here
    state["lm_head.weight"] = state["embed_tokens.weight"]
    state["lm_head.bias"] = torch.zeros(len(TOKENS))
    embed_dim = config.embed_dim
    state["lm_head.dense.weight"] = torch.randn(embed_dim, embed_dim, generator=generator) / embed_dim**0.5
    state["lm_head.dense.bias"] = torch.zeros(embed_dim)
    state["lm_head.layer_norm.weight"] = torch.ones(embed_dim)
    state["lm_head.layer_norm.bias"] = torch.zeros(embed_dim)
    return state


# --- DNABERT-S --------------------------------------------------------------------------------


def write_random_dnabert_s(out_dir, config=DNABERT_S_SMALL, seed=0):
    """A deterministic random-weight DNABERT-S in the published layout (config.json,
    pytorch_model.bin with BertModel keys, pooler included, tokenizer files). UNTRAINED.
    config.vocab_size is the tokenizer's target; the model gets the size the tokenizer reaches."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(config.vocab_size, seed)
    config = dataclasses.replace(config, vocab_size=tokenizer.get_vocab_size())
    hidden = config.hidden
    with torch.random.fork_rng(devices=[]):  # seeded here; the caller's random state is left as it was
        torch.manual_seed(seed)
        model = DNABERTS(config)
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
    (out_dir / "config.json").write_text(json.dumps(dnabert_s_config(config), indent=4, sort_keys=True) + "\n")
    write_tokenizer_files(tokenizer, out_dir)
    return out_dir


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


def dnabert_s_config(config):
    """config.json with the keys of the published DNABERT-S config (less its auto_map, which
    points at remote code that this layout does not ship)."""
    return {
        "_name_or_path": UNTRAINED,
        "alibi_starting_size": 512, "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.0,
        "classifier_dropout": None, "gradient_checkpointing": False, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "hidden_size": config.hidden, "initializer_range": 0.02,
        "intermediate_size": config.intermediate, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
        "model_type": "bert", "num_attention_heads": config.heads, "num_hidden_layers": config.layers, "pad_token_id": 0,
        "position_embedding_type": "absolute", "torch_dtype": "float32", "transformers_version": "4.28.0",
        "type_vocab_size": config.type_vocab_size, "use_cache": True, "vocab_size": config.vocab_size,
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
