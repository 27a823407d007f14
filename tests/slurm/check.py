"""Checks of `make slurm-test`: every embed job was its own Slurm job with a GPU, and the results
equal a local run of the same workflow."""

import re
import sys
from pathlib import Path

import h5py
import numpy as np

slurm_run, local_run = map(Path, sys.argv[1:3])
failures = []

job_ids = {}
for log in sorted(slurm_run.glob("logs/*/embed_*/*.log")):
    first = log.read_text().splitlines()[0]
    job = re.search(r"SLURM_JOB_ID=(\d+)", first)
    gpu = re.search(r"CUDA_VISIBLE_DEVICES=(\S+)", first)
    print(f"{log.relative_to(slurm_run)}: {first.split(' INFO ')[-1]}")
    if not job or not gpu:
        failures.append(f"{log}: not a Slurm job with CUDA_VISIBLE_DEVICES set")
    else:
        job_ids[log] = job.group(1)
shards = len(list(slurm_run.glob("work/*/shards/*.faa")))
if len(job_ids) != 2 * shards or len(set(job_ids.values())) != len(job_ids):
    failures.append(f"{len(job_ids)} embed logs with {len(set(job_ids.values()))} distinct Slurm jobs for {shards} shards")
print(f"{len(job_ids)} embed jobs for {shards} shards, {len(set(job_ids.values()))} distinct Slurm job ids")

# Slurm's own record: a GPU for every embed job, none for the others.
for line in (slurm_run / "scontrol.txt").read_text().splitlines():
    rule = re.search(r"Comment=rule_([a-z_]+?)(_wildcards|\s|$)", line)
    if not rule:
        continue
    has_gpu = "gpu" in " ".join(re.findall(r"Tres(?:PerJob|PerNode|PerTask)=\S+", line))
    if has_gpu != rule.group(1).startswith("embed_"):
        failures.append(f"Slurm job of rule {rule.group(1)} {'has' if has_gpu else 'lacks'} a GPU request")

for result in sorted(local_run.glob("results/*/embeddings.h5")):
    other = slurm_run / result.relative_to(local_run)
    with h5py.File(result) as a, h5py.File(other) as b:
        same = list(a["sequence_ids"].asstr()) == list(b["sequence_ids"].asstr()) and np.array_equal(
            a["embeddings"][:], b["embeddings"][:])
    print(f"{result.relative_to(local_run)}: {'identical' if same else 'DIFFERENT'} to the local run")
    if not same:
        failures.append(f"{other} differs from the local run")
for table in sorted(local_run.glob("results/*/*.tsv")):
    other = slurm_run / table.relative_to(local_run)
    same = other.exists() and other.read_bytes() == table.read_bytes()
    print(f"{table.relative_to(local_run)}: {'identical' if same else 'DIFFERENT'}")
    if not same:
        failures.append(f"{other} differs from the local run")

if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("slurm-test: all checks passed")
