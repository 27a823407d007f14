"""Checks of `make slurm-test`: every embed job was its own Slurm job with a GPU; several embed jobs
were RUNNING in Slurm at the same time (squeue polled by run.sh), each on its own GPU; a job given a
GPU that its CPU-only torch cannot use fails unless --cpu-fallback; the results equal a local run of
the same workflow."""

import re
import sys
from pathlib import Path

import h5py
import numpy as np

slurm_run, local_run = map(Path, sys.argv[1:3])
failures = []
# The comment the SLURM plugin gives a job of the embed rules: rule_embed_dna_wildcards_...
EMBED_COMMENT = re.compile(r"rule_embed_(dna|protein)(_wildcards\S*)?$")
# Columns of the result tables that describe how a job ran, not what it computed.
RUN_SPECIFIC = re.compile(r"seconds|max_rss_mb|peak_gpu_memory_bytes|gpu_expected|cpu_jobs_given_a_gpu")

job_ids, gpus = {}, {}  # log -> Slurm job id; Slurm job id -> CUDA_VISIBLE_DEVICES
for log in sorted(slurm_run.glob("logs/*/embed_*/*.log")):
    first = log.read_text().splitlines()[0]
    job = re.search(r"SLURM_JOB_ID=(\d+)", first)
    gpu = re.search(r"CUDA_VISIBLE_DEVICES=(\S+)", first)
    print(f"{log.relative_to(slurm_run)}: {first.split(' INFO ')[-1]}")
    if not job or not gpu:
        failures.append(f"{log}: not a Slurm job with CUDA_VISIBLE_DEVICES set")
    else:
        job_ids[log] = job.group(1)
        gpus[job.group(1)] = gpu.group(1)
    if "computing on the CPU (embed.cpu_fallback)" not in log.read_text():
        failures.append(f"{log}: the job did not see the GPU Slurm gave it (no embed.cpu_fallback warning)")
shards = len(list(slurm_run.glob("work/*/shards/*.faa")))
if len(job_ids) != 2 * shards or len(set(job_ids.values())) != len(job_ids):
    failures.append(f"{len(job_ids)} embed logs with {len(set(job_ids.values()))} distinct Slurm jobs for {shards} shards")
print(f"{len(job_ids)} embed jobs for {shards} shards, {len(set(job_ids.values()))} distinct Slurm job ids")

# Slurm's view of the run: one line per poll, "<epoch seconds> <job id>:<comment> ...".
polls = []
for line in (slurm_run / "squeue_running.txt").read_text().splitlines():
    when, *jobs = line.split()
    if jobs != ["squeue-failed"]:
        polls.append((float(when), [job.split(":", 1)[0] for job in jobs if EMBED_COMMENT.match(job.split(":", 1)[-1])]))
most, when_most = max(((len(embeds), when) for when, embeds in polls), default=(0, None))
seen = {job for _, embeds in polls for job in embeds}
span = polls[-1][0] - polls[0][0] if polls else 0
print(f"squeue polled {len(polls)} times over {span:.0f} s: {len(seen)} embed jobs seen RUNNING, at most {most} at once")
if most < 2:
    failures.append(f"at most {most} embed job(s) RUNNING at once in Slurm: GPU jobs were serialised")
clashes = set()
for when, embeds in polls:
    unknown = [job for job in embeds if job not in gpus]
    if unknown:
        failures.append(f"Slurm jobs {unknown} ran as embed jobs but no embed log names them")
    indices = [gpus[job] for job in embeds if job in gpus]
    if len(set(indices)) != len(indices):
        clashes.add(" ".join(f"{job}:{gpus[job]}" for job in embeds if job in gpus))
if clashes:
    failures.append(f"embed jobs RUNNING at the same time shared a GPU: {sorted(clashes)}")
if when_most is not None:
    at_most = next(embeds for when, embeds in polls if when == when_most)
    print("  at the busiest poll: " + ", ".join(f"job {job} on CUDA_VISIBLE_DEVICES={gpus.get(job, '?')}" for job in at_most))
indices = sorted(set(gpus.values()))
print(f"GPU indices Slurm gave the embed jobs: {', '.join(indices)}; jobs running at the same time "
      f"{'never shared one' if not clashes else 'SHARED ONE'}")
if len(indices) < 2:
    failures.append(f"every embed job got CUDA_VISIBLE_DEVICES={','.join(indices)}: the node's four GPUs were not used")

# A job that Slurm gave a GPU, with a CPU-only torch: one-line error without --cpu-fallback.
strict_rc = int((slurm_run / "strict.rc").read_text())
error = [line for line in (slurm_run / "strict.stderr").read_text().splitlines() if line.startswith("virnucflow embed: error:")]
print(f"without --cpu-fallback: exit status {strict_rc}; {error[0] if error else 'NO ERROR LINE'}")
if strict_rc != 1 or len(error) != 1 or "CPU-only build" not in error[0] or "cpu_fallback" not in error[0]:
    failures.append(f"embed given a GPU with a CPU-only torch: exit status {strict_rc}, error lines {error}")
fallback_rc = int((slurm_run / "fallback.rc").read_text())
print(f"with --cpu-fallback: exit status {fallback_rc}")
if fallback_rc != 0 or not (slurm_run / "fallback.h5").exists():
    failures.append(f"embed with --cpu-fallback under Slurm: exit status {fallback_rc}")

# Slurm's own record: a GPU for every embed job, none for the others.
for line in (slurm_run / "scontrol.txt").read_text().splitlines():
    comment = re.search(r"Comment=(\S+)", line)
    if not comment or not comment.group(1).startswith("rule_"):
        continue
    has_gpu = "gpu" in " ".join(re.findall(r"Tres(?:PerJob|PerNode|PerTask)=\S+", line))
    if has_gpu != bool(EMBED_COMMENT.match(comment.group(1))):
        failures.append(f"Slurm job {comment.group(1)} {'has' if has_gpu else 'lacks'} a GPU request")

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
    rows = [[line.split("\t") for line in path.read_text().splitlines()] if path.exists() else [[]]
            for path in (table, other)]
    header = rows[0][0]
    keep = [i for i, name in enumerate(header) if not RUN_SPECIFIC.search(name)]
    same = rows[0][0] == rows[1][0] and [[row[i] for i in keep] for row in rows[0]] == [
        [row[i] for i in keep] for row in rows[1]]
    skipped = [header[i] for i in range(len(header)) if i not in keep]
    print(f"{table.relative_to(local_run)}: {'identical' if same else 'DIFFERENT'}"
          + (f" (run-specific columns not compared: {', '.join(skipped)})" if skipped else ""))
    if not same:
        failures.append(f"{other} differs from the local run")

if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("slurm-test: all checks passed")
