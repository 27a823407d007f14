"""Regenerate the test vectors in this folder by running the ORIGINAL VirNucPro preprocessing.

    python make_vectors.py /path/to/VirNucPro   # a clone of Li-Jing-1997/VirNucPro; needs biopython

Nothing of VirNucPro is copied here: its units.py is read from the clone at run time, and only its
functions split_fasta_chunk and identify_seq are executed (the module's torch/transformers/esm
imports are skipped), then prediction.py's writing loop is followed (frames with an empty protein
are not written).
"""

import ast
import gzip
import random
import sys
from pathlib import Path

from Bio import SeqIO

HERE = Path(__file__).resolve().parent
CODE = {a + b + c: "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"[16 * i + 4 * j + k]
        for i, a in enumerate("TCAG") for j, b in enumerate("TCAG") for k, c in enumerate("TCAG")}
LENGTHS = [1, 2, 3, 4, 5, 299, 300, 301, 500, 501, 502, 599, 600, 601, 800, 999, 1000, 1001, 1499, 1500, 1501,
           4999, 5000]


def reads(seed=2024, count=60):
    """Multi-chunk reads: coding on either strand (frames survive), random DNA, IUPAC codes, U, lower case."""
    rng = random.Random(seed)
    sense = [c for c in CODE if CODE[c] != "*"]
    complement = {"A": "T", "C": "G", "G": "C", "T": "A"}
    for i in range(count):
        length = LENGTHS[i] if i < len(LENGTHS) else rng.randint(1, 2500)
        if i % 4 in (0, 1):
            seq = "".join(rng.choice(sense) for _ in range(length // 3 + 1))[:length]
            if i % 4 == 1:
                seq = "".join(complement[c] for c in reversed(seq))
            seq = "".join(rng.choice("NRYKMSWBDHVnu") if rng.random() < 0.01 else c for c in seq)
        else:
            seq = "".join(rng.choice("ACGT" * 30 + "acgtNnRYKMSWBDHVU") for _ in range(length))
        yield f"r{i} description {i}", seq.lower() if i % 9 == 4 else seq


def main(clone):
    tree = ast.parse((Path(clone) / "units.py").read_text())
    wanted = {"split_fasta_chunk", "reverse_complement", "translate_dna", "identify_seq"}
    module = ast.Module(body=[n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted],
                        type_ignores=[])
    original = {"SeqIO": SeqIO}
    exec(compile(module, "units.py", "exec"), original)
    text = "".join(f">{header}\n" + "\n".join(seq[j : j + 70] for j in range(0, len(seq), 70)) + "\n"
                   for header, seq in reads())
    plain = HERE / "input.fa"
    plain.write_text(text)
    for cs in (300, 500):
        chunked = HERE / f"chunked{cs}.fa"
        original["split_fasta_chunk"](str(plain), str(chunked), cs)
        nucleotide, protein = [], []
        for record in SeqIO.parse(str(chunked), "fasta"):
            for item in original["identify_seq"](record.id, str(record.seq).upper()) or []:
                if item.get("protein", "") != "":
                    nucleotide.append(f">{item['seqid']}\n{item['nucleotide']}\n")
                    protein.append(f">{item['seqid']}\n{item['protein']}\n")
        for name, content in ((f"chunked{cs}.fa", chunked.read_text()),
                              (f"identified{cs}_nucleotide.fa", "".join(nucleotide)),
                              (f"identified{cs}_protein.faa", "".join(protein))):
            (HERE / f"{name}.gz").write_bytes(gzip.compress(content.encode(), mtime=0))
        chunked.unlink()
    (HERE / "input.fa.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
    plain.unlink()


if __name__ == "__main__":
    main(sys.argv[1])
