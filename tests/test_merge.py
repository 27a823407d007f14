"""The merge: VirNucPro's reference features reproduced exactly, and every way shards can be wrong."""

import hashlib
import json
import logging
import random
import zlib

import h5py
import numpy as np
import pytest
import torch

from helpers import write_embeddings
from virnucflow import __version__
from virnucflow.embeddings import EmbeddingWriter, open_embeddings, verify_checksums
from virnucflow.errors import InputError, ValidationError
from virnucflow.merge import merge_sample
from virnucflow.virnucpro_pt import export_virnucpro_pt
from virnucflow.workfiles import FRAMES_HEADER

DNA_DIM, PROTEIN_DIM = 4, 6


def write_frames(path, shards):
    """frames.tsv for {shard index: [ids]}, shards in the order given."""
    with open(path, "w") as handle:
        handle.write(FRAMES_HEADER)
        for index, ids in shards.items():
            for sid in ids:
                handle.write(f"{sid}\t{sid.split('_chunk_')[0]}\t1\t+\t1\t0\t3\t1\t{index}\n")


def write_shard(path, ids, rows, kind, **attrs):
    write_embeddings(path, ids, np.asarray(rows, dtype=np.float32),
                     {"model": f"{kind}-model", "model_revision": "r1", "kind": kind, **attrs})


def make_sample(folder, shards, seed=0, shuffle=False):
    """Shard files for {index: [ids]} (rows shuffled within each file if asked), frames.tsv naming the
    same ids; returns the dna and protein paths and {id: the row the merge must produce}."""
    rng = np.random.default_rng(seed)
    write_frames(folder / "frames.tsv", shards)
    dna, protein, truth = [], [], {}
    for index, ids in shards.items():
        d = rng.standard_normal((len(ids), DNA_DIM)).astype(np.float32)
        p = rng.standard_normal((len(ids), PROTEIN_DIM)).astype(np.float32)
        truth.update({sid: np.concatenate([d[i], p[i]]) for i, sid in enumerate(ids)})
        for kind, rows, paths in (("dna", d, dna), ("protein", p, protein)):
            order = list(range(len(ids)))
            if shuffle:
                random.Random(f"{index}{kind}").shuffle(order)
            path = folder / f"{index:05d}.{kind}.h5"
            write_shard(path, [ids[i] for i in order], rows[order], kind)
            paths.append(path)
    return dna, protein, truth


def merge(folder, dna, protein, **kwargs):
    options = {"buffer_rows": 3, "allow_missing": False, "chunk_length": 500, "compat": "virnucpro", **kwargs}
    return merge_sample(folder / "frames.tsv", dna, protein, folder / "out.h5",
                        validation_json=folder / "validation.json", missing_ids_txt=folder / "missing.txt", **options)


def read_result(folder):
    with open_embeddings(folder / "out.h5") as out:
        return out.read_ids(), out.embeddings[:], dict(out.attrs)


def no_outputs(folder):
    """Nothing a failed merge may leave: no result, no report, no temporary file."""
    names = ["out.h5", "validation.json", "missing.txt"]
    return not any((folder / name).exists() for name in names) and not list(folder.glob(".*.tmp.*"))


# --- the reference -------------------------------------------------------------------------------

def reference_features(folder):
    dnabert = torch.load(folder / "output_1_DNABERT_S.pt", weights_only=True)
    esm = torch.load(folder / "output_1_ESM.pt", weights_only=True)
    merged = torch.load(folder / "output_1_merged.pt", weights_only=True)
    dna_rows = np.stack([np.asarray(d["mean_representation"], dtype=np.float32) for d in dnabert["data"]])
    esm_rows = torch.stack(esm["data"]).numpy()
    return dnabert["nucleotide"], dna_rows, esm["proteins"], esm_rows, merged


@pytest.mark.parametrize("folder", ["with_orfs", "fixed_500bp"])
@pytest.mark.parametrize("layout", ["one shard, ESM length-sorted", "two shards, rows shuffled"])
def test_reference_merged_features_are_reproduced_exactly(tmp_path, reference_dir, folder, layout):
    ids, dna_rows, esm_ids, esm_rows, merged = reference_features(reference_dir / folder)
    dna_of, esm_of = dict(zip(ids, dna_rows)), dict(zip(esm_ids, esm_rows))
    if layout.startswith("one"):
        shards = {0: (ids, esm_ids)}  # the DNABERT-S order and the reference's length-sorted ESM order
    else:
        rng = random.Random(7)
        shards = {0: ids[:2], 1: ids[2:]}
        shards = {i: (rng.sample(own, len(own)), rng.sample(own, len(own))) for i, own in shards.items()}
    write_frames(tmp_path / "frames.tsv", {i: [s for s in ids if s in dna_ids] for i, (dna_ids, _) in shards.items()})
    dna, protein = [], []
    for index, (dna_ids, protein_ids) in shards.items():
        dna.append(tmp_path / f"{index:05d}.dna.h5")
        protein.append(tmp_path / f"{index:05d}.protein.h5")
        write_shard(dna[-1], dna_ids, [dna_of[s] for s in dna_ids], "dna", model="zhihan1996/DNABERT-S")
        write_shard(protein[-1], protein_ids, [esm_of[s] for s in protein_ids], "protein", model="esm2_t36_3B_UR50D")

    report = merge(tmp_path, dna, protein, buffer_rows=3, compat="virnucpro", chunk_length=500)

    out_ids, rows, attrs = read_result(tmp_path)
    assert out_ids == merged["ids"]
    assert torch.equal(torch.from_numpy(rows), merged["data"])
    assert list(attrs["dna_columns"]) == [0, 768] and list(attrs["protein_columns"]) == [768, 3328]
    assert attrs["dna_model"] == "zhihan1996/DNABERT-S" and attrs["protein_model"] == "esm2_t36_3B_UR50D"
    assert attrs["compat"] == "virnucpro" and attrs["chunk_length"] == 500
    assert attrs["package_version"] == __version__ and attrs["rows"] == 4
    assert report["ok"] and report["expected"] == report["present"] == 4
    export_virnucpro_pt(tmp_path / "out.h5", tmp_path / "merged.pt")
    exported = torch.load(tmp_path / "merged.pt", weights_only=True)
    assert exported["ids"] == merged["ids"] and torch.equal(exported["data"], merged["data"])


# --- what a good merge gives ---------------------------------------------------------------------

def test_rows_follow_frames_tsv_whatever_the_order_in_the_shards(tmp_path):
    shards = {0: [f"r{i}_chunk_1F1" for i in range(7)], 1: [], 2: [f"r{i}_chunk_1R2" for i in range(7, 12)],
              3: ["r12_chunk_1F3"]}
    dna, protein, truth = make_sample(tmp_path, shards, shuffle=True)
    report = merge(tmp_path, dna, protein, buffer_rows=4)  # blocks that span shards
    ids, rows, attrs = read_result(tmp_path)
    assert ids == shards[0] + shards[2] + shards[3]
    assert np.array_equal(rows, np.stack([truth[s] for s in ids]))
    assert report["ok"] and report["present"] == report["expected"] == 13
    assert report["missing"] == report["extra"] == report["skipped"] == 0 and "duplicates" not in report
    assert (tmp_path / "missing.txt").read_text() == ""  # always written: a Snakemake output
    assert json.loads((tmp_path / "validation.json").read_text()) == json.loads(json.dumps(report))


def test_checksums_in_the_result_verify_its_ids_and_rows(tmp_path):
    dna, protein, _ = make_sample(tmp_path, {0: ["a_chunk_1F1", "b_chunk_1F1"], 1: ["é_chunk_1R1"]})
    merge(tmp_path, dna, protein, buffer_rows=2)
    ids, rows, attrs = read_result(tmp_path)
    assert attrs["ids_sha256"] == hashlib.sha256("".join(f"{s}\n" for s in ids).encode()).hexdigest()
    assert attrs["embeddings_crc32"] == zlib.crc32(rows.astype("<f4").tobytes())
    assert attrs["expected"] == 3 and attrs["missing"] == 0
    with open_embeddings(tmp_path / "out.h5") as result:  # embeddings_sum64 (from the shards' row sums) too
        assert verify_checksums(result) == []


def test_rows_split_after_running_out_of_memory_are_counted_in_the_result(tmp_path, caplog):
    """README "Resuming": the shards' oom_split_rows add up in the result's attributes, with a warning."""
    shards = {0: ["a_chunk_1F1", "b_chunk_1F1"], 1: ["c_chunk_1R1"]}
    dna, protein, _ = make_sample(tmp_path, shards)
    with h5py.File(dna[0], "a") as shard:  # as an embed job that split a batch records it
        shard.attrs["oom_split_rows"] = 2
    with h5py.File(protein[1], "a") as shard:
        shard.attrs["oom_split_rows"] = 1
    with caplog.at_level(logging.WARNING):
        merge(tmp_path, dna, protein)
    attrs = read_result(tmp_path)[2]
    assert (attrs["dna_oom_split_rows"], attrs["protein_oom_split_rows"]) == (2, 1)
    assert "2 dna rows were computed in smaller batches after running out of memory" in caplog.text


def test_a_dna_block_of_odd_width_gives_a_verifiable_result(tmp_path):
    ids = ["a_chunk_1F1", "b_chunk_1F1", "c_chunk_1F1"]
    write_frames(tmp_path / "frames.tsv", {0: ids})
    rng = np.random.default_rng(5)
    write_shard(tmp_path / "d.h5", ids, rng.standard_normal((3, 3)), "dna")
    write_shard(tmp_path / "p.h5", ids[::-1], rng.standard_normal((3, 5)), "protein")
    merge(tmp_path, [tmp_path / "d.h5"], [tmp_path / "p.h5"], buffer_rows=2)
    with open_embeddings(tmp_path / "out.h5") as result:
        assert result.dim == 8 and verify_checksums(result) == []


def test_a_float16_result_holds_the_rounded_rows_and_checksums_of_its_bytes(tmp_path):
    """merge.dtype: float16: the shards' rows, each value rounded to float16, in frames.tsv order; the result's
    checksums (and validation.json's crc) describe its bytes; the dtype is recorded."""
    shards = {0: [f"r{i}_chunk_1F1" for i in range(5)], 1: [f"s{i}_chunk_1R2" for i in range(4)]}
    dna, protein, truth = make_sample(tmp_path, shards, shuffle=True)
    report = merge(tmp_path, dna, protein, dtype="float16")
    ids, rows, attrs = read_result(tmp_path)
    expected = np.stack([truth[sid] for sid in ids]).astype("<f2")
    assert ids == shards[0] + shards[1] and rows.dtype == np.dtype("<f2")
    assert np.array_equal(rows.view(np.uint16), expected.view(np.uint16))
    assert attrs["dtype"] == "float16" and attrs["rows"] == 9
    assert attrs["embeddings_crc32"] == zlib.crc32(expected.tobytes()) == report["embeddings_crc32"]
    assert json.loads((tmp_path / "validation.json").read_text())["embeddings_crc32"] == zlib.crc32(expected.tobytes())
    with open_embeddings(tmp_path / "out.h5") as result:
        assert verify_checksums(result) == []
        assert np.array_equal(result.read_rows(), expected.astype(np.float32))
    export_virnucpro_pt(tmp_path / "out.h5", tmp_path / "merged.pt")  # VirNucPro's format: float32 rows
    exported = torch.load(tmp_path / "merged.pt", weights_only=True)
    assert exported["data"].dtype == torch.float32 and torch.equal(exported["data"], torch.from_numpy(expected).float())
    merge(tmp_path, dna, protein)  # the default: float32, the shards' values exactly
    ids, rows, attrs = read_result(tmp_path)
    assert attrs["dtype"] == "float32" and np.array_equal(rows, np.stack([truth[sid] for sid in ids]))


def test_a_float16_merge_of_an_odd_width_verifies(tmp_path):
    ids = ["a_chunk_1F1", "b_chunk_1F1", "c_chunk_1F1"]
    write_frames(tmp_path / "frames.tsv", {0: ids})
    rng = np.random.default_rng(6)
    write_shard(tmp_path / "d.h5", ids, rng.standard_normal((3, 3)), "dna")
    write_shard(tmp_path / "p.h5", ids[::-1], rng.standard_normal((3, 4)), "protein")
    merge(tmp_path, [tmp_path / "d.h5"], [tmp_path / "p.h5"], buffer_rows=2, dtype="float16")
    with open_embeddings(tmp_path / "out.h5") as result:
        assert result.dim == 7 and result.embeddings.dtype == np.float16 and verify_checksums(result) == []


def test_a_value_beyond_float16_fails_the_merge_and_leaves_nothing(tmp_path):
    ids = ["a_chunk_1F1", "b_chunk_1F1"]
    write_frames(tmp_path / "frames.tsv", {0: ids})
    write_shard(tmp_path / "d.h5", ids, [[1, 2, 3, 4], [5, 6, 7, 8]], "dna")
    write_shard(tmp_path / "p.h5", ids, [[0, 0, 0, 0, 0, 0], [0, 1e5, 0, 0, 0, 0]], "protein")
    with pytest.raises(InputError, match=r"row 1 holds 100000 in column 5, beyond float16's range .*merge.dtype: "
                                         r"float32"):
        merge(tmp_path, [tmp_path / "d.h5"], [tmp_path / "p.h5"], dtype="float16")
    assert no_outputs(tmp_path)


def test_empty_shards_including_an_idle_workers_0_by_0_file(tmp_path):
    shards = {0: [], 1: ["a_chunk_1F1", "b_chunk_1F1"], 2: []}
    dna, protein, truth = make_sample(tmp_path, shards)
    # (0, 0), not (0, D): what a worker that got no work wrote in the tool this replaces
    with h5py.File(tmp_path / "00002.protein.h5", "w") as handle:
        handle.create_dataset("sequence_ids", shape=(0,), dtype=h5py.string_dtype())
        handle.create_dataset("embeddings", shape=(0, 0), dtype="float32")
        handle.attrs["complete"] = True
    report = merge(tmp_path, dna, protein)
    ids, rows, attrs = read_result(tmp_path)
    assert ids == shards[1] and rows.shape == (2, DNA_DIM + PROTEIN_DIM)
    assert report["ok"]


def test_a_sample_without_frames_gives_an_empty_result_of_the_right_width(tmp_path):
    dna, protein, _ = make_sample(tmp_path, {0: []})
    report = merge(tmp_path, dna, protein)
    ids, rows, _ = read_result(tmp_path)
    assert ids == [] and rows.shape == (0, DNA_DIM + PROTEIN_DIM)
    assert report["ok"] and report["expected"] == 0


def test_shards_stored_another_way_merge_the_same(tmp_path):
    """A compressed, chunked-otherwise file (another tool's) is read through h5py instead of raw offsets."""
    shards = {0: [f"r{i}_chunk_1F1" for i in range(9)]}
    dna, protein, truth = make_sample(tmp_path, shards, shuffle=True)
    with open_embeddings(protein[0]) as shard:
        ids, rows = shard.read_ids(), shard.embeddings[:]
    with h5py.File(protein[0], "w") as handle:
        handle.create_dataset("sequence_ids", data=ids, dtype=h5py.string_dtype())
        handle.create_dataset("embeddings", data=rows, chunks=(2, 3), compression="gzip")
        handle.attrs.update({"model": "protein-model", "model_revision": "r1", "complete": True})
    merge(tmp_path, dna, protein)
    out_ids, out_rows, _ = read_result(tmp_path)
    assert out_ids == shards[0] and np.array_equal(out_rows, np.stack([truth[s] for s in out_ids]))


# --- what must fail, naming what to fix ----------------------------------------------------------

def test_missing_ids_fail_with_count_and_first_ten(tmp_path):
    shards = {0: [f"r{i}_chunk_1F1" for i in range(15)], 1: ["s_chunk_1F1"]}
    dna, protein, _ = make_sample(tmp_path, shards)
    lost = [f"lost{i}_chunk_1F1" for i in range(12)]
    write_frames(tmp_path / "frames.tsv", {0: shards[0] + lost, 1: shards[1]})
    with pytest.raises(ValidationError, match=r"^12 of 28 expected ids have no embedding, first 10: "
                       r"lost0_chunk_1F1, .*lost9_chunk_1F1; rerun the embed jobs of shard\(s\) 00000") as error:
        merge(tmp_path, dna, protein)
    assert "lost10" not in str(error.value) and "\n" not in str(error.value)
    assert no_outputs(tmp_path)


def test_allow_missing_merges_what_exists_and_lists_the_rest(tmp_path, caplog):
    shards = {0: [f"r{i}_chunk_1F1" for i in range(5)], 1: ["s_chunk_1F1"]}
    dna, protein, truth = make_sample(tmp_path, shards)
    expected = {0: shards[0][:2] + ["gone_chunk_1F1"] + shards[0][2:], 1: shards[1], 2: ["noshard_chunk_1R1"]}
    write_frames(tmp_path / "frames.tsv", expected)  # shard 2 has no files at all
    with caplog.at_level(logging.INFO):
        report = merge(tmp_path, dna, protein, allow_missing=True)
    assert (tmp_path / "missing.txt").read_text() == "gone_chunk_1F1\nnoshard_chunk_1R1\n"
    assert report["missing"] == 2 and report["present"] == 6 and report["expected"] == 8
    assert report["allow_missing"] and not report["ok"]
    ids, rows, attrs = read_result(tmp_path)
    assert ids == shards[0] + shards[1]  # expected order, the missing rows left out
    assert np.array_equal(rows, np.stack([truth[s] for s in ids]))
    assert attrs["missing"] == 2
    assert "2 expected ids have no embedding" in caplog.text and "missing.txt" in caplog.text


def test_an_id_twice_in_one_shard_is_named_with_its_file(tmp_path):
    shards = {0: [f"r{i}_chunk_1F1" for i in range(8)], 1: ["a_chunk_1F1", "b_chunk_1F1"]}
    dna, protein, _ = make_sample(tmp_path, shards)
    write_shard(tmp_path / "00001.dna.h5", ["a_chunk_1F1", "b_chunk_1F1", "a_chunk_1F1"], np.zeros((3, 4)), "dna")
    with pytest.raises(ValidationError, match=r"00001.dna.h5: id a_chunk_1F1 occurs twice in this shard"):
        merge(tmp_path, dna, protein)  # found after the rows of shard 0 were written
    assert no_outputs(tmp_path)


@pytest.mark.parametrize("stray", ["a_chunk_1F1", "unexpected_chunk_1F1"])
def test_an_id_in_two_shards_is_named_with_both_files(tmp_path, stray):
    shards = {0: ["a_chunk_1F1", "b_chunk_1F1"], 1: ["c_chunk_1F1"], 2: ["d_chunk_1F1"]}
    dna, protein, _ = make_sample(tmp_path, shards)
    for index in (1, 2) if stray.startswith("unexpected") else (1,):
        own = shards[index] + [stray]
        write_shard(tmp_path / f"{index:05d}.dna.h5", own, np.zeros((2, DNA_DIM)), "dna")
        write_shard(tmp_path / f"{index:05d}.protein.h5", own, np.zeros((2, PROTEIN_DIM)), "protein")
    first = "00000" if stray == "a_chunk_1F1" else "00001"
    second = "00001" if stray == "a_chunk_1F1" else "00002"
    with pytest.raises(ValidationError, match=f"id {stray} occurs in two shards: .*{first}.dna.h5 and "
                                              f".*{second}.dna.h5"):
        merge(tmp_path, dna, protein)
    assert no_outputs(tmp_path)


def test_an_id_in_the_wrong_shard_is_an_error_not_a_silent_row(tmp_path):
    dna, protein, _ = make_sample(tmp_path, {0: ["a_chunk_1F1"], 1: ["b_chunk_1F1"]})
    write_frames(tmp_path / "frames.tsv", {0: ["a_chunk_1F1", "b_chunk_1F1"], 1: []})
    with pytest.raises(ValidationError, match="id b_chunk_1F1 is in .*00001.dna.h5 but frames.tsv puts it in shard 0"):
        merge(tmp_path, dna, protein)
    assert no_outputs(tmp_path)


def test_ids_outside_their_shard_are_placed_however_many_there_are(tmp_path, monkeypatch):
    """Stray ids are checked against frames.tsv in batches, so that memory stays bounded."""
    import virnucflow.validation

    monkeypatch.setattr(virnucflow.validation, "STRAY_BATCH", 2)
    shards = {i: [f"r{i}_chunk_1F1", f"x{i}a_chunk_1F1", f"x{i}b_chunk_1F1"] for i in range(4)}
    dna, protein, _ = make_sample(tmp_path, shards)
    write_frames(tmp_path / "frames.tsv", {i: own[:1] for i, own in shards.items()})
    report = merge(tmp_path, dna, protein)
    assert report["extra"] == 8 and report["present"] == 4 and report["ok"]
    write_frames(tmp_path / "frames.tsv", {0: ["r0_chunk_1F1"], 1: ["r1_chunk_1F1"], 2: ["r2_chunk_1F1"],
                                           3: ["r3_chunk_1F1", "x0a_chunk_1F1"]})
    with pytest.raises(ValidationError, match="id x0a_chunk_1F1 is in .*00000.dna.h5 but frames.tsv puts it in shard 3"
                       ):
        merge(tmp_path, dna, protein)


def test_models_disagreeing_on_ids_name_both_files(tmp_path):
    dna, protein, _ = make_sample(tmp_path, {0: ["a_chunk_1F1", "b_chunk_1F1"]})
    write_shard(tmp_path / "00000.protein.h5", ["a_chunk_1F1", "x_chunk_1F1"], np.zeros((2, 6)), "protein")
    with pytest.raises(ValidationError, match=r"00000.dna.h5 and .*00000.protein.h5 hold different ids "
                                              r"\(e.g. b_chunk_1F1, x_chunk_1F1\); rerun both embed jobs"):
        merge(tmp_path, dna, protein)
    assert no_outputs(tmp_path)


def test_extra_ids_only_warn_and_are_counted(tmp_path, caplog):
    dna, protein, truth = make_sample(tmp_path, {0: ["a_chunk_1F1", "extra_chunk_1F1", "b_chunk_1F1"]})
    write_frames(tmp_path / "frames.tsv", {0: ["a_chunk_1F1", "b_chunk_1F1"]})
    report = merge(tmp_path, dna, protein)
    assert report["ok"] and report["extra"] == 1 and report["extra_first"] == ["extra_chunk_1F1"]
    assert "1 ids in the shards are not in frames.tsv" in caplog.text
    assert read_result(tmp_path)[0] == ["a_chunk_1F1", "b_chunk_1F1"]


def test_dim_mismatch_names_the_file(tmp_path):
    dna, protein, _ = make_sample(tmp_path, {0: ["a_chunk_1F1"], 1: ["b_chunk_1F1"]})
    write_shard(tmp_path / "00001.dna.h5", ["b_chunk_1F1"], np.zeros((1, 5)), "dna")
    with pytest.raises(ValidationError, match=r"00001.dna.h5: embeddings have 5 columns where .*00000.dna.h5 has 4"):
        merge(tmp_path, dna, protein)
    assert no_outputs(tmp_path)


def test_shards_of_another_model_are_refused(tmp_path):
    dna, protein, _ = make_sample(tmp_path, {0: ["a_chunk_1F1"], 1: ["b_chunk_1F1"]})
    write_shard(tmp_path / "00001.protein.h5", ["b_chunk_1F1"], np.zeros((1, 6)), "protein", model_revision="r2")
    with pytest.raises(ValidationError, match=r"00001.protein.h5: model_revision 'r2' but .*00000.protein.h5 has 'r1'"):
        merge(tmp_path, dna, protein)


@pytest.mark.parametrize("cut", [0.3, 0.9])
def test_a_truncated_shard_names_the_file_and_what_to_rerun(tmp_path, cut):
    dna, protein, _ = make_sample(tmp_path, {0: ["a_chunk_1F1"], 1: [f"b{i}_chunk_1F1" for i in range(50)]})
    data = (tmp_path / "00001.protein.h5").read_bytes()
    (tmp_path / "00001.protein.h5").write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(InputError, match=r"00001.protein.h5: .*rerun the job that writes it"):
        merge(tmp_path, dna, protein)
    assert no_outputs(tmp_path)


def test_a_shard_without_its_partner_is_named(tmp_path):
    dna, protein, _ = make_sample(tmp_path, {0: ["a_chunk_1F1"], 1: ["b_chunk_1F1"]})
    with pytest.raises(InputError, match=r"00001.dna.h5: shard 1 has no protein file"):
        merge(tmp_path, dna, protein[:1])


def test_ids_skipped_by_an_embed_job_are_reported_with_reasons(tmp_path):
    shards = {0: ["a_chunk_1F1", "b_chunk_1F1", "c_chunk_1F1"]}
    dna, protein, truth = make_sample(tmp_path, shards)
    with EmbeddingWriter(tmp_path / "00000.protein.h5", PROTEIN_DIM, {"kind": "protein"}) as writer:
        writer.append(["a_chunk_1F1", "c_chunk_1F1"], np.stack([truth["a_chunk_1F1"][4:], truth["c_chunk_1F1"][4:]]))
        writer.skip("b_chunk_1F1", "out of memory alone (9000 tokens)")
    report = merge(tmp_path, dna, protein)
    assert report["skipped"] == 1 and report["missing"] == 0 and not report["ok"]
    assert report["skipped_ids"] == [{"id": "b_chunk_1F1", "model": "protein", "shard": str(protein[0]),
                                      "reason": "out of memory alone (9000 tokens)"}]
    ids, rows, _ = read_result(tmp_path)
    assert ids == ["a_chunk_1F1", "c_chunk_1F1"]
    assert np.array_equal(rows, np.stack([truth[s] for s in ids]))
    assert json.loads((tmp_path / "validation.json").read_text())["skipped_ids"][0]["id"] == "b_chunk_1F1"


# --- provenance: stale and damaged shards ---------------------------------------------------------

def write_fasta_of(path, ids, seed):
    rng = np.random.default_rng(seed)
    path.write_text("".join(f">{sid}\n{''.join(rng.choice(list('ACGT'), 30))}\n" for sid in ids))
    return path


def sample_with_fasta(folder):
    """Two shards whose files record the sha256 of their shard FASTA, as the embed jobs write them."""
    shards = {0: [f"r{i}_chunk_1F1" for i in range(5)], 1: [f"s{i}_chunk_1R1" for i in range(4)]}
    dna, protein, truth = make_sample(folder, shards)
    fastas = {"dna": [], "protein": []}
    for index, ids in shards.items():
        for kind, ext, path in (("dna", "fna", dna[index]), ("protein", "faa", protein[index])):
            fasta = write_fasta_of(folder / f"{index:05d}.{ext}", ids, seed=index)
            with open_embeddings(path) as shard:
                rows = shard.embeddings[:]
            write_shard(path, ids, rows, kind, input_sha256=hashlib.sha256(fasta.read_bytes()).hexdigest())
            fastas[kind].append(fasta)
    return dna, protein, truth, fastas


def test_shards_matching_their_fasta_merge(tmp_path):
    dna, protein, truth, fastas = sample_with_fasta(tmp_path)
    report = merge(tmp_path, dna, protein, dna_fasta=fastas["dna"], protein_fasta=fastas["protein"])
    ids, rows, _ = read_result(tmp_path)
    assert report["ok"] and np.array_equal(rows, np.stack([truth[s] for s in ids]))


def test_a_shard_left_from_an_earlier_run_of_other_sequences_is_named(tmp_path):
    """Same ids, other sequences: prepare was rerun on another input and an old shard file stayed."""
    dna, protein, _, fastas = sample_with_fasta(tmp_path)
    old = hashlib.sha256(fastas["dna"][1].read_bytes()).hexdigest()
    write_fasta_of(fastas["dna"][1], [f"s{i}_chunk_1R1" for i in range(4)], seed=99)  # the new shard FASTA
    new = hashlib.sha256(fastas["dna"][1].read_bytes()).hexdigest()
    with pytest.raises(ValidationError) as error:
        merge(tmp_path, dna, protein, dna_fasta=fastas["dna"], protein_fasta=fastas["protein"])
    assert str(error.value) == (f"{dna[1]} was computed from another {fastas['dna'][1]} (sha256 {old[:12]}.. != "
                                f"{new[:12]}.. now): delete it and rerun")
    assert no_outputs(tmp_path)


def test_a_shard_without_a_record_of_its_fasta_is_refused_when_fasta_are_given(tmp_path):
    dna, protein, _, fastas = sample_with_fasta(tmp_path)
    write_shard(protein[0], [f"r{i}_chunk_1F1" for i in range(5)], np.zeros((5, PROTEIN_DIM)), "protein")
    with pytest.raises(ValidationError, match=r"00000.protein.h5 does not record the sha256 of the FASTA it was "
                                              r"computed from .*: delete it and rerun"):
        merge(tmp_path, dna, protein, dna_fasta=fastas["dna"], protein_fasta=fastas["protein"])


def test_ids_swapped_between_two_rows_are_named(tmp_path):
    dna, protein, _ = make_sample(tmp_path, {0: ["a_chunk_1F1", "b_chunk_1F1", "c_chunk_1F1"]})
    with h5py.File(protein[0], "r+") as handle:
        ids = handle["sequence_ids"][()]
        handle["sequence_ids"][0], handle["sequence_ids"][2] = ids[2], ids[0]
    with pytest.raises(ValidationError, match=r"^\S*00000.protein.h5: its sequence_ids do not match the ids_sha256 "
                                              r"written with them \(\w+\.\. != \w+\.\.\): the file was changed after "
                                              r"its embed job wrote it; delete it and rerun$"):
        merge(tmp_path, dna, protein)
    assert no_outputs(tmp_path)


def flip_a_byte(path, row, column):
    """One bit of one float of a finished file's embeddings, changed on disk."""
    with h5py.File(path, "r") as handle:
        dataset = handle["embeddings"]
        chunk_rows = dataset.chunks[0]
        info = dataset.id.get_chunk_info(row // chunk_rows)
        offset = info.byte_offset + ((row % chunk_rows) * dataset.shape[1] + column) * 4 + 1
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x04]))


@pytest.mark.parametrize("extra", [False, True])
def test_one_flipped_byte_in_a_finished_shard_is_named(tmp_path, extra):
    """Found in a row the result holds, and in a row it does not need (an id frames.tsv does not list)."""
    shards = {0: ["a_chunk_1F1", "b_chunk_1F1"], 1: [f"c{i}_chunk_1F1" for i in range(6)]}
    dna, protein, _ = make_sample(tmp_path, shards, shuffle=True)
    if extra:
        write_frames(tmp_path / "frames.tsv", {0: shards[0], 1: shards[1][1:]})
        with open_embeddings(dna[1]) as shard:
            row = shard.read_ids().index("c0_chunk_1F1")
    else:
        row = 3
    flip_a_byte(dna[1], row, 2)
    with pytest.raises(ValidationError) as error:
        merge(tmp_path, dna, protein, buffer_rows=4)
    assert str(error.value) == (f"{dna[1]}: its embeddings do not match the embeddings_sum64 written with them: the "
                                "file was damaged after its embed job wrote it; delete it and rerun")
    assert no_outputs(tmp_path)


def test_rows_moved_within_a_shard_are_found():
    from virnucflow.checksums import RowsChecksum

    rows = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    whole, moved = RowsChecksum(), RowsChecksum()
    whole.add(np.arange(5), rows)
    moved.add(np.arange(5), rows[[1, 0, 2, 3, 4]])
    assert whole.value() != moved.value()
    in_parts = RowsChecksum()  # any order, in parts: the same value
    in_parts.add([4, 0], rows[[4, 0]])
    in_parts.add([2, 1, 3], rows[[2, 1, 3]])
    assert in_parts.value() == whole.value()


def test_shards_without_checksums_merge_with_a_warning(tmp_path, caplog):
    """Another tool's files (no checksums) are merged when no FASTA is given, and said to be unverified."""
    shards = {0: ["a_chunk_1F1", "b_chunk_1F1"]}
    dna, protein, truth = make_sample(tmp_path, shards)
    with h5py.File(protein[0], "w") as handle:
        handle.create_dataset("sequence_ids", data=shards[0], dtype=h5py.string_dtype())
        handle.create_dataset("embeddings", data=np.stack([truth[s][DNA_DIM:] for s in shards[0]]))
        handle.attrs["complete"] = True
    report = merge(tmp_path, dna, protein)
    assert report["ok"] and "1 shard files have no checksums" in caplog.text
