"""Reading the job ledger of tests/cluster/submit.sh (or of the stand-in Slurm and LSF,
tests/cluster/fake_scheduler.py, which writes the same lines), or Snakemake's own log of a local run:
how many jobs of a rule ran at the same time."""

import re
from datetime import datetime
from pathlib import Path


def read_ledger(path):
    """{job id: (rule, start, end, exit status)} of every job that ended."""
    started, jobs = {}, {}
    for line in Path(path).read_text().splitlines():
        event, when, rule, job, *status = line.split()
        if event == "start":
            started[job] = float(when)
        else:
            jobs[job] = (rule, started[job], float(when), int(status[0]))
    return jobs


def most_at_once(jobs, rule_prefix):
    """The largest number of jobs whose rule starts with `rule_prefix` that were running at one instant."""
    events = sorted(
        (when, step)
        for rule, start, end, _ in jobs.values()
        if rule.startswith(rule_prefix)
        for when, step in ((start, 1), (end, -1))
    )
    running = most = 0
    for _, step in events:  # at equal times an end (-1) sorts before a start: touching is not overlapping
        running += step
        most = max(most, running)
    return most


def master_log_jobs(workdir):
    """{jobid: (rule, start, end, 0)} from the newest Snakemake log in `workdir`: each job's start is the
    stamp above its `rule X:` block, its end the stamp above `Finished jobid: N`. The stamps have whole
    seconds, so jobs that overlapped by under a second can look apart; never the other way round."""
    log = max(Path(workdir, ".snakemake/log").glob("*.snakemake.log"), key=lambda path: path.stat().st_mtime)
    jobs, stamp, rule = {}, None, None
    for line in log.read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            stamp = datetime.strptime(line[1:-1], "%a %b %d %H:%M:%S %Y").timestamp()
        elif match := re.match(r"(?:local)?(?:rule|checkpoint) (\S+):$", line):
            rule = match.group(1)
        elif (match := re.match(r"\s+jobid: (\d+)$", line)) and rule:
            jobs[match.group(1)] = [rule, stamp, None, 0]
            rule = None
        elif (match := re.match(r"Finished jobid: (\d+) ", line)) and match.group(1) in jobs:
            jobs[match.group(1)][2] = stamp
    return {jobid: tuple(job) for jobid, job in jobs.items() if job[2] is not None}
