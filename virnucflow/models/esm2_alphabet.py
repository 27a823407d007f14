"""ESM-2's alphabet and tokenizer, as fair-esm's `esm/data.py` Alphabet ("ESM-1b" architecture)."""

# 4 specials, 25 residue symbols, '.', '-', padding to a multiple of 8, <mask>.
PREPEND = ["<cls>", "<pad>", "<eos>", "<unk>"]
RESIDUES = list("LAGVSERTIDPKQNFYMHWCXBUZO.-")
TOKENS = PREPEND + RESIDUES + ["<null_1>", "<mask>"]
TOKEN_ID = {tok: i for i, tok in enumerate(TOKENS)}
CLS, PAD, EOS, UNK, MASK = (TOKEN_ID[t] for t in ["<cls>", "<pad>", "<eos>", "<unk>", "<mask>"])


def tokenize(sequence):
    """fair-esm's encoding: <cls> + one token per residue (anything unknown -> <unk>) + <eos>."""
    return [CLS] + [TOKEN_ID.get(c, UNK) for c in sequence] + [EOS]
