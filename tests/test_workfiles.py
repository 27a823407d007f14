"""The work folder's readers give back what prepare wrote, and name the file when it is not prepare's."""

import csv

import pytest

from helpers import run_prepare
from virnucflow.errors import InputError
from benchmarks.synthetic import synthetic_reads, write_fasta
from virnucflow.workfiles import frames_by_shard, read_frames, read_reads, read_shard_fasta, read_summary


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    folder = tmp_path_factory.mktemp("work")
    write_fasta(folder / "reads.fa", synthetic_reads(60, 100, 1500, coding_fraction=0.7, seed=8))
    summary = run_prepare(folder / "reads.fa", folder / "s", sample="s", shard_residues=2000)
    return folder / "s", summary


def tsv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_readers_return_what_prepare_wrote(work):
    folder, summary = work
    assert read_summary(folder / "summary.json") == summary
    frames = list(read_frames(folder / "frames.tsv"))
    assert [f._asdict() for f in frames] == [
        {key: value if key in ("frame_id", "read_id", "strand") else int(value) for key, value in row.items()}
        for row in tsv(folder / "frames.tsv")]
    assert [r.read_id for r in read_reads(folder / "reads.tsv")] == [f"read{i}" for i in range(1, 61)]
    shards = list(frames_by_shard(folder / "frames.tsv"))
    assert [index for index, _ in shards] == list(range(summary["shards"])) and summary["shards"] > 1
    for index, ids in shards:
        assert [i.decode() for i in ids] == [f.frame_id for f in frames if f.shard == index]
        assert read_shard_fasta(folder / f"shards/{index:05d}.faa")[0] == [i.decode() for i in ids]


def test_a_file_that_is_not_prepares_is_named(tmp_path):
    (tmp_path / "frames.tsv").write_text("id\tshard\na\t0\n")
    with pytest.raises(InputError, match=r"frames.tsv: not a frames.tsv written by prepare \(no column frame_id\)"):
        list(frames_by_shard(tmp_path / "frames.tsv"))
    (tmp_path / "summary.json").write_text("{")
    with pytest.raises(InputError, match="summary.json: not a readable summary.json"):
        read_summary(tmp_path / "summary.json")
