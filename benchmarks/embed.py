"""Embedding throughput: length-sorted token-budget batches vs one sequence at a time (VirNucPro's
DNABERT-S loop), in the same run, on VirNucPro's shapes (DNA of 300-500 bp, proteins of 50-170 aa).

CPU (default): the tiny demo models, fp32, padded attention.
GPU (`--gpu`): the real architectures with random weights (DNABERT-S 117M; ESM-2 650M and 3B),
bf16 + packed attention against an fp32 padded baseline (fair-esm esm-extract style: length-sorted
batches of at most 4096 tokens); reports tokens/s, peak GPU memory and model FLOP utilisation
(2 x non-embedding parameters x real tokens; attention adds under 1% at these lengths) against
`--peak-tflops` (H100 SXM dense bf16: 989). `--device cpu --layers 1` runs the same code path on a
machine without a GPU (a smoke test of the script, not a figure).

    .venv/bin/python benchmarks/embed.py --sequences 2000
    .venv/bin/python benchmarks/embed.py --gpu --sequences 20000
"""

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from virnucflow.demo import DNABERT_S_TINY, ESM2_TINY  # noqa: E402
from virnucflow.embed import make_batches  # noqa: E402
from virnucflow.models.dnabert_s import DNABERTS  # noqa: E402
from virnucflow.models.dnabert_s_encoder import DnabertSEncoder, load_dnabert_s  # noqa: E402
from virnucflow.models.esm2 import ESM2  # noqa: E402
from virnucflow.models.esm2_encoder import Esm2Encoder, load_esm2  # noqa: E402
from virnucflow.models.random_weights import train_tokenizer, write_random_dnabert_s, write_random_esm2  # noqa: E402

AMINO = "ACDEFGHIKLMNPQRSTVWY"


def workload(n, seed=0):
    rng = random.Random(seed)
    dna = ["".join(rng.choice("ACGT") for _ in range(rng.randint(300, 501))) for _ in range(n)]
    proteins = ["".join(rng.choice(AMINO) for _ in range(rng.randint(50, 170))) for _ in range(n)]
    return dna, proteins


ESM_EXTRACT_TOKENS = 4096  # fair-esm's esm-extract --toks_per_batch default


def run(encoder, tokens, batches, sync):
    start = time.perf_counter()
    for batch in batches:
        encoder.embed([tokens[i] for i in batch])
    sync()
    return time.perf_counter() - start


def peak_memory_gb(device):
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def measure(name, encoder, sequences, budget, sync, params, baseline_encoder=None, one_at_a_time=False):
    tokens = [encoder.tokenize(s) for s in sequences]
    lengths = [len(t) for t in tokens]
    batches = make_batches(lengths, budget)
    run(encoder, tokens, batches[:2], sync)  # warm-up
    if encoder.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(encoder.device)
    seconds = run(encoder, tokens, batches, sync)
    memory = peak_memory_gb(encoder.device)
    real = sum(lengths)
    padded = real if encoder.attention == "packed" else sum(max(lengths[i] for i in b) * len(b) for b in batches)
    base_encoder = baseline_encoder or encoder
    if one_at_a_time:
        base_batches = [[i] for i in range(len(tokens))]
    elif baseline_encoder is not None:
        base_batches = make_batches(lengths, ESM_EXTRACT_TOKENS)
    else:
        base_batches = batches
    sample = base_batches[: max(1, len(base_batches) // 4)]  # a quarter of the work, scaled up
    run(base_encoder, tokens, sample[:2], sync)
    base_seconds = run(base_encoder, tokens, sample, sync) * len(base_batches) / len(sample)
    flops = 2 * params * real
    return dict(name=name, sequences=len(tokens), tokens=real, seconds=seconds, seq_s=len(tokens) / seconds,
                tok_s=real / seconds, padding=1 - real / padded, base_tok_s=real / base_seconds,
                speedup=base_seconds / seconds, tflops=flops / seconds / 1e12, memory=memory)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=2000)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--device", default="cuda", help="with --gpu: where the models run (default cuda)")
    parser.add_argument("--layers", type=int, default=None,
                        help="with --gpu: this many layers instead of the published depth (smoke runs)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    dna, proteins = workload(args.sequences)
    rows = []
    if not args.gpu:
        torch.set_num_threads(os.cpu_count())
        with tempfile.TemporaryDirectory() as tmp:
            dnabert = load_dnabert_s(write_random_dnabert_s(Path(tmp) / "d", **DNABERT_S_TINY), attention="padded")
            esm = load_esm2(write_random_esm2(Path(tmp) / "e.pt", "fair-esm", **ESM2_TINY), attention="padded")
        nothing = lambda: None  # noqa: E731
        params_d = sum(p.numel() for p in dnabert.model.parameters())
        params_e = sum(p.numel() for p in esm.model.parameters())
        rows.append(measure("DNABERT-S tiny (cpu fp32)", dnabert, dna, 16384, nothing, params_d, one_at_a_time=True))
        rows.append(measure("ESM-2 tiny (cpu fp32)", esm, proteins, 16384, nothing, params_e, one_at_a_time=True))
        baseline = "one sequence at a time (VirNucPro's loop)"
        device = platform.processor() or platform.machine()
    else:
        device = torch.device(args.device)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        torch.manual_seed(0)
        tok = train_tokenizer(4096, seed=0, reads=2000)
        dna_layers = args.layers or 12
        with torch.device(device):  # random weights made where they run: initialising 3B on a CPU takes minutes
            model = DNABERTS(vocab_size=tok.get_vocab_size(), layers=dna_layers).eval()
            baseline_model = DNABERTS(vocab_size=tok.get_vocab_size(), layers=dna_layers).eval()
        fast = DnabertSEncoder(model, tok, "DNABERT-S", device, torch.bfloat16, "packed")
        slow = DnabertSEncoder(baseline_model, tok, "DNABERT-S", device, torch.float32, "padded")
        params = sum(p.numel() for p in model.parameters()) - model.embeddings.word_embeddings.weight.numel()
        rows.append(measure("DNABERT-S 117M (bf16 packed)", fast, dna, 65536, sync, params, slow, one_at_a_time=True))
        for layers, dim, heads, name in ((33, 1280, 20, "ESM-2 650M"), (36, 2560, 40, "ESM-2 3B")):
            layers = args.layers or layers
            with torch.device(device):
                fast_model, slow_model = ESM2(layers, dim, heads).eval(), ESM2(layers, dim, heads).eval()
            fast = Esm2Encoder(fast_model, name, device, torch.bfloat16, attention="packed")
            slow = Esm2Encoder(slow_model, name, device, torch.float32, attention="padded")
            params = sum(p.numel() for p in fast.model.parameters()) - fast.model.embed_tokens.weight.numel()
            rows.append(measure(f"{name} (bf16 packed)", fast, proteins, 65536, sync, params, slow))
            del fast, slow, fast_model, slow_model
            if device.type == "cuda":
                torch.cuda.empty_cache()
        baseline = (f"fp32 padded, length-sorted batches of <= {ESM_EXTRACT_TOKENS} tokens (esm-extract style); "
                    "DNABERT-S: fp32 padded, one sequence at a time (VirNucPro's loop)")
        if args.layers:
            baseline += f"; SMOKE RUN with {args.layers} layer(s) per model: not a figure"
        device = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device} smoke run"
    lines = [
        f"# embed throughput ({time.strftime('%Y-%m-%d')}, {device})", "",
        f"Command: `.venv/bin/python {' '.join(sys.argv)}`", "",
        f"Baseline, same run: {baseline}.", "",
        "| model | sequences/s | tokens/s | padding | baseline tokens/s | speed-up | TFLOP/s | MFU | peak GPU GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mfu = f"{100 * r['tflops'] / args.peak_tflops:.1f}%" if args.gpu else "-"
        memory = "-" if r["memory"] != r["memory"] else f"{r['memory']:.1f}"
        lines.append(f"| {r['name']} | {r['seq_s']:.0f} | {r['tok_s']:.0f} | {100 * r['padding']:.1f}% | "
                     f"{r['base_tok_s']:.0f} | {r['speedup']:.1f}x | {r['tflops']:.3f} | {mfu} | {memory} |")
    kind = ("gpu_smoke" if args.layers else "gpu") if args.gpu else "cpu"
    out = Path(args.out or REPO / f"benchmarks/results/embed_{kind}.md")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
