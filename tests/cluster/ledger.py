"""Reading the job ledger of tests/cluster/submit.sh: how many jobs of a rule ran at the same time."""

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
