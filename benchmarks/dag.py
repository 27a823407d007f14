"""Workflow overhead: `snakemake -n` time and peak memory for one sample with many shards.

The DAG update after a checkpoint is Snakemake's known weak spot (snakemake issues #292, #2354,
#3003). This builds a finished `prepare` checkpoint with N shards (empty shard files: only their
number matters here) and times a dry run that must expand 2N embed jobs, merge and predict.

    .venv/bin/python -m benchmarks.dag --shards 100 1000 5000
"""

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import REPO
from benchmarks.workflow import copy_workflow
from virnucflow.demo import write_demo_models


def make_run(root, shards):
    copy_workflow(root)
    (root / "reads.fa").write_text(">r1\nACGT\n")
    (root / "config/samples_dag.tsv").write_text("sample\tfasta\ns1\treads.fa\n")
    models = root / "models"  # real (tiny) model files: the workflow checks them when it loads
    write_demo_models(models / "dnabert_s", models / "esm2.pt", models / "classifier.pth")
    (root / "config/dag.yaml").write_text(
        f"samples: config/samples_dag.tsv\nchunk_length: 500\nmodels:\n  dnabert_s: {models / 'dnabert_s'}\n"
        f"  esm2: {models / 'esm2.pt'}\nclassifier: {models / 'classifier.pth'}\n"
    )
    work = root / "work/s1"
    (work / "shards").mkdir(parents=True)
    for name in ["frames.tsv", "reads.tsv", "summary.json"]:
        (work / name).write_text("")
    for i in range(shards):
        for ext in ("fna", "faa"):
            (work / "shards" / f"{i:05d}.{ext}").write_text("")
    later = time.time() + 5  # outputs newer than the input: the checkpoint counts as done
    for path in work.rglob("*"):
        os.utime(path, (later, later))


def dry_run(root):
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "config/dag.yaml",
           "--workflow-profile", "none", "--quiet", "all"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"dry run failed:\n{proc.stderr[-3000:]}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return seconds, peak_mb


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/dag.md"))
    args = parser.parse_args()
    rows = []
    for shards in sorted(args.shards):  # ascending: RUSAGE_CHILDREN keeps the maximum so far
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_run(root, shards)
            seconds, peak_mb = dry_run(root)
        jobs = 2 * shards + 4
        rows.append((shards, jobs, seconds, peak_mb))
        print(f"{shards} shards ({jobs} jobs): {seconds:.1f} s, peak RSS {peak_mb:.0f} MB", flush=True)
    lines = [
        f"# snakemake -n overhead ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores)",
        "",
        f"Command: `{' '.join(['.venv/bin/python', '-m', 'benchmarks.dag', '--shards', *map(str, args.shards)])}`",
        "",
        "| shards | jobs in DAG | dry-run seconds | peak RSS (MB) | ms per job |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {s} | {j} | {t:.1f} | {m:.0f} | {1000 * t / j:.1f} |" for s, j, t, m in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
