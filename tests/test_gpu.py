"""The GPU paths: packed attention in bf16 (FlashAttention varlen for ESM-2, compiled flex_attention
with ALiBi for DNABERT-S) against the padded path on the same device and against fp32 on the CPU,
and a whole embed job with device auto. Skipped without CUDA. `VIRNUCFLOW_TEST_DEVICE=cpu` runs the
same checks through the CPU reference paths, which checks the tests themselves on any machine.

On a GPU machine: `python3 -m pytest -q tests/test_gpu.py` (see benchmarks/gpu_check.sh)."""

import os
import random

import numpy as np
import pytest
import torch

from helpers import embed_options
from virnucflow.embed import embed_shard
from virnucflow.embeddings import open_embeddings
from virnucflow.models.dnabert_s_encoder import load_dnabert_s
from virnucflow.models.esm2_encoder import load_esm2
from virnucflow.models.random_weights import write_random_dnabert_s, write_random_esm2

DEVICE = os.environ.get("VIRNUCFLOW_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
pytestmark = pytest.mark.skipif(DEVICE is None, reason="needs a CUDA device (or VIRNUCFLOW_TEST_DEVICE=cpu)")


def cosine(a, b):
    """Cosine similarity of matching rows."""
    return torch.nn.functional.cosine_similarity(torch.as_tensor(a).float(), torch.as_tensor(b).float(), dim=1)


def proteins(n, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(rng.randint(50, 170))) for _ in range(n)]


def dna(n, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice("ACGT") for _ in range(rng.randint(300, 501))) for _ in range(n)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Small models of the real shapes' kinds: ESM-2 t6 (320 wide), a 4-layer DNABERT-S (384 wide)."""
    folder = tmp_path_factory.mktemp("gpu_models")
    return {
        "protein": write_random_esm2(folder / "esm2", "hf", num_layers=6, embed_dim=320, attention_heads=20),
        "dna": write_random_dnabert_s(folder / "dnabert_s", hidden=384, layers=4, heads=12, intermediate=1536,
                                      vocab_size=1024),
    }


def check_packed(load, path, sequences):
    """Packed bf16 on DEVICE against padded bf16 there and fp32 on the CPU; rows independent of the batch."""
    reference = load(path, device="cpu", dtype=torch.float32, attention="padded")
    tokens = [reference.tokenize(s) for s in sequences]
    expected = reference.embed(tokens)
    padded = load(path, device=DEVICE, dtype=torch.bfloat16, attention="padded").embed(tokens)
    packed_encoder = load(path, device=DEVICE, dtype=torch.bfloat16, attention="packed")
    assert packed_encoder.attention == "packed", "the packed kernel did not build here and fell back to padded"
    packed = packed_encoder.embed(tokens)
    assert packed.shape == expected.shape and torch.isfinite(packed).all()
    assert cosine(packed, padded).min() > 0.999, "packed and padded bf16 disagree"
    assert cosine(packed, expected).min() > 0.99, "bf16 strays from fp32"
    alone = torch.cat([packed_encoder.embed([t]) for t in tokens[:6]])
    assert cosine(alone, packed[:6]).min() > 0.9999, "a row depends on its batch"


def test_esm2_packed_bf16_matches_padded_and_fp32(models):
    # One protein past the 1024-residue pooling window, as long ORFs are.
    check_packed(load_esm2, models["protein"], proteins(48, seed=1) + ["M" + "ACDEFGHIKLMNPQRSTVWY" * 60])


def test_dnabert_s_packed_bf16_matches_padded_and_fp32(models):
    # One read far past the 512 tokens DNABERT-S was trained on (ALiBi has no length limit).
    check_packed(load_dnabert_s, models["dna"], dna(48, seed=2) + ["".join(dna(8, seed=3))])


@pytest.mark.parametrize("kind", ["protein", "dna"])
def test_an_embed_job_on_the_device(models, tmp_path, kind):
    """device auto: packed bf16 on a GPU; rows the same whatever the token budget."""
    sequences = proteins(200, seed=4) if kind == "protein" else dna(200, seed=5)
    fasta = tmp_path / "shard.fa"
    fasta.write_text("".join(f">s{i}\n{s}\n" for i, s in enumerate(sequences)))
    rows = {}
    for budget in (1024, 65536):
        out = tmp_path / f"{budget}.h5"
        options = embed_options(kind, device="auto" if DEVICE == "cuda" else DEVICE, token_budget=budget)
        stats = embed_shard(fasta, out, model=str(models[kind]), **options)
        with open_embeddings(out) as shard:
            assert shard.read_ids() == [f"s{i}" for i in range(len(sequences))]
            rows[budget], attrs = shard.embeddings[:], dict(shard.attrs)
        assert stats["sequences"] == len(sequences)
    if DEVICE == "cuda":
        assert attrs["device"] == "cuda" and attrs["precision"] == "bf16" and attrs["attention"] == "packed"
    assert np.isfinite(rows[1024]).all()
    assert cosine(rows[1024], rows[65536]).min() > 0.9999
