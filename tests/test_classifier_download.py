"""VirNucPro's classifiers, fetched and verified: by git blob id, from a mirror served on 127.0.0.1, into
the cache that `classifier: virnucpro` resolves in; every failure one line per file, nothing of it kept."""

import functools
import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading

import pytest
import yaml

from conftest import REPO
from virnucflow.cli import _configured_downloads
from virnucflow.demo import write_demo_models
from virnucflow.errors import ModelError
from virnucflow.models.published_classifiers import (
    BLOB_IDS,
    blob_id,
    cache_folder,
    classifier_file,
    download_classifiers,
)
from virnucflow.preflight import PreflightError, preflight

STAND_INS = {"500_model.pth": b"a stand-in for the 500 bp classifier\n", "300_model.pth": b"and for 300 bp\n" * 1000}
PROXIES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def git_blob(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for key in PROXIES:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def mirror(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a folder that holds the stand-ins; yields (base URL, folder)."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    for name, data in STAND_INS.items():
        (folder / name).write_bytes(data)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", folder
    server.shutdown()
    server.server_close()


def stand_in_table():
    return {name: git_blob(data) for name, data in STAND_INS.items()}


def test_a_blob_id_is_what_git_hash_object_prints(tmp_path):
    (tmp_path / "hello").write_bytes(b"hello\n")
    (tmp_path / "empty").write_bytes(b"")
    assert blob_id(tmp_path / "hello") == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object
    assert blob_id(tmp_path / "empty") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob
    assert set(BLOB_IDS) == {"500_model.pth", "300_model.pth"}
    assert BLOB_IDS["500_model.pth"] == "fc35d5ef9f1f4564eea7036f34f4f8ec6000d33d"
    assert BLOB_IDS["300_model.pth"] == "a0b5b85e7c1e44f00cde146d091beb82b2c8e855"


def test_the_classifiers_are_fetched_verified_and_never_rewritten(mirror, tmp_path):
    base, served = mirror
    cache = tmp_path / "cache"
    assert download_classifiers(base, blob_ids=stand_in_table(), folder=cache) == []
    assert {path.name: path.read_bytes() for path in cache.iterdir()} == STAND_INS
    mtimes = {path.name: path.stat().st_mtime_ns for path in cache.iterdir()}
    (served / "500_model.pth").write_bytes(b"changed on the mirror")  # not even looked at: the copy verifies
    assert download_classifiers(base, blob_ids=stand_in_table(), folder=cache) == []
    assert {path.name: path.stat().st_mtime_ns for path in cache.iterdir()} == mtimes


def test_a_file_whose_blob_id_differs_is_refused_in_one_line_and_nothing_of_it_is_left(mirror, tmp_path):
    base, _ = mirror
    cache = tmp_path / "cache"
    table = {**stand_in_table(), "500_model.pth": BLOB_IDS["500_model.pth"]}
    (line,) = download_classifiers(base, blob_ids=table, folder=cache)
    assert line.startswith(f"500_model.pth: {base}500_model.pth: refused: git blob {git_blob(STAND_INS['500_model.pth'])}")
    assert BLOB_IDS["500_model.pth"] in line and "\n" not in line
    assert sorted(os.listdir(cache)) == ["300_model.pth"]  # the other file is still fetched; no temporary left


def test_a_stale_copy_is_replaced_and_a_missing_file_on_the_mirror_is_one_line(mirror, tmp_path):
    base, served = mirror
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "300_model.pth").write_bytes(b"cut short")
    (served / "500_model.pth").unlink()
    (line,) = download_classifiers(base, blob_ids=stand_in_table(), folder=cache)
    assert line.startswith(f"500_model.pth: {base}500_model.pth: HTTP 404") and "--classifier-url" in line
    assert sorted(os.listdir(cache)) == ["300_model.pth"]
    assert (cache / "300_model.pth").read_bytes() == STAND_INS["300_model.pth"]


def test_an_unreachable_mirror_is_one_line_per_file(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache = tmp_path / "cache"
    lines = download_classifiers(f"http://127.0.0.1:{port}", blob_ids=stand_in_table(), folder=cache)
    assert [line.split(":")[0] for line in lines] == list(STAND_INS)
    for line in lines:
        assert "cannot reach 127.0.0.1" in line and f"downloads into {cache}" in line
        assert "VIRNUCFLOW_CLASSIFIER_CACHE" in line
    assert not cache.exists() or not os.listdir(cache)


def test_the_command_checks_the_published_blob_ids(mirror, tmp_path):
    """`virnucflow download-models virnucpro --classifier-url`: the stand-ins are not the published files."""
    base, _ = mirror
    env = {key: value for key, value in os.environ.items() if key not in PROXIES}
    env["VIRNUCFLOW_CLASSIFIER_CACHE"] = str(tmp_path / "cache")
    proc = subprocess.run([sys.executable, "-m", "virnucflow", "download-models", "virnucpro", "--classifier-url", base],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()[-2:]
    for line, name in zip(lines, STAND_INS):
        assert f"{name}: {base}{name}: refused" in line and BLOB_IDS[name] in line
    assert not (tmp_path / "cache").exists() or not os.listdir(tmp_path / "cache")


def test_virnucpro_is_the_published_classifier_of_the_chunk_length_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VIRNUCFLOW_CLASSIFIER_CACHE", "shared/classifiers")  # relative: made absolute
    assert classifier_file("virnucpro", 500) == str(tmp_path / "shared/classifiers/500_model.pth")
    assert classifier_file("virnucpro", 300) == str(tmp_path / "shared/classifiers/300_model.pth")
    assert classifier_file("my/own.pth", 400) == "my/own.pth" and classifier_file(None, 500) is None
    with pytest.raises(ModelError) as raised:
        classifier_file("virnucpro", 400)
    assert "chunk_length 500 and 300, not 400" in str(raised.value) and "\n" not in str(raised.value)
    monkeypatch.delenv("VIRNUCFLOW_CLASSIFIER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder() == tmp_path / "xdg/virnucflow/classifiers"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_demo_models(root / "dnabert_s", root / "esm2.pt", root / "classifier.pth")
    return root


def check(models, tmp_path, chunk_length=500):
    reads = tmp_path / "reads.fa"
    reads.write_text(">r1\nACGT\n")
    config = {"chunk_length": chunk_length, "embed": {"device": "auto"}, "classifier": "virnucpro",
              "models": {"dnabert_s": str(models / "dnabert_s"), "esm2": str(models / "esm2.pt")}}
    with pytest.raises(PreflightError) as raised:
        preflight(config, {"s1": str(reads)})
    return str(raised.value).splitlines()


def test_the_checks_name_the_download_when_the_classifier_is_missing_or_not_the_published_one(
        models, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("VIRNUCFLOW_CLASSIFIER_CACHE", str(cache))
    (line,) = check(models, tmp_path)
    assert line.startswith(f"classifier: virnucpro: 500_model.pth is not in the classifier cache {cache}")
    assert "`virnucflow download-models virnucpro`" in line and "VIRNUCFLOW_CLASSIFIER_CACHE" in line
    cache.mkdir()
    (cache / "500_model.pth").write_bytes(b"not the published file")
    (line,) = check(models, tmp_path)
    assert line.startswith(f"classifier: virnucpro: {cache / '500_model.pth'} is not the published 500_model.pth")
    assert "`virnucflow download-models virnucpro`" in line
    (line,) = check(models, tmp_path, chunk_length=400)
    assert line.startswith("classifier: virnucpro: VirNucPro publishes classifiers for chunk_length 500 and 300")


def test_without_names_download_models_fetches_what_the_config_names(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    shipped = yaml.safe_load((REPO / "config/config.yaml").read_text())
    assert shipped["classifier"] == "virnucpro"  # the shipped config ends at viral reads
    assert _configured_downloads(["config/config.yaml"]) == [
        "zhihan1996/DNABERT-S", "facebook/esm2_t36_3B_UR50D", "virnucpro"]
    mine = tmp_path / "mine.yaml"
    mine.write_text("models:\n  esm2: esm2_t33_650M_UR50D\nclassifier: null\n")
    assert _configured_downloads(["config/config.yaml", str(mine)]) == ["zhihan1996/DNABERT-S", "esm2_t33_650M_UR50D"]
    assert _configured_downloads(["config/config.yaml", "config/demo.yaml"]) == []  # local files: nothing to fetch
    with pytest.raises(Exception, match=r"absent.yaml: cannot read the config .* --configfile"):
        _configured_downloads(["config/config.yaml", str(tmp_path / "absent.yaml")])
