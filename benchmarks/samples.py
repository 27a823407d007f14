"""Scheduler cost with many samples: CPU time of the Snakemake master process against the number of samples.

Builds S samples (3 coding reads of 600 bp each by default: one shard, so per sample one `prepare`
checkpoint, 2 embed jobs, merge, predict and whatever else the workflow runs per sample), a sample sheet,
and runs the workflow in a temporary copy of the repository (the working tree, or a commit with --ref; a
candidate fix applied with --patch) with the demo config (tiny models, device cpu).

The master is measured from outside, as any process: `python -m snakemake` runs unchanged in a child of
this one. Its CPU is its own utime + stime (all its threads: scheduling loop, DAG updates, the threads
that start `script:` jobs) read from /proc/<pid>/stat once it has exited and before it is reaped
(waitid WNOWAIT); its peak RSS is VmHWM from /proc/<pid>/status, read while it runs. Its jobs are its
children: their CPU is this process's RUSAGE_CHILDREN over the run less the master's own ("jobs CPU").
The number of jobs is read from Snakemake's progress lines ("N of M steps", the only output
it prints: `--quiet host reason rules`). --profile runs the master under
`python -m cProfile` (its main thread) and adds where its time went, from the profile's cumulative times
of named Snakemake functions (cProfile's clock is wall time; its overhead inflates the master CPU of those runs).

--jobs cheap (the default) keeps the workflow's rules, DAG, files, checkpoint and `script:` jobs, but
replaces every job script except prepare's and demo_models' by a stub that writes empty outputs (prepare,
the checkpoint, runs for real: its shard folder decides the embed jobs). The master does the same work per
job and per checkpoint as with --jobs real; what differs is the wall time of a job: --job-seconds makes
every stubbed job last longer (a sleep, no CPU). --batch-size runs the samples in several invocations (a
sample sheet per part, `--config samples=...`) and a last one with the whole sheet; --done puts finished
samples in the sheet (a bigger DAG around the same checkpoints).

    .venv/bin/python -m benchmarks.samples --samples 4 8                      # smoke test, < 2 min
    .venv/bin/python -m benchmarks.samples --samples 10 40 160                # growth, cheap jobs
    .venv/bin/python -m benchmarks.samples --samples 10 40 --jobs real        # the real tiny pipeline
    .venv/bin/python -m benchmarks.samples --samples 40 --profile /tmp/prof   # + where the master's CPU goes
    .venv/bin/python -m benchmarks.samples --samples 10 100 1000 --batch-size 50 --scheduler greedy \
        --extra --max-jobs-per-timespan 1000/10s
"""

import argparse
import json
import os
import platform
import pstats
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import REPO
from benchmarks.command import command_line, python_env
from benchmarks.synthetic import synthetic_reads, write_fasta
from benchmarks.workflow import WORKFLOW_FILES, copy_workflow, write_config

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


# With --profile: Snakemake functions whose cumulative time in the master's main thread is reported
# ((file, function) as pstats names them; nested parts overlap).
PARTS = {
    "checkpoint updates": ("snakemake/dag.py", "update_checkpoint_dependencies"),
    "incomplete jobs re-evaluated": ("snakemake/dag.py", "update_incomplete_input_expand_jobs"),
    "needrun": ("snakemake/dag.py", "update_needrun"),
    "DAG postprocess": ("snakemake/dag.py", "postprocess"),
    "selection": ("snakemake/scheduling/job_scheduler.py", "job_selector"),
    "selection: input sizes": ("snakemake/scheduling/job_scheduler.py", "update_input_sizes"),
    "selection: ILP": ("snakemake/scheduling/milp.py", "select_jobs"),
    "selection: greedy": ("snakemake/scheduling/greedy.py", "select_jobs"),
    "rounds (_finish_jobs)": ("snakemake/scheduling/job_scheduler.py", "_finish_jobs"),
}
# Snakemake's output but its progress lines ("N of M steps (P%) done", a line per finished job): the jobs counted.
QUIET = ["host", "reason", "rules"]
STEPS = re.compile(r"^(\d+) of (\d+) steps", re.M)


def copy_ref(root, ref):
    """The workflow's files as committed in `ref` (a commit, branch or tag), or the working tree if None."""
    if ref is None:
        copy_workflow(root)
        return
    names = [name for name in WORKFLOW_FILES if subprocess.run(["git", "cat-file", "-e", f"{ref}:{name}"], cwd=REPO,
                                                                 capture_output=True).returncode == 0]
    archive = subprocess.run(["git", "archive", "--format=tar", ref, "--", *names], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)


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
                    "--workflow-profile", "none", "--quiet"], cwd=root, env=python_env(root), check=True,
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
    overlay = {"samples": "samples.tsv", "shard_residues": shard_residues}
    if not classifier:
        overlay["classifier"] = None
    write_config(root, overlay, "bench.yaml")
    return names


def process_cpu(pid):
    """utime + stime of process `pid` (all its threads, not its children), in seconds, from /proc."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid, last):
    """VmHWM of a running process in MB; `last` once it has exited (a zombie has no memory to report)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            line = next((line for line in handle if line.startswith("VmHWM:")), None)
    except OSError:
        return last
    return int(line.split()[1]) / 1024 if line else last


def wait_measured(proc, deadline):
    """Wait for `proc` to exit, then read its own CPU before reaping it: (master CPU s, peak RSS MB), or None
    past `deadline` (the process group is then stopped)."""
    rss = 0.0
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            return None
        rss = peak_rss_mb(proc.pid, rss)
        time.sleep(0.2)
    master = process_cpu(proc.pid)  # exited, not yet reaped: /proc still holds its times
    proc.wait()
    return master, rss


def snakemake(root, args, options, log, profile_path=None, deadline=None):
    """One master run: a dict of wall s, master CPU s, jobs CPU s, peak RSS MB, jobs; None on timeout."""
    runner = ["-m", "cProfile", "-o", str(profile_path)] if profile_path else []
    cmd = [sys.executable, *runner, "-m", "snakemake", "--configfile", "bench.yaml", "--cores", str(args.cores),
           "--workflow-profile", "none", "--scheduler", args.scheduler, *args.extra, "--quiet", *QUIET, *options]
    env = python_env(root, SAMPLES_BENCH_JOB_SECONDS=str(args.job_seconds))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "w") as output:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            measured = wait_measured(proc, deadline or float("inf"))
        except BaseException:  # interrupted: the master and its jobs are in their own session
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    if measured is None:
        return None
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"snakemake failed in {root}:\n{Path(log).read_text()[-5000:]}")
    children = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    master, rss = measured
    steps = STEPS.findall(Path(log).read_text())
    jobs = int(steps[-1][0]) if steps else 0
    return dict(wall=wall, master=master, children=children - master, maxrss_mb=rss, jobs=jobs)


def profile_parts(path):
    """{part: [calls, cumulative s]} of PARTS in a cProfile file (a coroutine counts a call per resume)."""
    stats = pstats.Stats(str(path)).stats
    parts = {}
    for (filename, _, function), (_, calls, _, cumulative, _) in stats.items():
        for part, (suffix, name) in PARTS.items():
            if function == name and filename.endswith(suffix):
                record = parts.setdefault(part, [0, 0.0])
                record[0] += calls
                record[1] += cumulative
    return parts


def batches_of(root, names, batch_size):
    """Each invocation's extra options: a sample sheet per part (README "Many samples"), then the whole sheet."""
    batches = []
    if batch_size:
        for k, lo in enumerate(range(0, len(names), batch_size)):
            write_sheet(root, names[lo:lo + batch_size], f"samples_part{k}.tsv")
            batches.append(["--config", f"samples=samples_part{k}.tsv"])
    return batches + [[]]  # the whole sheet (after the parts: only report_plots is left)


def check_finished(root, names, real):
    """Exit unless every sample has its embeddings and the report lists them (with real jobs)."""
    missing = [name for name in names if not (root / "results" / name / "embeddings.h5").exists()]
    if missing or not (root / "results/report/summary.tsv").exists():
        sys.exit(f"incomplete run: {len(missing)} samples without embeddings.h5, or no report")
    if real:  # the last run's report covers every sample, whatever the parts
        listed = [line.split("\t")[0] for line in (root / "results/report/summary.tsv").read_text().splitlines()[1:]]
        if listed != names:
            sys.exit(f"the report lists {len(listed)} samples, not the {len(names)} of the sheet")


def run_size(args, samples):
    """All runs (one, or one per batch and a final one) for `samples` samples; a dict of totals."""
    with tempfile.TemporaryDirectory(prefix="samples_bench.", dir=args.tmp) as tmp:
        root = Path(tmp)
        names = make_run(root, samples, args.reads, args.read_length, args.shard_residues, not args.no_classifier,
                         args.jobs == "cheap", args.patch, args.ref)
        if args.done:
            write_sheet(root, make_done(root, args, args.done) + names)
        batches = batches_of(root, names, args.batch_size)
        total = dict(samples=samples, wall=0.0, master=0.0, children=0.0, jobs=0, invocations=len(batches),
                     parts={}, maxrss_mb=0.0, timeout=False)
        deadline = time.monotonic() + args.timeout
        loads = [os.getloadavg()[0]]
        for i, options in enumerate(batches):
            profile = Path(args.profile) / f"samples{samples}_{args.scheduler}_{i}.prof" if args.profile else None
            result = snakemake(root, args, options, root / f"snakemake{i}.log", profile, deadline)
            if result is None:
                total["timeout"] = True
                break
            for key in ["wall", "master", "children", "jobs"]:
                total[key] += result[key]
            total["maxrss_mb"] = max(total["maxrss_mb"], result["maxrss_mb"])
            for part, (calls, seconds) in (profile_parts(profile) if profile else {}).items():
                record = total["parts"].setdefault(part, [0, 0.0])
                record[0] += calls
                record[1] += seconds
        loads.append(os.getloadavg()[0])
        total["load"] = max(loads)  # other work on the machine stretches the wall time
        if not total["timeout"]:
            check_finished(root, names, args.jobs == "real")
    return total


def parse_args():
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
    parser.add_argument("--profile", help="run each master under cProfile, its profile written into this folder, "
                                          "and report where its time went")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per sample count (all its invocations)")
    parser.add_argument("--tmp", help="folder for the workflow copies (default: the system's)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/samples.md"))
    return parser.parse_args()


def setup_text(args):
    """The run's settings in a sentence."""
    return (f"{args.reads} coding reads of {args.read_length} bp per sample, shard_residues {args.shard_residues}, "
            f"classifier {'none' if args.no_classifier else 'tiny'}; `--cores {args.cores} --scheduler "
            f"{args.scheduler}`, {args.jobs} jobs"
            + (f", batches of {args.batch_size} samples" if args.batch_size else "")
            + (f", patch {Path(args.patch).name}" if args.patch else "")
            + (f", workflow of {args.ref}" if args.ref else "")
            + (f", snakemake options `{' '.join(args.extra)}`" if args.extra else "")
            + (f", plus {args.done} finished samples in the sheet" if args.done else "")
            + (f", each job {args.job_seconds:g} s longer (a sleep)" if args.job_seconds else "")
            + (", master under cProfile (its CPU inflated by the profiler)" if args.profile else ""))


def table_lines(args, rows, command, setup):
    """The results: a row per sample count, and with --profile where the master's time went."""
    lines = [
        f"# master CPU against samples ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores)",
        "", f"Command: `{command}`", "",
        setup + ". Master: the snakemake process's own CPU (utime + stime from /proc, read at its exit); jobs: the "
        "CPU of its children; RSS: the master's VmHWM. Load: the machine's 1-minute load average (highest of start "
        "and end): other work stretches the wall time.", "",
        "| samples | jobs | runs | wall s | master CPU s | ms per sample | jobs CPU s | master RSS MB | load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in rows:
        if t["timeout"]:
            lines.append(f"| {t['samples']} | over {args.timeout:.0f} s | | | | | | | |")
            continue
        lines.append(f"| {t['samples']} | {t['jobs']} | {t['invocations']} | {t['wall']:.0f} | {t['master']:.1f} | "
                     f"{1000 * t['master'] / t['samples']:.0f} | {t['children']:.0f} | {t['maxrss_mb']:.0f} | "
                     f"{t['load']:.1f} |")
    done = [t for t in rows if not t["timeout"] and t["parts"]]
    if done:
        lines += ["", "Where the master's time goes, from its cProfile (main thread; cumulative s of cProfile's clock, wall "
                  "time, waits such as the ILP solver's included; calls in brackets, a coroutine counting each resume; "
                  "nested parts overlap: needrun and DAG postprocess run inside checkpoint updates and at startup, "
                  "input sizes and ILP/greedy inside selection):", "",
                  "| samples | " + " | ".join(PARTS) + " |", "|---:|" + "---:|" * len(PARTS)]
        for t in done:
            lines.append(f"| {t['samples']} | " + " | ".join(
                f"{t['parts'][p][1]:.1f} ({t['parts'][p][0]})" if p in t["parts"] else "" for p in PARTS) + " |")
    return lines


def main():
    args = parse_args()
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
              f"sample), wall {total['wall']:.0f} s, {total['jobs']} jobs", flush=True)
    command, setup = command_line(), setup_text(args)
    lines = table_lines(args, rows, command, setup)
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(dict(command=command, setup=setup, rows=rows)) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
