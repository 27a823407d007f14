"""The merge: VirNucPro's reference features reproduced exactly, and every way shards can be wrong."""

import json
import random

import numpy as np
import pytest
import torch

from virnucflow.errors import InputError, ValidationError
from virnucflow.merge import merge_sample
from virnucflow.prepare import FRAMES_HEADER
from virnucflow.shards import EmbeddingWriter, open_embeddings, write_embeddings


def write_frames(path, shards):
    """frames.tsv for {shard index: [ids]}."""
    with open(path, "w") as handle:
        handle.write(FRAMES_HEADER)
        for index, ids in shards.items():
            for sid in ids:
                handle.write(f"{sid}\t{sid.split('_chunk_')[0]}\t1\t+\t1\t0\t3\t1\t{index}\n")


def make_sample(tmp_path, shards, dna_dim=4, protein_dim=6, seed=0, shuffle=False):
    """Shard files for {index: [ids]}, the protein rows shuffled if asked; returns inputs and truth."""
    rng = np.random.default_rng(seed)
    write_frames(tmp_path / "frames.tsv", shards)
    dna, protein, truth = [], [], {}
    for index, ids in shards.items():
        d = rng.standard_normal((len(ids), dna_dim)).astype(np.float32)
        p = rng.standard_normal((len(ids), protein_dim)).astype(np.float32)
        truth.update({sid: np.concatenate([d[i], p[i]]) for i, sid in enumerate(ids)})
        order = list(range(len(ids)))
        if shuffle:
            random.Random(index).shuffle(order)
        write_embeddings(tmp_path / f"{index:05d}.dna.h5", ids, d, {"model": "dna-model"})
        write_embeddings(tmp_path / f"{index:05d}.protein.h5", [ids[i] for i in order], p[order], {"model": "esm"})
        dna.append(tmp_path / f"{index:05d}.dna.h5")
        protein.append(tmp_path / f"{index:05d}.protein.h5")
    return dna, protein, truth


def merge(tmp_path, dna, protein, **kwargs):
    return merge_sample(tmp_path / "frames.tsv", dna, protein, tmp_path / "out.h5",
                        validation_json=tmp_path / "validation.json", missing_ids_txt=tmp_path / "missing.txt",
                        **{"chunk_rows": 3, **kwargs})


def no_outputs(tmp_path):
    return not any((tmp_path / name).exists() for name in ["out.h5", "validation.json", "missing.txt"])


def test_reference_merged_features_are_reproduced_exactly(tmp_path, reference_dir):
    for folder in ["with_orfs", "fixed_500bp"]:
        work = tmp_path / folder
        work.mkdir()
        dnabert = torch.load(reference_dir / folder / "output_1_DNABERT_S.pt", weights_only=True)
        esm = torch.load(reference_dir / folder / "output_1_ESM.pt", weights_only=True)
        merged = torch.load(reference_dir / folder / "output_1_merged.pt", weights_only=True)
        ids = dnabert["nucleotide"]
        dna_rows = np.stack([np.asarray(d["mean_representation"], dtype=np.float32) for d in dnabert["data"]])
        esm_rows = torch.stack(esm["data"]).numpy()
        write_frames(work / "frames.tsv", {0: ids[:1], 1: ids[1:]})
        # DNABERT-S in frame order; ESM in the reference's length-sorted order, split across two shards.
        write_embeddings(work / "00000.dna.h5", ids[:1], dna_rows[:1])
        write_embeddings(work / "00001.dna.h5", ids[1:], dna_rows[1:])
        esm_index = {sid: i for i, sid in enumerate(esm["proteins"])}
        for shard, shard_ids in ((0, ids[:1]), (1, ids[1:])):
            own = [sid for sid in esm["proteins"] if sid in shard_ids]
            write_embeddings(work / f"{shard:05d}.protein.h5", own, esm_rows[[esm_index[s] for s in own]])
        merge_sample(work / "frames.tsv", [work / "00000.dna.h5", work / "00001.dna.h5"],
                     [work / "00000.protein.h5", work / "00001.protein.h5"], work / "out.h5",
                     validation_json=work / "v.json", missing_ids_txt=work / "m.txt", chunk_rows=2)
        with open_embeddings(work / "out.h5") as out:
            assert out.read_ids() == merged["ids"]
            assert torch.equal(torch.from_numpy(out.embeddings[:]), merged["data"])
            assert list(out.attrs["dna_columns"]) == [0, 768] and list(out.attrs["protein_columns"]) == [768, 3328]


def test_rows_follow_frames_tsv_whatever_the_shard_order(tmp_path):
    shards = {0: [f"r{i}_chunk_1F1" for i in range(7)], 1: [], 2: [f"r{i}_chunk_1R2" for i in range(7, 12)]}
    dna, protein, truth = make_sample(tmp_path, shards, shuffle=True)
    report = merge(tmp_path, dna, protein)
    with open_embeddings(tmp_path / "out.h5") as out:
        ids = out.read_ids()
        assert ids == shards[0] + shards[2]
        assert np.array_equal(out.embeddings[:], np.stack([truth[s] for s in ids]))
    assert report["ok"] and report["present"] == report["expected"] == 12
    assert (tmp_path / "missing.txt").read_text() == ""


def test_missing_ids_fail_with_count_and_first_ten(tmp_path):
    shards = {0: [f"r{i}_chunk_1F1" for i in range(15)]}
    dna, protein, _ = make_sample(tmp_path, shards)
    write_frames(tmp_path / "frames.tsv", {0: shards[0] + [f"lost{i}_chunk_1F1" for i in range(12)]})
    with pytest.raises(ValidationError, match=r"12 of 27 expected ids have no embedding, first 10: lost0_chunk_1F1"):
        merge(tmp_path, dna, protein)
    assert no_outputs(tmp_path)


def test_allow_missing_merges_what_exists_and_lists_the_rest(tmp_path):
    shards = {0: [f"r{i}_chunk_1F1" for i in range(5)]}
    dna, protein, truth = make_sample(tmp_path, shards)
    write_frames(tmp_path / "frames.tsv", {0: shards[0][:2] + ["gone_chunk_1F1"] + shards[0][2:]})
    report = merge(tmp_path, dna, protein, allow_missing=True)
    assert report["missing"] == 1 and not report["ok"]
    assert (tmp_path / "missing.txt").read_text() == "gone_chunk_1F1\n"
    with open_embeddings(tmp_path / "out.h5") as out:
        assert out.read_ids() == shards[0]


def test_duplicates_within_and_across_shards_are_named(tmp_path):
    shards = {0: ["a_chunk_1F1", "b_chunk_1F1"], 1: ["c_chunk_1F1"]}
    dna, protein, _ = make_sample(tmp_path, shards)
    write_embeddings(tmp_path / "00000.dna.h5", ["a_chunk_1F1", "a_chunk_1F1"], np.zeros((2, 4)))
    with pytest.raises(ValidationError, match="00000.dna.h5: id a_chunk_1F1 occurs twice"):
        merge(tmp_path, dna, protein)
    dna, protein, _ = make_sample(tmp_path, shards)
    for kind, dim in (("dna", 4), ("protein", 6)):
        write_embeddings(tmp_path / f"00001.{kind}.h5", ["c_chunk_1F1", "a_chunk_1F1"], np.zeros((2, dim)))
    with pytest.raises(ValidationError, match="id a_chunk_1F1 occurs in two shards: .*00000.dna.h5 and .*00001.dna.h5"):
        merge(tmp_path, dna, protein)
    assert no_outputs(tmp_path)


def test_models_disagreeing_on_ids_name_the_shard(tmp_path):
    dna, protein, _ = make_sample(tmp_path, {0: ["a_chunk_1F1", "b_chunk_1F1"]})
    write_embeddings(tmp_path / "00000.protein.h5", ["a_chunk_1F1", "x_chunk_1F1"], np.zeros((2, 6)))
    with pytest.raises(ValidationError, match="00000.dna.h5 and .*00000.protein.h5 hold different ids"):
        merge(tmp_path, dna, protein)


def test_extra_ids_only_warn(tmp_path, caplog):
    dna, protein, _ = make_sample(tmp_path, {0: ["a_chunk_1F1", "b_chunk_1F1", "extra_chunk_1F1"]})
    write_frames(tmp_path / "frames.tsv", {0: ["a_chunk_1F1", "b_chunk_1F1"]})
    import logging

    report = merge(tmp_path, dna, protein, log=logging.getLogger("t"))
    assert report["extra"] == 1 and report["ok"]
    assert "not in frames.tsv" in caplog.text


def test_dim_mismatch_and_broken_shards_name_the_file(tmp_path):
    shards = {0: ["a_chunk_1F1"], 1: ["b_chunk_1F1"]}
    dna, protein, _ = make_sample(tmp_path, shards)
    write_embeddings(tmp_path / "00001.dna.h5", ["b_chunk_1F1"], np.zeros((1, 5)))
    with pytest.raises(ValidationError, match="00001.dna.h5: embeddings have 5 columns"):
        merge(tmp_path, dna, protein)
    dna, protein, _ = make_sample(tmp_path, shards)
    data = (tmp_path / "00001.protein.h5").read_bytes()
    (tmp_path / "00001.protein.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="00001.protein.h5.*rerun"):
        merge(tmp_path, dna, protein)
    assert no_outputs(tmp_path)


def test_empty_shards_and_skipped_ids(tmp_path):
    shards = {0: [], 1: ["a_chunk_1F1", "b_chunk_1F1"]}
    dna, protein, _ = make_sample(tmp_path, shards)
    with EmbeddingWriter(tmp_path / "00001.protein.h5", 6) as writer:  # ESM could not embed b alone
        writer.append(["a_chunk_1F1"], np.ones((1, 6)))
        writer.skip("b_chunk_1F1", "out of memory alone (9000 tokens)")
    report = merge(tmp_path, dna, protein)
    assert report["skipped"] == 1 and report["skipped_ids"][0]["id"] == "b_chunk_1F1" and not report["ok"]
    with open_embeddings(tmp_path / "out.h5") as out:
        assert out.read_ids() == ["a_chunk_1F1"]
    assert json.loads((tmp_path / "validation.json").read_text())["skipped"] == 1


def test_export_to_virnucpro_pt(tmp_path):
    from virnucflow.merge import export_virnucpro_pt

    dna, protein, truth = make_sample(tmp_path, {0: ["a_chunk_1F1", "b_chunk_1R2"]})
    merge(tmp_path, dna, protein)
    export_virnucpro_pt(tmp_path / "out.h5", tmp_path / "out.pt")
    data = torch.load(tmp_path / "out.pt", weights_only=True)
    assert data["ids"] == ["a_chunk_1F1", "b_chunk_1R2"]
    assert torch.equal(data["data"], torch.from_numpy(np.stack([truth["a_chunk_1F1"], truth["b_chunk_1R2"]])))
