"""Model loading, the fixed cost of every embed job: seconds and peak memory to build each encoder
from its published layout (random weights at the real sizes), against reading the same files with
`cat` in the same run. Each load runs in a fresh process, as an embed job does; the files are in
the page cache (read once before), so the figure is the loader's own cost, not the disk's.

A row "+ compiled layers" builds the encoder with compile_layers=True: its first job compiles with an
empty compiler cache (TORCHINDUCTOR_CACHE_DIR, shared by that row's jobs, as a cache on the node
would be), later jobs find the kernels there ("load s, first job" against "load s").

    .venv/bin/python -m benchmarks.load                 # DNABERT-S 117M, ESM-2 650M (2 layouts)
    .venv/bin/python -m benchmarks.load --esm2-3b       # + ESM-2 3B (11 GB of fp32 safetensors)
    python3 -m benchmarks.load --device cuda            # on a GPU: + the copy to it
    python3 -m benchmarks.load --device cuda --compiled --layouts hf   # + DNABERT-S with compiled layers
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import REPO
from benchmarks.command import command_line, python_env
from virnucflow.models.dnabert_s import DnabertSConfig
from virnucflow.models.esm2 import Esm2Config
from virnucflow.models.random_weights import write_random_dnabert_s, write_random_esm2


LOAD = """
import resource, sys, time
started = time.perf_counter()
import torch
from virnucflow.models.dnabert_s_encoder import load_dnabert_s
from virnucflow.models.esm2_encoder import load_esm2
from virnucflow.models.resolve import resolve_model
imported = time.perf_counter()
kind, path, device, compiled = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
resolve_model(path, "dna" if kind == "dnabert_s" else "protein")  # the revision: a sha256 of the weights
resolved = time.perf_counter()
load = load_dnabert_s if kind == "dnabert_s" else load_esm2
encoder = load(path, device=device, dtype=torch.bfloat16, compile_layers=compiled)  # attention auto
assert encoder.compiled == compiled, "compiling failed"
if device.startswith("cuda"):
    torch.cuda.synchronize()
done = time.perf_counter()
anon = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssAnon:"))
print(imported - started, done - resolved, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, anon / 1024,
      resolved - imported)
"""


def files_of(path):
    path = Path(path)
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def cat_seconds(files):
    start = time.perf_counter()
    subprocess.run(["sh", "-c", 'cat "$@" > /dev/null', "cat", *map(str, files)], check=True)
    return time.perf_counter() - start


def measure(name, kind, path, repeat, device, compiled=False):
    files = files_of(path)
    size = sum(f.stat().st_size for f in files)
    cat_seconds(files)  # into the page cache
    cat = min(cat_seconds(files) for _ in range(repeat))
    runs = []
    # The first job hashes the weights (and compiles), later ones read the digest (and the compiled kernels).
    with tempfile.TemporaryDirectory() as cache:
        env = {**python_env(), "XDG_CACHE_HOME": cache, "TORCHINDUCTOR_CACHE_DIR": f"{cache}/inductor",
               "TRITON_CACHE_DIR": f"{cache}/triton"}
        for _ in range(1 + repeat):
            out = subprocess.run([sys.executable, "-c", LOAD, kind, str(path), device,
                                  str(int(compiled))], check=True, capture_output=True, text=True, env=env).stdout.split()
            runs.append(tuple(map(float, out)))
    first, later = runs[0][4], min(r[4] for r in runs[1:])
    imports, first_load, load = min(r[0] for r in runs), runs[0][1], min(r[1] for r in runs[1:])
    rss, anon = max(r[2] for r in runs), max(r[3] for r in runs)
    print(f"{name}: {size / 1e9:.2f} GB, import {imports:.1f} s, revision {first:.2f} s first / {later:.2f} s later, "
          f"load {first_load:.1f} s first / {load:.1f} s later, cat {cat:.2f} s, peak RSS {rss:.0f} MB, "
          f"anonymous after load {anon:.0f} MB", flush=True)
    return name, size, imports, first, later, first_load, load, cat, rss, anon


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--esm2-3b", action="store_true", help="also ESM-2 3B (needs ~12 GB of disk and memory)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each; the best time, the largest RSS")
    parser.add_argument("--device", default="cpu", help="where the encoders are built (cpu, cuda)")
    parser.add_argument("--dir", default=None, help="scratch folder (default: the system temp folder)")
    parser.add_argument("--layouts", nargs="+", default=["hf", "fair-esm"], choices=["hf", "fair-esm"],
                        help="ESM-2 layouts to load (default both)")
    parser.add_argument("--compiled", action="store_true", help="also DNABERT-S with compiled layers")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/load.md"))
    args = parser.parse_args()
    esm = [("ESM-2 650M", 33, 1280, 20)] + ([("ESM-2 3B", 36, 2560, 40)] if args.esm2_3b else [])
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        dnabert = write_random_dnabert_s(tmp / "dnabert_s", DnabertSConfig(hidden=768, layers=12, heads=12,
                                                                          intermediate=3072, vocab_size=4096))
        rows.append(measure("DNABERT-S 117M, pytorch_model.bin fp32", "dnabert_s", dnabert, args.repeat, args.device))
        if args.compiled:
            rows.append(measure("DNABERT-S 117M, pytorch_model.bin fp32, + compiled layers", "dnabert_s", dnabert,
                                args.repeat, args.device, compiled=True))
        labels = {"hf": "Hugging Face safetensors fp32", "fair-esm": "fair-esm .pt fp32"}
        for name, layers, dim, heads in esm:
            for layout, label in ((layout, labels[layout]) for layout in args.layouts):
                target = tmp / f"esm_{layout}" if layout == "hf" else tmp / "esm.pt"
                write_random_esm2(target, layout, config=Esm2Config(layers=layers, embed_dim=dim, heads=heads))
                rows.append(measure(f"{name}, {label}", "esm2", target, args.repeat, args.device))
                for f in files_of(target):
                    f.unlink()
    lines = [
        f"# model loading ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores)", "",
        f"Command: `{command_line()}`", "",
        f"Each load in a fresh process to bf16 on {args.device}, attention auto (on a GPU: the copy included;",
        "'+ compiled layers': their compile warm-up too, with an empty compiler cache in the first job); files in the",
        f"page cache; load: the first job, and the best of the {args.repeat} later. import: Python + torch + "
        "virnucflow. revision: the sha256 of a local",
        "model's files (the revision recorded in the outputs), in the first job and in later jobs that read it",
        "from the digest cache. Baseline, same run: `cat` of the",
        "same files to /dev/null. Peak RSS counts the memory-mapped checkpoint pages (page cache the kernel",
        "can drop); 'anonymous' is the process's own memory once loaded (the bf16 weights and the runtime).", "",
        "| model, layout | GB | import s | revision s, first job | later jobs | load s, first job | load s | GB/s "
        "| cat GB/s | load / cat | peak RSS MB | anonymous MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {name} | {size / 1e9:.2f} | {imports:.1f} | {first:.2f} | {later:.2f} | {first_load:.1f} | "
              f"{load:.1f} | {size / 1e9 / load:.2f} | {size / 1e9 / cat:.2f} | {load / cat:.1f}x | {rss:.0f} | "
              f"{anon:.0f} |"
              for name, size, imports, first, later, first_load, load, cat, rss, anon in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
