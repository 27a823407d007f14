"""Wheels of Snakemake and what it needs, for the GPU machine (Python 3.12, no package index there):
the dependency closure of the snakemake installed in .venv, at the same versions, less what that
machine's image already holds. Binary wheels are downloaded for CPython 3.12 manylinux; a package
published only as an sdist (connection_pool) is built into a wheel here (pure Python). Into .whl/,
which .git/info/exclude keeps out of git and `run(carry=[".whl"])` takes along (64 MiB at most).

    make gpu-wheels            # = .venv/bin/python tools/gpu_wheels.py
"""

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / ".whl"
# In the GPU image already (/work/.library/device/KINDS.md): not carried, so that one version stays.
ON_DEVICE = {
    "attrs", "certifi", "charset-normalizer", "click", "filelock", "fsspec", "huggingface-hub", "idna", "jinja2",
    "markupsafe", "numpy", "packaging", "platformdirs", "psutil", "pyyaml", "requests", "tabulate",
    "typing-extensions", "urllib3", "wrapt", "h5py", "matplotlib", "pillow", "safetensors", "tokenizers", "torch",
    "pygments", "rich", "markdown-it-py", "mdurl", "six", "python-dateutil", "pyparsing", "cycler", "kiwisolver",
    "fonttools", "contourpy", "pytest", "pluggy", "iniconfig", "setuptools", "pip", "wheel",
}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]
LIMIT_MB = 60
DEVICE_PYTHON = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
                 "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
                 "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root="snakemake"):
    """{canonical name: installed version} of `root` and everything it requires (no extras)."""
    seen, todo = {}, [root]
    while todo:
        name = canonical(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a marker-excluded requirement (other Python or platform)
        seen[name] = dist.version
        for requirement in map(Requirement, dist.requires or []):
            # what the GPU machine's Python needs (no extras, no backports for older Pythons)
            if requirement.marker is None or requirement.marker.evaluate(DEVICE_PYTHON):
                todo.append(requirement.name)
    return seen


def main():
    OUT.mkdir(exist_ok=True)
    exclude = REPO / ".git/info/exclude"  # keeps .whl/ out of git (and lets `run` carry it)
    if "/.whl/" not in (exclude.read_text() if exclude.exists() else ""):
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with open(exclude, "a") as handle:
            handle.write("/.whl/\n")
    wanted = {name: version for name, version in closure().items() if name not in ON_DEVICE}
    platform_args = [arg for p in PLATFORMS for arg in ("--platform", p)]
    for name, version in sorted(wanted.items()):
        download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platform_args, "-d", str(OUT),
                    f"{name}=={version}"]
        if subprocess.run(download, capture_output=True, text=True).returncode != 0:
            # only an sdist: build it here (pure Python, so the wheel fits any Python 3)
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(OUT),
                            f"{name}=={version}"], check=True)
            print(f"{name} {version}: built from its sdist")
    size = sum(p.stat().st_size for p in OUT.glob("*.whl")) / 2**20
    print(f"{len(list(OUT.glob('*.whl')))} wheels, {size:.1f} MiB in {OUT}")
    if size > LIMIT_MB:
        sys.exit(f"{size:.0f} MiB of wheels: more than a device call carries ({LIMIT_MB} MiB with the tree)")


if __name__ == "__main__":
    main()
