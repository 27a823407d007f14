"""What every workflow job shares: a logger that writes to the job's log, and one-line errors."""

import contextlib
import logging
import os
import socket
import sys
import time

from .errors import VirnucflowError


@contextlib.contextmanager
def job(name, log_path=None):
    """Log to `log_path` and stderr; turn a VirnucflowError into one line on stderr and exit 1."""
    logger = logging.getLogger(f"virnucflow.{name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
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
    logger.info("host=%s pid=%d %s", socket.gethostname(), os.getpid(), env)
    try:
        yield logger
        logger.info("done in %.1f s", time.monotonic() - started)
    except VirnucflowError as error:
        logger.error("%s", error)
        for handler in handlers:
            handler.flush()
        print(f"virnucflow {name}: error: {error}", file=sys.stderr)
        sys.exit(1)
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
