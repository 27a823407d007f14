"""Embedding throughput: length-sorted token-budget batches vs one sequence at a time (VirNucPro's
DNABERT-S loop), in the same run, on VirNucPro's shapes (DNA of 300-500 bp, proteins of 50-170 aa).

CPU (default): the tiny demo models, fp32, padded attention.
GPU (`--gpu`): the real architectures with random weights (DNABERT-S 117M; ESM-2 650M and 3B),
bf16 + packed attention against an fp32 padded baseline (fair-esm esm-extract style: length-sorted
batches of at most 4096 tokens; a sample of about `--baseline-tokens` tokens, spread over the
batches); reports tokens/s, peak GPU memory and model FLOP utilisation (2 x non-embedding
parameters x real tokens; attention adds under 1% at these lengths) against `--peak-tflops` (H100
SXM dense bf16: 989). `--all` adds the other paths, each in the same run: DNABERT-S padded (auto's
choice) at 65,536 and 262,144-token budgets and with compiled layers; ESM-2 packed with compiled
layers, bf16 padded, and Hugging Face transformers' EsmModel (bf16, SDPA, padded batches) where
transformers is installed; "pipelined" rows queue each batch before taking the previous one's rows
(the encoders' prepare / embed_prepared / result), as an embed job could. "setup s" is the encoder's construction, its compile warm-up included.
The table is rewritten after every row, so a run cut short keeps what it measured.
`--device cpu --layers 1` runs the same code path on a machine without a GPU (a smoke test of
the script, not a figure).

    .venv/bin/python -m benchmarks.embed --sequences 2000
    .venv/bin/python -m benchmarks.embed --gpu --all --sequences 12000
"""

import argparse
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import REPO
from benchmarks.command import command_line
from virnucflow.batching import make_batches
from virnucflow.demo import DNABERT_S_SEED, DNABERT_S_TINY, ESM2_SEED, ESM2_TINY
from virnucflow.models.dnabert_s import DNABERTS, DnabertSConfig
from virnucflow.models.dnabert_s_encoder import DnabertSEncoder, load_dnabert_s
from virnucflow.models.esm2 import ESM2, Esm2Config
from virnucflow.models.esm2_alphabet import MASK, PAD, tokenize
from virnucflow.models.esm2_encoder import Esm2Encoder, load_esm2
from virnucflow.models.packing import pad
from virnucflow.models.random_weights import train_tokenizer, write_random_dnabert_s, write_random_esm2


AMINO = "ACDEFGHIKLMNPQRSTVWY"
ESM_EXTRACT_TOKENS = 4096  # fair-esm's esm-extract --toks_per_batch default
BUDGET = 65536
LARGE_BUDGET = 262144


def workload(n, seed=0):
    rng = random.Random(seed)
    dna = ["".join(rng.choice("ACGT") for _ in range(rng.randint(300, 501))) for _ in range(n)]
    proteins = ["".join(rng.choice(AMINO) for _ in range(rng.randint(50, 170))) for _ in range(n)]
    return dna, proteins


def run(encoder, tokens, batches, sync, pipelined=False):
    """Seconds to embed `batches`. pipelined: each batch prepared and queued before the previous one's rows
    are taken (prepare / embed_prepared / result), so the host's work overlaps the device's."""
    start = time.perf_counter()
    pending = None
    for batch in batches:
        if not pipelined:
            encoder.embed([tokens[i] for i in batch])
            continue
        queued = encoder.embed_prepared(encoder.prepare([tokens[i] for i in batch]))
        if pending is not None:
            pending.result()
        pending = queued
    if pending is not None:
        pending.result()
    sync()
    return time.perf_counter() - start


def peak_memory_gb(device):
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def spread_sample(batches, lengths, tokens):
    """Every k-th batch, k chosen so that the sample holds about `tokens` tokens (at least one batch)."""
    total = sum(lengths[i] for b in batches for i in b)
    step = max(1, round(total / max(tokens, 1)))
    return batches[::step]


def baseline_rate(encoder, tokens, batches, sync, sample_tokens):
    """Tokens/s of `encoder` over a sample of `batches` spread over their lengths."""
    lengths = [len(t) for t in tokens]
    sample = spread_sample(batches, lengths, sample_tokens)
    run(encoder, tokens, sample[:2], sync)  # warm-up
    return sum(lengths[i] for b in sample for i in b) / run(encoder, tokens, sample, sync)


def measure(name, encoder, tokens, budget, sync, params, base_tok_s, setup=float("nan"), pipelined=False):
    lengths = [len(t) for t in tokens]
    batches = make_batches(lengths, budget)
    run(encoder, tokens, batches[:2], sync)  # warm-up
    if encoder.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(encoder.device)
    seconds = run(encoder, tokens, batches, sync, pipelined)
    real = sum(lengths)
    padded = real if encoder.attention == "packed" else sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return dict(name=name, sequences=len(tokens), tokens=real, seconds=seconds, seq_s=len(tokens) / seconds,
                tok_s=real / seconds, padding=1 - real / padded, base_tok_s=base_tok_s,
                speedup=real / seconds / base_tok_s, tflops=2 * params * real / seconds / 1e12,
                memory=peak_memory_gb(encoder.device), setup=setup)


def built(make):
    """(encoder, seconds to build it: construction and any compile warm-up)."""
    start = time.perf_counter()
    encoder = make()
    return encoder, time.perf_counter() - start


class HfEsm:
    """Hugging Face transformers' EsmModel as a user would run it: SDPA attention, bf16, length-sorted
    padded batches, the same pooling (mean over residues, on the device)."""

    attention = "padded"

    def __init__(self, layers, dim, heads, device, dtype):
        import transformers

        config = transformers.EsmConfig(
            vocab_size=33, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=4 * dim, pad_token_id=PAD, mask_token_id=MASK, position_embedding_type="rotary",
            token_dropout=True, emb_layer_norm_before=False, layer_norm_eps=1e-5, attn_implementation="sdpa")
        self.device = torch.device(device)
        with self.device:
            self.model = transformers.EsmModel(config, add_pooling_layer=False).to(dtype).eval()
        self.implementation = f"transformers {transformers.__version__}, {self.model.config._attn_implementation}"

    def tokenize(self, sequence):
        return tokenize(sequence)

    @torch.inference_mode()
    def embed(self, batch):
        tokens, mask = (t.to(self.device) for t in pad(batch, PAD))
        hidden = self.model(input_ids=tokens, attention_mask=mask).last_hidden_state.float()
        real = mask.clone()
        real[:, 0] = 0  # <cls>; <eos> stays in: the difference does not change the cost
        return ((hidden * real[..., None]).sum(1) / real.sum(1, keepdim=True)).cpu()


def measure_variants(variants, make, tokens, sync, params, base, emit):
    """One row per (label, attention, compiled, budget, pipelined); one encoder per (attention, compiled),
    made by make(attention, compiled) when first needed. They share one module, which compile_layers
    changes: the variants with compiled layers come last."""
    encoders = {}
    for label, attention, compiled, budget, pipelined in variants:
        setup = float("nan")
        if (attention, compiled) not in encoders:
            encoders[attention, compiled], setup = built(lambda: make(attention, compiled))
        encoder = encoders[attention, compiled]
        failed = "" if encoder.compiled == compiled else " [compile FAILED: eager]"
        emit(measure(label + failed, encoder, tokens, budget, sync, params, base, setup, pipelined))


def gpu_rows(args, emit):
    """Measure args.models on args.device; `emit(row)` records each row as soon as it is measured."""
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    dna, proteins = workload(args.sequences)
    torch.manual_seed(0)
    if "dnabert-s" in args.models:
        dnabert_s_rows(args, device, dna, sync, emit)
    esm2_rows(args, device, proteins, sync, emit)


def dnabert_s_rows(args, device, dna, sync, emit):
    """DNABERT-S 117M's rows: packed (with --all: padded, larger batches, compiled, pipelined)."""
    tok = train_tokenizer(4096, seed=0, reads=2000)
    layers = args.layers or 12
    with torch.device(device):  # random weights made where they run: initialising 3B on a CPU takes minutes
        size = DnabertSConfig(layers=layers, vocab_size=tok.get_vocab_size())
        model, baseline_model = DNABERTS(size).eval(), DNABERTS(size).eval()
    slow = DnabertSEncoder(baseline_model, tok, "DNABERT-S", device, torch.float32, "padded")
    tokens = [slow.tokenize(s) for s in dna]
    params = sum(p.numel() for p in model.parameters()) - model.embeddings.word_embeddings.weight.numel()
    base = baseline_rate(slow, tokens, [[i] for i in range(len(tokens))], sync, args.baseline_tokens)
    del slow, baseline_model
    name = "DNABERT-S 117M"
    variants = [(f"{name} (bf16 packed)", "packed", False, BUDGET, False)]
    if args.all:
        variants += [
            (f"{name} (bf16 padded, auto)", "padded", False, BUDGET, False),
            (f"{name} (bf16 padded, auto, 262k-token batches)", "padded", False, LARGE_BUDGET, False),
            (f"{name} (bf16 padded, auto, 262k-token batches, pipelined)", "padded", False, LARGE_BUDGET, True),
            (f"{name} (bf16 padded + compiled layers, 262k-token batches)", "padded", True, LARGE_BUDGET, False),
            (f"{name} (bf16 padded + compiled layers, 262k-token batches, pipelined)", "padded", True,
             LARGE_BUDGET, True)]
    measure_variants(variants, lambda attention, compiled: DnabertSEncoder(
        model, tok, "DNABERT-S", device, torch.bfloat16, attention, compile_layers=compiled),
        tokens, sync, params, base, emit)
    del model


def esm2_rows(args, device, proteins, sync, emit):
    """The rows of each ESM-2 model in args.models: packed (with --all: padded, compiled, pipelined, Hugging Face)."""
    for key, layers, dim, heads, name in (("esm2-650m", 33, 1280, 20, "ESM-2 650M"), ("esm2-3b", 36, 2560, 40, "ESM-2 3B")):
        if key not in args.models:
            continue
        layers = args.layers or layers
        with torch.device(device):
            size = Esm2Config(layers, dim, heads)
            fast_model, slow_model = ESM2(size).eval(), ESM2(size).eval()
        slow = Esm2Encoder(slow_model, name, device, torch.float32, attention="padded")
        tokens = [tokenize(s) for s in proteins]
        base = baseline_rate(slow, tokens, make_batches([len(t) for t in tokens], ESM_EXTRACT_TOKENS), sync,
                             args.baseline_tokens)
        del slow, slow_model
        params = sum(p.numel() for p in fast_model.parameters()) - fast_model.embed_tokens.weight.numel()
        variants = [(f"{name} (bf16 packed)", "packed", False, BUDGET, False)]
        if args.all:
            variants += [(f"{name} (bf16 padded)", "padded", False, BUDGET, False),
                         (f"{name} (bf16 packed + compiled layers)", "packed", True, BUDGET, False),
                         (f"{name} (bf16 packed + compiled layers, pipelined)", "packed", True, BUDGET, True)]
        measure_variants(variants, lambda attention, compiled: Esm2Encoder(
            fast_model, name, device, torch.bfloat16, attention=attention, compile_layers=compiled),
            tokens, sync, params, base, emit)
        del fast_model
        if args.all:
            try:
                hf, setup = built(lambda: HfEsm(layers, dim, heads, device, torch.bfloat16))
            except ImportError as exc:
                print(f"{name}: no Hugging Face row ({exc})", flush=True)
            else:
                emit(measure(f"{name} (HF EsmModel, bf16 SDPA padded; {hf.implementation})", hf, tokens, BUDGET,
                             sync, params, base, setup))
                del hf
        if device.type == "cuda":
            torch.cuda.empty_cache()


def hf_ratios(rows):
    """'model: variant = N.NNx HF' lines for every ESM-2 row of a model that has an HF row."""
    lines = []
    for row in rows:
        model = row["name"].split(" (")[0]
        hf = next((r for r in rows if r["name"].startswith(model + " (HF")), None)
        if hf and row is not hf and model.startswith("ESM-2"):
            lines.append(f"- {row['name']}: {row['tok_s'] / hf['tok_s']:.2f}x Hugging Face's tokens/s")
    return lines


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=2000)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--all", action="store_true", help="with --gpu: every path (see above), not only packed")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--baseline-tokens", type=int, default=100000,
                        help="with --gpu: tokens in the fp32 baseline's sample (default 100000)")
    parser.add_argument("--device", default="cuda", help="with --gpu: where the models run (default cuda)")
    parser.add_argument("--models", nargs="+", default=["dnabert-s", "esm2-650m", "esm2-3b"],
                        choices=["dnabert-s", "esm2-650m", "esm2-3b"], help="with --gpu: which models (default all)")
    parser.add_argument("--layers", type=int, default=None,
                        help="with --gpu: this many layers instead of the published depth (smoke runs)")
    parser.add_argument("--out", default=None)
    return parser.parse_args()


def table_writer(args, out, baseline, device):
    """`emit(row)`: records a measured row and rewrites `out` with every row so far."""
    rows = []

    def emit(row):
        rows.append(row)
        lines = [
            f"# embed throughput ({time.strftime('%Y-%m-%d')}, {device}, torch {torch.__version__})", "",
            f"Command: `{command_line()}`", "",
            f"Baseline, same run: {baseline}.", "",
            "| model | sequences/s | tokens/s | padding | baseline tokens/s | speed-up | TFLOP/s | MFU | peak GPU GiB "
            "| setup s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            mfu = f"{100 * r['tflops'] / args.peak_tflops:.1f}%" if args.gpu else "-"
            memory = "-" if r["memory"] != r["memory"] else f"{r['memory']:.1f}"
            setup = "-" if r["setup"] != r["setup"] else f"{r['setup']:.1f}"
            lines.append(f"| {r['name']} | {r['seq_s']:.0f} | {r['tok_s']:.0f} | {100 * r['padding']:.1f}% | "
                         f"{r['base_tok_s']:.0f} | {r['speedup']:.1f}x | {r['tflops']:.3f} | {mfu} | {memory} | "
                         f"{setup} |")
        ratios = hf_ratios(rows)
        if ratios:
            lines += ["", "Against Hugging Face transformers in the same run (tokens/s):", *ratios]
        out.write_text("\n".join(lines) + "\n")
        print(lines[-1] if not ratios else "\n".join(lines[-len(ratios):]), flush=True)

    return emit


def cpu_rows(args, emit):
    """The tiny demo models on the CPU against one sequence at a time."""
    dna, proteins = workload(args.sequences)
    torch.set_num_threads(os.cpu_count())
    with tempfile.TemporaryDirectory() as tmp:
        dnabert = load_dnabert_s(write_random_dnabert_s(Path(tmp) / "d", DNABERT_S_TINY, seed=DNABERT_S_SEED),
                                 attention="padded")
        esm = load_esm2(write_random_esm2(Path(tmp) / "e.pt", "fair-esm", ESM2_TINY, seed=ESM2_SEED),
                        attention="padded")
    nothing = lambda: None  # noqa: E731
    for name, encoder, sequences in (("DNABERT-S tiny (cpu fp32)", dnabert, dna), ("ESM-2 tiny (cpu fp32)", esm,
                                                                                 proteins)):
        tokens = [encoder.tokenize(s) for s in sequences]
        singles = [[i] for i in range(len(tokens))]
        base = baseline_rate(encoder, tokens, singles, nothing, sum(map(len, tokens)) // 4)  # a quarter
        emit(measure(name, encoder, tokens, 16384, nothing, sum(p.numel() for p in encoder.model.parameters()),
                     base))


def main():
    args = parse_args()
    kind = ("gpu_smoke" if args.layers else "gpu") if args.gpu else "cpu"
    out = Path(args.out or REPO / f"benchmarks/results/embed_{kind}.md")
    if not args.gpu:
        baseline = "one sequence at a time (VirNucPro's loop)"
        device = platform.processor() or platform.machine()
    else:
        baseline = (f"fp32 padded, length-sorted batches of <= {ESM_EXTRACT_TOKENS} tokens (esm-extract style); "
                    "DNABERT-S: fp32 padded, one sequence at a time (VirNucPro's loop); each over a sample of "
                    f"~{args.baseline_tokens} tokens spread over the batches. Batches of {BUDGET} tokens unless "
                    "the row says otherwise")
        if args.layers:
            baseline += f"; SMOKE RUN with {args.layers} layer(s) per model: not a figure"
        device = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else f"{args.device} smoke run"
    emit = table_writer(args, out, baseline, device)
    if not args.gpu:
        cpu_rows(args, emit)
    else:
        gpu_rows(args, emit)
    print(out.read_text())


if __name__ == "__main__":
    main()
