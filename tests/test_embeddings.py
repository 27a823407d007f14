"""The HDF5 embedding file: atomic, complete-flagged, readable only when whole, with checksums."""

import hashlib
import zlib

import h5py
import numpy as np
import pytest

from helpers import write_embeddings
from virnucflow.checksums import RowsChecksum, row_sums64
from virnucflow.embeddings import EmbeddingWriter, open_embeddings, verify_checksums
from virnucflow.errors import InputError
from virnucflow.rows import RowReader


def test_round_trip_keeps_ids_rows_and_attributes(tmp_path):
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    write_embeddings(tmp_path / "a.h5", ["r1_chunk_1F1", "é", "x", "y"], rows, {"model": "m", "pooling": "mean"})
    with open_embeddings(tmp_path / "a.h5") as shard:
        assert shard.read_ids() == ["r1_chunk_1F1", "é", "x", "y"]
        assert np.array_equal(shard.embeddings[:], rows)
        assert shard.attrs["model"] == "m" and shard.attrs["dim"] == 3 and shard.attrs["complete"]
        assert shard.embeddings.dtype == np.float32 and shard.embeddings.chunks is not None


def test_empty_shard_has_its_dimension(tmp_path):
    with EmbeddingWriter(tmp_path / "e.h5", dim=768):
        pass
    with open_embeddings(tmp_path / "e.h5") as shard:
        assert shard.embeddings.shape == (0, 768) and len(shard) == 0


def test_appends_in_pieces_equal_one_write(tmp_path):
    rows = np.random.default_rng(0).standard_normal((2500, 5)).astype(np.float32)
    ids = [f"s{i}" for i in range(2500)]
    with EmbeddingWriter(tmp_path / "p.h5", dim=5) as writer:
        for start in range(0, 2500, 700):
            writer.append(ids[start : start + 700], rows[start : start + 700])
    with open_embeddings(tmp_path / "p.h5") as shard:
        assert shard.read_ids() == ids and np.array_equal(shard.embeddings[:], rows)


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with EmbeddingWriter(tmp_path / "f.h5", dim=2) as writer:
            writer.append(["a"], np.zeros((1, 2)))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_wrong_shape_is_refused(tmp_path):
    with pytest.raises(ValueError):
        with EmbeddingWriter(tmp_path / "w.h5", dim=2) as writer:
            writer.append(["a", "b"], np.zeros((2, 3)))
    assert not (tmp_path / "w.h5").exists()


def test_reader_rejects_incomplete_and_corrupt_files(tmp_path):
    with h5py.File(tmp_path / "incomplete.h5", "w") as handle:
        handle["sequence_ids"] = np.array([b"a"])
        handle["embeddings"] = np.zeros((1, 2), dtype=np.float32)
    with pytest.raises(InputError, match="incomplete.h5.*incomplete.*rerun"):
        with open_embeddings(tmp_path / "incomplete.h5"):
            pass
    write_embeddings(tmp_path / "whole.h5", ["a"], np.zeros((1, 2)))
    data = (tmp_path / "whole.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.h5"):
        with open_embeddings(tmp_path / "cut.h5"):
            pass
    with pytest.raises(InputError, match="not found"):
        with open_embeddings(tmp_path / "absent.h5"):
            pass


def test_skipped_sequences_are_recorded(tmp_path):
    with EmbeddingWriter(tmp_path / "s.h5", dim=2) as writer:
        writer.append(["a"], np.ones((1, 2)))
        writer.skip("b", "out of memory alone")
    with open_embeddings(tmp_path / "s.h5") as shard:
        assert shard.skipped() == [("b", "out of memory alone")]


def test_a_sample_without_frames_gets_a_width_zero_file(tmp_path):
    with EmbeddingWriter(tmp_path / "none.h5", dim=0):
        pass
    with open_embeddings(tmp_path / "none.h5") as shard:
        assert shard.embeddings.shape == (0, 0) and shard.read_ids() == []


def test_a_writer_that_fails_to_start_leaves_nothing(tmp_path):
    with pytest.raises(TypeError) as error:
        EmbeddingWriter(tmp_path / "bad.h5", dim=2, attrs={"model": object()})  # not storable in HDF5
    # Still nothing while the error (and its traceback) is alive, not only once it is collected.
    assert error.value is not None and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dim", [4, 5])
def test_every_file_carries_checksums_of_its_ids_and_rows(tmp_path, dim):
    """ids_sha256 and embeddings_crc32 as documented, and embeddings_sum64, which verify_checksums checks
    (odd widths included: their rows end in a zero-padded word)."""
    rows = np.random.default_rng(dim).standard_normal((7, dim)).astype(np.float32)
    ids = [f"r{i}_chunk_1F1" for i in range(6)] + ["é"]
    with EmbeddingWriter(tmp_path / "c.h5", dim) as writer:
        writer.append(ids[:3], rows[:3])
        writer.append(ids[3:], rows[3:])
    with open_embeddings(tmp_path / "c.h5") as shard:
        attrs = dict(shard.attrs)
        assert verify_checksums(shard) == []
    assert attrs["ids_sha256"] == hashlib.sha256("".join(f"{i}\n" for i in ids).encode()).hexdigest()
    assert attrs["embeddings_crc32"] == zlib.crc32(rows.astype("<f4").tobytes())
    words = np.zeros((7, dim + dim % 2), dtype="<u4")
    words[:, :dim] = rows.view("<u4")
    sums = [sum(int(w) for w in row.view("<u8")) % 2**64 for row in words]
    s1, s2 = sum(sums) % 2**64, sum((i + 1) * r for i, r in enumerate(sums)) % 2**64
    assert attrs["embeddings_sum64"] == f"{s1:016x} {s2:016x}"
    with h5py.File(tmp_path / "c.h5", "r+") as handle:
        handle["embeddings"][2, 1] = np.nextafter(handle["embeddings"][2, 1], np.float32(9))  # one bit
        first, second = handle["sequence_ids"][0], handle["sequence_ids"][1]
        handle["sequence_ids"][0], handle["sequence_ids"][1] = second, first
    with open_embeddings(tmp_path / "c.h5") as shard:
        problems = verify_checksums(shard)
    assert len(problems) == 2 and "sequence_ids do not match" in problems[0] and "embeddings" in problems[1]


def test_large_blocks_are_checksummed_beside_the_write_with_the_same_result(tmp_path):
    """Blocks of 1 MiB and more are checksummed in a second thread while HDF5 writes them: the same
    attributes as small appends, and the caller's buffer is free again when append returns."""
    rows = np.random.default_rng(3).standard_normal((1200, 768)).astype(np.float32)  # 3.7 MB
    ids = [f"r{i}" for i in range(1200)]
    buffer = np.empty((600, 768), dtype=np.float32)
    with EmbeddingWriter(tmp_path / "big.h5", 768) as writer:
        for start in (0, 600):  # one reused buffer, as the merge does
            buffer[:] = rows[start : start + 600]
            writer.append(ids[start : start + 600], buffer)
            buffer[:] = 0
    with EmbeddingWriter(tmp_path / "small.h5", 768) as writer:
        for start in range(0, 1200, 50):
            writer.append(ids[start : start + 50], rows[start : start + 50])
    with open_embeddings(tmp_path / "big.h5") as big, open_embeddings(tmp_path / "small.h5") as small:
        assert np.array_equal(big.embeddings[:], rows) and verify_checksums(big) == []
        keys = ("ids_sha256", "embeddings_crc32", "embeddings_sum64")
        assert {k: big.attrs[k] for k in keys} == {k: small.attrs[k] for k in keys}


def test_rows_checksum_is_the_same_in_any_order_and_layout():
    rows = np.random.default_rng(3).standard_normal((9, 6)).astype(np.float32)
    wide = np.zeros((9, 11), dtype=np.float32)
    wide[:, 5:] = rows  # a column block starting at an odd offset (not 8-byte aligned)
    whole, parts = RowsChecksum(), RowsChecksum()
    whole.add(np.arange(9), rows)
    parts.add([8, 1, 4], wide[[8, 1, 4], 5:])
    parts.add(np.array([0, 2, 3, 5, 6, 7]), wide[[0, 2, 3, 5, 6, 7], 5:])
    assert whole.value() == parts.value()


# --- float16 storage (merge.dtype: float16) ---------------------------------------------------------

def sum64_from_bytes(stored):
    """embeddings_sum64 as documented, from each row's stored bytes (zero-padded to whole 8-byte words)."""
    sums = []
    for row in stored:
        data = row.tobytes()
        data += bytes(-len(data) % 8)
        sums.append(sum(int.from_bytes(data[k : k + 8], "little") for k in range(0, len(data), 8)) % 2**64)
    s1, s2 = sum(sums) % 2**64, sum((i + 1) * r for i, r in enumerate(sums)) % 2**64
    return f"{s1:016x} {s2:016x}"


@pytest.mark.parametrize("dim", [3, 4, 5, 6])
def test_a_float16_file_stores_the_rounded_rows_with_checksums_of_those_bytes(tmp_path, dim):
    """Widths whose rows are 6, 8, 10 and 12 bytes: the checksums describe the bytes as stored, verify_checksums
    agrees, and readers get float32 back, widened exactly."""
    rows = (np.random.default_rng(dim).standard_normal((7, dim)) * 10).astype(np.float32)
    rows[0, 0] = 1e-6  # a float16 subnormal
    ids = [f"r{i}_chunk_1F1" for i in range(7)]
    with EmbeddingWriter(tmp_path / "h.h5", dim, dtype="float16") as writer:
        writer.append(ids[:3], rows[:3])
        writer.append(ids[3:], rows[3:])
    stored = rows.astype("<f2")
    with open_embeddings(tmp_path / "h.h5") as half:
        attrs = dict(half.attrs)
        assert half.embeddings.dtype == np.dtype("<f2")
        assert np.array_equal(half.embeddings[:].view(np.uint16), stored.view(np.uint16))
        widened = half.read_rows()
        assert widened.dtype == np.float32 and np.array_equal(widened, stored.astype(np.float32))
        assert np.array_equal(half.read_rows(2, 5), widened[2:5])
        assert verify_checksums(half) == []
    assert attrs["embeddings_crc32"] == zlib.crc32(stored.tobytes())
    assert attrs["embeddings_sum64"] == sum64_from_bytes(stored)
    assert attrs["ids_sha256"] == hashlib.sha256("".join(f"{i}\n" for i in ids).encode()).hexdigest()
    assert np.abs(widened - rows).max() <= np.abs(rows).max() * 2**-11  # rounded to the nearest of 11 bits
    with h5py.File(tmp_path / "h.h5", "r+") as handle:
        value = handle["embeddings"][4, dim - 1]
        handle["embeddings"][4, dim - 1] = np.frombuffer((value.view(np.uint16) ^ np.uint16(1)).tobytes(), "<f2")[0]
    with open_embeddings(tmp_path / "h.h5") as half:
        assert verify_checksums(half) == ["its embeddings do not match their embeddings_sum64"]


def test_a_float32_file_sums_as_documented_from_its_bytes(tmp_path):
    rows = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    write_embeddings(tmp_path / "f.h5", [f"r{i}" for i in range(5)], rows)
    with open_embeddings(tmp_path / "f.h5") as single:
        assert single.attrs["embeddings_sum64"] == sum64_from_bytes(rows.astype("<f4"))
        assert single.read_rows().dtype == np.float32


def test_a_value_float16_cannot_hold_is_refused_and_nothing_is_written(tmp_path):
    rows = np.zeros((3, 4), dtype=np.float32)
    rows[2, 1] = 70000.0  # float16's largest is 65504
    with pytest.raises(InputError) as error:
        with EmbeddingWriter(tmp_path / "h.h5", 4, dtype="float16") as writer:
            writer.append(["a", "b"], rows[:2])
            writer.append(["c"], rows[2:])
    message = str(error.value)
    assert "row 2" in message and "column 1" in message and "merge.dtype: float32" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        EmbeddingWriter(tmp_path / "x.h5", 4, dtype="float64")


def test_the_row_reader_widens_a_float16_file_into_float32_columns(tmp_path):
    """RowReader's raw-offset path is float32 only: a float16 file goes through h5py, in any row order."""
    rows = np.random.default_rng(2).standard_normal((9, 5)).astype(np.float32)
    with EmbeddingWriter(tmp_path / "h.h5", 5, dtype="float16") as writer:
        writer.append([f"r{i}" for i in range(9)], rows)
    out = np.full((4, 8), -1, dtype=np.float32)
    with open_embeddings(tmp_path / "h.h5") as half, RowReader(half) as reader:
        assert reader.fd is None
        reader.read([7, 0, 8, 3], out, slice(2, 7))
    assert np.array_equal(out[:, 2:7], rows[[7, 0, 8, 3]].astype(np.float16).astype(np.float32))
    assert (out[:, :2] == -1).all() and (out[:, 7:] == -1).all()


def test_float16_row_sums_are_the_same_in_any_layout():
    rows = np.random.default_rng(4).standard_normal((6, 5)).astype(np.float16)
    wide = np.zeros((6, 9), dtype=np.float16)
    wide[:, 3:8] = rows  # starts at byte 6 of each row: not 8-byte aligned
    assert np.array_equal(row_sums64(wide[:, 3:8]), row_sums64(np.ascontiguousarray(rows)))
    whole, parts = RowsChecksum(), RowsChecksum()
    whole.add(np.arange(6), rows)
    parts.add([5, 0], wide[[5, 0], 3:8])
    parts.add([1, 2, 3, 4], wide[1:5, 3:8])
    assert whole.value() == parts.value() == sum64_from_bytes(rows.astype("<f2"))
