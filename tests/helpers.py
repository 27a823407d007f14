"""What the tests share beyond fixtures: per-read reference versions of the vectorised rules, small
writers and readers of the project's files, the configuration's defaults, and killing a job from
outside."""

import math
import os
import signal
import time
from pathlib import Path

import numpy as np

from virnucflow.embeddings import EmbeddingWriter
from virnucflow.fasta import read_batches
from virnucflow.frames import FRAME_NAMES, chunk_layout, find_frames
from virnucflow.prepare import prepare_sample
from virnucflow.schema import defaults


# --- reference rules, one read or chunk at a time ----------------------------------------------

def chunk_starts(length, chunk_length, compat="virnucpro"):
    """Start positions of the chunks of a read of `length` bp (each chunk is seq[start:start+cs])."""
    if length <= 0:
        raise ValueError("a read of length 0 has no chunks")
    n = math.ceil(length / chunk_length)
    if compat == "fixed":
        if n == 1:
            return [0]
        # n full chunks, the first at 0 and the last ending at the read's end, spread evenly.
        return [(i * (length - chunk_length)) // (n - 1) for i in range(n)]
    # VirNucPro: the overlap R is split over n steps, so only n - 1 of them are used (the quirk).
    overlap = n * chunk_length - length
    lower = int(overlap / n)
    need = overlap - (n - 1) * lower
    steps = [lower + 1] * need + [lower] * (n - 1 - need) + [0]
    return [i * chunk_length - sum(steps[:i]) for i in range(n)]


def six_frames(chunk, compat="virnucpro"):
    """The surviving frames of one chunk (str or bytes): [(name, protein, nucleotide)] as str."""
    data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
    _, frames, _, _, proteins, nucleotides = find_frames(data, [0], [len(data)], compat)
    return [(FRAME_NAMES[f], p.decode(), n.decode()) for f, p, n in zip(frames, proteins, nucleotides)]


def read_fasta(path):
    """Yield (read_id, sequence) as str for every checked record."""
    for batch in read_batches(path):
        ends = np.cumsum(batch.lengths).tolist()
        text = batch.sequence.decode("ascii")
        for read_id, start, end in zip(batch.ids, [0] + ends[:-1], ends):
            yield read_id.decode(), text[start:end]


def chunk_records(fasta, chunk_length=500, compat="virnucpro"):
    """Yield VirNucPro's chunk records (chunk_id, sequence) as str: what its chunked<cs>.fa holds."""
    for batch in read_batches(fasta):
        read_of_chunk, starts = chunk_layout(batch.lengths, chunk_length, compat)
        read_offsets = (np.cumsum(batch.lengths) - batch.lengths).tolist()
        lengths = batch.lengths.tolist()
        previous, number = -1, 0
        for read, start in zip(read_of_chunk.tolist(), starts.tolist()):
            number = number + 1 if read == previous else 1
            previous = read
            offset = read_offsets[read] + start
            end = min(offset + chunk_length, read_offsets[read] + lengths[read])
            yield f"{batch.ids[read].decode()}_chunk_{number}", batch.sequence[offset:end].decode()


# --- files ---------------------------------------------------------------------------------------

def write_embeddings(path, ids, embeddings, attrs=None):
    """Write a whole embedding file at once (atomic)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    dim = embeddings.shape[1] if embeddings.ndim == 2 else int((attrs or {}).get("dim", 0))
    with EmbeddingWriter(path, dim, attrs) as writer:
        writer.append(list(ids), embeddings.reshape(len(ids), dim))


def finished_batches(sidecar_folder):
    """Batches a running or killed embed job has finished in `sidecar_folder`."""
    try:
        with open(Path(sidecar_folder) / "batches.jsonl", "rb") as index:
            return sum(1 for raw in index if raw.endswith(b"\n"))
    except FileNotFoundError:  # not started, or finished and removed
        return 0


# --- the configuration's defaults ----------------------------------------------------------------

def run_prepare(fasta, out_dir, **options):
    """prepare_sample with the default config's chunk_length, compat and shard_residues unless given."""
    config = defaults()
    science = {key: config[key] for key in ("chunk_length", "compat", "shard_residues")}
    return prepare_sample(fasta, out_dir, **{**science, **options})


def embed_options(kind, **overrides):
    """embed_shard's keyword arguments as a workflow job with the default config passes them (threads:
    torch's own choice)."""
    embed = defaults()["embed"]
    options = dict(kind=kind, device=embed["device"], precision=embed["precision"],
                   token_budget=embed[f"{kind}_token_budget"], on_error=embed["on_error"],
                   layer=embed["esm_layer"] if kind == "protein" else None, threads=None,
                   cpu_fallback=embed["cpu_fallback"], lease_seconds=embed["lock_lease_seconds"])
    return {**options, **overrides}


# --- killing a job from outside ------------------------------------------------------------------

def kill_when(proc, reached, timeout=300, poll=0.005):
    """SIGKILL `proc` (a Popen; its whole process group when it leads one) as soon as `reached()` is true.
    Returns True if it was killed there, False if it ended on its own first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reached():
            try:
                if os.getpgid(proc.pid) == proc.pid:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            except ProcessLookupError:  # ended just now
                pass
            proc.wait()
            return proc.returncode == -signal.SIGKILL
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    proc.kill()
    proc.wait()
    raise TimeoutError("kill point never reached")


def wait_until(condition, timeout=120, what="the condition"):
    """Poll `condition` until it holds; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise TimeoutError(f"{what} never came")


def text(path):
    """A log file's text, or "" before the job has written it."""
    return Path(path).read_text() if Path(path).exists() else ""
