"""The tiny demo models: random weights, deterministic, in the published on-disk layouts.

They are UNTRAINED. They exist so that `make demo` and the tests run the real loading and
embedding code end to end on a laptop without downloading gigabytes of weights.
"""

import contextlib
import logging
import sys
from pathlib import Path

import torch

from .atomic import atomic_path
from .classifier import MLPClassifier
from .models.dnabert_s import DnabertSConfig
from .models.esm2 import Esm2Config
from .models.random_weights import write_random_dnabert_s, write_random_esm2

log = logging.getLogger(__name__)

# Small but not degenerate: 6 heads exercise the ALiBi slope rule for head counts that are not a power of two.
DNABERT_S_TINY = DnabertSConfig(hidden=48, layers=2, heads=6, intermediate=96, vocab_size=256)
ESM2_TINY = Esm2Config(layers=2, embed_dim=64, heads=4)
DNABERT_S_SEED, ESM2_SEED, CLASSIFIER_SEED = 1, 2, 3


def write_demo_models(dnabert_s_dir, esm2_path, classifier_path):
    """Write the three demo models, each under a temporary name first (a killed run leaves no folder that
    looks finished); the classifier takes DNABERT-S then ESM-2 features."""
    with atomic_path(dnabert_s_dir) as tmp:
        write_random_dnabert_s(tmp, DNABERT_S_TINY, seed=DNABERT_S_SEED)
    with atomic_path(esm2_path) as tmp:
        write_random_esm2(tmp, "fair-esm", ESM2_TINY, seed=ESM2_SEED)
    input_dim = DNABERT_S_TINY.hidden + ESM2_TINY.embed_dim
    write_demo_classifier(Path(classifier_path), input_dim=input_dim, seed=CLASSIFIER_SEED)
    log.info("wrote untrained demo models: %s, %s, %s (classifier input %d)", dnabert_s_dir, esm2_path,
             classifier_path, input_dim)


def write_demo_classifier(path, input_dim, seed=0):
    """A tiny deterministic classifier, UNTRAINED (random weights: its calls mean nothing), saved as
    the original saves its models: the whole module pickled, class under __main__. For tests and
    `make demo`. The same arguments give the same bytes."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(seed)
        model = MLPClassifier(input_dim)
        with torch.no_grad():
            model.bn1.running_mean.normal_(0, 0.1)
            model.bn1.running_var.uniform_(0.5, 1.5)
            model.output_layer.weight.mul_(8.0)  # spread the demo's scores over [0, 1] instead of ~0.5
    model.eval()
    path = Path(path)
    # Saved through a file handle, so the archive's inner folder is "archive/" whatever the name.
    with _class_in_main(MLPClassifier), atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(model, handle)
    return path


@contextlib.contextmanager
def _class_in_main(cls):
    """Make `cls` pickle as __main__.MLPClassifier, as the original's training script saved it."""
    main = sys.modules["__main__"]
    saved = cls.__module__, getattr(main, "MLPClassifier", None)
    cls.__module__ = "__main__"
    main.MLPClassifier = cls
    try:
        yield
    finally:
        cls.__module__ = saved[0]
        if saved[1] is None:
            del main.MLPClassifier
        else:
            main.MLPClassifier = saved[1]
