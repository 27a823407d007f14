"""Transitional: the embedding-file module is virnucflow.embeddings now. Kept only until
tests/test_gpu.py imports `from virnucflow.embeddings import open_embeddings`; delete then."""

from .embeddings import EmbeddingWriter, open_embeddings  # noqa: F401
