"""How a benchmark was run (the command line its results file quotes) and how it starts a child Python
that imports a given checkout of virnucflow."""

import os
import sys
from pathlib import Path

from benchmarks import REPO


def command_line(python=".venv/bin/python"):
    """`python -m benchmarks.NAME ARGS...` of this run (NAME from the running script's file name)."""
    return " ".join([python, "-m", f"benchmarks.{Path(sys.argv[0]).stem}", *sys.argv[1:]])


def python_env(checkout=REPO, **extra):
    """This process's environment with `checkout` first on PYTHONPATH: a child Python imports its virnucflow."""
    path = os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, **extra)


def write_results(out, lines):
    """A benchmark's results: its lines into the file `out` (folders made) and on the terminal."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
