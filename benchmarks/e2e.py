"""End to end on CPU with the tiny demo models: the whole workflow on N synthetic reads, wall time
and time per stage (sums of Snakemake's benchmark files), per read.

    .venv/bin/python -m benchmarks.e2e --reads 100000
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.command import command_line
from benchmarks.synthetic import synthetic_reads, write_fasta
from benchmarks.workflow import REPO, copy_workflow, stage_seconds


def workflow_copy(root, reads, shard_residues, device="cpu", embed_threads=1, models=None):
    """The workflow in `root` with `reads` synthetic reads as sample `bench` and `bench.yaml`: the demo
    config (tiny models unless `models` = {"dnabert_s": folder, "esm2": folder} is given) sized for
    benchmarks."""
    overlay = {"samples": "samples.tsv", "shard_residues": shard_residues,
               "embed": {"device": device, "precision": "auto", "dna_token_budget": 16384,
                         "protein_token_budget": 16384, "threads": embed_threads},
               "merge": {"buffer_rows": 10000}}
    if models:  # real-size models: the tiny classifier does not fit their features
        overlay.update(models={"dnabert_s": str(models["dnabert_s"]), "esm2": str(models["esm2"])}, classifier=None)
    copy_workflow(root, overlay, configfile="bench.yaml")
    write_fasta(root / "reads.fa", synthetic_reads(reads, 150, 1500, coding_fraction=0.5, seed=1))
    (root / "samples.tsv").write_text("sample\tfasta\nbench\treads.fa\n")


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
        f"Command: `{command_line()}`", "",
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
