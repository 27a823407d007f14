"""Test-only: kill the whole run when a named rule's job is about to rename a temporary into place.

With this folder on PYTHONPATH and VIRNUCFLOW_KILL_AT=RULE, every Python process of a run (Snakemake and
its jobs) runs this at start-up: a `script:` job of rule RULE then SIGKILLs its process group (the run,
started in a session of its own) from `virnucflow.atomic.before_rename`, when its first temporary is
written and not yet renamed: the moment a kill leaves the most behind.
"""

import importlib.abc
import importlib.machinery
import os
import signal
import sys

FOLDER = os.path.dirname(os.path.abspath(__file__))


def environment(rule, env=None):
    """`env` (default: this process's) for a run whose job of `rule` kills the run."""
    env = dict(os.environ if env is None else env, VIRNUCFLOW_KILL_AT=rule)
    env["PYTHONPATH"] = os.pathsep.join([FOLDER, *filter(None, [env.get("PYTHONPATH")])])
    return env


def _running_rule():
    """The rule of this process when it is a Snakemake `script:` job (its `snakemake` object), else None."""
    return getattr(getattr(sys.modules.get("__main__"), "snakemake", None), "rule", None)


def kill_the_run(rule):
    def before_rename(tmp, path):
        if _running_rule() == rule:
            os.killpg(os.getpgid(0), signal.SIGKILL)

    return before_rename


class _PlantOnImport(importlib.abc.MetaPathFinder):
    """Sets `before_rename` when virnucflow.atomic is first imported, from wherever the process imports it."""

    def __init__(self, rule):
        self.rule = rule

    def find_spec(self, name, path, target=None):
        if name != "virnucflow.atomic":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None:
            run = spec.loader.exec_module

            def run_and_plant(module):
                run(module)
                module.before_rename = kill_the_run(self.rule)

            spec.loader.exec_module = run_and_plant
        return spec


if os.environ.get("VIRNUCFLOW_KILL_AT", "").strip():
    sys.meta_path.insert(0, _PlantOnImport(os.environ["VIRNUCFLOW_KILL_AT"].strip()))
