"""A full disk: one line naming the file, the size needed and the free space; nothing half-written left
behind; after space is freed, a rerun gives the same files as a run that never failed.

The real cases run on a small tmpfs (mounting needs root; they skip where it is not allowed); the
others make a write fail with ENOSPC or EDQUOT."""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import embed_options, write_embeddings
from virnucflow.atomic import DiskFull, atomic_open, disk_full_errno
from virnucflow.embed import embed_shard
from virnucflow.embeddings import EmbeddingWriter, open_embeddings
from virnucflow.models.random_weights import write_random_dnabert_s
from benchmarks.synthetic import synthetic_reads
from virnucflow.workfiles import FRAMES_HEADER

FULL_LINE = r"the disk is full \(needed about [\d.]+ MB, [\d.]+ MB free on {mount}\); free space or point work/ or " \
            r"results/ elsewhere"


@pytest.fixture
def small_disk(tmp_path):
    """mount(size): a tmpfs of that size at tmp_path/disk; remount(size) grows it; unmounted at the end."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = []

    def mount_it(size):
        if sys.platform != "linux" or shutil.which("mount") is None:
            pytest.skip("needs Linux mount")
        options = f"size={size}" if not mounted else f"remount,size={size}"
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True,
                              text=True)
        if proc.returncode:
            if not mounted:
                pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
            raise RuntimeError(proc.stderr)
        mounted.append(size)
        return mount

    yield mount_it
    if mounted:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def files_in(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())


# --- what any write does -------------------------------------------------------------------------

def test_h5py_and_os_forms_of_a_full_disk_are_recognised():
    assert disk_full_errno(OSError(errno.ENOSPC, "No space left on device")) == errno.ENOSPC
    assert disk_full_errno(OSError(errno.EDQUOT, "Disk quota exceeded")) == errno.EDQUOT
    h5 = RuntimeError("Can't decrement id ref count (file write failed: time = Mon Nov 30 06:31:47 2026\n, "
                      "filename = '/r/.x.h5.tmp.1', file descriptor = 3, errno = 28, error message = 'No space left "
                      "on device', buf = 0x5, total write size = 315960)")
    assert disk_full_errno(h5) == errno.ENOSPC
    assert disk_full_errno(OSError(errno.EIO, "I/O error")) is None and disk_full_errno(ValueError("28")) is None


def test_a_json_write_that_finds_no_space_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import builtins

    real_open = builtins.open

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def write(self, text):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr(builtins, "open", lambda *a, **k: Full(real_open(*a, **k)))
    with pytest.raises(DiskFull) as error:
        with atomic_open(tmp_path / "stats.json") as handle:
            json.dump({"a": 1}, handle)
    monkeypatch.undo()
    assert str(error.value).startswith(f"{tmp_path / 'stats.json'}: the disk quota is used up (needed about ")
    assert "\n" not in str(error.value) and files_in(tmp_path) == []


def test_an_embedding_file_on_a_full_disk(small_disk):
    disk = small_disk("400k")
    rows = np.ones((1000, 160), dtype=np.float32)
    with pytest.raises(DiskFull) as error:
        with EmbeddingWriter(disk / "x.h5", 160, expected_rows=1000) as writer:
            writer.append([f"r{i}" for i in range(1000)], rows)
    assert error.match(f"^{disk / 'x.h5'}: " + FULL_LINE.format(mount=disk) + "$")
    assert "needed about 0.9 MB, 0.4 MB free" in str(error.value)  # 1000 x 160 x 4 bytes and the ids; all free again
    assert files_in(disk) == []
    # Written as rows come (no expected size): the same, and never a failure inside HDF5's close.
    with pytest.raises(DiskFull):
        with EmbeddingWriter(disk / "y.h5", 160) as writer:
            for start in range(0, 1000, 100):
                writer.append([f"r{i}" for i in range(start, start + 100)], rows[:100])
    assert files_in(disk) == []


# --- merge: results/ on a full disk ------------------------------------------------------------------

def make_shards(folder, rows=1000):
    ids = [f"r{i}_chunk_1F1" for i in range(rows)]
    (folder / "frames.tsv").write_text(FRAMES_HEADER + "".join(f"{i}\tr\t1\t+\t1\t0\t3\t1\t0\n" for i in ids))
    rng = np.random.default_rng(0)
    write_embeddings(folder / "d.h5", ids, rng.standard_normal((rows, 64)), {"kind": "dna"})
    write_embeddings(folder / "p.h5", ids, rng.standard_normal((rows, 96)), {"kind": "protein"})


def run_merge(folder, results):
    return subprocess.run(
        [sys.executable, "-m", "virnucflow", "merge", str(folder / "frames.tsv"), str(results / "embeddings.h5"),
         "--dna", str(folder / "d.h5"), "--protein", str(folder / "p.h5"), "--validation",
         str(results / "validation.json"), "--missing", str(results / "missing_ids.txt"), "--chunk-length", "500",
         "--compat", "virnucpro", "--log", str(folder / "merge.log")], capture_output=True, text=True)


def test_merge_into_a_full_results_disk_says_so_in_one_line_and_reruns_identically(tmp_path, small_disk):
    make_shards(tmp_path)
    disk = small_disk("400k")
    results = disk / "results"
    proc = run_merge(tmp_path, results)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = f"virnucflow merge: error: {results / 'embeddings.h5'}: " + FULL_LINE.format(mount=disk)
    errors = [line for line in proc.stderr.splitlines() if " INFO " not in line]  # the terminal gets progress too
    assert len(errors) == 1 and re.fullmatch(line, errors[0]), proc.stderr
    assert "the disk is full" in (tmp_path / "merge.log").read_text()  # the log has the error too
    assert files_in(disk) == []  # no result, no validation.json, no temporary file

    small_disk("4m")  # space freed
    assert run_merge(tmp_path, results).returncode == 0
    reference = tmp_path / "reference"
    assert run_merge(tmp_path, reference).returncode == 0
    with open_embeddings(results / "embeddings.h5") as got, open_embeddings(reference / "embeddings.h5") as want:
        assert got.read_ids() == want.read_ids() and np.array_equal(got.embeddings[:], want.embeddings[:])
    assert (results / "validation.json").read_text() == (reference / "validation.json").read_text()


# --- embed: work/ on a full disk ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def dna_model(tmp_path_factory):
    return str(write_random_dnabert_s(tmp_path_factory.mktemp("model") / "dnabert", seed=1))


def run_embed(fasta, out, model, log):
    options = embed_options("dna", model=model, device="cpu", token_budget=1500)
    return subprocess.run([sys.executable, "-m", "virnucflow", "embed", str(fasta), str(out), "--kind", "dna",
                           "--model", model, "--device", "cpu", "--token-budget", "1500", "--precision",
                           options["precision"], "--stats", f"{out}.json", "--log", str(log)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("where, free", [("sidecar", 60_000), ("output", 200_000)])
def test_embed_on_a_full_disk_stops_in_one_line_and_resumes_identically(tmp_path, small_disk, dna_model, where,
                                                                        free):
    """A disk that fills while the batches are kept (sidecar) or while the file is written (output): the
    job fails naming the file; once space is freed the rerun resumes and writes the clean run's file."""
    reads = synthetic_reads(600, 30, 600, coding_fraction=1.0, seed=5, prefix="g")
    fasta = tmp_path / "s.fna"
    fasta.write_text("".join(f">{rid}\n{seq}\n" for rid, seq in reads))
    disk = small_disk("1m")
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - free))
    out = disk / "work" / "s.h5"
    proc = run_embed(fasta, out, dna_model, tmp_path / "embed.log")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    failed = {"sidecar": disk / "work/s.h5.partial/rows.f32", "output": out}[where]
    errors = [line for line in proc.stderr.splitlines() if " INFO " not in line]  # the terminal gets progress too
    assert len(errors) == 1 and re.fullmatch(f"virnucflow embed: error: {failed}: " + FULL_LINE.format(mount=disk),
                                             errors[0]), proc.stderr
    assert not out.exists() and not list(out.parent.glob(".s.h5.tmp.*"))
    batches = len(Path(f"{out}.partial/batches.jsonl").read_text().splitlines())
    assert batches > 0  # what was finished is kept for the rerun

    filler.unlink()  # space freed
    assert run_embed(fasta, out, dna_model, tmp_path / "rerun.log").returncode == 0
    stats = json.loads(Path(f"{out}.json").read_text())
    assert stats["resumed"] > 0 and (stats["resumed"] == 600) == (where == "output")
    clean = tmp_path / "clean.h5"
    embed_shard(fasta, clean, **embed_options("dna", model=dna_model, device="cpu", token_budget=1500))
    with open_embeddings(out) as got, open_embeddings(clean) as want:
        assert got.read_ids() == want.read_ids() and np.array_equal(got.embeddings[:], want.embeddings[:])
        assert dict(got.attrs) == dict(want.attrs)


# --- predict: the chunk-call sort's runs on a full disk ------------------------------------------------

def test_the_chunk_call_sort_on_a_full_disk_names_its_run_file_and_leaves_nothing(small_disk):
    from virnucflow.calls import _SortedChunkCalls

    disk = small_disk("64k")
    with pytest.raises(DiskFull) as error:
        with _SortedChunkCalls(disk / "chunk_calls.tsv", 100, "predictions.tsv") as calls:
            for i in range(5000):
                calls.add(f"read_{i:06d}_with_a_long_name_chunk_1", i % 2 == 0)
    assert re.fullmatch(f"{disk}/\\.chunk_calls\\.tsv\\.tmp\\.[^/]+/\\d+\\.tsv: " + FULL_LINE.format(mount=disk),
                        str(error.value)), str(error.value)
    assert files_in(disk) == []
