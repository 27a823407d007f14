"""A straightforward Biopython implementation of the prepare stage, the baseline of benchmarks/prepare.py.

Written from the rules in shared/virnucpro.md the way the original is written: Bio.SeqIO parsing,
chunks cut per read, six frames per chunk translated codon by codon through a dict, '*' searched in
each protein; it writes the same files as virnucflow.prepare (frames.tsv, reads.tsv, shards/).
The reverse strand uses str.translate on ACGT only, as the original's units.reverse_complement does:
Bio.Seq.reverse_complement would also complement IUPAC codes (R -> Y), which the original does not.

    python -m benchmarks.baseline_biopython reads.fa out_dir [--chunk-length 500] [--compat virnucpro]
"""

import argparse
import math
import os

from Bio import SeqIO
from Bio.Data.CodonTable import standard_dna_table


CODONS = dict(standard_dna_table.forward_table)
CODONS.update({stop: "*" for stop in standard_dna_table.stop_codons})
COMPLEMENT = str.maketrans("ACGT", "TGCA")
FRAMES_HEADER = "frame_id\tread_id\tchunk\tstrand\tframe\tstart\tend\tresidues\tshard\n"
READS_HEADER = "read_id\tlength\tchunks\tchunks_with_frames\tframes\tambiguous\n"
UNAMBIGUOUS = "ACGTUacgtu"  # reads.tsv counts the other bases (N and the IUPAC ambiguity codes)


def chunk_starts(length, cs, compat):
    n = math.ceil(length / cs)
    if compat == "fixed":
        return [0] if n == 1 else [i * (length - cs) // (n - 1) for i in range(n)]
    overlap = n * cs - length
    lower = int(overlap / n)
    need = overlap - (n - 1) * lower
    steps = [lower + 1] * need + [lower] * (n - 1 - need) + [0]
    return [i * cs - sum(steps[:i]) for i in range(n)]


def translate(seq, compat):
    protein = []
    for i in range(0, len(seq) - 2, 3):
        amino = CODONS.get(seq[i : i + 3])
        if amino is not None:
            protein.append(amino)
        elif compat == "fixed":
            protein.append("X")
        # virnucpro: a codon not in the table is dropped
    return "".join(protein)


def frames(chunk, compat):
    """(name, strand, phase, start, end, protein, nucleotide) of every surviving frame."""
    chunk = chunk.upper()
    rc = chunk.translate(COMPLEMENT)[::-1]
    extra = 0 if compat == "fixed" else 1
    for name, strand, seq in (("F", "+", chunk), ("R", "-", rc)):
        for k in range(3):
            protein = translate(seq[k:], compat)
            if protein and "*" not in protein:
                nucleotide = seq[k : k + extra + 3 * len(protein)]
                if strand == "+":
                    start = k
                else:
                    start = len(chunk) - k - len(nucleotide)
                yield f"{name}{k + 1}", strand, k + 1, start, start + len(nucleotide), protein, nucleotide


class Shards:
    def __init__(self, folder, limit):
        self.folder, self.limit, self.index, self.residues = folder, limit, 0, 0
        os.makedirs(folder)
        self._open()

    def _open(self):
        name = os.path.join(self.folder, f"{self.index:05d}")
        self.fna, self.faa = open(name + ".fna", "w"), open(name + ".faa", "w")

    def write(self, frame_id, nucleotide, protein):
        if self.residues >= self.limit:
            self.fna.close()
            self.faa.close()
            self.index += 1
            self.residues = 0
            self._open()
        self.fna.write(f">{frame_id}\n{nucleotide}\n")
        self.faa.write(f">{frame_id}\n{protein}\n")
        self.residues += len(protein)
        return self.index


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fasta")
    parser.add_argument("out_dir")
    parser.add_argument("--chunk-length", type=int, default=500)
    parser.add_argument("--compat", choices=["virnucpro", "fixed"], default="virnucpro")
    parser.add_argument("--shard-residues", type=int, default=10_000_000)
    args = parser.parse_args()
    cs = args.chunk_length
    os.makedirs(args.out_dir)
    shards = Shards(os.path.join(args.out_dir, "shards"), args.shard_residues)
    with open(os.path.join(args.out_dir, "frames.tsv"), "w") as frames_out, \
            open(os.path.join(args.out_dir, "reads.tsv"), "w") as reads_out:
        frames_out.write(FRAMES_HEADER)
        reads_out.write(READS_HEADER)
        for record in SeqIO.parse(args.fasta, "fasta"):
            seq = str(record.seq)
            starts = chunk_starts(len(seq), cs, args.compat)
            with_frames = kept = 0
            for number, start in enumerate(starts, start=1):
                found = 0
                for name, strand, phase, a, b, protein, nucleotide in frames(seq[start : start + cs], args.compat):
                    frame_id = f"{record.id}_chunk_{number}{name}"
                    shard = shards.write(frame_id, nucleotide, protein)
                    frames_out.write(f"{frame_id}\t{record.id}\t{number}\t{strand}\t{phase}\t{start + a}\t"
                                     f"{start + b}\t{len(protein)}\t{shard}\n")
                    found += 1
                with_frames += found > 0
                kept += found
            ambiguous = len(seq) - sum(seq.count(base) for base in UNAMBIGUOUS)
            reads_out.write(f"{record.id}\t{len(seq)}\t{len(starts)}\t{with_frames}\t{kept}\t{ambiguous}\n")
    shards.fna.close()
    shards.faa.close()


if __name__ == "__main__":
    main()
