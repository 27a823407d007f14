"""Calls with VirNucPro's classifier: the same numbers as the MLP itself, the original's file
layouts, its pickled format loaded safely, and a call for every read."""

import csv
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from virnucflow.errors import ModelError
from virnucflow.merge import merge_sample  # noqa: F401  (the merged file format is what predict reads)
from virnucflow.predict import MLPClassifier, load_classifier, predict_sample, write_demo_classifier
from virnucflow.prepare import FRAMES_HEADER, READS_HEADER
from virnucflow.shards import write_embeddings

ORIGINAL_SCRIPT = textwrap.dedent('''
    import sys, torch
    from torch import nn
    import torch.nn.functional as F

    class MLPClassifier(nn.Module):  # as in VirNucPro's train.py: saved whole, from __main__
        def __init__(self, input_dim, hidden_dim, num_class):
            super(MLPClassifier, self).__init__()
            self.hidden_layer = nn.Linear(input_dim, hidden_dim)
            self.bn1 = nn.BatchNorm1d(hidden_dim)
            self.output_layer = nn.Linear(hidden_dim, num_class)
            self.dropout = nn.Dropout(0.5)

        def forward(self, x):
            return self.output_layer(self.dropout(F.relu(self.bn1(self.hidden_layer(x)))))

    torch.manual_seed(int(sys.argv[2]))
    model = MLPClassifier(3328, 512, 2)
    with torch.no_grad():
        model.bn1.running_mean.normal_(0, 0.3); model.bn1.running_var.uniform_(0.5, 2)
        model.output_layer.weight.mul_(20)
    torch.save(model, sys.argv[1])
''')


@pytest.fixture(scope="module")
def original_pth(tmp_path_factory):
    path = tmp_path_factory.mktemp("cls") / "500_model.pth"
    script = path.parent / "train.py"
    script.write_text(ORIGINAL_SCRIPT)
    subprocess.run([sys.executable, str(script), str(path), "7"], check=True)
    return path


def load_the_original_way(path):
    """torch.load(weights_only=False) with the original class in __main__: the direct evaluation."""
    namespace = {}
    exec(ORIGINAL_SCRIPT.split("torch.manual_seed")[0], namespace)
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


def sample_from_reference(tmp_path, folder):
    merged = torch.load(folder / "output_1_merged.pt", weights_only=True)
    ids = merged["ids"]
    write_embeddings(tmp_path / "emb.h5", ids, merged["data"].numpy(), {"chunk_length": 500})
    reads = sorted({sid.split("_chunk_")[0] for sid in ids}) + ["read_without_frames"]
    with open(tmp_path / "frames.tsv", "w") as handle:
        handle.write(FRAMES_HEADER)
        handle.writelines(f"{sid}\t{sid.split('_chunk_')[0]}\t1\t-\t1\t0\t10\t3\t0\n" for sid in ids)
    with open(tmp_path / "reads.tsv", "w") as handle:
        handle.write(READS_HEADER)
        handle.writelines(f"{r}\t500\t1\t{0 if r == 'read_without_frames' else 1}\t0\n" for r in reads)
    return merged


def run_predict(tmp_path, classifier, **kwargs):
    return predict_sample(tmp_path / "emb.h5", tmp_path / "frames.tsv", tmp_path / "reads.tsv", classifier,
                          predictions_tsv=tmp_path / "p.tsv", chunk_calls_tsv=tmp_path / "c.tsv",
                          read_calls_tsv=tmp_path / "r.tsv", batch_rows=3, **kwargs)


@pytest.mark.parametrize("folder", ["with_orfs", "fixed_500bp"])
def test_reference_features_scored_like_the_mlp_itself(tmp_path, reference_dir, original_pth, folder):
    merged = sample_from_reference(tmp_path, reference_dir / folder)
    run_predict(tmp_path, original_pth, chunk_length=500)
    model = load_the_original_way(original_pth)
    with torch.no_grad():
        expected = F.softmax(model(merged["data"]), dim=1).numpy()
    predictions = rows(tmp_path / "p.tsv")
    reference = rows(reference_dir / folder / "prediction_results.txt")
    assert predictions[0] == reference[0] == ["Sequence_ID", "Prediction", "score1", "score2"]
    scores = np.array([[float(r[2]), float(r[3])] for r in predictions[1:]])
    assert np.abs(scores - expected).max() < 1e-6
    assert [r[0] for r in predictions[1:]] == [r[0] for r in reference[1:]] == merged["ids"]
    assert {r[1] for r in predictions[1:]} <= {"virus", "others"}
    for ours, theirs in zip(predictions[1:], reference[1:]):  # float32 written the same way: str(np.float32)
        assert ours[2] == str(np.float32(ours[2])) and theirs[2] == str(np.float32(theirs[2]))
    chunks = rows(tmp_path / "c.tsv")
    highest = rows(reference_dir / folder / "prediction_results_highestscore.csv")
    assert chunks[0][:2] == highest[0] and [r[0] for r in chunks[1:]] == [r[0] for r in highest[1:]]
    for chunk in chunks[1:]:
        frames = [s for s, r in zip(scores, predictions[1:]) if r[0][:-2] == chunk[0]]
        assert chunk[1] == str(max(f[1] for f in frames) >= max(f[0] for f in frames))
    calls = {r[0]: r for r in rows(tmp_path / "r.tsv")[1:]}
    assert calls["read_without_frames"][-1] == "no_frames"
    assert len(calls) == len({sid.split("_chunk_")[0] for sid in merged["ids"]}) + 1


def test_original_pickle_and_state_dict_load(tmp_path, original_pth):
    model = load_classifier(original_pth)
    assert isinstance(model, MLPClassifier) and model.hidden_layer.in_features == 3328 and not model.training
    torch.save(model.state_dict(), tmp_path / "state.pth")
    again = load_classifier(tmp_path / "state.pth")
    x = torch.randn(4, 3328)
    assert torch.equal(model(x), again(x))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    script = tmp_path / "evil.py"
    script.write_text(textwrap.dedent(f'''
        import os, torch
        class Payload:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
        torch.save({{"hidden_layer.weight": Payload()}}, "{tmp_path / 'evil.pth'}")
    '''))
    subprocess.run([sys.executable, str(script)], check=True)
    with pytest.raises(ModelError, match=r"evil.pth: refused to load.*it calls posix.system"):
        load_classifier(tmp_path / "evil.pth")
    assert not marker.exists()


def test_input_dim_and_chunk_length_are_checked(tmp_path, original_pth):
    with pytest.raises(ModelError, match="takes 3328 features but the embeddings have 112"):
        load_classifier(original_pth, input_dim=112)
    with pytest.raises(ModelError, match="trained on 500 bp chunks but the run used chunk_length 300"):
        load_classifier(original_pth, chunk_length=300)


def test_demo_classifier_is_deterministic_and_in_the_original_format(tmp_path):
    a = write_demo_classifier(tmp_path / "a" / "c.pth", input_dim=112, seed=3)
    b = write_demo_classifier(tmp_path / "b" / "c.pth", input_dim=112, seed=3)
    assert a.read_bytes() == b.read_bytes()
    import zipfile

    with zipfile.ZipFile(a) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"__main__" in pickled and b"MLPClassifier" in pickled
    assert load_classifier(a).hidden_layer.in_features == 112
