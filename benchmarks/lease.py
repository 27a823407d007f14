"""What the lease on an embed job's sidecar costs (virnucflow.lease): one job holds a lease for --seconds
at the default period (embed.lock_lease_seconds), as every embed job does for its whole run. Reported:
renewals per minute (each is one read of the lease and one in-place write + fsync: the file system
operations a job adds), the renewal thread's CPU time, the wall time of one renewal, and the cost of
the check a job makes before each batch it appends (one read of the lease).

The folder is a temporary one on --dir (default: the system's temporary folder); point it at the
cluster file system to measure there.

    .venv/bin/python -m benchmarks.lease                          # 60 s at the default period (10 s)
    .venv/bin/python -m benchmarks.lease --seconds 10 --period 0.1
"""

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from benchmarks import REPO
from virnucflow.lease import DEFAULT_PERIOD, Lease
from benchmarks.command import write_results


def hold(folder, seconds, period):
    """Hold a lease for `seconds`: (renewals, thread CPU seconds, process CPU seconds, wall seconds)."""
    lease = Lease(folder, period)
    cpu, started = time.process_time(), time.monotonic()
    assert lease.try_take()
    time.sleep(seconds)
    wall = time.monotonic() - started
    renewals, thread_cpu = lease.renewals, lease.cpu_seconds
    lease.release()
    return renewals, thread_cpu, time.process_time() - cpu, wall


def renewal_seconds(folder, repeat):
    """Median wall time of one renewal (read, then write in place and fsync), run in this thread (the lease's
    own thread waits an hour between renewals here)."""
    lease = Lease(folder, 3600)
    assert lease.try_take()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        assert lease.renew()
        times.append(time.perf_counter() - started)
    lease.release()
    return sorted(times)[len(times) // 2]


def check_seconds(folder, repeat):
    """Median wall time of `check()`, which a job calls before each batch it appends."""
    lease = Lease(folder, 3600)
    assert lease.try_take()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        lease.check()
        times.append(time.perf_counter() - started)
    lease.release()
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="how long the lease is held")
    parser.add_argument("--period", type=float, default=DEFAULT_PERIOD, help="seconds between renewals")
    parser.add_argument("--repeat", type=int, default=200, help="timed renewals and checks")
    parser.add_argument("--dir", default=None, help="where the lease folder is made (default: the temporary folder)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/lease.md"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        renewals, thread_cpu, process_cpu, wall = hold(Path(folder) / "held.partial", args.seconds, args.period)
        renewal = renewal_seconds(Path(folder) / "renewal.partial", args.repeat)
        check = check_seconds(Path(folder) / "check.partial", args.repeat)
        mount = os.path.realpath(folder)
    lines = [
        f"Lease held {wall:.1f} s at a period of {args.period:g} s in {mount} ({platform.node()}, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()})",
        "",
        "| renewals | per minute | renewal thread CPU | per renewal | process CPU while held | one renewal (wall) "
        "| check() before a batch |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {renewals} | {60 * renewals / wall:.1f} | {1e3 * thread_cpu:.2f} ms | "
        f"{1e6 * thread_cpu / max(renewals, 1):.0f} us | {1e3 * process_cpu:.1f} ms | {1e6 * renewal:.0f} us "
        f"| {1e6 * check:.0f} us |",
    ]
    write_results(args.out, lines)


if __name__ == "__main__":
    main()
