"""`make bench` (`python -m benchmarks.run_all`): every benchmark with the sizes used for BENCHMARKS.md;
results in benchmarks/results/.

The GPU benchmark runs only where CUDA is available. Each script measures its baseline in the
same run, so the ratios hold on a noisy machine; copy the tables into BENCHMARKS.md.
"""

import subprocess
import sys

import torch

from benchmarks import REPO

HERE = REPO / "benchmarks"
RUNS = [
    ["prepare", "--reads", "100000", "200000"],
    ["prepare", "--reads", "100000", "--no-reader", "--fastq", "--repeat", "5",
     "--out", str(HERE / "results/prepare_fastq.md")],
    ["disk"],
    ["merge", "--rows", "100000", "1000000"],
    ["merge", "--rows", "100000", "--shuffle", "--out", str(HERE / "results/merge_shuffled.md")],
    ["dag", "--shards", "100", "1000", "5000", "10000"],
    ["load"],
    ["embed", "--sequences", "2000"],
    ["e2e", "--reads", "100000"],
    ["preflight", "--sizes-mb", "1", "1000", "20000", "--gz-mb", "200", "--samples", "10", "100", "1000"],
    ["batching"],
    ["samples", "--samples", "40", "160"],
    ["samples", "--samples", "10", "100", "1000", "--batch-size", "50", "--out", str(HERE / "results/samples_parts.md")],
]
if torch.cuda.is_available():
    RUNS.append(["embed", "--gpu", "--sequences", "20000"])
    RUNS.append(["gpu_workflow", "--reads", "50000"])

for run in RUNS:
    print("==", " ".join(run), flush=True)
    subprocess.run([sys.executable, "-m", f"benchmarks.{run[0]}", *run[1:]], check=True, cwd=REPO)
