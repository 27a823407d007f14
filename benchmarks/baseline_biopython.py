"""A straightforward Biopython implementation of VirNucPro's preprocessing rules (virnucpro mode):
Bio.SeqIO parsing, per-read chunking, a per-codon dictionary translation, the same output files.
It is the baseline of benchmarks/prepare.py, written from the rules in shared/virnucpro.md.
"""

import math
import sys

from Bio import SeqIO
from Bio.Data.CodonTable import standard_dna_table

CODONS = dict(standard_dna_table.forward_table)
CODONS.update({stop: "*" for stop in standard_dna_table.stop_codons})
COMPLEMENT = str.maketrans("ACGT", "TGCA")  # ACGT only, as the original


def chunks(seq, cs):
    n = math.ceil(len(seq) / cs)
    overlap = n * cs - len(seq)
    lower = int(overlap / n)
    need = overlap - (n - 1) * lower
    steps = [lower + 1] * need + [lower] * (n - 1 - need) + [0]
    for i in range(n):
        start = i * cs - sum(steps[:i])
        yield i + 1, start, seq[start : start + cs]


def translate(seq):
    protein = []
    for i in range(0, len(seq) - 2, 3):
        amino = CODONS.get(seq[i : i + 3])
        if amino is not None:  # codons not in the table are dropped
            protein.append(amino)
    return "".join(protein)


def frames(chunk):
    chunk = chunk.upper()
    rc = chunk.translate(COMPLEMENT)[::-1]
    for name, strand in (("F", chunk), ("R", rc)):
        for k in range(3):
            protein = translate(strand[k:])
            if protein and "*" not in protein:
                yield f"{name}{k + 1}", k, protein, strand[k : k + 1 + 3 * len(protein)]


def main(fasta, out_prefix, cs=500):
    with open(out_prefix + ".fna", "w") as nuc_out, open(out_prefix + ".faa", "w") as prot_out:
        for record in SeqIO.parse(fasta, "fasta"):
            seq = str(record.seq)
            for number, _, chunk in chunks(seq, cs):
                for name, _, protein, nucleotide in frames(chunk):
                    frame_id = f"{record.id}_chunk_{number}{name}"
                    nuc_out.write(f">{frame_id}\n{nucleotide}\n")
                    prot_out.write(f">{frame_id}\n{protein}\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 500)
