"""Seeded synthetic reads for the tests and the benchmarks: random DNA, and 'coding' DNA whose
forward frame 1 has no stop codon (so frames survive as in real genes)."""

import gzip
import random

BASES = "ACGT"
STOPS = {"TAA", "TAG", "TGA"}
SENSE_CODONS = [a + b + c for a in BASES for b in BASES for c in BASES if a + b + c not in STOPS]


def random_read(rng, length, coding):
    if coding:
        codons = [rng.choice(SENSE_CODONS) for _ in range(length // 3 + 1)]
        return "".join(codons)[:length]
    return "".join(rng.choice(BASES) for _ in range(length))


def synthetic_reads(n, min_length=150, max_length=1500, coding_fraction=0.5, seed=0, prefix="read"):
    """Yield (read_id, sequence) pairs; the same arguments give the same reads."""
    rng = random.Random(seed)
    for i in range(1, n + 1):
        length = rng.randint(min_length, max_length)
        yield f"{prefix}{i}", random_read(rng, length, rng.random() < coding_fraction)


def write_fasta(path, records, width=60):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt") as handle:
        for read_id, seq in records:
            handle.write(f">{read_id}\n")
            for start in range(0, len(seq), width):
                handle.write(seq[start : start + width] + "\n")
