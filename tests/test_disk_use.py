"""Disk use bounded: keep_embeddings: false (embeddings.h5 deleted once the calls are written) and
merge.dtype: float16 (half the bytes), through the configuration, the stages and the real Snakefile."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from conftest import run_snakemake
from virnucflow.classifier import load_classifier, score
from virnucflow.demo import write_demo_classifier
from virnucflow.embeddings import EmbeddingWriter, open_embeddings, verify_checksums
from virnucflow.predict import predict_sample
from virnucflow.schema import SCHEMA_PATH
from virnucflow.workfiles import FRAMES_HEADER, READS_HEADER

REPO = Path(__file__).resolve().parents[1]
CALLS = ("predictions.tsv", "chunk_calls.tsv", "chunk_scores.tsv", "read_calls.tsv")
# The largest change of a frame's score2 that float16 storage caused with the demo models (BENCHMARKS.md,
# "Disk use", part 3a: 4.9e-4 over 10,013 frames), with room for other inputs of the same models.
DEMO_FLOAT16_BOUND = 1e-3


def shipped_config():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


# --- the configuration ----------------------------------------------------------------------------

def test_the_schema_knows_keep_embeddings_and_merge_dtype_with_their_defaults():
    config = shipped_config()
    del config["keep_embeddings"], config["merge"]["dtype"]
    validate(config, str(SCHEMA_PATH))
    # null: kept without a classifier, deleted once scored with one (rules/common.smk KEEP_EMBEDDINGS)
    assert config["keep_embeddings"] is None and config["merge"]["dtype"] == "float32"
    for accepted in ({"keep_embeddings": False}, {"keep_embeddings": True}, {"keep_embeddings": None},
                     {"merge": {"dtype": "float16"}}, {"merge": {"dtype": "float32"}}):
        validate({**shipped_config(), **accepted}, str(SCHEMA_PATH))
    for refused in ({"keep_embeddings": "no"}, {"keep_embeddings": 0}, {"merge": {"dtype": "fp16"}},
                    {"merge": {"dtype": "float64"}}, {"dtype": "float16"}):
        with pytest.raises(WorkflowError):
            validate({**shipped_config(), **refused}, str(SCHEMA_PATH))


def test_keep_embeddings_false_without_a_classifier_is_refused_at_load(demo_workdir):
    """Without calls, embeddings.h5 is the run's only result: deleting it is refused before any job runs."""
    with pytest.raises(Exception) as error:
        run_snakemake(demo_workdir, config={"keep_embeddings": False, "classifier": None})
    assert "keep_embeddings: false" in str(error.value) and "classifier: is null" in str(error.value)
    assert not (demo_workdir / "work").exists()


# --- the stages -----------------------------------------------------------------------------------

def write_predict_inputs(folder, rows, dtype):
    """embeddings.h5 (`rows` stored as `dtype`), frames.tsv and reads.tsv: read i has one chunk with frames F1
    and R1 (rows 2i and 2i + 1)."""
    ids = [f"read{i // 2}_chunk_1{'F1' if i % 2 == 0 else 'R1'}" for i in range(len(rows))]
    with EmbeddingWriter(folder / "embeddings.h5", rows.shape[1], {"chunk_length": 500}, dtype=dtype) as writer:
        writer.append(ids, rows)
    with open(folder / "frames.tsv", "w") as handle:
        handle.write(FRAMES_HEADER)
        handle.writelines(f"{sid}\t{sid.split('_chunk_')[0]}\t1\t{'+' if sid[-2] == 'F' else '-'}\t1\t0\t500\t166\t0\n"
                          for sid in ids)
    with open(folder / "reads.tsv", "w") as handle:
        handle.write(READS_HEADER)
        handle.writelines(f"read{r}\t500\t1\t1\t2\t0\n" for r in range(len(rows) // 2))


def predictions(folder):
    with open(folder / "predictions.tsv") as handle:
        next(handle)
        return [line.rstrip("\n").split("\t") for line in handle]


def test_predict_reads_a_float16_result_and_computes_in_float32(tmp_path):
    """The scores of a float16 file are the classifier's float32 scores of its rows widened, digit for digit;
    every call whose score2 is far from 0.5 is the float32 file's call."""
    rng = np.random.default_rng(7)
    rows = (rng.standard_normal((400, 112)) * rng.uniform(0.05, 3, 112)).astype(np.float32)
    classifier = write_demo_classifier(tmp_path / "classifier.pth", input_dim=112)
    for dtype in ("float32", "float16"):
        (tmp_path / dtype).mkdir()
        write_predict_inputs(tmp_path / dtype, rows, dtype)
        predict_sample(tmp_path / dtype / "embeddings.h5", tmp_path / dtype / "frames.tsv",
                       tmp_path / dtype / "reads.tsv", classifier, tmp_path / dtype, chunk_length=500, batch_rows=64)
    single, half = predictions(tmp_path / "float32"), predictions(tmp_path / "float16")
    model, widened = load_classifier(classifier), rows.astype(np.float16).astype(np.float32)
    widened = np.concatenate([score(model, widened[i : i + 64]) for i in range(0, len(rows), 64)])  # predict's batches
    assert [r[3] for r in half] == [str(p) for p in widened[:, 1]]  # score2 as written: float32's digits
    s32, s16 = (np.array([float(r[3]) for r in table]) for table in (single, half))
    change = np.abs(s16 - s32)
    assert 0 < change.max() < DEMO_FLOAT16_BOUND and (s32 > 0.1).any() and (s32 < 0.9).any()
    far = np.abs(s32 - 0.5) > change.max()
    assert [r[1] for r, keep in zip(single, far) if keep] == [r[1] for r, keep in zip(half, far) if keep]


# --- the workflow ---------------------------------------------------------------------------------

def outputs(workdir, sample, names=CALLS):
    return {name: (workdir / "results" / sample / name).read_bytes() for name in names}


@pytest.mark.workflow
def test_keep_embeddings_false_deletes_embeddings_h5_and_the_calls_are_a_kept_runs(demo_workdir):
    run_snakemake(demo_workdir, config={"keep_embeddings": False})
    samples = sorted(p.name for p in (demo_workdir / "results").iterdir() if p.is_dir() and p.name != "report")
    assert samples == ["coding", "mixed"]
    for sample in samples:
        assert not (demo_workdir / "results" / sample / "embeddings.h5").exists()
        assert (demo_workdir / "results" / sample / "validation.json").exists()  # kept: the report reads it
    assert not list((demo_workdir / "results").glob("*/.embeddings.h5*"))
    dropped = {sample: outputs(demo_workdir, sample) for sample in samples}
    stamps = {p: p.stat().st_mtime_ns for p in (demo_workdir / "results").rglob("*") if p.is_file()}

    run_snakemake(demo_workdir, config={"keep_embeddings": False})  # the deleted file reruns nothing
    assert {p: p.stat().st_mtime_ns for p in (demo_workdir / "results").rglob("*") if p.is_file()} == stamps

    run_snakemake(demo_workdir)  # keep_embeddings: true: merged again (the demo keeps its shards), rescored
    for sample in samples:
        assert (demo_workdir / "results" / sample / "embeddings.h5").exists()
        assert outputs(demo_workdir, sample) == dropped[sample]


def test_a_float16_runs_calls_differ_from_float32s_only_within_the_measured_bound(finished_demo_copy):
    demo_workdir = finished_demo_copy  # the demo's float32 run
    target = ["results/coding/predictions.tsv"]
    single = outputs(demo_workdir, "coding", ("predictions.tsv", "embeddings.h5"))
    run_snakemake(demo_workdir, targets=target, config={"merge": {"dtype": "float16"}})  # a param: merge reruns
    result = demo_workdir / "results/coding/embeddings.h5"
    with open_embeddings(result) as half:
        assert half.attrs["dtype"] == "float16" and half.embeddings.dtype == np.float16
        assert verify_checksums(half) == []
    assert 0.5 < result.stat().st_size / len(single["embeddings.h5"]) < 0.6  # 112 features: ids weigh more
    rows32 = [line.split("\t") for line in single["predictions.tsv"].decode().splitlines()[1:]]
    rows16 = predictions(demo_workdir / "results/coding")
    assert [r[0] for r in rows32] == [r[0] for r in rows16]
    s32, s16 = (np.array([float(r[3]) for r in rows]) for rows in (rows32, rows16))
    assert np.abs(s16 - s32).max() <= DEMO_FLOAT16_BOUND
    for r32, r16, score2 in zip(rows32, rows16, s32):
        assert r32[1] == r16[1] or abs(score2 - 0.5) <= DEMO_FLOAT16_BOUND


# --- the benchmark --------------------------------------------------------------------------------

@pytest.mark.slow
def test_disk_benchmark_measures_and_projects(tmp_path):
    """benchmarks/disk.py at a toy size: its own checks pass and it writes every part of its table."""
    out = tmp_path / "disk.md"
    subprocess.run([sys.executable, "-m", "benchmarks.disk", "--reads", "300", "--rows", "1000",
                    "--shards", "2", "--repeat", "1", "--shard-residues", "20000", "--dir", str(tmp_path),
                    "--out", str(out)],
                   cwd=REPO, check=True, capture_output=True, text=True, timeout=900)
    text = out.read_text()
    for part in ("## 1. Measured", "## 2. Published widths", "## 3. merge.dtype: float16", "(b) published width"):
        assert part in text
    assert re.search(r"\| embeddings.h5, merge.dtype: float16 \| 6,[67]\d\d \|", text)  # 3328 x 2 + the ids
