"""Native DNABERT-S against test vectors made with the reference implementation (see
tests/data/dnabert_s/README.md), plus the tokenizer, the layouts and the random demo models."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from virnucflow.errors import ModelError
from virnucflow.models.dnabert_s import alibi_slopes
from virnucflow.models.dnabert_s_checkpoint import load_dnabert_s, write_random_dnabert_s

VECTORS = sorted((Path(__file__).parent / "data" / "dnabert_s").glob("*/"))


@pytest.mark.parametrize("attention", ["padded", "packed"])
@pytest.mark.parametrize("folder", VECTORS, ids=lambda p: p.name)
def test_embeddings_equal_the_reference_implementation(folder, attention):
    inputs = json.loads((folder / "inputs.json").read_text())
    expected = load_file(str(folder / "expected.safetensors"))["pooled"]
    encoder = load_dnabert_s(folder, attention=attention)
    tokens = [encoder.tokenize(s) for s in inputs["sequences"]]
    assert tokens == inputs["token_ids"]  # [CLS] + BPE + [SEP], as the reference tokenizer call
    batched = encoder.embed(tokens)  # different lengths in one batch
    assert (batched - expected).abs().max() < 1e-5


def test_alibi_slopes_for_head_counts_that_are_not_a_power_of_two():
    assert alibi_slopes(8) == [2 ** -(i + 1) for i in range(8)]
    # 12 heads: the 8 slopes of 8 heads, then every other slope of 16 heads (2^-0.5, 2^-1.5, ...).
    assert alibi_slopes(12) == pytest.approx(alibi_slopes(8) + [2 ** -(0.5 + i) for i in range(4)])


def test_bert_prefix_and_mlm_head_keys_load(tmp_path):
    folder = write_random_dnabert_s(tmp_path / "m", seed=3)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    prefixed = {f"bert.{k}": v for k, v in state.items()}
    prefixed["cls.predictions.decoder.bias"] = torch.zeros(3)
    torch.save(prefixed, folder / "pytorch_model.bin")
    seq = "ACGTTGCA" * 20
    a = load_dnabert_s(folder)
    assert a.embed([a.tokenize(seq)]).shape == (1, 48)


def test_missing_encoder_key_is_named(tmp_path):
    folder = write_random_dnabert_s(tmp_path / "m", seed=3)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    del state["encoder.layer.1.mlp.wo.weight"]
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="pytorch_model.bin: missing key encoder.layer.1.mlp.wo.weight"):
        load_dnabert_s(folder)


def test_random_models_are_deterministic_and_load(tmp_path):
    digests = []
    for run in range(2):
        folder = write_random_dnabert_s(tmp_path / str(run), seed=1)
        digests.append({f: hashlib.sha256((folder / f).read_bytes()).hexdigest()
                        for f in ["pytorch_model.bin", "tokenizer.json", "config.json"]})
    assert digests[0] == digests[1]
    encoder = load_dnabert_s(tmp_path / "0")
    tokens = encoder.tokenize("ACGTACGGATTACA")
    assert tokens[0] == 1 and tokens[-1] == 2  # [CLS] ... [SEP]
