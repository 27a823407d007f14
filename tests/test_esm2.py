"""Native ESM-2 against fair-esm (test-only dependency) on tiny random weights."""

import hashlib

import esm
import pytest
import torch

from virnucflow.errors import ModelError
from virnucflow.models.esm2_checkpoint import TOKENS, load_esm2, tokenize, write_random_esm2

SEQUENCES = ["MKTAYIAKQR", "GAVLIMFWP" * 3, "ACDEFGHIKLMNPQRSTVWYXBZUO", "M" * 1100, "W"]


@pytest.fixture(scope="module")
def fair_esm_model(tmp_path_factory):
    """A tiny fair-esm ESM2 with random weights, saved in the torch hub checkpoint layout."""
    torch.manual_seed(0)
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    model = esm.model.esm2.ESM2(num_layers=3, embed_dim=64, attention_heads=4, alphabet=alphabet).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    path = tmp_path_factory.mktemp("esm") / "esm2_t3_tiny.pt"
    cfg = {"model": {"encoder_layers": 3, "encoder_embed_dim": 64, "encoder_attention_heads": 4, "token_dropout": True}}
    torch.save({"model": {f"encoder.sentence_encoder.{k}": v for k, v in model.state_dict().items()}, "cfg": cfg}, path)
    _, _, tokens = alphabet.get_batch_converter()([(str(i), s) for i, s in enumerate(SEQUENCES)])
    with torch.no_grad():
        reps = model(tokens, repr_layers=[2, 3])["representations"]
    # VirNucPro's pooling of fair-esm's output: mean over residues 1..min(L, 1024).
    expected = {layer: torch.stack([reps[layer][i, 1 : min(len(s), 1024) + 1].mean(0) for i, s in enumerate(SEQUENCES)])
                for layer in (2, 3)}
    return path, alphabet, expected


def test_alphabet_and_tokens_equal_fair_esm(fair_esm_model):
    _, alphabet, _ = fair_esm_model
    assert TOKENS == alphabet.all_toks
    for seq in SEQUENCES:
        assert tokenize(seq) == [alphabet.cls_idx] + alphabet.encode(seq) + [alphabet.eos_idx]


@pytest.mark.parametrize("attention", ["padded", "packed"])
@pytest.mark.parametrize("layer", [3, 2])
def test_embeddings_equal_fair_esm(fair_esm_model, layer, attention):
    path, _, expected = fair_esm_model
    encoder = load_esm2(path, layer=layer, attention=attention)
    batch = encoder.embed([tokenize(s) for s in SEQUENCES])
    assert (batch - expected[layer]).abs().max() < 1e-5
    alone = torch.cat([encoder.embed([tokenize(s)]) for s in SEQUENCES])  # batch composition does not matter
    assert (alone - expected[layer]).abs().max() < 1e-5


def test_hugging_face_layout_gives_the_same_embeddings(tmp_path):
    write_random_esm2(tmp_path / "esm.pt", "fair-esm", num_layers=2, embed_dim=32, attention_heads=4, seed=5)
    write_random_esm2(tmp_path / "hf", "hf", num_layers=2, embed_dim=32, attention_heads=4, seed=5)
    tokens = [tokenize(s) for s in SEQUENCES]
    a = load_esm2(tmp_path / "esm.pt").embed(tokens)
    b = load_esm2(tmp_path / "hf").embed(tokens)
    assert torch.equal(a, b)
    assert (tmp_path / "hf/config.json").exists() and (tmp_path / "hf/model.safetensors").exists()


def test_random_models_are_deterministic(tmp_path):
    digests = []
    for run in range(2):
        path = write_random_esm2(tmp_path / str(run) / "m.pt", "fair-esm", num_layers=2, embed_dim=32, attention_heads=4, seed=9)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_incomplete_checkpoint_names_the_missing_key(tmp_path):
    path = write_random_esm2(tmp_path / "m.pt", "fair-esm", num_layers=2, embed_dim=32, attention_heads=4)
    data = torch.load(path, weights_only=True)
    del data["model"]["encoder.sentence_encoder.layers.1.fc2.weight"]
    torch.save(data, path)
    with pytest.raises(ModelError, match="m.pt: missing key layers.1.fc2.weight"):
        load_esm2(path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="junk.pt"):
        load_esm2(tmp_path / "junk.pt")
