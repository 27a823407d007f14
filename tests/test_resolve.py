"""Model resolution: local folders and files, the Hugging Face cache (offline), the torch hub cache."""

import hashlib
import importlib.util
import json
import shutil

import pytest
from huggingface_hub import constants

from virnucflow.errors import ModelError
from virnucflow.models import resolve
from virnucflow.models.esm2 import Esm2Config
from virnucflow.models.random_weights import write_random_dnabert_s, write_random_esm2
from virnucflow.models.resolve import digest_cache, load_encoder, resolve_model

COMMIT = "1c3ab7c9e2f04d5e8a6b7c8d9e0f1a2b3c4d5e6f"


@pytest.fixture(autouse=True)
def no_user_caches(tmp_path, monkeypatch):
    """Caches in the test folder only, whatever the machine has in ~/.cache."""
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "TORCH_HOME"):
        monkeypatch.delenv(key, raising=False)
    setenv(monkeypatch, "XDG_CACHE_HOME", str(tmp_path / "xdg"))


def setenv(monkeypatch, name, value):
    """Set an environment variable as if the job had started with it. huggingface_hub reads its
    own (HF_HOME, HF_HUB_CACHE, XDG_CACHE_HOME) once, on import: its constants are recomputed by its
    own code, on the environment as it now is, and restored after the test."""
    monkeypatch.setenv(name, value)
    spec = importlib.util.find_spec("huggingface_hub.constants")
    fresh = importlib.util.module_from_spec(spec)  # a second copy, not the one in sys.modules
    spec.loader.exec_module(fresh)
    for key in ("HF_HOME", "HF_HUB_CACHE"):
        monkeypatch.setattr(constants, key, getattr(fresh, key))


def hf_cache_entry(hub, repo_id, commit=COMMIT, write=lambda folder: write_random_dnabert_s(folder, seed=2)):
    """A cached repo laid out as huggingface_hub leaves it: blobs, snapshots/<commit>/ links, refs/main."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    staging = repo / "staging"
    write(staging)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in staging.iterdir():
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.move(file, blob)
        (snapshot / file.name).symlink_to(blob)
    staging.rmdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.mark.parametrize("variable, subfolder", [("HF_HUB_CACHE", ""), ("HF_HOME", "hub")])
def test_a_hugging_face_id_resolves_from_the_local_cache(tmp_path, monkeypatch, variable, subfolder):
    hub = tmp_path / "cache" / subfolder if subfolder else tmp_path / "cache"
    snapshot = hf_cache_entry(hub, "zhihan1996/DNABERT-S")
    setenv(monkeypatch, variable, str(tmp_path / "cache"))
    assert resolve_model("zhihan1996/DNABERT-S", "dna") == (snapshot, COMMIT)
    encoder = load_encoder("dna", "zhihan1996/DNABERT-S")
    assert encoder.revision == COMMIT and encoder.name == "zhihan1996/DNABERT-S" and encoder.dim == 48


def test_the_default_cache_is_under_xdg_cache_home(tmp_path):
    snapshot = hf_cache_entry(tmp_path / "xdg" / "huggingface" / "hub", "zhihan1996/DNABERT-S")
    assert resolve_model("zhihan1996/DNABERT-S")[0] == snapshot


def test_a_cache_miss_says_where_it_looked_and_how_to_download(tmp_path, monkeypatch):
    setenv(monkeypatch, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError) as miss:
        resolve_model("facebook/esm2_t36_3B_UR50D", "protein")
    message = str(miss.value)
    assert "'facebook/esm2_t36_3B_UR50D' is not a local path and not in the local Hugging Face cache" in message
    assert str(tmp_path / "hub") in message and "make download-models" in message
    assert "hf download facebook/esm2_t36_3B_UR50D" in message and "\n" not in message


def test_an_interrupted_download_is_named_as_such(tmp_path, monkeypatch):
    setenv(monkeypatch, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = hf_cache_entry(tmp_path / "hub", "zhihan1996/DNABERT-S")
    (snapshot / "pytorch_model.bin").unlink()
    with pytest.raises(ModelError, match="no config.json or weights .an interrupted download"):
        resolve_model("zhihan1996/DNABERT-S")


def write_sharded_esm2(folder):
    """A Hugging Face ESM-2 folder whose weights are split in two safetensors shards with an index."""
    from safetensors.torch import load_file, save_file

    write_random_esm2(folder, "hf")
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(weights)
    index = {}
    for part, chunk in enumerate((names[: len(names) // 2], names[len(names) // 2 :]), start=1):
        shard = f"model-0000{part}-of-00002.safetensors"
        save_file({k: weights[k] for k in chunk}, folder / shard, metadata={"format": "pt"})
        index.update({k: shard for k in chunk})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))


def test_a_sharded_snapshot_resolves_and_loads_and_a_missing_shard_is_named(tmp_path, monkeypatch):
    setenv(monkeypatch, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = hf_cache_entry(tmp_path / "hub", "facebook/esm2_t6_8M_UR50D", write=write_sharded_esm2)
    assert resolve_model("facebook/esm2_t6_8M_UR50D", "protein") == (snapshot, COMMIT)
    encoder = load_encoder("protein", "facebook/esm2_t6_8M_UR50D")
    assert encoder.revision == COMMIT and encoder.dim == 64
    (snapshot / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelError, match="an interrupted download"):
        resolve_model("facebook/esm2_t6_8M_UR50D", "protein")


def test_without_refs_main_the_newest_snapshot_is_used(tmp_path, monkeypatch):
    setenv(monkeypatch, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = hf_cache_entry(tmp_path / "hub", "zhihan1996/DNABERT-S")
    (snapshot.parent.parent / "refs" / "main").unlink()
    assert resolve_model("zhihan1996/DNABERT-S") == (snapshot, COMMIT)


def test_a_fair_esm_name_resolves_from_the_torch_hub_cache(tmp_path, monkeypatch):
    setenv(monkeypatch, "TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ModelError) as miss:
        resolve_model("esm2_t36_3B_UR50D", "protein")
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in str(miss.value)
    assert "https://dl.fbaipublicfiles.com/fair-esm/models/esm2_t36_3B_UR50D.pt" in str(miss.value)
    checkpoint = write_random_esm2(tmp_path / "torch" / "hub" / "checkpoints" / "esm2_t36_3B_UR50D.pt",
                                   config=Esm2Config(layers=1, embed_dim=16, heads=2))
    path, revision = resolve_model("esm2_t36_3B_UR50D", "protein")
    assert path == checkpoint and revision == "sha256:" + hashlib.sha256(
        b"esm2_t36_3B_UR50D.pt\0" + hashlib.sha256(checkpoint.read_bytes()).hexdigest().encode() + b"\n"
    ).hexdigest()[:12]


def test_local_models_get_a_revision_from_their_contents(tmp_path):
    folder = write_random_dnabert_s(tmp_path / "dnabert", seed=1)
    path, revision = resolve_model(str(folder), "dna")
    assert path == folder and revision.startswith("sha256:") and resolve_model(str(folder))[1] == revision
    write_random_dnabert_s(tmp_path / "dnabert", seed=5)  # other weights, same place
    assert resolve_model(str(folder))[1] != revision


def test_file_digests_are_remembered_between_jobs(tmp_path, monkeypatch):
    model = write_random_esm2(tmp_path / "esm.pt")
    revision = resolve_model(str(model), "protein")[1]
    (cached,) = digest_cache().iterdir()
    assert cached.read_text().strip() == hashlib.sha256(model.read_bytes()).hexdigest()
    monkeypatch.setattr(resolve, "_DIGESTS", {})  # a new job: only the cache on disk remembers
    cached.write_text("ab" * 32 + "\n")  # proves it is read, not recomputed
    assert resolve_model(str(model), "protein")[1] != revision
    write_random_esm2(model, seed=3)  # new contents, new mtime: computed again
    monkeypatch.setattr(resolve, "_DIGESTS", {})
    assert resolve_model(str(model), "protein")[1] not in (revision, None)
    assert len(list(digest_cache().iterdir())) == 2


def test_wrong_or_missing_local_models_are_named(tmp_path):
    with pytest.raises(ModelError, match="'missing.pt': no such file or folder"):
        resolve_model("missing.pt")
    checkpoint = write_random_esm2(tmp_path / "esm.pt", config=Esm2Config(layers=1, embed_dim=16, heads=2))
    with pytest.raises(ModelError, match="DNABERT-S is a folder"):
        load_encoder("dna", str(checkpoint))


def test_random_weight_models_are_known_as_untrained_in_every_layout(tmp_path):
    """The report's demo warning rests on this: each writer marks its files, a published-looking
    model without the mark (or with it removed) is trained."""
    dna = write_random_dnabert_s(tmp_path / "dnabert", seed=1)
    esm_pt = write_random_esm2(tmp_path / "esm.pt", "fair-esm", Esm2Config(layers=1, embed_dim=16, heads=2))
    esm_hf = write_random_esm2(tmp_path / "esm_hf", "hf", Esm2Config(layers=1, embed_dim=16, heads=2))
    for kind, path in (("dna", dna), ("protein", esm_pt), ("protein", esm_hf)):
        assert load_encoder(kind, str(path)).untrained is True
    config = json.loads((dna / "config.json").read_text())
    config["_name_or_path"] = "zhihan1996/DNABERT-S"
    (dna / "config.json").write_text(json.dumps(config))
    assert load_encoder("dna", str(dna)).untrained is False
    import torch

    checkpoint = torch.load(esm_pt, weights_only=False)  # our own file: the Namespace of its cfg is safe
    del checkpoint["virnucflow"]
    torch.save(checkpoint, tmp_path / "published.pt")
    assert load_encoder("protein", str(tmp_path / "published.pt")).untrained is False
