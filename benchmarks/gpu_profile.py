"""Where one ESM-2 batch's time goes: torch.profiler over one 65,536-token batch of VirNucPro's protein
shapes (50-170 aa), ESM-2 3B with random weights in bf16, packed attention, eager and with compiled
layers. Writes a markdown table per path: the kernels by device time, and the shares of matrix
products (GEMM), attention and everything else (elementwise, LayerNorm, copies), against the batch's
wall time; plus a Chrome trace of the eager batch (`--trace`).

    python3 -m benchmarks.gpu_profile --out profile.md --trace trace.json.gz      # on a GPU
    .venv/bin/python -m benchmarks.gpu_profile --device cpu --layers 1 --out /tmp/p.md   # smoke run
"""

import argparse
import gzip
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.command import command_line
from benchmarks.embed import workload
from virnucflow.batching import make_batches
from virnucflow.models.esm2 import ESM2, Esm2Config
from virnucflow.models.esm2_alphabet import tokenize
from virnucflow.models.esm2_encoder import Esm2Encoder


GEMM = re.compile(r"gemm|gemv|nvjet|cutlass|xmma|cublas|matmul|\bmm\b|addmm|linear", re.IGNORECASE)
ATTENTION = re.compile(r"flash|fmha|attention|attn|sdpa|cudnn", re.IGNORECASE)


def category(name):
    return "attention" if ATTENTION.search(name) else "GEMM" if GEMM.search(name) else "other"


def device_events(prof):
    """(name, calls, microseconds) of every kernel the profiler saw on the device; CPU ops where there is none."""
    kernels = [(e.name, 1, e.device_time_total) for e in prof.events()
               if e.device_type == torch.autograd.DeviceType.CUDA and e.device_time_total > 0]
    if kernels:
        return kernels, "device"
    return [(e.key, e.count, e.self_cpu_time_total) for e in prof.key_averages() if e.self_cpu_time_total > 0], \
        "CPU (no device)"


def table(title, prof, wall, tokens, top):
    events, where = device_events(prof)
    totals = {}
    for name, calls, micros in events:
        count, total = totals.get(name, (0, 0.0))
        totals[name] = (count + calls, total + micros)
    busy = sum(total for _, total in totals.values())
    shares = {c: sum(t for n, (_, t) in totals.items() if category(n) == c) for c in ("GEMM", "attention", "other")}
    lines = [f"## {title}", "",
             f"One batch of {tokens} tokens: {wall * 1e3:.1f} ms wall ({tokens / wall:.0f} tokens/s); {where} time "
             f"{busy / 1e3:.1f} ms ({100 * busy / 1e6 / wall:.0f}% of the wall time).", "",
             "| share | ms | % of " + where + " time |", "|---|---:|---:|"]
    lines += [f"| {c} | {t / 1e3:.1f} | {100 * t / max(busy, 1e-9):.1f}% |" for c, t in shares.items()]
    lines += ["", f"Top {top} by {where} time:", "", "| kernel | kind | calls | ms | % |", "|---|---|---:|---:|---:|"]
    for name, (count, total) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:top]:
        short = name if len(name) <= 110 else name[:107] + "..."
        lines.append(f"| `{short}` | {category(name)} | {count} | {total / 1e3:.2f} | {100 * total / busy:.1f}% |")
    return lines + ["", "torch.profiler's own table:", "", "```", profiler_table(prof, where), "```", ""]


def profiler_table(prof, where):
    for key in (("self_device_time_total", "self_cuda_time_total") if where == "device" else ("self_cpu_time_total",)):
        try:
            return prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=80)
        except Exception as exc:  # noqa: BLE001 - the sort keys' names changed between torch versions
            error = exc
    return f"(no table: {error})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layers", type=int, default=36, help="ESM-2 3B has 36 (smoke runs: 1)")
    parser.add_argument("--budget", type=int, default=65536, help="tokens in the profiled batch")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--no-compile", action="store_true", help="the eager path only")
    parser.add_argument("--trace", default=None, help="write the eager batch's Chrome trace here (.json.gz)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    _, proteins = workload(4000)
    tokens = [tokenize(s) for s in proteins]
    batches = make_batches([len(t) for t in tokens], args.budget)
    batch = [tokens[i] for i in batches[len(batches) // 2]]  # a batch of middle lengths
    count = sum(map(len, batch))
    torch.manual_seed(0)
    with device:
        model = ESM2(Esm2Config(args.layers, 2560, 40)).eval()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device} smoke run"
    lines = [f"# ESM-2 3B ({args.layers} layers), one bf16 packed batch under torch.profiler "
             f"({time.strftime('%Y-%m-%d')}, {name}, torch {torch.__version__})", "",
             f"Command: `{command_line('python3')}`", "",
             "GEMM: matrix-product kernels (cuBLAS/CUTLASS); attention: FlashAttention varlen; other: elementwise,",
             "LayerNorm, rotary, GELU, copies, pooling. Device time per kernel is summed over the batch's launches.", ""]
    for compiled in (False,) if args.no_compile else (False, True):
        encoder = Esm2Encoder(model, "ESM-2 3B", device, torch.bfloat16, attention="packed", compile_layers=compiled)
        for _ in range(2):  # warm-up: handles, kernels, the compiled graph for this batch's shapes
            encoder.embed(batch)
        sync()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            encoder.embed(batch)
            sync()
            wall = time.perf_counter() - start
        title = "packed + compiled layers" if compiled else "packed, eager"
        if compiled and not encoder.compiled:
            title += " (compile FAILED: eager)"
        lines += table(title, prof, wall, count, args.top)
        Path(args.out).write_text("\n".join(lines) + "\n")
        if args.trace and not compiled:
            with tempfile.TemporaryDirectory() as tmp:
                plain = Path(tmp) / "trace.json"
                prof.export_chrome_trace(str(plain))
                with open(plain, "rb") as src, gzip.open(args.trace, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
