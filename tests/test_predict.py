"""Calls with VirNucPro's classifier: the same numbers as the MLP itself, the original's file
layouts, its pickled format loaded safely, and a call for every read."""

import csv
import re
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import write_embeddings
from virnucflow.classifier import MLPClassifier, load_classifier
from virnucflow.demo import write_demo_classifier
from virnucflow.errors import InputError, ModelError
from virnucflow import calls as calls_module
from virnucflow.calls import chunk_calls_from_predictions
from virnucflow.predict import predict_sample
from virnucflow.workfiles import FRAMES_HEADER, READS_HEADER

# The class as VirNucPro's train.py defines it; the script is run as __main__, so torch.save of
# the whole module pickles it as __main__.MLPClassifier, exactly like 300_model.pth / 500_model.pth.
ORIGINAL_CLASS = textwrap.dedent('''
    import sys, torch
    from torch import nn
    import torch.nn.functional as F

    class MLPClassifier(nn.Module):
        def __init__(self, input_dim, hidden_dim, num_class):
            super(MLPClassifier, self).__init__()
            self.hidden_layer = nn.Linear(input_dim, hidden_dim)
            self.bn1 = nn.BatchNorm1d(hidden_dim)
            self.output_layer = nn.Linear(hidden_dim, num_class)
            self.dropout = nn.Dropout(0.5)
            self.init_weights()

        def init_weights(self):
            nn.init.xavier_uniform_(self.hidden_layer.weight)
            nn.init.xavier_uniform_(self.output_layer.weight)

        def forward(self, x):
            x = self.hidden_layer(x)
            x = self.bn1(x)
            x = F.relu(x)
            x = self.dropout(x)
            x = self.output_layer(x)
            return x
''')
SAVE_LIKE_TRAIN_PY = ORIGINAL_CLASS + textwrap.dedent('''
    import torch.serialization
    seed, dim = int(sys.argv[1]), int(sys.argv[2])
    torch.manual_seed(seed)
    model = MLPClassifier(dim, 512, 2)
    with torch.no_grad():  # trained-looking statistics, and scores spread over [0, 1]
        model.bn1.running_mean.normal_(0, 0.3); model.bn1.running_var.uniform_(0.5, 2)
        model.output_layer.weight.mul_(20)
    tag = torch.serialization.location_tag
    for how, path in (arg.split("=", 1) for arg in sys.argv[3:]):
        # cuda: what a model trained on a GPU records for its tensors, without needing one here
        torch.serialization.location_tag = (lambda storage: "cuda:0") if how == "cuda" else tag
        torch.save(model, path, _use_new_zipfile_serialization=how != "legacy")
''')


def save_like_the_original(folder, seed=38, dim=3328):
    """torch.save(model) from a script run as __main__, as VirNucPro's train.py saved its models: in
    torch's zip format (torch >= 1.6), tagged as saved from a GPU, and in the legacy format."""
    paths = {how: folder / how / "500_model.pth" for how in ("zip", "cuda", "legacy")}
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(SAVE_LIKE_TRAIN_PY)
    subprocess.run([sys.executable, str(folder / "train.py"), str(seed), str(dim),
                    *(f"{how}={path}" for how, path in paths.items())], check=True)
    return paths


@pytest.fixture(scope="module")
def original_files(tmp_path_factory):
    return save_like_the_original(tmp_path_factory.mktemp("cls"))  # seed 38: both classes on each reference


@pytest.fixture(scope="module")
def original_pth(original_files):
    return original_files["zip"]


def load_the_original_way(path):
    """What VirNucPro's prediction.py does: torch.load(weights_only=False) with its class in __main__."""
    namespace = {}
    exec(ORIGINAL_CLASS, namespace)
    main = sys.modules["__main__"]
    main.MLPClassifier = namespace["MLPClassifier"]
    try:
        model = torch.load(path, weights_only=False)
    finally:
        del main.MLPClassifier
    return model.eval()


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle, delimiter="\t"))


def write_sample(tmp_path, ids, features, reads, attrs=None, frame_ids=None):
    """embeddings.h5 (rows `ids`), frames.tsv (`frame_ids`, default `ids`) and reads.tsv for `reads`:
    {read_id: (length, chunks, chunks_with_frames[, ambiguous bases])}."""
    write_embeddings(tmp_path / "emb.h5", ids, features, {"chunk_length": 500, **(attrs or {})})
    with open(tmp_path / "frames.tsv", "w") as handle:
        handle.write(FRAMES_HEADER)
        for sid in frame_ids if frame_ids is not None else ids:
            read, chunk = re.fullmatch(r"(.+)_chunk_(\d+)[FR][123]", sid).groups()
            handle.write(f"{sid}\t{read}\t{chunk}\t{'+' if sid[-2] == 'F' else '-'}\t{sid[-1]}\t0\t10\t3\t0\n")
    with open(tmp_path / "reads.tsv", "w") as handle:
        handle.write(READS_HEADER)
        handle.writelines(f"{r}\t{n}\t{c}\t{w}\t0\t{a[0] if a else 0}\n" for r, (n, c, w, *a) in reads.items())


def run_predict(tmp_path, classifier, **kwargs):
    kwargs.setdefault("batch_rows", 3)  # batches end inside chunks and reads
    kwargs.setdefault("chunk_length", None)  # the one recorded in the embeddings file
    return predict_sample(tmp_path / "emb.h5", tmp_path / "frames.tsv", tmp_path / "reads.tsv", classifier,
                          predictions_tsv=tmp_path / "p.tsv", chunk_calls_tsv=tmp_path / "c.tsv",
                          read_calls_tsv=tmp_path / "r.tsv", chunk_scores_tsv=tmp_path / "s.tsv", **kwargs)


def the_originals_chunk_calls(predictions_tsv):
    """prediction_results_highestscore.csv as VirNucPro's prediction.py makes it from a prediction_results.txt:
    pandas reads it, Modified_ID is Sequence_ID without its last 2 characters, a groupby on Modified_ID (keys
    sorted) tells whether max score2 >= max score1, to_csv(sep tab, no index) writes it."""
    pd = pytest.importorskip("pandas", reason="pandas runs the original's groupby")
    table = pd.read_csv(predictions_tsv, sep="\t")
    table["Modified_ID"] = table["Sequence_ID"].str[:-2]
    called = table.groupby("Modified_ID", group_keys=False).apply(
        lambda chunk: pd.Series({"Is_Virus": chunk["score2"].max() >= chunk["score1"].max()}))
    return called.reset_index().to_csv(sep="\t", index=False).encode()


@pytest.mark.parametrize("folder", ["with_orfs", "fixed_500bp"])
def test_reference_features_scored_like_the_mlp_itself(tmp_path, reference_dir, original_pth, folder):
    merged = torch.load(reference_dir / folder / "output_1_merged.pt", weights_only=True)
    reads = {sid.split("_chunk_")[0]: (500, 1, 1) for sid in merged["ids"]} | {"read_without_frames": (500, 1, 0)}
    write_sample(tmp_path, merged["ids"], merged["data"].numpy(), reads)
    run_predict(tmp_path, original_pth)
    with torch.no_grad():
        expected = F.softmax(load_the_original_way(original_pth)(merged["data"]), dim=1).numpy()

    predictions, reference = rows(tmp_path / "p.tsv"), rows(reference_dir / folder / "prediction_results.txt")
    assert predictions[0] == reference[0] == ["Sequence_ID", "Prediction", "score1", "score2"]
    assert [r[0] for r in predictions[1:]] == [r[0] for r in reference[1:]] == merged["ids"]
    scores = np.array([[float(r[2]), float(r[3])] for r in predictions[1:]])
    assert np.abs(scores - expected).max() < 1e-6
    assert [r[1] for r in predictions[1:]] == ["virus" if p[1] > p[0] else "others" for p in expected]
    assert {r[1] for r in predictions[1:]} == {"virus", "others"}  # the seeded weights call both here
    for table in (predictions, reference):  # float32 written as str(np.float32): shortest round-trip digits
        for _, label, *numbers in table[1:]:
            assert label in ("virus", "others")
            assert all(text == str(np.float32(text)) for text in numbers)
            assert abs(sum(float(text) for text in numbers) - 1) < 1e-6
    assert (tmp_path / "p.tsv").read_bytes().count(b"\r") == 0

    # chunk_calls.tsv: the original's file for our predictions, byte for byte; its layout is the reference's.
    chunks = rows(tmp_path / "c.tsv")
    highest = rows(reference_dir / folder / "prediction_results_highestscore.csv")
    assert chunks[0] == highest[0] == ["Modified_ID", "Is_Virus"]
    assert [r[0] for r in chunks[1:]] == [r[0] for r in highest[1:]]
    assert (tmp_path / "c.tsv").read_bytes() == the_originals_chunk_calls(tmp_path / "p.tsv")
    for chunk, theirs in zip(chunks[1:], highest[1:]):
        of_chunk = scores[[r[0][:-2] == chunk[0] for r in predictions[1:]]]
        assert chunk[1] == str(of_chunk[:, 1].max() >= of_chunk[:, 0].max()) and theirs[1] in ("True", "False")
    # chunk_scores.tsv: what each call rests on, in input order.
    chunk_scores = rows(tmp_path / "s.tsv")
    assert chunk_scores[0] == ["Modified_ID", "read_id", "frames", "max_score1", "max_score2", "Is_Virus"]
    assert [r[0] for r in chunk_scores[1:]] == [r[0] for r in chunks[1:]]  # input order here, sorted already
    for (chunk_id, read_id, n, max1, max2, is_virus), chunk in zip(chunk_scores[1:], chunks[1:]):
        of_chunk = scores[[r[0][:-2] == chunk_id for r in predictions[1:]]]
        assert [float(max1), float(max2), int(n)] == [*of_chunk.max(axis=0), len(of_chunk)]
        assert max1 == str(np.float32(max1)) and max2 == str(np.float32(max2))
        assert read_id == chunk_id.split("_chunk_")[0] and is_virus == chunk[1]

    calls = {r[0]: r for r in rows(tmp_path / "r.tsv")[1:]}
    assert set(calls) == set(reads) and calls["read_without_frames"][-1] == "no_frames"
    assert all(r[6] == str(np.float32(r[6])) for r in calls.values() if r[6])


@pytest.mark.parametrize("folder", ["with_orfs", "fixed_500bp"])
def test_chunk_calls_of_the_references_predictions_are_the_originals_file_byte_for_byte(tmp_path, reference_dir,
                                                                                        folder):
    assert chunk_calls_from_predictions(reference_dir / folder / "prediction_results.txt", tmp_path / "c.tsv") == 2
    expected = (reference_dir / folder / "prediction_results_highestscore.csv").read_bytes()
    assert (tmp_path / "c.tsv").read_bytes() == expected
    # tab-separated, True/False, one final newline
    assert expected.startswith(b"Modified_ID\tIs_Virus\n") and expected.endswith(b"\tTrue\n")
    assert the_originals_chunk_calls(reference_dir / folder / "prediction_results.txt") == expected


def test_original_pickle_loads_and_scores_like_the_original(original_files):
    from_gpu = original_files["cuda"]
    assert b"cuda:0" in zipfile.ZipFile(from_gpu).read("500_model/data.pkl")
    x = torch.randn(5, 3328)
    with torch.no_grad():
        expected = load_the_original_way(original_files["zip"])(x)
        for path in (original_files["zip"], from_gpu):  # same seed: same weights
            model = load_classifier(path)
            assert isinstance(model, MLPClassifier) and not model.training
            assert model.hidden_layer.in_features == 3328 and model.hidden_layer.weight.device.type == "cpu"
            assert torch.allclose(model(x), expected, atol=1e-6, rtol=0)


def test_legacy_format_whole_module_is_refused_but_its_state_dict_loads(tmp_path, original_files):
    with pytest.raises(ModelError, match=r"500_model.pth: a whole module in torch's legacy .* state_dict"):
        load_classifier(original_files["legacy"])  # torch.save before torch 1.6: pickles carry source code
    state = load_the_original_way(original_files["zip"]).state_dict()
    torch.save(state, tmp_path / "legacy_state.pth", _use_new_zipfile_serialization=False)
    assert torch.equal(load_classifier(tmp_path / "legacy_state.pth").hidden_layer.weight, state["hidden_layer.weight"])


def test_state_dict_and_a_module_saved_from_this_package_load(tmp_path, original_pth):
    model = load_classifier(original_pth)
    torch.save(model.state_dict(), tmp_path / "state.pth")
    torch.save(model, tmp_path / "whole.pth")  # pickled as virnucflow.classifier.MLPClassifier
    x = torch.randn(4, 3328)
    with torch.no_grad():
        for path in ("state.pth", "whole.pth"):
            assert torch.equal(load_classifier(tmp_path / path)(x), model(x))


def test_a_module_saved_from_an_earlier_version_loads(tmp_path, original_pth, monkeypatch):
    """The class lived in virnucflow.predict before it had a module of its own: such pickles still load."""
    import virnucflow.predict

    model = load_classifier(original_pth)
    monkeypatch.setattr(MLPClassifier, "__module__", "virnucflow.predict")
    monkeypatch.setattr(virnucflow.predict, "MLPClassifier", MLPClassifier, raising=False)
    torch.save(model, tmp_path / "old.pth")
    monkeypatch.undo()
    with zipfile.ZipFile(tmp_path / "old.pth") as archive:
        assert b"virnucflow.predict\nMLPClassifier" in archive.read("old/data.pkl")
    x = torch.randn(4, 3328)
    with torch.no_grad():
        assert torch.equal(load_classifier(tmp_path / "old.pth")(x), model(x))


EVIL = textwrap.dedent('''
    import os, pickle, sys, torch
    marker = sys.argv[1]
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + marker,))
    class MLPClassifier(torch.nn.Module):  # the right name, but its pickle runs the payload
        def __reduce__(self):
            return (os.system, ("touch " + marker,))
    for kind, out in (arg.split("=", 1) for arg in sys.argv[2:]):
        if kind == "torch-dict":
            torch.save({"hidden_layer.weight": Payload()}, out)
        elif kind == "torch-module":
            torch.save(MLPClassifier(), out)
        else:
            with open(out, "wb") as handle:
                pickle.dump({"hidden_layer.weight": Payload()}, handle, protocol=2)
''')
EVIL_KINDS = ("torch-dict", "torch-module", "plain-pickle")


@pytest.fixture(scope="module")
def evil_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evil")
    paths = {kind: folder / kind / "500_model.pth" for kind in EVIL_KINDS}
    for path in paths.values():
        path.parent.mkdir()
    (folder / "evil.py").write_text(EVIL)
    marker = folder / "pwned"
    subprocess.run([sys.executable, str(folder / "evil.py"), str(marker), *(f"{k}={p}" for k, p in paths.items())],
                   check=True)
    assert not marker.exists()  # saving did not run it
    return paths, marker


@pytest.mark.parametrize("kind", EVIL_KINDS)
def test_a_pickle_that_runs_code_is_refused_and_never_runs(evil_files, kind):
    paths, marker = evil_files
    with pytest.raises(ModelError) as error:
        load_classifier(paths[kind])
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{paths[kind]}: refused to load: it names posix.system")
    assert "could run code" in message
    assert not marker.exists()


def test_files_that_are_not_classifiers_are_clear_errors(tmp_path):
    (tmp_path / "short.pth").write_bytes(b"hello")
    deeper = MLPClassifier(8)
    deeper.extra = torch.nn.Linear(2, 2)  # another architecture under the same class name
    torch.save(deeper, tmp_path / "deeper.pth")
    torch.save({"weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    torch.save(torch.nn.Linear(3, 2), tmp_path / "linear.pth")
    for name, expected in [("absent.pth", "classifier not found"), ("short.pth", "not a readable classifier"),
                           ("other.pth", "not a VirNucPro classifier"), ("linear.pth", "holds a Linear"),
                           ("deeper.pth", "not VirNucPro's MLP \\(layers: hidden_layer, bn1, output_layer, dropout, "
                                          "extra\\)")]:
        with pytest.raises(ModelError, match=f"{name}: {expected}"):
            load_classifier(tmp_path / name)


def test_input_dim_and_chunk_length_are_checked(tmp_path, original_pth):
    with pytest.raises(ModelError, match="takes 3328 features but the embeddings have 112"):
        load_classifier(original_pth, input_dim=112)
    with pytest.raises(ModelError, match="trained on 500 bp chunks but the run used chunk_length 300"):
        load_classifier(original_pth, chunk_length=300)
    assert load_classifier(original_pth, chunk_length=500, input_dim=3328)
    assert load_classifier(original_pth, chunk_length=300, trained_chunk=300)  # the user knows better
    renamed = tmp_path / "my_classifier.pth"
    renamed.write_bytes(original_pth.read_bytes())
    assert load_classifier(renamed, chunk_length=300)  # name says nothing: not checked
    with pytest.raises(ModelError, match="trained on 500 bp chunks"):
        load_classifier(renamed, chunk_length=300, trained_chunk=500)


def test_a_run_at_another_chunk_length_is_refused_from_the_embeddings_attributes(tmp_path, original_pth):
    ids = ["r_chunk_1F1"]
    write_sample(tmp_path, ids, np.zeros((1, 3328), np.float32), {"r": (300, 1, 1)}, attrs={"chunk_length": 300})
    with pytest.raises(ModelError, match="trained on 500 bp chunks but the run used chunk_length 300"):
        run_predict(tmp_path, original_pth)
    assert not (tmp_path / "p.tsv").exists() and not (tmp_path / "r.tsv").exists()


def test_demo_classifier_is_deterministic_and_in_the_original_format(tmp_path):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = write_demo_classifier(tmp_path / "a" / "demo.pth", input_dim=112, seed=3)
    assert torch.equal(torch.rand(1), before)  # the caller's random state is untouched
    b = write_demo_classifier(tmp_path / "b" / "other_name.pth", input_dim=112, seed=3)
    c = write_demo_classifier(tmp_path / "c.pth", input_dim=112, seed=4)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    with zipfile.ZipFile(a) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"__main__\nMLPClassifier" in pickled
    assert load_the_original_way(a).hidden_layer.in_features == 112  # the original's own loader reads it
    assert load_classifier(a).hidden_layer.in_features == 112


def multi_chunk_sample(tmp_path, drop=()):
    """Reads of 1-3 chunks with 0-6 frames each, random features; `drop`: frame ids left out of the h5."""
    rng = np.random.default_rng(5)
    reads = {}
    frame_ids = []
    for r in range(12):
        chunks = 1 + r % 3
        with_frames = 0
        for c in range(1, chunks + 1):
            frames = [f for f in ("F1", "F2", "F3", "R1", "R2", "R3") if rng.random() < 0.4]
            frame_ids += [f"read{r}_chunk_{c}{f}" for f in frames]
            with_frames += bool(frames)
        reads[f"read{r}"] = (chunks * 400, chunks, with_frames)
    reads["empty_read_without_frames"] = (120, 1, 0)
    ids = [f for f in frame_ids if f not in drop]
    features = rng.standard_normal((len(frame_ids), 16)).astype(np.float32)[[f not in drop for f in frame_ids]]
    write_sample(tmp_path, ids, features, reads, frame_ids=frame_ids)
    classifier = tmp_path / "cls.pth"
    write_demo_classifier(classifier, input_dim=16, seed=3)  # seed 3: reads of every kind below
    return reads, frame_ids, ids, features, classifier


def calls_from_scores(ids, scores):
    """VirNucPro's chunk rule and the read rule, written out directly from per-frame scores."""
    chunk_max = {}
    for sid, (p_other, p_virus) in zip(ids, scores):
        old = chunk_max.get(sid[:-2], (-1, -1))
        chunk_max[sid[:-2]] = (max(old[0], p_other), max(old[1], p_virus))
    virus_chunks = {}
    for chunk, (m1, m2) in chunk_max.items():
        read = chunk.split("_chunk_")[0]
        virus_chunks[read] = virus_chunks.get(read, 0) + (m2 >= m1)
    return chunk_max, virus_chunks


def calls_by_id(calls):
    return {r[0]: r[-1] for r in calls[1:]}


def test_every_read_gets_a_call_by_the_any_chunk_rule(tmp_path):
    reads, _, ids, features, classifier = multi_chunk_sample(tmp_path)
    counts = run_predict(tmp_path, classifier)

    predictions = rows(tmp_path / "p.tsv")[1:]
    assert [r[0] for r in predictions] == ids
    scores = np.array([[np.float32(r[2]), np.float32(r[3])] for r in predictions])
    with torch.no_grad():
        direct = F.softmax(load_classifier(classifier)(torch.from_numpy(features)), dim=1).numpy()
    assert np.abs(scores - direct).max() < 1e-6  # batches of 3 rows: same numbers as one batch
    chunk_max, virus_chunks = calls_from_scores(ids, scores)
    chunks = rows(tmp_path / "c.tsv")[1:]
    assert [r[0] for r in chunks] == sorted(chunk_max) != list(chunk_max)  # read10 before read2, as pandas sorts
    assert [r[1] for r in chunks] == [str(chunk_max[c][1] >= chunk_max[c][0]) for c in sorted(chunk_max)]
    assert [r[0] for r in rows(tmp_path / "s.tsv")[1:]] == list(chunk_max)  # chunk_scores.tsv: input order
    calls = rows(tmp_path / "r.tsv")
    assert calls[0] == ["read_id", "length", "ambiguous_fraction", "chunks", "chunks_with_frames", "virus_chunks",
                        "max_virus_score", "call"]
    assert [r[0] for r in calls[1:]] == list(reads)  # every read, in input order
    for read_id, length, ambiguous, n_chunks, with_frames, n_virus, best, call in calls[1:]:
        assert (int(length), int(n_chunks), int(with_frames)) == reads[read_id] and ambiguous == "0.0000"
        if not reads[read_id][2]:
            assert (n_virus, best, call) == ("0", "", "no_frames")
            continue
        of_read = scores[[sid.startswith(f"{read_id}_chunk_") for sid in ids], 1]
        assert int(n_virus) == virus_chunks[read_id] and np.float32(best) == of_read.max()
        assert call == ("virus" if virus_chunks[read_id] else "others")
    assert {"virus", "others", "no_frames"} <= {r[-1] for r in calls[1:]}
    # Any chunk decides, even where the read's best other-score beats its best virus-score.
    mixed = [r[0] for r in calls[1:] if 0 < int(r[5]) < int(r[4])]
    assert mixed and all(calls_by_id(calls)[read] == "virus" for read in mixed)
    assert any(scores[[sid.startswith(f"{read}_chunk_") for sid in ids]].max(axis=0) @ [1, -1] > 0 for read in mixed)
    assert counts["virus"] + counts["others"] + counts["no_frames"] == len(reads) and counts["missing"] == 0


def test_frames_missing_from_the_embeddings_are_reported_not_fatal(tmp_path):
    _, frame_ids, _, _, _ = multi_chunk_sample(tmp_path)  # which frames exist with this seed
    lost_read = next(f.split("_chunk_")[0] for f in frame_ids)
    drop = {f for f in frame_ids if f.startswith(f"{lost_read}_chunk_")} | {frame_ids[-1]}
    reads, _, ids, features, classifier = multi_chunk_sample(tmp_path, drop=drop)
    counts = run_predict(tmp_path, classifier)
    assert counts["missing"] == len(drop) and counts["missing_first"] == [f for f in frame_ids if f in drop][:10]
    assert [r[0] for r in rows(tmp_path / "p.tsv")[1:]] == ids
    calls = {r[0]: r[-1] for r in rows(tmp_path / "r.tsv")[1:]}
    assert list(calls) == list(reads) and calls[lost_read] == "not_scored"
    assert counts["not_scored"] == 1


def test_embeddings_from_another_run_are_an_input_error(tmp_path):
    _, _, ids, features, classifier = multi_chunk_sample(tmp_path)
    write_embeddings(tmp_path / "emb.h5", ids[::-1], features[::-1], {"chunk_length": 500})
    with pytest.raises(InputError, match=r"p.tsv: row \d+ \(.+\) is not among the frames of .*rerun merge and predict"):
        run_predict(tmp_path, classifier)
    assert not any((tmp_path / name).exists() for name in ("p.tsv", "c.tsv", "r.tsv"))


def test_a_sample_without_frames_gets_headers_and_no_frames_calls(tmp_path):
    reads = {"a": (500, 1, 0), "b": (900, 2, 0)}
    write_sample(tmp_path, [], np.zeros((0, 16), np.float32), reads)
    counts = predict_sample(tmp_path / "emb.h5", tmp_path / "frames.tsv", tmp_path / "reads.tsv",
                            write_demo_classifier(tmp_path / "cls.pth", input_dim=16), out_dir=tmp_path / "out",
                            chunk_length=None)
    assert rows(tmp_path / "out" / "predictions.tsv") == [["Sequence_ID", "Prediction", "score1", "score2"]]
    assert len(rows(tmp_path / "out" / "chunk_calls.tsv")) == 1
    assert [r[-1] for r in rows(tmp_path / "out" / "read_calls.tsv")[1:]] == ["no_frames", "no_frames"]
    assert counts["no_frames"] == 2 and counts["frames"] == 0


def exotic_order_sample(tmp_path):
    """Reads whose chunk ids sort otherwise than they come (chunk_10 before chunk_2, read10 before read2,
    upper case before lower case, non-ASCII last, a quote in an id), a few frames per chunk."""
    rng = np.random.default_rng(11)
    names = ["read2", "read1", "read10", "Read3", "réad4", 'q"uote', "read1.5", "a"]
    reads, frame_ids = {}, []
    for name in names:
        chunks = 12 if name == "read1" else 1 + int(rng.integers(3))
        for c in range(1, chunks + 1):
            frame_ids += [f"{name}_chunk_{c}{f}" for f in rng.choice(["F1", "F2", "F3", "R1", "R2", "R3"],
                                                                     size=1 + int(rng.integers(3)), replace=False)]
        reads[name] = (chunks * 500, chunks, chunks)
    features = rng.standard_normal((len(frame_ids), 16)).astype(np.float32)
    write_sample(tmp_path, frame_ids, features, reads)
    return frame_ids, write_demo_classifier(tmp_path / "cls.pth", input_dim=16, seed=3)


def test_chunk_calls_are_sorted_as_the_originals_groupby_also_through_runs_on_disk(tmp_path, monkeypatch):
    frame_ids, classifier = exotic_order_sample(tmp_path)
    run_predict(tmp_path, classifier)
    in_memory = (tmp_path / "c.tsv").read_bytes()
    ids = [line.split(b"\t")[0].decode() for line in in_memory.splitlines()[1:]]
    # Code point order: 'R' < 'a' < 'q' < 'r' < 'é'; after "read1", '.' < '0' < '_'; chunk_10 before chunk_2.
    assert list(dict.fromkeys(i.rsplit("_chunk_", 1)[0] for i in ids)) == [
        "Read3", "a", '"q""uote', "read1.5", "read10", "read1", "read2", "réad4"]  # a quote: quoted as to_csv does
    assert [i for i in ids if i.startswith("read1_")] == [f"read1_chunk_{n}" for n in [1, 10, 11, 12, *range(2, 10)]]
    assert {"True", "False"} == {line.split("\t")[1] for line in in_memory.decode().splitlines()[1:]}
    assert in_memory == the_originals_chunk_calls(tmp_path / "p.tsv")
    assert chunk_calls_from_predictions(tmp_path / "p.tsv", tmp_path / "again.tsv") == len(ids)
    assert (tmp_path / "again.tsv").read_bytes() == in_memory

    # Sorted runs of 3 rows on disk, merged 2 at a time (a cascade of merges): the same bytes, no runs left.
    monkeypatch.setattr(calls_module, "MERGE_FILES", 2)
    made = []
    monkeypatch.setattr(calls_module._SortedChunkCalls, "_spill", lambda self, spill=calls_module._SortedChunkCalls._spill:
                        (made.append(len(self.rows)), spill(self)))
    run_predict(tmp_path, classifier, sort_rows=3)
    assert (tmp_path / "c.tsv").read_bytes() == in_memory and len(made) > 4
    chunk_calls_from_predictions(tmp_path / "p.tsv", tmp_path / "again.tsv", sort_rows=2)
    assert (tmp_path / "again.tsv").read_bytes() == in_memory
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # run folders and temp files gone


def test_chunk_calls_from_predictions_refuses_what_the_original_would_group_otherwise(tmp_path):
    (tmp_path / "p.tsv").write_text("Sequence_ID\tPrediction\tscore1\tscore2\n"
                                    "r_chunk_1F1\tvirus\t0.1\t0.9\nq_chunk_1F1\tothers\t0.6\t0.4\n"
                                    "r_chunk_1R2\tothers\t0.7\t0.3\n")
    for sort_rows in (100, 1):
        with pytest.raises(InputError, match=r"p.tsv: the frames of chunk r_chunk_1 are not consecutive rows"):
            chunk_calls_from_predictions(tmp_path / "p.tsv", tmp_path / "c.tsv", sort_rows=sort_rows)
    (tmp_path / "p.tsv").write_text("id\tscore\n")
    with pytest.raises(InputError, match="p.tsv: not a prediction_results.txt"):
        chunk_calls_from_predictions(tmp_path / "p.tsv", tmp_path / "c.tsv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.tsv"]


def test_ambiguity_dominated_reads_are_called_ambiguous_not_virus(tmp_path):
    """Same frames and scores, other fractions of ambiguous bases: above max_ambiguous_fraction a read
    that would be virus or others is `ambiguous`; predictions.tsv and chunk_calls.tsv do not change."""
    ids = [f"r{i}_chunk_1{f}" for i in range(6) for f in ("F1", "R2")]
    rng = np.random.default_rng(2)
    features = rng.standard_normal((len(ids), 16)).astype(np.float32)
    # r0 clean, r1 at the limit exactly (not above), r2 just above, r3 mostly N, r4 and r5 all N (r5 no frames)
    ambiguous = {"r0": 0, "r1": 100, "r2": 101, "r3": 400, "r4": 500, "r5": 500}
    reads = {r: (500, 1, 0 if r == "r5" else 1, n) for r, n in ambiguous.items()}
    write_sample(tmp_path, [i for i in ids if not i.startswith("r5")], features[:10], reads,
                 frame_ids=[i for i in ids if not i.startswith("r5")])
    classifier = write_demo_classifier(tmp_path / "cls.pth", input_dim=16, seed=3)
    counts = run_predict(tmp_path, classifier, max_ambiguous_fraction=0.2)
    calls = {r[0]: r for r in rows(tmp_path / "r.tsv")[1:]}
    assert {r: calls[r][2] for r in calls} == {"r0": "0.0000", "r1": "0.2000", "r2": "0.2020", "r3": "0.8000",
                                              "r4": "1.0000", "r5": "1.0000"}
    assert [calls[r][-1] for r in ("r2", "r3", "r4")] == ["ambiguous"] * 3 and calls["r5"][-1] == "no_frames"
    assert calls["r0"][-1] in ("virus", "others") and calls["r1"][-1] in ("virus", "others")
    assert counts["ambiguous"] == 3 and sum(counts[c] for c in calls_module.CALLS) == 6
    assert all(calls[r][6] for r in ("r2", "r3", "r4"))  # their scores are still there to see
    outputs = {name: (tmp_path / name).read_bytes() for name in ("p.tsv", "c.tsv", "s.tsv")}

    run_predict(tmp_path, classifier, max_ambiguous_fraction=1)  # the rule off
    off = {r[0]: r for r in rows(tmp_path / "r.tsv")[1:]}
    assert "ambiguous" not in {r[-1] for r in off.values()} and off["r5"][-1] == "no_frames"
    assert {r: row[:-1] for r, row in off.items()} == {r: row[:-1] for r, row in calls.items()}
    assert {name: (tmp_path / name).read_bytes() for name in outputs} == outputs  # VirNucPro's files untouched
    with pytest.raises(ValueError, match="between 0 and 1"):
        run_predict(tmp_path, classifier, max_ambiguous_fraction=1.5)


def test_the_default_ambiguity_limit_is_the_schemas():
    from virnucflow.schema import defaults

    assert defaults()["calls"]["max_ambiguous_fraction"] == calls_module.MAX_AMBIGUOUS_FRACTION == 0.2


def test_reads_tsv_from_another_prepare_run_is_an_input_error(tmp_path):
    reads, _, _, _, classifier = multi_chunk_sample(tmp_path)
    lines = (tmp_path / "reads.tsv").read_text().splitlines(keepends=True)
    (tmp_path / "reads.tsv").write_text("".join(lines[:3] + lines[4:]))  # read2 left out
    with pytest.raises(InputError, match=r"reads.tsv: read read2 has scored frames but is not listed .*rerun prepare"):
        run_predict(tmp_path, classifier)
    assert not any((tmp_path / name).exists() for name in ("p.tsv", "c.tsv", "r.tsv", "s.tsv"))


def test_min_virus_score_calls_reads_on_their_best_frame_and_leaves_virnucpros_files_alone(tmp_path):
    """calls.min_virus_score: a scored, unambiguous read is virus when its max_virus_score (as written) is at
    least the threshold, whatever its chunk calls; null is VirNucPro's any-chunk rule. predictions.tsv,
    chunk_calls.tsv and chunk_scores.tsv are the same bytes whatever the threshold."""
    reads, _, _, _, classifier = multi_chunk_sample(tmp_path)
    run_predict(tmp_path, classifier)
    default = {r[0]: r for r in rows(tmp_path / "r.tsv")[1:]}
    virnucpro = {name: (tmp_path / name).read_bytes() for name in ("p.tsv", "c.tsv", "s.tsv")}
    scores = sorted(float(r[6]) for r in default.values() if r[6])
    # A threshold that splits the reads, one exactly at a read's score (>= includes it), the extremes.
    for threshold in (scores[len(scores) // 2], 0.5, 0.0, 1.0):
        counts = run_predict(tmp_path, classifier, min_virus_score=threshold)
        calls = {r[0]: r for r in rows(tmp_path / "r.tsv")[1:]}
        assert {name: (tmp_path / name).read_bytes() for name in virnucpro} == virnucpro
        assert {r: row[:-1] for r, row in calls.items()} == {r: row[:-1] for r, row in default.items()}
        for read_id, row in calls.items():
            if not row[6]:
                assert row[-1] == default[read_id][-1] == "no_frames"
            else:
                assert row[-1] == ("virus" if float(row[6]) >= threshold else "others"), (threshold, row)
        assert counts["virus"] == sum(r[-1] == "virus" for r in calls.values())
    at_median = scores[len(scores) // 2]
    run_predict(tmp_path, classifier, min_virus_score=at_median)
    calls = {r[0]: r[-1] for r in rows(tmp_path / "r.tsv")[1:]}
    assert calls != {r: row[-1] for r, row in default.items()}  # the threshold changed some calls here
    assert any(calls[r] == "virus" and float(default[r][6]) == at_median for r in calls)
    # 0.5 is not the default rule: a chunk is virus when its best score2 beats its best score1, i.e. when
    # max score2 >= 1 - min score2 over its frames; one frame at 0.5 or more is enough for the threshold.
    run_predict(tmp_path, classifier, min_virus_score=0.5)
    half = {r[0]: r[-1] for r in rows(tmp_path / "r.tsv")[1:]}
    assert all(half[r] == "virus" for r, row in default.items() if row[-1] == "virus")
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="min_virus_score must be null or between 0 and 1"):
            run_predict(tmp_path, classifier, min_virus_score=bad)


def test_min_virus_score_never_rescues_an_ambiguous_read(tmp_path):
    ids = [f"r{i}_chunk_1{f}" for i in range(2) for f in ("F1", "R2")]
    features = np.random.default_rng(2).standard_normal((len(ids), 16)).astype(np.float32)
    write_sample(tmp_path, ids, features, {"r0": (500, 1, 1, 0), "r1": (500, 1, 1, 400)})
    classifier = write_demo_classifier(tmp_path / "cls.pth", input_dim=16, seed=3)
    run_predict(tmp_path, classifier, min_virus_score=0.0)  # every scored read passes 0
    assert {r[0]: r[-1] for r in rows(tmp_path / "r.tsv")[1:]} == {"r0": "virus", "r1": "ambiguous"}


def test_the_default_virus_score_threshold_is_the_schemas_null():
    from virnucflow.schema import defaults

    assert defaults()["calls"]["min_virus_score"] is calls_module.MIN_VIRUS_SCORE is None


def test_the_predict_command_takes_the_threshold(tmp_path):
    from virnucflow.cli import main

    reads, _, _, _, classifier = multi_chunk_sample(tmp_path)
    common = ["predict", str(tmp_path / "emb.h5"), str(tmp_path / "frames.tsv"), str(tmp_path / "reads.tsv"),
              str(classifier), "--predictions", str(tmp_path / "p.tsv"), "--chunk-calls", str(tmp_path / "c.tsv")]
    main(common + ["--read-calls", str(tmp_path / "default.tsv")])
    main(common + ["--read-calls", str(tmp_path / "all.tsv"), "--min-virus-score", "0"])
    default = {r[0]: r[-1] for r in rows(tmp_path / "default.tsv")[1:]}
    assert "others" in default.values()
    assert {r[0]: r[-1] for r in rows(tmp_path / "all.tsv")[1:]} == {
        r: "no_frames" if call == "no_frames" else "virus" for r, call in default.items()}


def test_the_demo_models_are_the_same_bytes_on_every_run(tmp_path):
    """Written under temporary names that differ every time (host, pid, token): the files do not (the
    slurm test compares a cluster run's model revisions with a local run's)."""
    import hashlib

    from virnucflow.demo import write_demo_models

    write_demo_models(tmp_path / "one" / "dnabert_s", tmp_path / "one" / "esm2.pt", tmp_path / "one" / "classifier.pth")
    subprocess.run([sys.executable, "-c", "import sys; from virnucflow.demo import write_demo_models as w; "
                    "w(*(sys.argv[1] + name for name in ('/dnabert_s', '/esm2.pt', '/classifier.pth')))",
                    str(tmp_path / "two")], check=True)  # another process: another pid in the temporary names
    digests = [{str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()} for root in (tmp_path / "one", tmp_path / "two")]
    assert digests[0] == digests[1] and len(digests[0]) > 3
