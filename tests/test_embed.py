"""Embed jobs on the tiny real models: order, batching, out-of-memory splits, skips, resume, devices."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from virnucflow.devices import claim_device
from virnucflow.embed import embed_shard, make_batches
from virnucflow.errors import ModelError, ValidationError
from virnucflow.models.dnabert_s_checkpoint import write_random_dnabert_s
from virnucflow.models.esm2_checkpoint import write_random_esm2
from virnucflow.models.resolve import load_encoder, resolve_model
from virnucflow.shards import open_embeddings
from virnucflow.synthetic import synthetic_reads


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "dna": str(write_random_dnabert_s(root / "dnabert", seed=1)),
        "protein": str(write_random_esm2(root / "esm.pt", "fair-esm", num_layers=2, embed_dim=32, attention_heads=4)),
    }


@pytest.fixture
def shard(tmp_path):
    """A protein and a nucleotide shard of 40 sequences of varied length."""
    reads = list(synthetic_reads(40, 30, 600, coding_fraction=1.0, seed=3, prefix="f"))
    amino = "ACDEFGHIKLMNPQRSTVWY"
    (tmp_path / "s.fna").write_text("".join(f">{rid}\n{seq}\n" for rid, seq in reads))
    (tmp_path / "s.faa").write_text("".join(f">{rid}\n{''.join(amino[ord(c) % 20] for c in seq[: len(seq) // 3])}\n"
                                            for rid, seq in reads))
    return tmp_path


@pytest.mark.parametrize("kind, ext", [("dna", "fna"), ("protein", "faa")])
def test_rows_in_input_order_equal_one_at_a_time(models, shard, kind, ext):
    out = shard / f"s.{kind}.h5"
    stats = embed_shard(shard / f"s.{ext}", out, kind=kind, model=models[kind], device="cpu", token_budget=2000,
                        stats_json=shard / "stats.json")
    ids = [line[1:].strip() for line in open(shard / f"s.{ext}") if line.startswith(">")]
    seqs = [line.strip() for line in open(shard / f"s.{ext}") if not line.startswith(">")]
    encoder = load_encoder(kind, models[kind])
    alone = torch.cat([encoder.embed([encoder.tokenize(s)]) for s in seqs]).numpy()
    with open_embeddings(out) as result:
        assert result.read_ids() == ids
        assert np.abs(result.embeddings[:] - alone).max() < 1e-5
        assert result.attrs["kind"] == kind and result.attrs["model"] == models[kind]
    assert stats["sequences"] == 40 and json.loads((shard / "stats.json").read_text())["tokens"] > 0
    assert not (shard / f"s.{kind}.h5.partial").exists()  # the sidecar goes once the shard is in place


def test_batches_respect_the_token_budget():
    lengths = [5, 300, 17, 120, 120, 64, 2000, 3]
    batches = make_batches(lengths, 400)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or max(lengths[i] for i in batch) * len(batch) <= 400
    assert [6] in batches  # longer than the budget: alone


class OutOfMemoryAbove:
    """Wraps a real encoder; raises CUDA's out-of-memory error for batches above a size or a length."""

    def __init__(self, encoder, max_batch, max_tokens=10**9):
        self.encoder, self.max_batch, self.max_tokens = encoder, max_batch, max_tokens
        self.calls = []

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def embed(self, batch):
        self.calls.append(len(batch))
        if len(batch) > self.max_batch or max(map(len, batch)) > self.max_tokens:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.encoder.embed(batch)


def _patch_encoder(monkeypatch, models, **limits):
    import virnucflow.embed as embed_module

    wrappers = []

    def fake_load(kind, spec, **kwargs):
        wrappers.append(OutOfMemoryAbove(load_encoder(kind, spec, **kwargs), **limits))
        return wrappers[-1]

    monkeypatch.setattr(embed_module, "load_encoder", fake_load)
    return wrappers


def test_out_of_memory_batches_are_split_and_give_the_same_rows(models, shard, monkeypatch):
    embed_shard(shard / "s.faa", shard / "plain.h5", kind="protein", model=models["protein"], device="cpu",
                token_budget=100_000)
    wrappers = _patch_encoder(monkeypatch, models, max_batch=3)
    embed_shard(shard / "s.faa", shard / "split.h5", kind="protein", model=models["protein"], device="cpu",
                token_budget=100_000)
    assert max(wrappers[0].calls) > 3 and any(c <= 3 for c in wrappers[0].calls)
    with open_embeddings(shard / "plain.h5") as a, open_embeddings(shard / "split.h5") as b:
        assert a.read_ids() == b.read_ids()
        assert np.abs(a.embeddings[:] - b.embeddings[:]).max() < 1e-5


def test_a_sequence_too_large_alone_fails_or_is_skipped(models, shard, monkeypatch):
    _patch_encoder(monkeypatch, models, max_batch=100, max_tokens=150)
    with pytest.raises(ValidationError, match="out of memory alone.*on_error: skip"):
        embed_shard(shard / "s.faa", shard / "fail.h5", kind="protein", model=models["protein"], device="cpu",
                    token_budget=100_000)
    assert not (shard / "fail.h5").exists()
    embed_shard(shard / "s.faa", shard / "skip.h5", kind="protein", model=models["protein"], device="cpu",
                token_budget=100_000, on_error="skip")
    with open_embeddings(shard / "skip.h5") as result:
        skipped = result.skipped()
        assert skipped and all("out of memory alone" in why for _, why in skipped)
        assert len(result) + len(skipped) == 40 and not set(result.read_ids()) & {s for s, _ in skipped}


def test_a_killed_job_resumes_from_its_sidecar(models, shard):
    out = shard / "k.h5"
    code = ("import sys; sys.path.insert(0, {repo!r}); from virnucflow.embed import embed_shard; "
            "embed_shard({fasta!r}, {out!r}, kind='dna', model={model!r}, device='cpu', token_budget=1500, "
            "stats_json={stats!r})")
    args = dict(repo=os.getcwd(), fasta=str(shard / "s.fna"), out=str(out), model=models["dna"],
                stats=str(shard / "k.json"))
    killed = subprocess.run([sys.executable, "-c", code.format(**args)],
                            env={**os.environ, "VIRNUCFLOW_TEST_KILL_AFTER_BATCHES": "3"})
    assert killed.returncode == -9 and not out.exists()
    assert len(list((shard / "k.h5.partial").glob("batch-*.npy"))) == 3
    subprocess.run([sys.executable, "-c", code.format(**args)], check=True)
    resumed = json.loads((shard / "k.json").read_text())["resumed"]
    embed_shard(shard / "s.fna", shard / "whole.h5", kind="dna", model=models["dna"], device="cpu", token_budget=1500)
    with open_embeddings(out) as a, open_embeddings(shard / "whole.h5") as b:
        assert a.read_ids() == b.read_ids() and np.array_equal(a.embeddings[:], b.embeddings[:])
    assert 0 < resumed < 40


def test_two_jobs_claim_different_gpus(tmp_path):
    code = ("import sys, time; sys.path.insert(0, {repo!r}); from virnucflow.devices import claim_device\n"
            "with claim_device('auto') as device:\n    print(device, flush=True); time.sleep(1.5)")
    env = {**os.environ, "VIRNUCFLOW_FAKE_GPUS": "2", "VIRNUCFLOW_LOCK_DIR": str(tmp_path)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    procs = [subprocess.Popen([sys.executable, "-c", code.format(repo=os.getcwd())], env=env, stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    devices = sorted(p.communicate()[0].strip() for p in procs)
    assert devices == ["cuda:0", "cuda:1"]


def test_scheduler_devices_name_the_locks(tmp_path, monkeypatch):
    monkeypatch.setenv("VIRNUCFLOW_FAKE_GPUS", "1")
    monkeypatch.setenv("VIRNUCFLOW_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with claim_device("auto") as device:
        assert device == "cuda:0" and (tmp_path / "gpu-3.lock").exists()
    monkeypatch.setenv("VIRNUCFLOW_FAKE_GPUS", "0")
    with claim_device("auto") as device:
        assert device == "cpu"
    with pytest.raises(ModelError, match="no CUDA device"):
        with claim_device("cuda"):
            pass


def test_hugging_face_cache_resolution_and_miss(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snapshot = cache / "models--zhihan1996--DNABERT-S" / "snapshots" / "abc123"
    write_random_dnabert_s(snapshot, seed=2)
    (cache / "models--zhihan1996--DNABERT-S" / "refs").mkdir()
    (cache / "models--zhihan1996--DNABERT-S" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    path, revision = resolve_model("zhihan1996/DNABERT-S")
    assert path == snapshot and revision == "abc123"
    with pytest.raises(ModelError, match="not in the local Hugging Face cache.*make download-models"):
        resolve_model("facebook/esm2_t36_3B_UR50D")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ModelError, match="esm2_t36_3B_UR50D.*torch hub cache"):
        resolve_model("esm2_t36_3B_UR50D")
