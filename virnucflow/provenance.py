"""Provenance: a file's sha256, streamed, so that a shard FASTA or a model's weights need not fit in memory."""

import hashlib


def file_sha256(path, block=1 << 20):
    """The hex sha256 of the file at `path`, read `block` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()
