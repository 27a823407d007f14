"""What every workflow job shares: where its log goes, one-line errors, and no leftovers of killed
jobs before it writes.

The package's modules log to their own loggers (`logging.getLogger(__name__)`, all under
"virnucflow"); `job()` gives that tree its handlers for the job's duration: the job's log file,
and the terminal for progress and warnings.
"""

import contextlib
import logging
import os
import socket
import sys
import time

from .atomic import remove_stale_temporaries
from .errors import VirnucflowError
from .scheduler import scheduler_environment

PACKAGE = "virnucflow"
FORMAT = logging.Formatter("%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")


class _LogFile(logging.FileHandler):
    """The job's log file; when it cannot be written (a full disk), a line on stderr once instead of a
    traceback per record: the job's own error, if any, still reaches the terminal."""

    failed = False

    def handleError(self, record):
        if not self.failed:
            self.failed = True
            error = sys.exc_info()[1]
            print(f"virnucflow: cannot write the log file {self.baseFilename} ({error}); logging to the terminal "
                  "only", file=sys.stderr, flush=True)

    def emit(self, record):
        if not self.failed:
            super().emit(record)

    def flush(self):
        try:
            super().flush()
        except OSError:
            self.handleError(None)


class _ForTheTerminal(logging.Filter):
    """The terminal gets progress and warnings; an error is printed there once, by `job`, and the
    host line is for the log file (auditing a cluster run)."""

    def filter(self, record):
        return record.levelno < logging.ERROR and not getattr(record, "file_only", False)


def rule_job(smk):
    """`job` for the Snakemake `script:` of a rule, given its `snakemake` object: named after the rule,
    logging to its log, first removing what killed jobs left of its outputs (within the rule's runtime)."""
    runtime = smk.resources.get("runtime")
    return job(smk.rule, smk.log[0], outputs=list(smk.output),
               max_age_seconds=60 * runtime if isinstance(runtime, (int, float)) else None)


@contextlib.contextmanager
def job(name, log_path=None, outputs=(), max_age_seconds=None):
    """Log the package to `log_path` and stderr; turn a VirnucflowError into one line on stderr and exit 1.

    The error goes to the log file (with its time) and once to stderr as `virnucflow NAME: error: ...`;
    the workflow profile does not echo failed logs, so a local run shows each error once. Before the
    job's work, the temporaries of `outputs` whose writers are gone are removed (`atomic.writer_gone`:
    a dead process of this host, or untouched for `max_age_seconds` elsewhere). Yields the package's
    logger."""
    logger = logging.getLogger(PACKAGE)
    saved = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    terminal = logging.StreamHandler(sys.stderr)
    terminal.addFilter(_ForTheTerminal())
    handlers = [terminal]
    if log_path:
        handlers.append(_LogFile(log_path, mode="w"))
    for handler in handlers:
        handler.setFormatter(FORMAT)
        logger.addHandler(handler)
    started = time.monotonic()
    # Where the job ran, so cluster runs can be audited from the logs alone.
    env = " ".join(f"{key}={value}" for key, value in scheduler_environment().items()
                   if key in ("SLURM_JOB_ID", "LSB_JOBID", "CUDA_VISIBLE_DEVICES"))
    logger.info("%s: host=%s pid=%d %s", name, socket.gethostname(), os.getpid(), env, extra={"file_only": True})
    for output in outputs:
        for stale in remove_stale_temporaries(output, max_age_seconds):
            logger.info("removed %s, left by a killed job", stale)
    try:
        yield logger
        logger.info("%s done in %.1f s", name, time.monotonic() - started)
    except VirnucflowError as error:
        logger.error("%s", error)
        for handler in handlers:
            handler.flush()
        print(f"virnucflow {name}: error: {error}", file=sys.stderr, flush=True)
        embeddings = sys.modules.get(f"{PACKAGE}.embeddings")
        if embeddings is not None and embeddings.UNCLOSED:
            # HDF5 could not close a file on the full disk; finalising it at exit would crash the process.
            for handler in handlers:
                handler.close()
            os._exit(1)
        sys.exit(1)
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
