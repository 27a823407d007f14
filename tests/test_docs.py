"""README.md and docs/ say only what exists: every schema key in docs/configuration.md's one table, links
that resolve, and quick-path commands (make targets, virnucflow subcommands, profiles) that exist; the
report's landing page opens on the random-weight warning."""

import argparse
import html
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from virnucflow.schema import load_schema

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [REPO / "README.md", *DOCS]


def schema_keys(node=None, prefix=""):
    """Every leaf key of the schema, dotted (`embed.lock_lease_seconds`)."""
    node = load_schema() if node is None else node
    keys = []
    for name, child in node.get("properties", {}).items():
        dotted = f"{prefix}{name}"
        keys += schema_keys(child, dotted + ".") if "properties" in child else [dotted]
    return keys


def key_table(text):
    """The first cells of the table under '## Every key'."""
    section = text.split("\n## Every key\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [re.match(r"\| `([^`]+)` \|", row).group(1) for row in rows]


def test_the_schema_has_the_keys_the_docs_were_written_for():
    keys = schema_keys()
    assert len(keys) >= 22 and "embed.lock_lease_seconds" in keys and "merge.dtype" in keys


def test_every_schema_key_is_in_the_configuration_table_once_and_nothing_else():
    table = key_table((REPO / "docs/configuration.md").read_text())
    keys = schema_keys()
    twice = sorted({key for key in table if table.count(key) > 1})
    assert not twice, f"docs/configuration.md lists these keys more than once: {twice}"
    assert not set(keys) - set(table), f"missing from docs/configuration.md: {sorted(set(keys) - set(table))}"
    assert not set(table) - set(keys), f"not schema keys: {sorted(set(table) - set(keys))}"


def test_the_table_gives_the_schema_defaults():
    """A default given in backticks is the schema's (YAML spelling); `samples` has none."""
    schema = load_schema()
    text = (REPO / "docs/configuration.md").read_text()
    section = text.split("\n## Every key\n", 1)[1].split("\n## ", 1)[0]
    for row in (line for line in section.splitlines() if line.startswith("| `")):
        key, default = re.match(r"\| `([^`]+)` \| (.*?) \|", row).groups()
        node = schema
        for part in key.split("."):
            node = node["properties"][part]
        if "default" not in node:
            assert default.startswith("none: required"), (key, default)
            continue
        shown = re.match(r"`([^`]*)`", default).group(1)
        assert yaml.safe_load(shown) == node["default"], (key, shown, node["default"])


def slug(heading):
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path):
    return {slug(line.lstrip("#")) for line in path.read_text().splitlines() if re.match(r"#{1,6} ", line)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(target)
    assert not broken, f"{page.name}: links that do not resolve: {broken}"


def code_of(text):
    """Fenced blocks and inline code spans: where commands are written."""
    fenced = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return fenced + inline


def make_targets():
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", text, re.M))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_make_target_named_exists(page):
    named = {m for code in code_of(page.read_text()) for m in re.findall(r"(?<![\w/-])make ([a-z][\w-]*)", code)}
    assert named <= make_targets(), f"{page.name}: not Makefile targets: {sorted(named - make_targets())}"
    if page.name == "README.md":
        assert {"setup", "demo", "download-models", "test", "test-all"} <= named


def subcommands():
    from virnucflow.cli import build_parser

    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(actions[0].choices)


def virnucflow_commands(text):
    """The `virnucflow X` subcommands a page's code names (`.venv/bin/virnucflow X` too; not `conda create -n
    virnucflow`, nor the `use rule * from virnucflow as` of a module)."""
    pattern = r"(?<![\w/.-])(?<!-n )(?<!from )(?:\.venv/bin/)?virnucflow ([a-z][\w-]*)"
    return {m for code in code_of(text) for m in re.findall(pattern, code)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_virnucflow_subcommand_named_exists(page):
    named = virnucflow_commands(page.read_text())
    assert named <= subcommands(), f"{page.name}: not virnucflow subcommands: {sorted(named - subcommands())}"


def test_the_quick_path_commands_answer_help():
    """The subcommands README's path runs, as a user types them."""
    readme = (REPO / "README.md").read_text()
    named = virnucflow_commands(readme)
    assert {"sample-sheet", "download-models"} <= named
    for command in sorted(named):
        proc = subprocess.run([sys.executable, "-m", "virnucflow", command, "--help"], capture_output=True, text=True)
        assert proc.returncode == 0, (command, proc.stderr[-500:])


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_profile_named_exists(page):
    named = {m for code in code_of(page.read_text()) for m in re.findall(r"--profile (\S+)", code)}
    missing = [p for p in named if not (REPO / p / "config.v8+.yaml").is_file()]
    assert not missing, f"{page.name}: no such profile: {missing}"


def test_the_reserved_sample_names_are_documented():
    from virnucflow.samples import RESERVED

    text = (REPO / "docs/input.md").read_text()
    assert all(f"`{name}`" in text for name in RESERVED), sorted(RESERVED)


def test_the_readme_is_the_short_path():
    lines = (REPO / "README.md").read_text().splitlines()
    assert 150 <= len(lines) <= 260, len(lines)
    headings = [line for line in lines if line.startswith("## ")]
    order = ["## Install on a cluster", "## Models and the classifier", "## The demo", "## Your run", "## Help",
             "## Tests", "## Citing"]
    assert [h for h in headings if h in order] == order


# The report's landing page (report/workflow.rst, rendered by `snakemake --report` with Jinja2 and docutils).

def render_landing_page(tmp_path, summary_rows):
    """workflow.rst as Snakemake renders it: an Environment(trim_blocks, lstrip_blocks) given
    `snakemake.config`, `categories` and `files` (report files with a `path`), then docutils."""
    from docutils.core import publish_parts
    from jinja2 import Environment
    from snakemake.utils import validate

    from virnucflow.schema import SCHEMA_PATH

    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    validate(config, str(SCHEMA_PATH))
    summary = tmp_path / "summary.tsv"
    header = ["sample", "reads", "cpu_jobs_given_a_gpu", "untrained_model_jobs"]
    summary.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, row)) + "\n" for row in summary_rows))
    files = [SimpleNamespace(path=tmp_path / "counts.png"), SimpleNamespace(path=summary)]
    env = Environment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string((REPO / "report/workflow.rst").read_text()).render(
        snakemake=SimpleNamespace(config=config), categories={}, files=files)
    return publish_parts(text, writer="html")["html_body"]


def page_text(body):
    """What a reader sees of an HTML fragment: its text, one space between words."""
    text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()
    return re.sub(r" ([,.:;)])", r"\1", text)


def test_the_landing_page_opens_on_the_untrained_warning(tmp_path):
    text = page_text(render_landing_page(tmp_path, [("coding", 24, 0, 8), ("gut_7_", 5, 2, 0)]))
    assert text.startswith("UNTRAINED MODELS: the embeddings of coding were computed with random-weight models")
    assert "Embed jobs ran on the CPU although they had a GPU" in text and "gut_7_ (2 embed jobs)" in text
    assert text.index("Embed jobs ran on the CPU") < text.index("virnucflow ran the VirNucPro pipeline")


def test_the_landing_page_of_a_run_with_trained_models_says_nothing_of_them(tmp_path):
    text = page_text(render_landing_page(tmp_path, [("coding", 24, 0, 0), ("mixed", 24, 0, 0)]))
    assert text.startswith("virnucflow ran the VirNucPro pipeline") and "UNTRAINED" not in text


@pytest.mark.workflow  # builds the report (about a minute)
def test_the_demo_report_opens_on_the_warning(finished_demo_copy):
    """`snakemake --report` on the session's finished demo: the landing page (the report's `workflow_desc`,
    what a browser shows first) starts with the warning, before anything else."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--configfile", "config/demo.yaml", "--report",
                           "report.html"], cwd=finished_demo_copy, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    page = (finished_demo_copy / "report.html").read_text()
    line = next(line for line in page.splitlines() if "var workflow_desc = " in line)
    landing = json.loads(line.split("var workflow_desc = ", 1)[1].strip().rstrip(";"))
    text = page_text(landing)
    assert text.startswith("UNTRAINED MODELS: the embeddings of coding, mixed were computed with random-weight "
                           "models (the demo's): features, predictions and calls mean nothing."), text[:300]
