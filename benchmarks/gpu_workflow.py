"""The whole workflow on one GPU (issue 12, item 3): N reads of 500 bp through Snakemake with real-size
random-weight models in the published layouts (DNABERT-S 117M folder; ESM-2 3B or 650M as Hugging Face
safetensors), `--resources gpu=1`. Reports reads per GPU-hour, the GPU's busy fraction over the run
(nvidia-smi sampled every 0.5 s), time per stage (sums of Snakemake's benchmark files), and the time
projected for 1M reads of 500 bp, against virnucpro-broad's 1M reads in 53 min on an RTX 4090 scaled
by peak bf16 FLOP (165 TFLOP/s for the 4090, 989 for an H100/H200: 53 min x 165 / 989 = 8.8 min).

    python3 -m benchmarks.gpu_workflow --reads 50000                       # on the GPU machine
    .venv/bin/python -m benchmarks.gpu_workflow --device cpu --esm2 650m --layers 1 --reads 200  # smoke

The classifier is left out (VirNucPro's needs trained features); prepare, embed, merge and the report
run as in production. Writing the 3B model (11 GB of fp32) takes ~1 min of the run; it is not timed.
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
from pathlib import Path

from benchmarks import REPO
from benchmarks.command import command_line, write_results
from benchmarks.e2e import workflow_copy
from benchmarks.synthetic import synthetic_reads, write_fasta
from benchmarks.workflow import stage_seconds
from virnucflow.models.dnabert_s import DnabertSConfig
from virnucflow.models.esm2 import Esm2Config
from virnucflow.models.random_weights import write_random_dnabert_s, write_random_esm2


ESM2 = {"3b": (36, 2560, 40), "650m": (33, 1280, 20)}  # layers, width, heads of the published models
PEAK_TFLOPS = {"H100/H200 bf16": 989.0, "RTX 4090 bf16 (fp32 accumulate)": 165.0}
BROAD_MINUTES_1M = 53.0  # virnucpro-broad: 1M reads on one RTX 4090


class GpuMonitor:
    """nvidia-smi's utilization.gpu every 0.5 s while the block runs (no samples without nvidia-smi)."""

    def __init__(self, path):
        self.path, self.proc = path, None

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self.handle = open(self.path, "w")
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                          "--format=csv,noheader,nounits", "-lms", "500"], stdout=self.handle,
                                         stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
            self.handle.close()

    def samples(self):
        """(utilization %, memory MiB) per sample."""
        if not self.proc:
            return []
        rows = []
        for line in Path(self.path).read_text().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and all(p.replace(".", "").isdigit() for p in parts):
                rows.append((float(parts[0]), float(parts[1])))
        return rows


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=50_000)
    parser.add_argument("--read-length", type=int, default=500)
    parser.add_argument("--esm2", choices=sorted(ESM2), default="3b")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers in both models (smoke runs)")
    parser.add_argument("--device", choices=["auto", "cpu"], default="auto")
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--shard-residues", type=int, default=2_000_000,
                        help="residues per shard (the default 10M makes one shard of 50k reads)")
    parser.add_argument("--timeout", type=float, default=480, help="seconds for the snakemake run")
    parser.add_argument("--dir", default=None, help="scratch folder (default: the system temp folder)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/gpu_workflow.md"))
    return parser.parse_args()


def report_lines(args, wall, frames, devices, stages, samples):
    """The results table: wall, reads per GPU-hour, GPU busy, the projection against virnucpro-broad, stages."""
    layers, smoke = ESM2[args.esm2][0], args.layers is not None
    busy = (f"{sum(u for u, _ in samples) / len(samples):.0f}% mean utilization, "
            f"{sum(1 for u, _ in samples if u > 0) / len(samples):.0%} of samples busy, peak memory "
            f"{max(m for _, m in samples) / 1024:.1f} GiB ({len(samples)} samples)") if samples else "no nvidia-smi"
    per_hour = args.reads / wall * 3600
    projected = wall * 1_000_000 / args.reads / 60
    broad = BROAD_MINUTES_1M * PEAK_TFLOPS["RTX 4090 bf16 (fp32 accumulate)"] / PEAK_TFLOPS["H100/H200 bf16"]
    lines = [
        f"# the workflow on one GPU ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {args.cores} cores)", "",
        f"Command: `{command_line('python3')}`", "",
        ("**SMOKE RUN** (fewer layers: not a measurement). " if smoke else "")
        + f"{args.reads} reads of {args.read_length} bp (half coding), {frames} frames; DNABERT-S 117M + ESM-2 "
        f"{args.esm2.upper()} ({args.layers or layers} layers), random weights in the published layouts; "
        f"embed device {args.device} (ran on: {', '.join(devices)}); shard_residues {args.shard_residues}; "
        f"`--resources gpu=1`.", "",
        "| figure | value |", "|---|---|",
        f"| wall (snakemake, models already written) | {wall:.0f} s |",
        f"| reads per GPU-hour | {per_hour:,.0f} |",
        f"| GPU busy over the run | {busy} |",
        f"| projected, 1M reads of {args.read_length} bp | {projected:.1f} min |",
        f"| virnucpro-broad, 1M reads, per unit of peak FLOP (53 min on a 4090 x 165 / 989) | {broad:.1f} min |",
        f"| ratio (ours / broad's, per FLOP; < 1 is faster) | {projected / broad:.2f} |",
        "", "| stage | jobs | job seconds (sum) | us per read |", "|---|---:|---:|---:|",
    ]
    for rule, (seconds, jobs) in sorted(stages.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"| {rule} | {jobs} | {seconds:.1f} | {1e6 * seconds / args.reads:.0f} |")
    return lines


def main():
    args = parse_args()
    layers, width, heads = ESM2[args.esm2]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        models = {
            "dnabert_s": write_random_dnabert_s(root / "models/dnabert_s", DnabertSConfig(
                hidden=768, layers=args.layers or 12, heads=12, intermediate=3072, vocab_size=4096)),
            "esm2": write_random_esm2(root / f"models/esm2_{args.esm2}", "hf",
                                      Esm2Config(layers=args.layers or layers, embed_dim=width, heads=heads)),
        }
        print(f"models written in {time.perf_counter() - started:.0f} s", flush=True)
        (root / "run").mkdir()
        workflow_copy(root / "run", 1, args.shard_residues, args.device, 4, models)
        write_fasta(root / "run/reads.fa", synthetic_reads(args.reads, args.read_length, args.read_length,
                                                            coding_fraction=0.5, seed=12))
        monitor = GpuMonitor(root / "nvidia_smi.csv")
        command = [sys.executable, "-m", "snakemake", "--configfile", "bench.yaml", "--cores", str(args.cores),
                   "--workflow-profile", "none", "--resources", "gpu=1", "--quiet"]
        with monitor:
            start = time.perf_counter()
            proc = subprocess.run(command, cwd=root / "run", timeout=args.timeout, capture_output=True, text=True)
            wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"snakemake failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
        stages = stage_seconds(root / "run")
        frames = sum(1 for _ in open(root / "run/work/bench/frames.tsv")) - 1
        with open(root / "run/results/bench/embed_jobs.tsv", newline="") as handle:
            devices = sorted({f"{job['device_name'] or job['device']} {job['precision']}"
                              for job in csv.DictReader(handle, delimiter="\t")})
        samples = monitor.samples()
    lines = report_lines(args, wall, frames, devices, stages, samples)
    write_results(args.out, lines)


if __name__ == "__main__":
    main()
