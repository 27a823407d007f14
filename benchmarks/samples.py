"""Scheduler cost with many samples: CPU time of the Snakemake master process against the number of samples.

Builds S samples (3 coding reads of 600 bp each by default: one shard, so per sample one `prepare`
checkpoint, 2 embed jobs, merge, predict and whatever else the workflow runs per sample), a sample sheet,
and runs the workflow in a temporary copy of the repository (the working tree, or a commit with --ref; a
candidate fix applied with --patch) with the demo config (tiny models, device cpu).

The master's CPU is its own RUSAGE_SELF read at exit: all its threads (scheduling loop, DAG updates, the
threads that start `script:` jobs), NOT its children: every job's Python process counts in
RUSAGE_CHILDREN, reported apart as "jobs CPU". The master runs under a small wrapper (MASTER below, no
change to Snakemake's behaviour) that also times, inside the process, the parts that grow with the number
of samples: checkpoint updates (`DAG.update_checkpoint_dependencies` after each finished checkpoint: the
jobs downstream re-evaluated, then needrun and postprocess over the whole DAG), with their cost per
checkpoint against the DAG's size; job selection (`JobScheduler.job_selector`: input sizes of the ready
jobs, the ILP or greedy selection), once per scheduling round; the rounds, and how many of them a timer of
Snakemake's job rate limiter (`--max-jobs-per-timespan`, default 100/1s) started.

--jobs cheap (the default) keeps the workflow's rules, DAG, files, checkpoint and `script:` jobs, but
replaces every job script except prepare's and demo_models' by a stub that writes empty outputs (prepare,
the checkpoint, runs for real: its shard folder decides the embed jobs). The master does the same work per
job and per checkpoint as with --jobs real; what differs is the wall time of a job, and with it the
number of timer rounds: --job-seconds makes every stubbed job last longer (a sleep, no CPU).
--batch-size runs the samples in several invocations (a sample sheet per part, `--config samples=...`)
and a last one with the whole sheet; --done puts finished samples in the sheet (a bigger DAG around the same checkpoints);
--profile writes a cProfile of the master's main thread.

    .venv/bin/python benchmarks/samples.py --samples 4 8                      # smoke test, < 2 min
    .venv/bin/python benchmarks/samples.py --samples 10 40 160                # growth, cheap jobs
    .venv/bin/python benchmarks/samples.py --samples 10 40 --jobs real        # the real tiny pipeline
    .venv/bin/python benchmarks/samples.py --samples 10 100 1000 --batch-size 50 --scheduler greedy \
        --extra --max-jobs-per-timespan 1000/10s
"""

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from e2e import FILES, REPO, copy_workflow

sys.path.insert(0, str(REPO))

from benchmarks.synthetic import synthetic_reads, write_fasta  # noqa: E402

# Runs snakemake in this process, times a few of its methods, and writes the master's own CPU at exit.
MASTER = r'''
import atexit, functools, inspect, json, os, resource, sys, time
from snakemake.cli import main  # first: the import order snakemake expects
import snakemake.dag as dag_module
import snakemake.scheduling.greedy as greedy_module
import snakemake.scheduling.job_scheduler as scheduler_module
import snakemake.scheduling.milp as milp_module

stats = dict(rounds=0, timers=0, jobs=0, checkpoint_updates=[], parts={}, startup_s=None)
profile = None
if os.environ.get("SAMPLES_BENCH_PROFILE"):
    import cProfile
    profile = cProfile.Profile()


def write_stats():
    if profile is not None:
        profile.disable()
        profile.dump_stats(os.environ["SAMPLES_BENCH_PROFILE"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats.update(user_s=usage.ru_utime, sys_s=usage.ru_stime, maxrss_mb=usage.ru_maxrss / 1024)
    with open(os.environ["SAMPLES_BENCH_STATS"], "w") as handle:
        json.dump(stats, handle)


atexit.register(write_stats)


def timed(cls, name, part):
    # stats["parts"][part] = [calls, CPU seconds of the process while inside] (nested parts overlap)
    original = getattr(cls, name)
    record = stats["parts"].setdefault(part, [0, 0.0])
    depth = [0]  # a recursive call counts once

    def enter():
        depth[0] += 1
        return time.process_time()

    def leave(start):
        depth[0] -= 1
        if not depth[0]:
            record[0] += 1
            record[1] += time.process_time() - start

    if inspect.iscoroutinefunction(original):
        async def wrapper(*args, **kwargs):
            start = enter()
            try:
                return await original(*args, **kwargs)
            finally:
                leave(start)
    else:
        def wrapper(*args, **kwargs):
            start = enter()
            try:
                return original(*args, **kwargs)
            finally:
                leave(start)
    setattr(cls, name, functools.wraps(original)(wrapper))


timed(dag_module.DAG, "update_incomplete_input_expand_jobs", "incomplete jobs re-evaluated")
timed(dag_module.DAG, "update_needrun", "needrun")
timed(dag_module.DAG, "postprocess", "DAG postprocess")
timed(scheduler_module.JobScheduler, "job_selector", "selection")
timed(scheduler_module.JobScheduler, "update_input_sizes", "selection: input sizes")
timed(milp_module.Scheduler, "select_jobs", "selection: ILP")
timed(greedy_module.Scheduler, "select_jobs", "selection: greedy")

update = dag_module.DAG.update_checkpoint_dependencies
async def update_checkpoint_dependencies(self, jobs=None):
    if jobs is None or not any(job.is_checkpoint for job in jobs):
        return await update(self, jobs)
    jobs_before = len(self._dependencies)
    incomplete = sum(1 for job in self._dependencies if job.incomplete_input_expand)
    start = time.process_time()
    updated = await update(self, jobs)
    if updated:  # after a finished checkpoint: (jobs in DAG before, after, jobs with incomplete input, CPU s)
        stats["checkpoint_updates"].append((jobs_before, len(self._dependencies), incomplete,
                                            time.process_time() - start))
    return updated
dag_module.DAG.update_checkpoint_dependencies = update_checkpoint_dependencies

schedule = scheduler_module.JobScheduler.schedule
def schedule_(self):
    stats["startup_s"] = time.process_time()  # parsing, DAG building, everything before the first round
    return schedule(self)
scheduler_module.JobScheduler.schedule = schedule_

finish = scheduler_module.JobScheduler._finish_jobs
def _finish_jobs(self):
    stats["rounds"] += 1  # called once per wake-up of the scheduling loop
    try:
        return finish(self)
    finally:
        stats["jobs"] = self.finished_jobs
scheduler_module.JobScheduler._finish_jobs = _finish_jobs

import threading
pending = [0]
ONE_TIMER = bool(os.environ.get("SAMPLES_BENCH_ONE_TIMER"))
def _schedule_reevalutation(self, delay):
    # as Snakemake's: a threading.Timer that wakes the loop again after `delay` seconds; counted when it fires.
    # Snakemake starts one after every round with waiting jobs, and each wake-up starts another, so the timers
    # pile up with every job that finishes. SAMPLES_BENCH_ONE_TIMER (an experiment, not Snakemake's behaviour):
    # at most one timer pending.
    if ONE_TIMER and pending[0]:
        return
    pending[0] += 1
    def fire():
        stats["timers"] += 1
        pending[0] -= 1
        self._open_jobs.release()
    threading.Timer(delay, fire).start()
scheduler_module.JobScheduler._schedule_reevalutation = _schedule_reevalutation

sys.argv[0] = "snakemake"
if profile is not None:
    profile.enable()
main()
'''

# --jobs cheap: the job scripts of every rule downstream of the checkpoint write their outputs empty.
STUB = """# benchmarks/samples.py --jobs cheap: empty outputs, no computation (a sleep with --job-seconds).
import os
import time
from pathlib import Path

time.sleep(float(os.environ.get("SAMPLES_BENCH_JOB_SECONDS", "0")))

for path in [*snakemake.output, *snakemake.log]:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("")
"""
KEEP = ["prepare.py", "demo_models.py"]  # the checkpoint, and the tiny models (one job)


def copy_ref(root, ref):
    """The workflow's files as committed in `ref` (a commit, branch or tag), or the working tree if None."""
    if ref is None:
        copy_workflow(root)
        return
    names = [name for name in FILES if subprocess.run(["git", "cat-file", "-e", f"{ref}:{name}"], cwd=REPO,
                                                        capture_output=True).returncode == 0]
    archive = subprocess.run(["git", "archive", "--format=tar", ref, "--", *names], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)


def workflow_env(root, **extra):
    """The environment of a run: the copy's own virnucflow package first (not the one installed from the repo)."""
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, **extra)


def write_sheet(root, names, file="samples.tsv"):
    rows = ["sample\tfasta", *(f"{name}\treads/{name}.fa" for name in names)]
    (root / file).write_text("\n".join(rows) + "\n")


def make_done(root, args, done):
    """`done` finished samples d00000, d00001, ...: d00000 is run through the workflow, the others get copies of
    its files (its name replaced), newer than their inputs, so that Snakemake sees them as done."""
    names = [f"d{i:05d}" for i in range(done)]
    for i, name in enumerate(names):
        write_fasta(root / "reads" / f"{name}.fa", synthetic_reads(args.reads, args.read_length, args.read_length,
                                                                     coding_fraction=1.0, seed=10**6 + i,
                                                                     prefix=f"{name}_r"))
    write_sheet(root, names[:1])
    subprocess.run([sys.executable, "-m", "snakemake", "--configfile", "bench.yaml", "--cores", str(args.cores),
                    "--workflow-profile", "none", "--quiet"], cwd=root, env=workflow_env(root), check=True,
                   capture_output=True)
    template = [path for top in ["work", "results", "logs"] for path in (root / top / names[0]).rglob("*")]
    template.sort(key=lambda path: -len(path.parts))  # files before their folders (for the times)
    for name in names[1:]:
        for path in template:
            copy = Path(str(path).replace(names[0], name))
            if path.is_file():
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_bytes(path.read_bytes().replace(names[0].encode(), name.encode()))
            else:
                copy.mkdir(parents=True, exist_ok=True)
        for path in template:  # the template's times: every output newer than its inputs
            stat = path.stat()
            os.utime(Path(str(path).replace(names[0], name)), ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return names


def make_run(root, samples, reads, read_length, shard_residues, classifier, cheap, patch=None, ref=None):
    """The workflow in `root` with `samples` samples listed in samples.tsv and bench.yaml (the demo config)."""
    copy_ref(root, ref)
    if patch:
        subprocess.run(["git", "apply", str(Path(patch).resolve())], cwd=root, check=True)
    if cheap:  # every job script downstream of the checkpoint
        for script in (root / "scripts").glob("*.py"):
            if script.name not in KEEP:
                script.write_text(STUB)
    (root / "reads").mkdir()
    names = [f"s{i:05d}" for i in range(samples)]
    for i, name in enumerate(names):
        write_fasta(root / "reads" / f"{name}.fa",
                    synthetic_reads(reads, read_length, read_length, coding_fraction=1.0, seed=i, prefix=f"{name}_r"))
    write_sheet(root, names)
    config = (root / "config/demo.yaml").read_text()
    config = config.replace("config/demo_samples.tsv", "samples.tsv")
    config = config.replace("shard_residues: 1500", f"shard_residues: {shard_residues}")
    if not classifier:
        config = config.replace("classifier: resources/demo_models/classifier_tiny.pth", "classifier: null")
    (root / "bench.yaml").write_text(config)
    (root / "_master.py").write_text(MASTER)
    return names


def snakemake(root, args, options, stats_path, profile_path=None, timeout=None):
    """One master run; returns (wall s, children CPU s incl. the master, master stats) or None on timeout."""
    cmd = [sys.executable, "_master.py", "--configfile", "bench.yaml", "--cores", str(args.cores),
           "--workflow-profile", "none", "--scheduler", args.scheduler, *args.extra, "--quiet", *options]
    env = workflow_env(root, SAMPLES_BENCH_STATS=str(stats_path), SAMPLES_BENCH_JOB_SECONDS=str(args.job_seconds),
                       SAMPLES_BENCH_ONE_TIMER="1" if args.one_timer else "")
    if profile_path:
        env["SAMPLES_BENCH_PROFILE"] = str(profile_path)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate()
        return None
    except BaseException:  # interrupted: the master and its jobs are in their own session
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"snakemake failed in {root}:\n{output[-5000:]}")
    children = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, children, json.loads(Path(stats_path).read_text())


def run_size(args, samples):
    """All runs (one, or one per batch and a final one) for `samples` samples; a dict of totals."""
    with tempfile.TemporaryDirectory(prefix="samples_bench.", dir=args.tmp) as tmp:
        root = Path(tmp)
        names = make_run(root, samples, args.reads, args.read_length, args.shard_residues, not args.no_classifier,
                         args.jobs == "cheap", args.patch, args.ref)
        if args.done:
            write_sheet(root, make_done(root, args, args.done) + names)
        batches = []
        if args.batch_size:  # as README "Many samples" says: a sample sheet per part, then the whole sheet
            for k, lo in enumerate(range(0, samples, args.batch_size)):
                write_sheet(root, names[lo:lo + args.batch_size], f"samples_part{k}.tsv")
                batches.append(["--config", f"samples=samples_part{k}.tsv"])
        batches.append([])  # the whole sheet (after the parts: only report_plots is left)
        total = dict(samples=samples, wall=0.0, master=0.0, children=0.0, startup=0.0, jobs=0, rounds=0, timers=0,
                     invocations=len(batches), per_checkpoint=[], parts={}, maxrss_mb=0.0, timeout=False)
        deadline = time.monotonic() + args.timeout
        loads = [os.getloadavg()[0]]
        for i, options in enumerate(batches):
            profile = Path(args.profile) / f"samples{samples}_{args.scheduler}_{i}.prof" if args.profile else None
            result = snakemake(root, args, options, root / f"stats{i}.json", profile,
                               timeout=max(1.0, deadline - time.monotonic()))
            if result is None:
                total["timeout"] = True
                break
            wall, children, stats = result
            master = stats["user_s"] + stats["sys_s"]
            total["wall"] += wall
            total["master"] += master
            total["children"] += children - master
            total["startup"] += stats["startup_s"] or 0.0
            for key in ["jobs", "rounds", "timers"]:
                total[key] += stats[key]
            total["per_checkpoint"] += stats["checkpoint_updates"]
            for part, (calls, seconds) in stats["parts"].items():
                record = total["parts"].setdefault(part, [0, 0.0])
                record[0] += calls
                record[1] += seconds
            total["maxrss_mb"] = max(total["maxrss_mb"], stats["maxrss_mb"])
        total["checkpoints"] = len(total["per_checkpoint"])
        total["checkpoint_s"] = sum(row[-1] for row in total["per_checkpoint"])
        total["select_s"] = total["parts"].get("selection", [0, 0.0])[1]
        loads.append(os.getloadavg()[0])
        total["load"] = max(loads)  # other work on the machine stretches the wall time, hence the rounds
        if not total["timeout"]:
            missing = [name for name in names if not (root / "results" / name / "embeddings.h5").exists()]
            if missing or not (root / "results/report/summary.tsv").exists():
                sys.exit(f"incomplete run: {len(missing)} samples without embeddings.h5, or no report")
            if args.jobs == "real":  # the last run's report covers every sample, whatever the parts
                listed = [line.split("\t")[0] for line in (root / "results/report/summary.tsv").read_text().splitlines()[1:]]
                if listed != names:
                    sys.exit(f"the report lists {len(listed)} samples, not the {len(names)} of the sheet")
    return total


def ends(per_checkpoint, k=10):
    """Mean ms per checkpoint update over the first and the last `k`, with the DAG sizes they saw."""
    if not per_checkpoint:
        return "", ""
    head, tail = per_checkpoint[:k], per_checkpoint[-k:]

    def mean(rows):
        return f"{1000 * sum(row[-1] for row in rows) / len(rows):.0f} ({rows[0][0]}-{rows[-1][1]} jobs)"
    return mean(head), mean(tail)


def fit(per_checkpoint):
    """Least squares: CPU s of a checkpoint update = a * jobs in the DAG + b * jobs with incomplete input + c."""
    import numpy as np

    if len(per_checkpoint) < 20:
        return None
    rows = np.array([(before, incomplete, 1.0) for before, _, incomplete, _ in per_checkpoint], dtype=float)
    seconds = np.array([row[-1] for row in per_checkpoint])
    coef, *_ = np.linalg.lstsq(rows, seconds, rcond=None)
    return dict(us_per_job=1e6 * coef[0], us_per_incomplete_job=1e6 * coef[1], ms_constant=1e3 * coef[2])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--scheduler", choices=["ilp", "greedy"], default="ilp")
    parser.add_argument("--jobs", choices=["real", "cheap"], default="cheap",
                        help="real: the demo pipeline's jobs; cheap: embed/merge/predict/report scripts write empty "
                             "outputs (same DAG, checkpoints and master work; see above)")
    parser.add_argument("--job-seconds", type=float, default=0.0,
                        help="--jobs cheap: each stubbed job sleeps this long (the wall time of a real job, no CPU)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--reads", type=int, default=3, help="reads per sample")
    parser.add_argument("--read-length", type=int, default=600)
    parser.add_argument("--shard-residues", type=int, default=1500,
                        help="the demo's 1500 gives 1 shard per sample with 3 x 600 bp")
    parser.add_argument("--no-classifier", action="store_true", help="classifier: null (no predict jobs)")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="run the samples in snakemake invocations of this many samples each (a sample sheet "
                             "per part, --config samples=...), then one with the whole sheet; 0: one invocation")
    parser.add_argument("--ref", help="benchmark the workflow as committed in this git ref (default: the working tree)")
    parser.add_argument("--done", type=int, default=0,
                        help="also list this many samples that are already finished (their files in place): the "
                             "DAG holds their jobs, so the checkpoint updates of the --samples samples are "
                             "measured against a larger DAG")
    parser.add_argument("--patch", help="a unified diff applied (git apply) to the workflow copy: a candidate fix")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="further snakemake options (last on the line)")
    parser.add_argument("--one-timer", action="store_true",
                        help="experiment: patch the master so that at most one rate-limiter timer is pending "
                             "(what a fix in Snakemake could give; not Snakemake's behaviour)")
    parser.add_argument("--profile", help="write a cProfile of each master run into this folder")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per sample count (all its invocations)")
    parser.add_argument("--tmp", help="folder for the workflow copies (default: the system's)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/samples.md"))
    args = parser.parse_args()
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    rows = []
    for samples in args.samples:
        total = run_size(args, samples)
        rows.append(total)
        if total["timeout"]:
            print(f"{samples} samples: over {args.timeout:.0f} s, stopped", flush=True)
            break
        print(f"{samples} samples: master {total['master']:.1f} s CPU ({1000 * total['master'] / samples:.0f} ms per "
              f"sample), wall {total['wall']:.0f} s, {total['jobs']} jobs, {total['rounds']} rounds, checkpoint "
              f"updates {total['checkpoint_s']:.1f} s, job selection {total['select_s']:.1f} s", flush=True)
    command = " ".join([".venv/bin/python", "benchmarks/samples.py", *sys.argv[1:]])
    setup = (f"{args.reads} coding reads of {args.read_length} bp per sample, shard_residues {args.shard_residues}, "
             f"classifier {'none' if args.no_classifier else 'tiny'}; `--cores {args.cores} --scheduler "
             f"{args.scheduler}`, {args.jobs} jobs" + (f", batches of {args.batch_size} samples" if args.batch_size
                                                       else "")  + (f", patch {Path(args.patch).name}" if args.patch
                                                                   else "") + (f", workflow of {args.ref}" if args.ref
                                                                               else "")
             + (f", snakemake options `{' '.join(args.extra)}`" if args.extra else "")
             + (f", plus {args.done} finished samples in the sheet" if args.done else "")
             + (f", each job {args.job_seconds:g} s longer (a sleep)" if args.job_seconds else "")
             + (", EXPERIMENT: at most one rate-limiter timer pending (--one-timer)" if args.one_timer else ""))
    lines = [
        f"# master CPU against samples ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores)",
        "",
        f"Command: `{command}`",
        "",
        setup + ". Master: the snakemake process's own CPU (RUSAGE_SELF); jobs: the CPU of its children. "
        "Rounds: wake-ups of the scheduling loop (timer: of those, how many a timer of the job rate limiter started). "
        "Startup: CPU before the first round (parsing, DAG). Checkpoint updates: `update_checkpoint_dependencies` "
        "after each finished checkpoint, total and ms each (first 10 / last 10, with the DAG sizes they saw); "
        "selection: `job_selector`, once per round with ready jobs. Load: the machine's 1-minute load average "
        "(highest of start and end): other work stretches the wall time, and with it the number of rounds.",
        "",
        "| samples | jobs | runs | wall s | master CPU s | ms per sample | jobs CPU s | rounds (timer) | startup s "
        "| checkpoint updates s | ms each, first 10 | ms each, last 10 | selection s | master RSS MB | load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for t in rows:
        if t["timeout"]:
            lines.append(f"| {t['samples']} | over {args.timeout:.0f} s | | | | | | | | | | | | | |")
            continue
        first, last = ends(t["per_checkpoint"])
        lines.append(
            f"| {t['samples']} | {t['jobs']} | {t['invocations']} | {t['wall']:.0f} | {t['master']:.1f} | "
            f"{1000 * t['master'] / t['samples']:.0f} | {t['children']:.0f} | {t['rounds']} ({t['timers']}) | "
            f"{t['startup']:.1f} | {t['checkpoint_s']:.1f} | {first} | {last} | {t['select_s']:.1f} | "
            f"{t['maxrss_mb']:.0f} | {t['load']:.1f} |")
    done = [t for t in rows if not t["timeout"]]
    parts = sorted({part for t in done for part in t["parts"]})
    if done:
        lines += ["", "Where the master's CPU goes (s; calls in brackets; nested parts overlap: needrun and DAG "
                  "postprocess run inside checkpoint updates and at startup, input sizes and ILP/greedy inside "
                  "selection):", "",
                  "| samples | " + " | ".join(parts) + " | other |", "|---:|" + "---:|" * (len(parts) + 1)]
        for t in done:
            other = t["master"] - t["startup"] - t["checkpoint_s"] - t["select_s"]
            lines.append(f"| {t['samples']} | " + " | ".join(
                f"{t['parts'][p][1]:.1f} ({t['parts'][p][0]})" if p in t["parts"] else "" for p in parts)
                + f" | {other:.1f} |")
        fits = [(t["samples"], fit(t["per_checkpoint"])) for t in done]
        fits = [(n, f) for n, f in fits if f]
        if fits:
            lines += ["", "Cost of one checkpoint update, least squares over the run's updates: "
                      "a x (jobs in the DAG) + b x (jobs whose input waits on a checkpoint) + c.", "",
                      "| samples | a: us per DAG job | b: us per waiting job | c: ms |", "|---:|---:|---:|---:|"]
            lines += [f"| {n} | {f['us_per_job']:.0f} | {f['us_per_incomplete_job']:.0f} | {f['ms_constant']:.1f} |"
                      for n, f in fits]
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(dict(command=command, setup=setup, rows=rows)) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
