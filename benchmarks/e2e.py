"""End to end on CPU with the tiny demo models: the whole workflow on N synthetic reads, wall time
and time per stage (sums of Snakemake's benchmark files), per read.

    .venv/bin/python benchmarks/e2e.py --reads 100000
"""

import argparse
import csv
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.synthetic import synthetic_reads, write_fasta  # noqa: E402

FILES = ["Snakefile", "rules", "scripts", "config", "envs", "report", "virnucflow"]


def copy_workflow(root):
    """The workflow's files in `root`, as a user has them."""
    for name in FILES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, root / name)


def workflow_copy(root, reads, shard_residues, device="cpu", embed_threads=1, models=None):
    """The workflow in `root` with `reads` synthetic reads as sample `bench` and `bench.yaml`: the demo
    config (tiny models unless `models` = {"dnabert_s": folder, "esm2": folder} is given) sized for
    benchmarks."""
    copy_workflow(root)
    write_fasta(root / "reads.fa", synthetic_reads(reads, 150, 1500, coding_fraction=0.5, seed=1))
    (root / "samples.tsv").write_text("sample\tfasta\nbench\treads.fa\n")
    config = (root / "config/demo.yaml").read_text()
    config = config.replace("config/demo_samples.tsv", "samples.tsv")
    config = config.replace("shard_residues: 1500", f"shard_residues: {shard_residues}")
    config = config.replace("dna_token_budget: 4096", "dna_token_budget: 16384")
    config = config.replace("protein_token_budget: 4096", "protein_token_budget: 16384")
    config = config.replace("buffer_rows: 100", "buffer_rows: 10000")
    config = config.replace("device: cpu", f"device: {device}")
    config = config.replace("precision: fp32", "precision: auto")
    config = config.replace("threads: 1", f"threads: {embed_threads}")
    if models:  # real-size models: the tiny classifier does not fit their features
        config = config.replace("dnabert_s: resources/demo_models/dnabert_s_tiny", f"dnabert_s: {models['dnabert_s']}")
        config = config.replace("esm2: resources/demo_models/esm2_t2_tiny.pt", f"esm2: {models['esm2']}")
        config = config.replace("classifier: resources/demo_models/classifier_tiny.pth", "classifier: null")
    (root / "bench.yaml").write_text(config)


def stage_seconds(root):
    """{rule: [job seconds summed, jobs]} from the Snakemake benchmark files of a run in `root`."""
    stages = defaultdict(lambda: [0.0, 0])
    for bench in root.glob("logs/**/*.benchmark.tsv"):
        rule = bench.parent.name if bench.parent.name.startswith("embed") else bench.name.split(".")[0]
        with open(bench) as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        stages[rule][0] += float(row["s"])
        stages[rule][1] += 1
    return stages


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=100_000)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--shard-residues", type=int, default=2_000_000)
    parser.add_argument("--device", choices=["cpu", "auto"], default="cpu",
                        help="cpu: embed jobs side by side, `--embed-threads` each; auto: one at a time (a GPU slot)")
    parser.add_argument("--embed-threads", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/e2e.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        workflow_copy(root, args.reads, args.shard_residues, args.device, args.embed_threads)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "snakemake", "--configfile", "bench.yaml", "--cores", str(args.cores),
                        "--workflow-profile", "none", "--resources", "gpu=1", "--quiet"], cwd=root, check=True)
        wall = time.perf_counter() - start
        stages = stage_seconds(root)
        frames = sum(1 for _ in open(root / "work/bench/frames.tsv")) - 1
    lines = [
        f"# end to end on CPU, tiny models ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {args.cores} cores)", "",
        f"Command: `.venv/bin/python {' '.join(sys.argv)}`", "",
        f"{args.reads} reads of 150-1500 bp (half coding), {frames} frames kept; embed device {args.device}, "
        f"{args.embed_threads} thread(s) per embed job; wall {wall:.0f} s ({1e6 * wall / args.reads:.0f} us per read).",
        "",
        "| stage | jobs | job seconds (sum) | us per read |", "|---|---:|---:|---:|",
    ]
    for rule, (seconds, jobs) in sorted(stages.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"| {rule} | {jobs} | {seconds:.1f} | {1e6 * seconds / args.reads:.0f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
