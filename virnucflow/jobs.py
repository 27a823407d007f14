"""What every workflow job shares: a logger that writes to the job's log, and one-line errors."""

import contextlib
import logging
import os
import socket
import sys
import time

from .errors import VirnucflowError


class _ForTheTerminal(logging.Filter):
    """The terminal gets progress and warnings; an error is printed there once, by `job`, and the
    host line is for the log file (auditing a cluster run)."""

    def filter(self, record):
        return record.levelno < logging.ERROR and not getattr(record, "file_only", False)


@contextlib.contextmanager
def job(name, log_path=None):
    """Log to `log_path` and stderr; turn a VirnucflowError into one line on stderr and exit 1.

    The error goes to the log file (with its time) and once to stderr as `virnucflow NAME: error: ...`;
    the workflow profile does not echo failed logs, so a local run shows each error once."""
    logger = logging.getLogger(f"virnucflow.{name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    terminal = logging.StreamHandler(sys.stderr)
    terminal.addFilter(_ForTheTerminal())
    handlers = [terminal]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="w"))
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    started = time.monotonic()
    # Where the job ran, so cluster runs can be audited from the logs alone.
    env = " ".join(
        f"{key}={os.environ[key]}"
        for key in ("SLURM_JOB_ID", "LSB_JOBID", "CUDA_VISIBLE_DEVICES")
        if key in os.environ
    )
    logger.info("host=%s pid=%d %s", socket.gethostname(), os.getpid(), env, extra={"file_only": True})
    try:
        yield logger
        logger.info("done in %.1f s", time.monotonic() - started)
    except VirnucflowError as error:
        logger.error("%s", error)
        for handler in handlers:
            handler.flush()
        print(f"virnucflow {name}: error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
