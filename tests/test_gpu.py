"""The GPU paths: packed attention in bf16 (FlashAttention varlen for ESM-2, compiled flex_attention
with ALiBi for DNABERT-S) and compiled layers against the padded path on the same device and against
fp32 on the CPU, a batch queued without a host sync, auto's choice for a head size FlashAttention
refuses, and a whole embed job with device auto. Skipped without CUDA. `VIRNUCFLOW_TEST_DEVICE=cpu`
runs the same checks through the CPU reference paths, which checks the tests themselves on any machine.

On a GPU machine: `python3 -m pytest -q tests/test_gpu.py` (see benchmarks/gpu_check.sh)."""

import os
import random

import numpy as np
import pytest
import torch

from helpers import embed_options
from virnucflow.embed import embed_shard
from virnucflow.embeddings import open_embeddings
from virnucflow.models.dnabert_s import DnabertSConfig
from virnucflow.models.dnabert_s_encoder import load_dnabert_s
from virnucflow.models.esm2 import Esm2Config
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
        "protein": write_random_esm2(folder / "esm2", "hf", Esm2Config(layers=6, embed_dim=320, heads=20)),
        "dna": write_random_dnabert_s(folder / "dnabert_s", DnabertSConfig(hidden=384, layers=4, heads=12,
                                                                            intermediate=1536, vocab_size=1024)),
    }


def check_packed(load, path, sequences, compile_layers=False):
    """Packed bf16 on DEVICE against padded bf16 there and fp32 on the CPU; rows independent of the batch."""
    reference = load(path, device="cpu", dtype=torch.float32, attention="padded")
    tokens = [reference.tokenize(s) for s in sequences]
    expected = reference.embed(tokens)
    padded = load(path, device=DEVICE, dtype=torch.bfloat16, attention="padded").embed(tokens)
    packed_encoder = load(path, device=DEVICE, dtype=torch.bfloat16, attention="packed", compile_layers=compile_layers)
    assert packed_encoder.attention == "packed", "the packed kernel did not build here and fell back to padded"
    assert packed_encoder.compiled == compile_layers, "the layers did not compile here and run eagerly"
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
def test_compiled_layers_bf16_match_padded_and_fp32(models, kind):
    """compile_layers (Triton kernels on a GPU) with packed attention: as close to fp32 as the eager path."""
    load, sequences = (load_esm2, proteins(48, seed=6)) if kind == "protein" else (load_dnabert_s, dna(48, seed=7))
    check_packed(load, models[kind], sequences, compile_layers=True)


@pytest.mark.parametrize("kind", ["protein", "dna"])
def test_a_batch_is_queued_without_a_host_sync(models, kind):
    """embed_prepared returns before the device ran the batch: no .item(), no blocking copy inside
    (torch's sync debug mode raises on any); result() is the one wait. auto's path on the device."""
    load, sequences = (load_esm2, proteins(64, seed=8)) if kind == "protein" else (load_dnabert_s, dna(64, seed=9))
    encoder = load(models[kind], device=DEVICE, dtype=torch.bfloat16)
    tokens = [encoder.tokenize(s) for s in sequences]
    expected = encoder.embed(tokens)  # warm: handles, kernels, the pinned pool
    prepared = encoder.prepare(tokens)
    if DEVICE == "cuda":
        torch.cuda.set_sync_debug_mode("error")
    try:
        pending = [encoder.embed_prepared(prepared) for _ in range(3)]
    finally:
        if DEVICE == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    assert all(cosine(p.result(), expected).min() > 0.9999 for p in pending)


def test_esm2_head_size_flash_varlen_refuses(tmp_path):
    """Head size 12 (FlashAttention varlen wants a multiple of 8): auto runs padded, explicit packed
    goes one sequence at a time; both agree, neither fails."""
    path = write_random_esm2(tmp_path / "esm2_h12", "hf", Esm2Config(layers=2, embed_dim=96, heads=8))
    sequences = proteins(24, seed=10)
    auto = load_esm2(path, device=DEVICE, dtype=torch.bfloat16)
    assert auto.attention == "padded"
    tokens = [auto.tokenize(s) for s in sequences]
    packed = load_esm2(path, device=DEVICE, dtype=torch.bfloat16, attention="packed").embed(tokens)
    assert cosine(packed, auto.embed(tokens)).min() > 0.999


@pytest.mark.parametrize("kind", ["protein", "dna"])
def test_an_embed_job_on_the_device(models, tmp_path, kind):
    """device auto: bf16 on a GPU; rows the same whatever the token budget."""
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
    if DEVICE == "cuda":  # auto: FlashAttention varlen for ESM-2, padded SDPA with the ALiBi bias for DNABERT-S
        assert attrs["device"] == "cuda" and attrs["precision"] == "bf16"
        assert attrs["attention"] == ("packed" if kind == "protein" else "padded")
    assert np.isfinite(rows[1024]).all()
    assert cosine(rows[1024], rows[65536]).min() > 0.9999
