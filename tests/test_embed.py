"""Embed jobs on the tiny real models: input order, batching, out-of-memory splits, skips, resume."""

import hashlib
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import embed_options, finished_batches, kill_when
from virnucflow.batching import make_batches
from virnucflow.embed import embed_shard
from virnucflow.embeddings import open_embeddings, verify_checksums
from virnucflow.errors import InputError
from virnucflow.models.esm2 import Esm2Config
from virnucflow.models.random_weights import write_random_dnabert_s, write_random_esm2
from virnucflow.models.resolve import load_encoder
from benchmarks.synthetic import synthetic_reads
from virnucflow.workfiles import read_shard_fasta

REPO = Path(__file__).resolve().parents[1]
AMINO = "ACDEFGHIKLMNPQRSTVWY"


def embed(fasta, out, *, kind, **options):
    """embed_shard as a workflow job with the default config runs it, on the CPU unless told otherwise."""
    return embed_shard(fasta, out, **embed_options(kind, **{"device": "cpu", **options}))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "dna": str(write_random_dnabert_s(root / "dnabert", seed=1)),
        "protein": str(write_random_esm2(root / "esm.pt", "fair-esm", Esm2Config(layers=2, embed_dim=32, heads=4))),
    }


@pytest.fixture
def shard(tmp_path):
    """A nucleotide and a protein shard of the same 40 ids, of varied lengths."""
    reads = list(synthetic_reads(40, 30, 600, coding_fraction=1.0, seed=3, prefix="f"))
    (tmp_path / "s.fna").write_text("".join(f">{rid}\n{seq}\n" for rid, seq in reads))
    (tmp_path / "s.faa").write_text("".join(f">{rid}\n{''.join(AMINO[ord(c) % 20] for c in seq[: len(seq) // 3])}\n"
                                            for rid, seq in reads))
    return tmp_path


def contents(path):
    """Everything a user can read from a shard file: ids, rows, attributes, skipped ids."""
    with open_embeddings(path) as shard:
        return shard.read_ids(), shard.embeddings[:], dict(shard.attrs), shard.skipped()


@pytest.mark.parametrize("kind, ext", [("dna", "fna"), ("protein", "faa")])
def test_rows_in_input_order_equal_one_at_a_time(models, shard, kind, ext):
    out = shard / f"s.{kind}.h5"
    stats = embed(shard / f"s.{ext}", out, kind=kind, model=models[kind], device="cpu", token_budget=2000,
                        stats_json=shard / "stats.json")
    ids, seqs = read_shard_fasta(shard / f"s.{ext}")
    encoder = load_encoder(kind, models[kind])
    alone = torch.cat([encoder.embed([encoder.tokenize(s)]) for s in seqs]).numpy()
    got_ids, rows, attrs, skipped = contents(out)
    assert got_ids == ids and not skipped
    assert np.abs(rows - alone).max() < 1e-5
    assert attrs["kind"] == kind and attrs["model"] == models[kind] and attrs["dim"] == encoder.dim
    assert attrs["model_revision"].startswith("sha256:") and attrs["precision"] == "fp32" and attrs["device"] == "cpu"
    assert attrs["tokens"] == sum(len(encoder.tokenize(s)) for s in seqs) and attrs["pooling"] == encoder.pooling
    assert "package_version" in attrs
    # Provenance: the FASTA the rows were computed from, and checksums of what was written.
    assert attrs["input_sha256"] == hashlib.sha256((shard / f"s.{ext}").read_bytes()).hexdigest()
    assert attrs["ids_sha256"] == hashlib.sha256("".join(f"{i}\n" for i in ids).encode()).hexdigest()
    assert attrs["embeddings_crc32"] == zlib.crc32(rows.astype("<f4").tobytes())
    assert attrs["oom_split_batches"] == attrs["oom_split_rows"] == 0
    assert attrs["untrained"]  # random weights: the report warns
    with open_embeddings(out) as written_file:
        assert verify_checksums(written_file) == []
    written = json.loads((shard / "stats.json").read_text())
    assert written["sequences"] == stats["sequences"] == 40 and written["resumed"] == 0
    assert written["tokens"] == attrs["tokens"] <= written["padded_tokens"] and written["device"] == "cpu"
    assert not (shard / f"s.{kind}.h5.partial").exists()  # the sidecar goes once the shard is in place


def test_batches_respect_the_token_budget():
    lengths = [5, 300, 17, 120, 120, 64, 2000, 3, 90, 90, 90, 41]
    batches = make_batches(lengths, 400)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or max(lengths[i] for i in batch) * len(batch) <= 400
    assert [6] in batches  # longer than the budget: alone
    # What a resumed job has left (the plan minus its first batches) is batched as before.
    rest = [i for b in batches[2:] for i in b]
    assert make_batches(lengths, 400, rest) == batches[2:]


def test_an_empty_shard_gives_zero_rows_of_the_model_width(models, tmp_path):
    (tmp_path / "empty.faa").write_text("")
    embed(tmp_path / "empty.faa", tmp_path / "e.h5", kind="protein", model=models["protein"], device="cpu")
    with open_embeddings(tmp_path / "e.h5") as result:
        assert result.embeddings.shape == (0, 32) and len(result) == 0


def test_a_damaged_shard_names_the_record(models, tmp_path):
    (tmp_path / "bad.faa").write_text(">a\nMKV\n>b\n\n>c\nMK\n")
    with pytest.raises(InputError, match=r"bad.faa, record 2 \(b\): empty id or sequence"):
        embed(tmp_path / "bad.faa", tmp_path / "b.h5", kind="protein", model=models["protein"], device="cpu")


class OutOfMemoryAbove:
    """A real encoder on a pretend device that runs out of memory above a number of padded tokens
    (batch size x longest sequence) or a sequence length."""

    def __init__(self, encoder, max_padded=10**9, max_tokens=10**9):
        self.encoder, self.max_padded, self.max_tokens = encoder, max_padded, max_tokens
        self.calls, self.failed = [], []

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def embed(self, batch):
        padded = len(batch) * max(map(len, batch))
        self.calls.append(padded)
        if padded > self.max_padded or max(map(len, batch)) > self.max_tokens:
            self.failed.append(padded)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.encoder.embed(batch)


def _patch_encoder(monkeypatch, **limits):
    import virnucflow.embed as embed_module

    wrappers = []

    def fake_load(kind, spec, **kwargs):
        wrappers.append(OutOfMemoryAbove(load_encoder(kind, spec, **kwargs), **limits))
        return wrappers[-1]

    monkeypatch.setattr(embed_module, "load_encoder", fake_load)
    return wrappers


def test_out_of_memory_batches_are_split_and_give_the_same_rows(models, shard, monkeypatch):
    embed(shard / "s.faa", shard / "plain.h5", kind="protein", model=models["protein"], device="cpu",
                token_budget=1200)
    wrappers = _patch_encoder(monkeypatch, max_padded=300)
    stats = embed(shard / "s.faa", shard / "split.h5", kind="protein", model=models["protein"],
                        device="cpu", token_budget=1200)
    calls, failed = wrappers[0].calls, wrappers[0].failed
    assert failed and stats["oom_splits"] > 0 and all(c <= 300 for c in calls if c not in failed)
    # A size that ran out of memory is split before it is tried again: each failure is smaller
    # than the last, and there are fewer failures than batches.
    assert all(a > b for a, b in zip(failed, failed[1:])) and len(failed) < stats["batches"]
    plain, split = contents(shard / "plain.h5"), contents(shard / "split.h5")
    assert plain[0] == split[0] and np.abs(plain[1] - split[1]).max() < 1e-5
    # Which rows were computed in smaller pieces is in the file (they can differ in the last bits).
    assert split[2]["oom_split_batches"] > 0 and split[2]["oom_split_rows"] > 0 and plain[2]["oom_split_rows"] == 0
    with open_embeddings(shard / "split.h5") as result:
        in_pieces = result.file["oom_split_ids"].asstr()[:].tolist()
    assert len(in_pieces) == split[2]["oom_split_rows"] and set(in_pieces) <= set(split[0])
    assert in_pieces == [sid for sid in split[0] if sid in set(in_pieces)]  # in input order


def test_a_split_batch_differs_from_the_whole_batch_in_the_last_bits_only(models, shard):
    """What README "Resuming" states: on the CPU in fp32 a batch computed in two halves gives rows within a
    few units in the last place of the whole batch's (measured: 4.8e-7 at most on the demo models)."""
    worst = 0.0
    for kind, ext in (("dna", "fna"), ("protein", "faa")):
        _, seqs = read_shard_fasta(shard / f"s.{ext}")
        encoder = load_encoder(kind, models[kind])
        tokens = [encoder.tokenize(s) for s in seqs]
        for batch in make_batches([len(t) for t in tokens], 2000):
            if len(batch) < 2:
                continue
            whole = encoder.embed([tokens[i] for i in batch]).numpy()
            half = len(batch) // 2
            parts = np.concatenate([encoder.embed([tokens[i] for i in batch[:half]]).numpy(),
                                    encoder.embed([tokens[i] for i in batch[half:]]).numpy()])
            scale = np.maximum(np.abs(whole), 1.0)
            worst = max(worst, float((np.abs(whole - parts) / scale).max()))
    assert worst <= 1e-6


def test_a_sequence_too_large_alone_fails_or_is_skipped(models, shard, monkeypatch):
    embed(shard / "s.faa", shard / "plain.h5", kind="protein", model=models["protein"], device="cpu")
    _patch_encoder(monkeypatch, max_tokens=150)
    with pytest.raises(InputError, match=r"s\.faa: sequence f\d+ \(\d+ tokens\) runs out of memory even alone.*"
                                         r"on_error: skip"):
        embed(shard / "s.faa", shard / "fail.h5", kind="protein", model=models["protein"], device="cpu")
    assert not (shard / "fail.h5").exists()
    embed(shard / "s.faa", shard / "skip.h5", kind="protein", model=models["protein"], device="cpu",
                on_error="skip")
    ids, rows, _, skipped = contents(shard / "skip.h5")
    all_ids, all_rows, _, _ = contents(shard / "plain.h5")
    too_long = {sid for sid, seq in zip(*read_shard_fasta(shard / "s.faa")) if len(seq) + 2 > 150}
    assert {sid for sid, _ in skipped} == too_long and all("out of memory even alone" in why for _, why in skipped)
    assert ids == [sid for sid in all_ids if sid not in too_long]  # the others, still in input order
    assert np.abs(rows - all_rows[[all_ids.index(sid) for sid in ids]]).max() < 1e-5


EMBED_JOB = """
import json, logging, sys
sys.path.insert(0, sys.argv[1])
from virnucflow.embed import embed_shard
fasta, out, log_file, options = sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
if log_file:
    logging.getLogger("virnucflow").setLevel(logging.INFO)
    logging.getLogger("virnucflow").addHandler(logging.FileHandler(log_file))
embed_shard(fasta, out, **options)
"""


def start_embed(fasta, models, out, token_budget=1500, log=None):
    """A DNA embed job in its own process (so it can be SIGKILLed), as a Snakemake job runs it."""
    options = embed_options("dna", model=models["dna"], device="cpu", token_budget=token_budget,
                            stats_json=f"{out}.json")
    return subprocess.Popen([sys.executable, "-c", EMBED_JOB, str(REPO), str(fasta), str(out), str(log or ""),
                             json.dumps(options)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_embed(fasta, models, out, token_budget=1500, log=None):
    proc = start_embed(fasta, models, out, token_budget, log)
    proc.stderr_text = proc.communicate()[1]
    return proc


def kill_embed(fasta, models, out, after_batches, token_budget=1500):
    """Start a job and SIGKILL it from outside once its sidecar holds `after_batches` finished batches."""
    proc = start_embed(fasta, models, out, token_budget)
    killed = kill_when(proc, lambda: finished_batches(f"{out}.partial") >= after_batches)
    assert killed, f"the job finished before {after_batches} batches could be seen: {proc.stderr.read()[-2000:]}"
    return finished_batches(f"{out}.partial")


@pytest.fixture
def long_shard(tmp_path):
    """A nucleotide shard of 120 ids, 9 batches at a budget of 1500 tokens: a job is seen a third done and
    killed there, long before its end."""
    reads = synthetic_reads(120, 30, 600, coding_fraction=1.0, seed=5, prefix="g")
    (tmp_path / "long.fna").write_text("".join(f">{rid}\n{seq}\n" for rid, seq in reads))
    return tmp_path / "long.fna"


def test_a_killed_job_resumes_from_its_sidecar_and_writes_the_same_file(models, long_shard):
    folder, out = long_shard.parent, long_shard.parent / "k.h5"
    assert kill_embed(long_shard, models, out, after_batches=3) >= 3 and not out.exists()
    rerun = run_embed(long_shard, models, out, log=folder / "rerun.log")
    assert rerun.returncode == 0, rerun.stderr_text
    resumed = json.loads((folder / "k.h5.json").read_text())["resumed"]
    assert 0 < resumed < 120
    assert f"resuming: {resumed} of 120 sequences already embedded" in (folder / "rerun.log").read_text()
    assert not (folder / "k.h5.partial").exists()

    embed(long_shard, folder / "whole.h5", kind="dna", model=models["dna"], token_budget=1500)
    ids, rows, attrs, skipped = contents(out)
    whole_ids, whole_rows, whole_attrs, whole_skipped = contents(folder / "whole.h5")
    assert ids == whole_ids and np.array_equal(rows, whole_rows)  # bitwise
    assert attrs == whole_attrs and skipped == whole_skipped


def test_a_resumed_job_with_another_token_budget_follows_the_stored_plan_bitwise(models, long_shard):
    """On the CPU a row depends on its batch in the last bits: a resume keeps the batches of the plan
    stored when the job started, whatever the budget now, and so gives the uninterrupted run's rows."""
    folder, out = long_shard.parent, long_shard.parent / "k.h5"
    kill_embed(long_shard, models, out, after_batches=2, token_budget=1500)
    plan = json.loads((folder / "k.h5.partial/plan.json").read_text())
    assert plan["token_budget"] == 1500 and sorted(i for b in plan["batches"] for i in b) == list(range(120))
    rerun = run_embed(long_shard, models, out, token_budget=5000, log=folder / "rerun.log")
    assert rerun.returncode == 0, rerun.stderr_text
    assert json.loads((folder / "k.h5.json").read_text())["resumed"] > 0
    assert "following the batch plan stored in" in (folder / "rerun.log").read_text()
    assert "(token budget 1500, not the current 5000)" in (folder / "rerun.log").read_text()
    embed(long_shard, folder / "whole.h5", kind="dna", model=models["dna"], token_budget=1500)
    ids, rows, attrs, _ = contents(out)
    whole_ids, whole_rows, whole_attrs, _ = contents(folder / "whole.h5")
    assert ids == whole_ids and np.array_equal(rows, whole_rows) and attrs == whole_attrs
    assert attrs["token_budget"] == 1500 and attrs["batches"] == len(plan["batches"])


def test_a_sidecar_cut_short_by_a_kill_resumes_from_its_valid_part(models, long_shard):
    folder, out = long_shard.parent, long_shard.parent / "k.h5"
    kill_embed(long_shard, models, out, after_batches=3)
    sidecar = folder / "k.h5.partial"
    with open(sidecar / "batches.jsonl", "ab") as index:  # a kill in the middle of writing the next batch
        index.write(b'{"indices": [1, 2')
    with open(sidecar / "rows.f32", "ab") as rows:
        rows.write(b"\0" * 1000)
    # A 3rd batch whose rows were damaged on disk (node crash): its CRC no longer matches.
    lines = (sidecar / "batches.jsonl").read_bytes().splitlines(keepends=True)
    first_two = sum(json.loads(line)["rows"] for line in lines[:2])
    with open(sidecar / "rows.f32", "r+b") as rows:
        rows.seek(first_two * 4 * 48 + 8)
        rows.write(b"\x7f\x7f\x7f\x7f")
    assert run_embed(long_shard, models, out).returncode == 0
    assert json.loads((folder / "k.h5.json").read_text())["resumed"] == first_two
    embed(long_shard, folder / "whole.h5", kind="dna", model=models["dna"], token_budget=1500)
    assert np.array_equal(contents(out)[1], contents(folder / "whole.h5")[1])


def test_a_sidecar_of_another_input_is_ignored_and_the_log_says_so(models, long_shard):
    folder, out = long_shard.parent, long_shard.parent / "k.h5"
    kill_embed(long_shard, models, out, after_batches=2)
    records = long_shard.read_text().splitlines(keepends=True)
    long_shard.write_text("".join(records[:-2]))  # prepare rewrote the shard with one record less
    assert run_embed(long_shard, models, out, log=folder / "rerun.log").returncode == 0
    log = (folder / "rerun.log").read_text()
    assert "ignoring the sidecar" in log and "input_sha256" in log
    assert json.loads((folder / "k.h5.json").read_text())["resumed"] == 0 and len(contents(out)[0]) == 119
