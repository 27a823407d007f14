"""The benchmark scripts at toy sizes: each runs its own checks (byte-identical outputs, merged rows
in the right place) and writes its table. Not timings: these keep the scripts from rotting,
the GPU one included, whose code path runs here on the CPU with one layer per model."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_benchmark(name, *args, out):
    """`python -m benchmarks.NAME ARGS --out OUT`, from the repository root; the results file's text."""
    subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *args, "--out", str(out)], cwd=REPO, check=True,
                   capture_output=True, text=True, timeout=600)
    return out.read_text()


def table_rows(text):
    """The body rows of every markdown table in `text` (the lines after a |---| line)."""
    rows, in_body, previous = [], False, ""
    for line in text.splitlines():
        in_body = line.startswith("| ") and (in_body or previous.startswith("|--"))
        if in_body:
            rows.append(line)
        previous = line
    return rows


def test_prepare_benchmark_outputs_are_identical(tmp_path):
    text = run_benchmark("prepare", "--reads", "300", "--no-reader", "--tmp", str(tmp_path), out=tmp_path / "p.md")
    (row,) = table_rows(text)
    assert row.rstrip().endswith("| yes |")


@pytest.mark.parametrize("shuffle", [[], ["--shuffle"]])
def test_merge_benchmark_checks_its_result(tmp_path, shuffle):
    text = run_benchmark("merge", "--rows", "3000", "--shards", "3", "--repeat", "1", "--dir", str(tmp_path),
                         *shuffle, out=tmp_path / "m.md")
    (row,) = table_rows(text)
    assert row.startswith("| 3000 |")


@pytest.mark.workflow  # a benchmark script of many seconds
def test_dag_benchmark(tmp_path):
    text = run_benchmark("dag", "--shards", "3", out=tmp_path / "d.md")
    (row,) = table_rows(text)
    assert row.startswith("| 3 | 10 |")


@pytest.mark.workflow  # a benchmark script of many seconds
def test_embed_benchmark_cpu_and_gpu_code_paths(tmp_path):
    cpu = run_benchmark("embed", "--sequences", "20", out=tmp_path / "cpu.md")
    assert len(table_rows(cpu)) == 2
    smoke = run_benchmark("embed", "--gpu", "--device", "cpu", "--layers", "1", "--sequences", "6",
                          out=tmp_path / "gpu.md")
    rows = table_rows(smoke)
    assert [row.split(" | ")[0] for row in rows] == ["| DNABERT-S 117M (bf16 packed)", "| ESM-2 650M (bf16 packed)",
                                                     "| ESM-2 3B (bf16 packed)"]
    assert "SMOKE RUN" in smoke
    assert all(row.split(" | ")[3] == "0.0%" for row in rows)  # packed: no padding tokens


@pytest.mark.workflow
def test_e2e_and_scaling_benchmarks_run_the_workflow(tmp_path):
    text = run_benchmark("e2e", "--reads", "300", out=tmp_path / "e2e.md")
    stages = {row.split(" | ")[0].lstrip("| ") for row in table_rows(text)}
    assert {"prepare", "embed_dna", "embed_protein", "merge", "predict"} <= stages
    text = run_benchmark("scaling", "--reads", "300", "--workers", "2", out=tmp_path / "scaling.md")
    assert [row.split(" | ")[0] for row in table_rows(text)] == ["| 1", "| 2"]


@pytest.mark.workflow  # a benchmark script of many seconds
def test_preflight_benchmark(tmp_path):
    text = run_benchmark("preflight", "--sizes-mb", "1", "10", "--gz-mb", "1", "--samples", "2", "4",
                         out=tmp_path / "pf.md")
    rows = table_rows(text)
    assert len(rows) == 5 and rows[-1].startswith("| 4 |")


@pytest.mark.workflow  # a benchmark script of many seconds
def test_batching_benchmark(tmp_path):
    text = run_benchmark("batching", "--sequences", "8", "--dna-layers", "1", "--budgets", "4000", "0",
                         out=tmp_path / "b.md")
    rows = table_rows(text)
    assert [row.split(" | ")[1] for row in rows] == ["4000 (reference)", "1 sequence per batch"] * 2
    assert all(float(row.split(" | ")[4]) < 1e-5 for row in rows if "reference" not in row)  # max abs diff


@pytest.mark.workflow
def test_samples_benchmark_runs_the_parts_recipe_of_the_readme(tmp_path):
    """README "Many samples": a sample sheet per part (`--config samples=...`), then the whole sheet."""
    text = run_benchmark("samples", "--samples", "4", "--batch-size", "2", "--jobs", "real", "--tmp",
                         str(tmp_path), out=tmp_path / "s.md")  # real jobs: the final report must list all 4
    first = table_rows(text)[0].split(" | ")
    assert first[0] == "| 4" and first[2] == "3"  # 4 samples in 3 snakemake runs: 2 parts, then the whole sheet


@pytest.mark.workflow
def test_gpu_workflow_benchmark_code_path_on_the_cpu(tmp_path):
    """benchmarks/gpu_workflow.py (issue 12's whole-workflow run) with one layer per model on the CPU."""
    text = run_benchmark("gpu_workflow", "--device", "cpu", "--esm2", "650m", "--layers", "1", "--reads", "60",
                         "--cores", "2", "--timeout", "300", "--dir", str(tmp_path), out=tmp_path / "gw.md")
    assert "SMOKE RUN" in text and "| reads per GPU-hour |" in text
    stages = {row.split(" | ")[0].lstrip("| ") for row in table_rows(text)}
    assert {"prepare", "embed_dna", "embed_protein", "merge"} <= stages


def test_benchmarks_are_a_package_of_short_functions():
    """benchmarks/ is imported as a package (`python -m benchmarks.NAME`), never through sys.path, and no
    function in it is over 60 lines."""
    long, path_edits = [], []
    for path in sorted((REPO / "benchmarks").glob("*.py")):
        text = path.read_text()
        if "sys.path.insert" in text:
            path_edits.append(path.name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert (REPO / "benchmarks/__init__.py").is_file()
    assert not path_edits, f"sys.path edited in {path_edits}"
    assert not long, f"functions over 60 lines: {long}"
