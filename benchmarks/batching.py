"""How much a row depends on the batch it was computed in: the figure behind the README's "when rows can differ".

Embeds the same sequences with several token budgets (and one at a time) on the CPU in fp32, through the
workflow's own batching (virnucflow.batching.make_batches) and encoders, and reports, against the default
budget, the largest absolute difference of any element, the largest relative to the row's largest
element, and how many rows are not bitwise equal. An out-of-memory split is one such change of batching:
the batch is halved and its halves run as two batches.

Random-weight models in the published layouts, the published widths (ESM-2 t6 8M: 6 layers of 320;
DNABERT-S: 768 wide, fewer layers to stay quick on a CPU):

    .venv/bin/python -m benchmarks.batching                      # ~1 min on 2 cores
    .venv/bin/python -m benchmarks.batching --sequences 200 --dna-layers 12
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import REPO
from benchmarks.command import command_line
from benchmarks.synthetic import synthetic_reads
from virnucflow.batching import make_batches
from virnucflow.models.dnabert_s import DnabertSConfig
from virnucflow.models.esm2 import Esm2Config
from virnucflow.models.random_weights import write_random_dnabert_s, write_random_esm2
from virnucflow.models.resolve import load_encoder


AMINO = "ACDEFGHIKLMNPQRSTVWY"


def embed_all(encoder, seqs, token_budget):
    """Rows in input order, computed in the workflow's length-sorted token-budget batches (0: one at a time)."""
    tokens = [encoder.tokenize(s) for s in seqs]
    lengths = [len(t) for t in tokens]
    batches = [[i] for i in range(len(seqs))] if token_budget == 0 else make_batches(lengths, token_budget)
    rows = np.zeros((len(seqs), encoder.dim), dtype=np.float32)
    with torch.inference_mode():
        for batch in batches:
            rows[batch] = encoder.embed([tokens[i] for i in batch]).float().numpy()
    return rows, len(batches)


def compare(name, encoder, seqs, budgets):
    reference, n_ref = embed_all(encoder, seqs, budgets[0])
    lines = [f"| {name} | {budgets[0]} (reference) | {n_ref} | - | - | - |"]
    for budget in budgets[1:]:
        rows, n = embed_all(encoder, seqs, budget)
        diff = np.abs(rows - reference)
        scale = np.abs(reference).max(axis=1, keepdims=True)
        differ = int((~np.all(rows == reference, axis=1)).sum())
        label = "1 sequence per batch" if budget == 0 else str(budget)
        lines.append(f"| {name} | {label} | {n} | {diff.max():.2e} | {(diff / scale).max():.2e} | {differ} of {len(seqs)} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=120)
    parser.add_argument("--dna-layers", type=int, default=2)
    parser.add_argument("--budgets", type=int, nargs="+", default=[20000, 5000, 1500, 0],
                        help="token budgets; the first is the reference, 0 = one sequence per batch")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/batching.md"))
    args = parser.parse_args()
    torch.manual_seed(0)
    reads = [seq for _, seq in synthetic_reads(args.sequences, 150, 1500, coding_fraction=1.0, seed=5, prefix="b")]
    proteins = ["".join(AMINO[ord(c) * 7 % 20] for c in seq[: len(seq) // 3]) for seq in reads]
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        esm = load_encoder("protein", str(write_random_esm2(Path(tmp) / "esm.pt", "fair-esm",
                                                             Esm2Config(layers=6, embed_dim=320, heads=20))))
        dna = load_encoder("dna", str(write_random_dnabert_s(Path(tmp) / "dnabert", DnabertSConfig(
            hidden=768, layers=args.dna_layers, heads=12, intermediate=3072, vocab_size=256))))
        lines = ["| model | token budget | batches | max abs diff | max diff / row's max | rows not bitwise equal |",
                 "|---|---|---:|---:|---:|---:|"]
        lines += compare("ESM-2 t6 shape (6 x 320), fp32 CPU", esm, proteins, args.budgets)
        lines += compare(f"DNABERT-S shape ({args.dna_layers} x 768), fp32 CPU", dna, reads, args.budgets)
    text = (f"`{command_line()}` — {args.sequences} sequences "
            f"(DNA 150-1,500 bp, proteins a third of that), torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {time.monotonic() - started:.0f} s\n\n" + "\n".join(lines) + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
