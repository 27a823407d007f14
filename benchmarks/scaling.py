"""Embed jobs side by side: the embed stage of one sample run with one worker, then with N, in the
same run, through Snakemake's local executor as a user runs it. The ratio of the two wall times is
how well the stage scales over the devices of one node.

GPU node (`--device auto`): N workers = `--resources gpu=N`, each embed job claims its own free GPU
(virnucflow/devices.py); `--real-sizes` embeds with the published architectures (DNABERT-S 117M,
ESM-2 650M, random weights). CPU (`--device cpu`): N workers = `--cores N`, one thread per job.

    .venv/bin/python -m benchmarks.scaling --workers 2 --reads 20000                  # CPU, tiny models
    .venv/bin/python -m benchmarks.scaling --device auto --workers 2 --real-sizes --reads 200000
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import REPO
from benchmarks.command import command_line
from benchmarks.e2e import workflow_copy
from virnucflow.models.dnabert_s import DnabertSConfig
from virnucflow.models.esm2 import Esm2Config
from virnucflow.models.random_weights import write_random_dnabert_s, write_random_esm2


def snakemake(root, targets, cores, gpus):
    subprocess.run([sys.executable, "-m", "snakemake", "--configfile", "bench.yaml", "--cores", str(cores),
                    "--resources", f"gpu={gpus}", "--workflow-profile", "none", "--quiet", "all", "--", *targets],
                   cwd=root, check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "auto"], default="cpu")
    parser.add_argument("--shard-residues", type=int, default=500_000, help="small shards: enough jobs to share")
    parser.add_argument("--real-sizes", action="store_true", help="DNABERT-S 117M and ESM-2 650M, random weights")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/scaling.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = None
        if args.real_sizes:
            models = {"dnabert_s": write_random_dnabert_s(root / "dnabert_s", DnabertSConfig()),  # the published size
                      "esm2": write_random_esm2(root / "esm2_650M", "hf", Esm2Config(layers=33, embed_dim=1280,
                                                                                       heads=20))}
        workflow_copy(root, args.reads, args.shard_residues, args.device, 1, models)
        snakemake(root, ["work/bench/frames.tsv"] + (["resources/demo_models/dnabert_s_tiny"] if not models else []),
                  cores=1, gpus=1)
        shards = sorted(p.stem for p in (root / "work/bench/shards").glob("*.faa"))
        targets = [f"work/bench/embed/{shard}.{kind}.json" for shard in shards for kind in ("dna", "protein")]
        walls = {}
        for workers in (1, args.workers):
            shutil.rmtree(root / "work/bench/embed", ignore_errors=True)
            cores, gpus = (workers, 0) if args.device == "cpu" else (2 * args.workers, workers)
            start = time.perf_counter()
            snakemake(root, targets, cores, gpus)
            walls[workers] = time.perf_counter() - start
            print(f"{workers} worker(s): {walls[workers]:.1f} s for {len(targets)} embed jobs", flush=True)
    one, many = walls[1], walls[args.workers]
    models_text = "DNABERT-S 117M + ESM-2 650M (random weights)" if args.real_sizes else "the tiny demo models"
    lines = [
        f"# embed jobs side by side ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores)", "",
        f"Command: `{command_line()}`", "",
        f"{args.reads} reads, {len(targets)} embed jobs ({len(shards)} shards x 2 models) with {models_text}, "
        f"device {args.device}; wall time of the embed stage through Snakemake's local executor.", "",
        "| workers | wall s | speed-up | ideal |", "|---:|---:|---:|---:|",
        f"| 1 | {one:.1f} | 1.00x | 1x |",
        f"| {args.workers} | {many:.1f} | {one / many:.2f}x | {args.workers}x |",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
