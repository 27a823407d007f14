"""Deployment: the conda env, the container and `make setup-gpu` install the pinned set the tests run
on, and the conda env gets the virnucflow package the way Snakemake really creates envs."""

import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

import virnucflow

from conftest import REPO, copy_workflow

ENV_FILE = REPO / "envs" / "virnucflow.yaml"
POST_DEPLOY = REPO / "envs" / "virnucflow.post-deploy.sh"
IMAGE = "ghcr.io/virnucflow/virnucflow"
RECIPES = [REPO / "Dockerfile", REPO / "apptainer" / "virnucflow.def"]


def read_pins(path):
    """{canonical name: version} of a requirements file, following `-r` includes; only exact pins."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            pins.update(read_pins(Path(path).parent / line[3:].strip()))
            continue
        name, sep, version = line.partition("==")
        assert sep and re.fullmatch(r"[A-Za-z0-9._-]+", name) and re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), (
            f"{path}: {line!r} is not an exact pin name==version")
        pins[canonicalize_name(name)] = version
    return pins


def required_files(path):
    """A requirements file and the files it includes with `-r`."""
    files = [Path(path)]
    for line in Path(path).read_text().splitlines():
        if line.startswith("-r "):
            files += required_files(Path(path).parent / line[3:].strip())
    return files


def makefile_torch():
    """The torch requirement `make setup` installs (TORCH in the Makefile)."""
    match = re.search(r"^TORCH \?= (\S+)$", (REPO / "Makefile").read_text(), re.M)
    return match[1]


def env_spec():
    return yaml.safe_load(ENV_FILE.read_text())


def env_pip_pins():
    """The `pip:` list of envs/virnucflow.yaml."""
    return next(dep["pip"] for dep in env_spec()["dependencies"] if isinstance(dep, dict))


def test_requirements_are_exact_pins():
    """requirements.txt (with the jobs' set it includes) pins every package exactly, as does TORCH."""
    pins = read_pins(REPO / "requirements.txt")
    assert set(read_pins(REPO / "requirements-jobs.txt")) <= set(pins)
    assert re.fullmatch(r"torch==[0-9.]+", makefile_torch())
    assert "torch" not in pins  # installed first, from TORCH (the build decides where it comes from)


def test_the_jobs_set_covers_the_package_dependencies():
    """Every dependency of the package is pinned in the jobs' set (or is torch), at a version it accepts:
    a dependency added to pyproject.toml without a pin would be missing from the conda env and image."""
    pyproject = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.M | re.S)[1]
    jobs = read_pins(REPO / "requirements-jobs.txt")
    jobs["torch"] = makefile_torch().split("==")[1]
    for text in re.findall(r'"([^"]+)"', block):
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in jobs, f"{name} is a dependency of the package but not pinned in requirements-jobs.txt"
        assert requirement.specifier.contains(jobs[name]), f"{name}=={jobs[name]} does not satisfy {requirement}"


def test_the_conda_env_pins_the_jobs_set():
    """envs/virnucflow.yaml installs exactly the jobs' set and the Makefile's torch, with no local path:
    Snakemake hands conda a copy of the file in .snakemake/conda/, where a relative path would break."""
    pins = env_pip_pins()
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][0-9A-Za-z.+!-]*", pin) for pin in pins), pins
    expected = dict(read_pins(REPO / "requirements-jobs.txt"), torch=makefile_torch().split("==")[1])
    assert {canonicalize_name(name): version for name, _, version in (pin.partition("==") for pin in pins)} == expected
    conda = [dep for dep in env_spec()["dependencies"] if isinstance(dep, str)]
    # the post-deploy builds the package with the env's setuptools: 70.1 or later needs no `wheel`
    setuptools = [dep[len("setuptools"):] for dep in conda if dep.startswith("setuptools")]
    assert "pip" in conda and setuptools and not SpecifierSet(setuptools[0]).contains("70.0")
    assert [dep for dep in conda if dep.startswith("python=")] == [f"python={container_python()}"]


def container_python():
    """The Python minor version of the images' base (python:3.11-slim-...)."""
    bases = {recipe_steps(path)["base"] for path in RECIPES}
    assert len(bases) == 1, f"the Dockerfile and the Apptainer definition start from different images: {bases}"
    return re.fullmatch(r"python:(\d+\.\d+)[-.\w]*", bases.pop())[1]


def recipe_steps(path):
    """Base image, copied files (source -> destination) and shell commands of a Dockerfile or an
    Apptainer definition."""
    text = Path(path).read_text()
    if path.name == "Dockerfile":
        args, steps = {}, {"copies": {}, "commands": []}
        for line in re.sub(r"\\\n", " ", text).splitlines():
            instruction, _, rest = line.strip().partition(" ")
            if instruction == "ARG":
                name, _, default = rest.partition("=")
                args[name] = default
            elif instruction == "FROM":
                steps["base"] = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], rest.strip())
            elif instruction == "COPY":
                *sources, dest = rest.split()
                for source in sources:  # into dest/ (several sources, or a trailing /), else as dest
                    into = len(sources) > 1 or dest.endswith("/")
                    steps["copies"][source.rstrip("/")] = dest.rstrip("/") + "/" + Path(source).name if into else dest
            elif instruction == "RUN":
                steps["commands"] += [command.strip() for command in rest.split("&&")]
        return steps
    header = dict(re.findall(r"^(Bootstrap|From):\s*(\S+)", text, re.M))
    sections = dict(re.findall(r"^%(\w+)\n(.*?)(?=^%|\Z)", text, re.M | re.S))
    copies = dict(line.split() for line in sections["files"].strip().splitlines())
    commands = [line.strip() for line in sections["post"].strip().splitlines()]
    return {"base": header["From"], "copies": copies, "commands": commands}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.name)
def test_container_installs_the_pinned_set_and_the_package(recipe):
    """Each recipe installs the Makefile's torch, then requirements.txt (the set the tests use), then the
    package without dependencies, from files it copied in, so nothing else can enter the image."""
    steps = recipe_steps(recipe)
    installs = [shlex.split(c)[2:] for c in steps["commands"] if c.startswith("pip install")]
    assert len(installs) == 3, installs
    assert installs[0] == [makefile_torch()]
    assert installs[1][0] == "-r" and installs[2][0] == "--no-deps"
    requirements, package = installs[1][1], installs[2][1]
    copied = {dest: source for source, dest in steps["copies"].items()}
    assert copied[requirements] == "requirements.txt"
    for file in required_files(REPO / "requirements.txt"):  # -r includes travel with it
        assert copied.get(f"{package}/{file.name}") == file.name
    for name in ["pyproject.toml", "README.md", "LICENSE", "virnucflow"]:  # what building the package reads
        assert copied.get(f"{package}/{name}") == name, f"{recipe.name} does not copy {name}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.name)
def test_container_version_is_the_package_version(recipe):
    """The image's label and the image reference in its build comments carry virnucflow.__version__."""
    text = recipe.read_text()
    assert re.findall(r"org\.opencontainers\.image\.version[ =]\"?([^\s\"]+)", text) == [virnucflow.__version__]
    tags = re.findall(re.escape(IMAGE) + r":([\w.-]+)", text)
    assert tags and set(tags) == {virnucflow.__version__}


def test_container_directive_is_the_published_image():
    """A `container:` directive, once the workflow has one, names this image at the package version."""
    sources = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
    images = [m for path in sources for m in re.findall(r"^\s*container:\s*\n?\s*\"([^\"]+)\"", path.read_text(), re.M)]
    if not images:
        pytest.skip("the workflow has no container: directive yet")
    assert set(images) == {f"docker://{IMAGE}:{virnucflow.__version__}"}


# --- the conda env through Snakemake's own env creation, with conda replaced by a stub ---------------

# Snakemake 9 (snakemake/deployment/conda.py, Env.create) copies the env file to
# .snakemake/conda/<hash>.yaml and runs `conda env create --file <that copy> --prefix <hash>`, then copies
# envs/virnucflow.post-deploy.sh beside it and runs it as `source <conda>/bin/activate <env>; bash <copy>`
# in its own working directory. This stub answers Snakemake's checks, records the calls, and makes the env
# as a venv holding what conda would put there for the post-deploy (pip and setuptools, copied from the
# test's own environment). The pinned PyPI set (torch and the rest, GBs) is not installed.
STUB_CONDA = """\
#!{python}
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["STUB_CONDA_LOG"], "a") as log:
    log.write(json.dumps({{"args": args, "cwd": os.getcwd()}}) + "\\n")
if args == ["--version"]:
    print("conda 25.5.1")
elif args[:2] == ["info", "--json"]:
    print(json.dumps({{"conda_prefix": {root!r}, "platform": "linux-64"}}))
elif args[:2] == ["config", "--get"]:
    print(json.dumps({{"get": {{"channel_priority": "strict"}}}}))
elif args[:2] == ["env", "create"]:
    prefix = args[args.index("--prefix") + 1]
    subprocess.run([{python!r}, "-m", "venv", "--without-pip", prefix], check=True)
    site = subprocess.run([os.path.join(prefix, "bin", "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    for source, relative in {files!r}:
        target = os.path.join(site, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)
elif args[0] == "clean":  # Snakemake's default --conda-cleanup-pkgs tarballs
    pass
else:
    sys.exit("stub conda: unexpected call " + " ".join(args))
"""


def distribution_files(name):
    """(absolute path, path relative to site-packages) of an installed distribution's files."""
    dist = importlib.metadata.distribution(name)
    files = []
    for file in dist.files:
        if not str(file).startswith("..") and dist.locate_file(file).exists():  # not bin/, not stale .pyc
            files.append((str(dist.locate_file(file)), str(file)))
    return files


@pytest.fixture(scope="module")
def stub_conda(tmp_path_factory):
    """A folder to put first on PATH: a stub `conda` and its `bin/activate`."""
    setuptools = importlib.metadata.version("setuptools")
    if tuple(int(part) for part in setuptools.split(".")[:2]) < (70, 1):
        pytest.skip(f"setuptools {setuptools} here; the env's setuptools>=70.1 builds wheels without `wheel`")
    root = tmp_path_factory.mktemp("conda")
    (root / "bin").mkdir()
    files = distribution_files("pip") + distribution_files("setuptools")
    conda = root / "bin" / "conda"
    conda.write_text(STUB_CONDA.format(python=sys.executable, root=str(root), files=files))
    conda.chmod(0o755)
    (root / "bin" / "activate").write_text('. "$1/bin/activate"\n')
    return root


def workflow_copy(dest):
    """The workflow as a user has it, with what building the package needs."""
    return copy_workflow(dest, extra=["pyproject.toml", "README.md", "LICENSE"])


def env_python_imports(env, cwd):
    """Where the env's Python imports virnucflow from (outside any workflow folder)."""
    out = subprocess.run([str(env / "bin" / "python"), "-c", "import virnucflow; print(virnucflow.__file__)"],
                         cwd=cwd, capture_output=True, text=True, check=True)
    return Path(out.stdout.strip()).resolve()


@pytest.fixture(scope="module")
def created_env(stub_conda, tmp_path_factory):
    """`snakemake --sdm conda --conda-create-envs-only` on a copy of the workflow, with the stub conda."""
    workdir = workflow_copy(tmp_path_factory.mktemp("deploy") / "virnucflow")
    log = workdir.parent / "conda-calls.jsonl"
    env = dict(os.environ, PATH=f"{stub_conda / 'bin'}:{os.environ['PATH']}", STUB_CONDA_LOG=str(log))
    env.pop("VIRNUCFLOW_SOURCE", None)
    snakemake = Path(sys.executable).parent / "snakemake"
    result = subprocess.run(
        [str(snakemake), "--sdm", "conda", "--conda-create-envs-only", "--configfile", "config/demo.yaml", "--cores", "1"],
        cwd=workdir, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    creates = [call["args"] for call in calls if call["args"][:2] == ["env", "create"]]
    return workdir, creates, result.stdout + result.stderr


@pytest.mark.workflow  # builds the env through snakemake and pip
def test_snakemake_creates_one_env_from_a_copy_of_the_env_file(created_env):
    """Every rule uses envs/virnucflow.yaml; conda gets a copy of it in .snakemake/conda/ (which is why
    the file can hold no path relative to the workflow)."""
    workdir, creates, _ = created_env
    assert len(creates) == 1
    args = creates[0]
    env_file, prefix = Path(args[args.index("--file") + 1]), Path(args[args.index("--prefix") + 1])
    assert env_file.parent == workdir / ".snakemake" / "conda" and env_file.name == prefix.name + ".yaml"
    assert env_file.read_text() == ENV_FILE.read_text()
    assert (prefix.parent / (prefix.name + ".post-deploy.sh")).read_text() == POST_DEPLOY.read_text()


@pytest.mark.workflow  # builds the env through snakemake and pip
def test_the_created_env_imports_virnucflow_from_the_workflow_folder(created_env, tmp_path):
    """The post-deploy script found the workflow in Snakemake's working directory and installed the
    package editable: the env imports the code beside the Snakefile, and sees later changes to it."""
    workdir, creates, output = created_env
    prefix = Path(creates[0][creates[0].index("--prefix") + 1])
    assert env_python_imports(prefix, tmp_path) == (workdir / "virnucflow" / "__init__.py").resolve()
    (workdir / "virnucflow" / "deploy_probe.py").write_text("VALUE = 7\n")
    out = subprocess.run([str(prefix / "bin" / "python"), "-c", "from virnucflow.deploy_probe import VALUE; print(VALUE)"],
                         cwd=tmp_path, capture_output=True, text=True)
    (workdir / "virnucflow" / "deploy_probe.py").unlink()
    assert out.stdout.strip() == "7", out.stderr


def run_post_deploy(script, env_prefix, stub_conda, cwd, **variables):
    """Run a post-deploy script the way Snakemake does: in the activated env, from `cwd`."""
    env = {k: v for k, v in os.environ.items() if k != "VIRNUCFLOW_SOURCE"}
    env.update(variables)
    command = f"source {shlex.quote(str(stub_conda / 'bin' / 'activate'))} {shlex.quote(str(env_prefix))}; bash {shlex.quote(str(script))}"
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.workflow  # builds the env through snakemake and pip
def test_post_deploy_installs_from_virnucflow_source(created_env, stub_conda, tmp_path):
    """Run from elsewhere (snakemake --directory), the script installs the folder VIRNUCFLOW_SOURCE names."""
    workdir, creates, _ = created_env
    prefix = Path(creates[0][creates[0].index("--prefix") + 1])
    other = workflow_copy(tmp_path / "other_clone")
    elsewhere = tmp_path / "run_dir"
    elsewhere.mkdir()
    result = run_post_deploy(prefix.parent / (prefix.name + ".post-deploy.sh"), prefix, stub_conda, elsewhere,
                             VIRNUCFLOW_SOURCE=str(other))
    assert result.returncode == 0, result.stderr
    assert env_python_imports(prefix, elsewhere) == (other / "virnucflow" / "__init__.py").resolve()


def test_post_deploy_outside_the_workflow_says_what_to_do(tmp_path):
    """Without the workflow in the working directory or VIRNUCFLOW_SOURCE, the env creation fails with
    the fix, before pip runs."""
    env = {k: v for k, v in os.environ.items() if k != "VIRNUCFLOW_SOURCE"}
    result = subprocess.run(["bash", str(POST_DEPLOY)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert f"'{tmp_path}' is not the virnucflow workflow folder" in result.stderr
    assert "VIRNUCFLOW_SOURCE=" in result.stderr


# --- make setup-gpu ----------------------------------------------------------------------------------


def setup_gpu_commands(*make_args):
    """The commands `make setup-gpu` would run, without `make setup`'s (the venv is already set up)."""
    out = subprocess.run(["make", "-n", "setup-gpu", *make_args], cwd=REPO, capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "uninstall" in line)
    return lines[start:]


def test_setup_gpu_replaces_torch_with_the_pinned_release_from_the_index():
    """torch is uninstalled first (an installed 2.13.0+cpu satisfies torch==2.13.0, so pip would keep it),
    the same release comes from TORCH_INDEX, and the check prints what torch sees."""
    commands = setup_gpu_commands()
    assert shlex.split(commands[0])[1:] == ["uninstall", "--quiet", "--yes", "torch"]
    install = shlex.split(commands[1])
    assert install[1] == "install" and install[-1] == makefile_torch()
    assert install[install.index("--index-url") + 1] == "https://pypi.org/simple"
    check = "\n".join(commands[2:])  # check-gpu's python -c, over several lines
    assert "torch.version.cuda" in check and "device_count" in check
    mirror = shlex.split(setup_gpu_commands("TORCH_INDEX=https://example.org/whl/cu126")[1])
    assert mirror[mirror.index("--index-url") + 1] == "https://example.org/whl/cu126"


def dry_run(pip_command, report):
    """Run a `pip install` command as a dry run that writes what it would install to `report`.

    This machine's pip configuration (PIP_FIND_LINKS=/opt/wheels with a local torch 2.13.0+cpu wheel, and
    a constraints file in /etc/xdg/pip) is cleared so that pip resolves from the index alone, as on a
    user's machine: the +cpu wheel would otherwise win (a local version sorts above 2.13.0). Only metadata
    is downloaded (about 20 s), not the GBs of CUDA wheels.
    """
    args = shlex.split(pip_command) if isinstance(pip_command, str) else list(pip_command)
    at = args.index("install") + 1
    args[at:at] = ["--dry-run", "--ignore-installed", "--no-cache-dir", "--quiet", "--report", str(report)]
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT")}
    env["PIP_CONFIG_FILE"] = os.devnull
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
            for item in json.loads(Path(report).read_text())["install"]}


@pytest.mark.slow
def test_setup_gpu_resolves_the_cuda_13_build_of_the_pinned_torch(tmp_path):
    """What `make setup-gpu` installs from PyPI: torch 2.13.0 itself (no +cpu) with the CUDA 13 libraries."""
    resolved = dry_run(setup_gpu_commands()[1], tmp_path / "report.json")
    assert resolved["torch"] == makefile_torch().split("==")[1]
    assert resolved["nvidia-cuda-runtime"].split(".")[0] == "13"
    assert "nvidia-cudnn-cu13" in resolved


@pytest.mark.slow
def test_the_container_pip_steps_resolve_to_the_pins(tmp_path):
    """The Dockerfile's torch and requirements steps resolve together on PyPI (Python of this test run)
    to exactly the tested pins, with CUDA 13 torch: the image build would not stop at a conflict."""
    steps = recipe_steps(REPO / "Dockerfile")
    installs = [shlex.split(c)[2:] for c in steps["commands"] if c.startswith("pip install")]
    requirements = REPO / "requirements.txt"  # the file the Dockerfile copies to installs[1][1]
    command = [str(Path(sys.executable).parent / "pip"), "install", "--index-url", "https://pypi.org/simple",
               *installs[0], "-r", str(requirements)]
    resolved = dry_run(command, tmp_path / "report.json")
    expected = dict(read_pins(requirements), torch=makefile_torch().split("==")[1])
    assert {name: resolved.get(name) for name in expected} == expected
    assert resolved["nvidia-cuda-runtime"].split(".")[0] == "13"


def test_license_is_mit():
    assert (REPO / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2026 virnucflow contributors\n")
    assert 'license = { text = "MIT" }' in (REPO / "pyproject.toml").read_text()
