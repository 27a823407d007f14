"""Checks when the workflow loads: every problem one line naming the key or sample and the fix, before
any job runs, also in `snakemake -n`."""

import gzip
import shutil
import subprocess
import sys

import pytest

from virnucflow.demo import write_demo_models
from virnucflow.demo import write_demo_classifier
from conftest import copy_workflow
from virnucflow.preflight import PreflightError, preflight
from virnucflow.snakemake_seams import Product, is_dry_run, runs_no_job, snakemake_command

CONFIG = {"chunk_length": 500, "embed": {"device": "auto"}, "classifier": None}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_demo_models(root / "dnabert_s", root / "esm2.pt", root / "classifier.pth")  # 48 + 64 features
    return root


def config_with(models, **changes):
    config = {**CONFIG, "models": {"dnabert_s": str(models / "dnabert_s"), "esm2": str(models / "esm2.pt")}}
    config.update(changes)
    return config


def problems(config, samples, **kwargs):
    with pytest.raises(PreflightError) as raised:
        preflight(config, samples, **kwargs)
    return str(raised.value).splitlines()


def test_a_good_run_passes(models, tmp_path):
    reads = tmp_path / "reads.fa.gz"
    with gzip.open(reads, "wt") as handle:
        handle.write("\n>r1\nACGT\n")
    preflight(config_with(models, classifier=str(models / "classifier.pth")), {"s1": str(reads)})


@pytest.mark.parametrize("content, message", [
    (b"", "file is empty"),
    (b"\xef\xbb\xbf>r1\nACGT\n", "byte order mark (BOM)"),
    (b"\x00\x01binary", "not FASTA or FASTQ (binary content"),
    (b"sequence\nACGT\n", "not FASTA or FASTQ (text"),
])
def test_input_files_are_checked_by_their_start(models, tmp_path, content, message):
    reads = tmp_path / "reads.fa"
    reads.write_bytes(content)
    (line,) = problems(config_with(models), {"s1": str(reads)})
    assert line.startswith(f"sample s1: {reads}: ") and message in line


def test_fastq_and_both_files_of_a_pair_are_checked(models, tmp_path):
    r1, r2 = tmp_path / "p_R1.fq.gz", tmp_path / "p_R2.fq"
    r1.write_bytes(gzip.compress(b"@r1 1:N\nACGT\n+\nIIII\n"))
    r2.write_bytes(b"@r1 2:N\nACGT\n+\nIIII\n")
    preflight(config_with(models), {"single": [str(r2)], "paired": [str(r1), str(r2)]})
    r2.write_bytes(b"")
    assert problems(config_with(models), {"paired": [str(r1), str(r2)]}) == [
        f"sample paired: {r2}: file is empty; remove the sample or provide its reads"]


def test_missing_folder_and_unreadable_inputs_are_named(models, tmp_path):
    good = tmp_path / "good.fa"
    good.write_text(">r1\nACGT\n")
    found = problems(config_with(models), {"a": str(tmp_path / "nope.fa"), "b": str(tmp_path), "c": str(good),
                                           "d": "/dev/null"})
    assert len(found) == 3  # one line per problem, the good sample not among them
    assert "sample a:" in found[0] and "file not found" in found[0]
    assert "sample b:" in found[1] and "is a folder, not a reads file" in found[1]
    assert "sample d:" in found[2] and "not a regular file" in found[2]


def test_a_gzip_file_that_is_not_gzip_inside_is_named(models, tmp_path):
    broken = tmp_path / "reads.fa.gz"
    broken.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    (line,) = problems(config_with(models), {"s1": str(broken)})
    assert "damaged gzip data" in line


def test_models_are_resolved_offline(models, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # read at import
    config = config_with(models)
    config["models"] = {"dnabert_s": "zhihan1996/DNABERT-S", "esm2": str(tmp_path / "missing.pt")}
    reads = tmp_path / "r.fa"
    reads.write_text(">r\nACGT\n")
    dna, protein = problems(config, {"s": str(reads)})
    assert dna.startswith("models.dnabert_s: model 'zhihan1996/DNABERT-S' is not a local path") and "download-models" in dna
    assert protein.startswith("models.esm2: model ") and "no such file or folder" in protein


def test_an_incomplete_model_folder_is_named(models, tmp_path):
    folder = tmp_path / "dnabert_s"
    shutil.copytree(models / "dnabert_s", folder)
    (folder / "tokenizer.json").unlink()
    reads = tmp_path / "r.fa"
    reads.write_text(">r\nACGT\n")
    config = config_with(models)
    config["models"]["dnabert_s"] = str(folder)
    (line,) = problems(config, {"s": str(reads)})
    assert line.startswith("models.dnabert_s: ") and "no tokenizer.json" in line


def test_the_classifier_is_loaded_safely_and_must_fit_the_models_and_the_chunk_length(models, tmp_path):
    reads = tmp_path / "r.fa"
    reads.write_text(">r\nACGT\n")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a model")
    (line,) = problems(config_with(models, classifier=str(garbage)), {"s": str(reads)})
    assert line.startswith(f"classifier: {garbage}: ") and "not a classifier file torch can read safely" in line

    wide = write_demo_classifier(tmp_path / "wide.pth", input_dim=3328)
    (line,) = problems(config_with(models, classifier=str(wide)), {"s": str(reads)})
    assert "takes 3328 features but the embeddings have 112" in line

    trained_on_300 = shutil.copy(models / "classifier.pth", tmp_path / "300_model.pth")
    (line,) = problems(config_with(models, classifier=str(trained_on_300)), {"s": str(reads)})
    assert "trained on 300 bp chunks but the run used chunk_length 500" in line

    (line,) = problems(config_with(models, classifier=str(tmp_path / "absent.pth")), {"s": str(reads)})
    assert "classifier not found" in line


def test_models_a_rule_will_build_are_not_looked_for(tmp_path):
    reads = tmp_path / "r.fa"
    reads.write_text(">r\nACGT\n")
    config = {**CONFIG, "models": {"dnabert_s": "resources/x", "esm2": "resources/y.pt"}, "classifier": "c.pth"}
    preflight(config, {"s": str(reads)}, made_by_rule=lambda path: Product("demo_models", finished=False))


def test_a_finished_but_broken_product_of_a_rule_is_named_as_a_leftover(tmp_path):
    reads = tmp_path / "r.fa"
    reads.write_text(">r\nACGT\n")
    empty = tmp_path / "dnabert_s"
    empty.mkdir()
    config = {**CONFIG, "models": {"dnabert_s": str(empty), "esm2": "resources/y.pt"}}
    made = {str(empty): Product("demo_models", finished=True), "resources/y.pt": Product("demo_models", False)}
    (line,) = problems(config, {"s": str(reads)}, made_by_rule=made.get)
    assert line.startswith(f"models.dnabert_s: {empty}: no config.json")
    assert line.endswith(f"(rule demo_models made it: if a run was interrupted while it wrote, this is its "
                         f"leftover; delete {empty} and run again)")


@pytest.mark.parametrize("argv, option, dry", [
    (["snakemake", "--configfile", "c.yaml", "--unlock"], "unlock", False),
    (["/env/bin/snakemake", "--unl"], "unlock", False),  # abbreviations, as snakemake's parser takes them
    (["snakemake", "--cleanup-metadata", "x"], "cleanup_metadata", False),
    (["snakemake", "--list-rules"], "list_rules", False),
    (["snakemake", "--report=r.html"], "report", False),
    (["snakemake", "-np"], None, True),
    (["snakemake", "-sSnakefile", "--config", "x=-n", "note=--unlock"], None, False),
    (["snakemake", "--rerun-incomplete", "--cores", "2"], None, False),
])
def test_commands_that_run_no_job_are_recognised(argv, option, dry):
    command = snakemake_command(argv)
    assert runs_no_job(command) == option and is_dry_run(command) == dry


def test_through_the_python_api_the_host_programs_arguments_count_for_nothing():
    """pytest -v, or pytest -n 4 (xdist): neither --version nor a dry run of Snakemake's."""
    for argv in (["pytest", "-v"], ["pytest", "-n", "4"], ["myapp", "--unlock"]):
        command = snakemake_command(argv)
        assert command is None and runs_no_job(command) is None and not is_dry_run(command)


def snakemake_in(workdir, *args):
    return subprocess.run([sys.executable, "-m", "snakemake", "--configfile", "config/demo.yaml", *args],
                          cwd=workdir, capture_output=True, text=True)


@pytest.mark.workflow  # six snakemake commands
def test_a_leftover_of_a_killed_model_build_blocks_no_command(tmp_path):
    """Issue 22's reproduction: an empty model folder, as a SIGKILL during rule demo_models left it."""
    workdir = copy_workflow(tmp_path / "run")
    (workdir / "resources/demo_models/dnabert_s_tiny").mkdir(parents=True)
    for args in (["--unlock"], ["--list-rules"], ["-n"], ["-n", "--rerun-incomplete"]):
        proc = snakemake_in(workdir, *args)
        assert proc.returncode == 0, (args, proc.stdout[-2000:] + proc.stderr[-2000:])
    assert "demo_models" in proc.stdout  # the rule builds its models again

    # Every output there and no incomplete marker: a finished build, checked, and a broken one named.
    (workdir / "resources/demo_models/esm2_t2_tiny.pt").write_bytes(b"x")
    (workdir / "resources/demo_models/classifier_tiny.pth").write_bytes(b"x")
    proc = snakemake_in(workdir, "-n")
    assert proc.returncode != 0
    assert ("delete resources/demo_models/dnabert_s_tiny and run again" in proc.stdout + proc.stderr)
    assert snakemake_in(workdir, "--unlock").returncode == 0  # still not in the way of bookkeeping


def test_a_gpu_device_on_a_local_run_without_gpus(models, tmp_path):
    reads = tmp_path / "r.fa"
    reads.write_text(">r\nACGT\n")
    (line,) = problems(config_with(models, embed={"device": "cuda"}), {"s": str(reads)}, local_gpus=0)
    assert line.startswith("embed.device: cuda asks for GPU 0 but this local run has 0 GPU slot(s)")
    preflight(config_with(models, embed={"device": "cuda:1"}), {"s": str(reads)}, local_gpus=2)
    preflight(config_with(models, embed={"device": "cuda"}), {"s": str(reads)}, local_gpus=None)  # a cluster run


def dry_run(workdir, *config):
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "config/demo.yaml",
                           "--config", *config], cwd=workdir, capture_output=True, text=True)


def test_a_dry_run_reports_a_bad_classifier_and_a_bad_sample_before_any_job(demo_workdir):
    (demo_workdir / "bad.pth").write_bytes(b"not a model")
    (demo_workdir / "config/example/bom.fa").write_bytes(b"\xef\xbb\xbf>r1\nACGT\n")
    sheet = demo_workdir / "config/two.tsv"
    sheet.write_text("sample\tfasta\ncoding\tconfig/example/coding.fa\nbom\tconfig/example/bom.fa\n")
    proc = dry_run(demo_workdir, "classifier=bad.pth", f"samples={sheet.relative_to(demo_workdir)}")
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr  # Snakemake prints its errors to stdout
    lines = [line for line in output.splitlines() if line.startswith(("sample ", "classifier:"))]
    assert len(lines) == 2 and "byte order mark" in lines[0] and "bad.pth" in lines[1]
    assert output.count("byte order mark") == 1  # said once


def test_a_bad_sample_stops_the_run_before_another_sample_writes_anything(demo_workdir):
    from conftest import run_snakemake

    (demo_workdir / "config/example/empty.fa").write_text("")
    (demo_workdir / "config/demo_samples.tsv").write_text(
        "sample\tfasta\ncoding\tconfig/example/coding.fa\nempty\tconfig/example/empty.fa\n")
    with pytest.raises(Exception, match="sample empty: .*file is empty"):
        run_snakemake(demo_workdir)
    assert not (demo_workdir / "work").exists() and not (demo_workdir / "results").exists()
