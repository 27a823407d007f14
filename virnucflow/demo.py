"""The tiny demo models: random weights, deterministic, in the published on-disk layouts.

They are UNTRAINED. They exist so that `make demo` and the tests run the real loading and
embedding code end to end on a laptop without downloading gigabytes of weights.
"""

from pathlib import Path

from .models.dnabert_s_checkpoint import write_random_dnabert_s
from .models.esm2_checkpoint import write_random_esm2
from .predict import write_demo_classifier

# Small but not degenerate: 6 heads exercise the ALiBi slope rule for head counts that are not a power of two.
DNABERT_S_TINY = dict(hidden=48, layers=2, heads=6, intermediate=96, vocab_size=256, seed=1)
ESM2_TINY = dict(num_layers=2, embed_dim=64, attention_heads=4, seed=2)
CLASSIFIER_SEED = 3


def write_demo_models(dnabert_s_dir, esm2_path, classifier_path, log=None):
    """Write the three demo models; the classifier takes DNABERT-S then ESM-2 features."""
    write_random_dnabert_s(Path(dnabert_s_dir), **DNABERT_S_TINY)
    write_random_esm2(Path(esm2_path), layout="fair-esm", **ESM2_TINY)
    input_dim = DNABERT_S_TINY["hidden"] + ESM2_TINY["embed_dim"]
    write_demo_classifier(Path(classifier_path), input_dim=input_dim, seed=CLASSIFIER_SEED)
    if log:
        log.info("wrote untrained demo models: %s, %s, %s (classifier input %d)",
                 dnabert_s_dir, esm2_path, classifier_path, input_dim)
