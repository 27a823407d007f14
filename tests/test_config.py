"""The configuration schema (virnucflow/config_schema.yaml): what it accepts and refuses, on the shipped configs."""

import re
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from virnucflow.schema import SCHEMA_PATH, load_schema

CONFIG = Path(__file__).resolve().parents[1] / "config"


def config_with(file="config.yaml", **embed):
    config = yaml.safe_load((CONFIG / file).read_text())
    config["embed"].update(embed)
    return config


@pytest.mark.parametrize("file", ["config.yaml", "demo.yaml"])
def test_the_shipped_configs_are_valid(file):
    validate(config_with(file), str(SCHEMA_PATH))


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_devices_that_are_accepted(device):
    validate(config_with(device=device), str(SCHEMA_PATH))


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "CPU", "cuda:0,1"])
def test_devices_that_are_refused(device):
    with pytest.raises(WorkflowError):
        validate(config_with(device=device), str(SCHEMA_PATH))


def test_embed_threads_default_and_minimum():
    config = config_with()
    del config["embed"]["threads"]
    validate(config, str(SCHEMA_PATH))  # fills in the defaults
    assert config["embed"]["threads"] == 2
    with pytest.raises(WorkflowError):
        validate(config_with(threads=0), str(SCHEMA_PATH))


def test_merge_keys_live_under_merge():
    config = config_with()
    del config["merge"]
    validate(config, str(SCHEMA_PATH))
    assert config["merge"] == {"buffer_rows": 10000, "allow_missing": False, "dtype": "float32"}
    for old in ({"allow_missing": True}, {"merge": {"chunk_rows": 10}}):  # the old names
        with pytest.raises(WorkflowError):
            validate({**config_with(), **old}, str(SCHEMA_PATH))


def test_config_schema_yaml_is_the_package_schema():
    """config/schema.yaml, where workflow users look, is the package's file (one schema, not two)."""
    assert (CONFIG / "schema.yaml").resolve() == SCHEMA_PATH.resolve()


def test_calls_max_ambiguous_fraction_default_and_range():
    config = config_with()
    del config["calls"]
    validate(config, str(SCHEMA_PATH))
    assert config["calls"] == {"max_ambiguous_fraction": 0.2, "min_virus_score": None}
    for value in (0, 0.5, 1):
        validate({**config_with(), "calls": {"max_ambiguous_fraction": value}}, str(SCHEMA_PATH))
    for value in (-0.1, 1.5, "0.2"):
        with pytest.raises(WorkflowError):
            validate({**config_with(), "calls": {"max_ambiguous_fraction": value}}, str(SCHEMA_PATH))


def test_calls_min_virus_score_is_null_or_a_probability():
    config = config_with()
    del config["calls"]["min_virus_score"]
    validate(config, str(SCHEMA_PATH))
    assert config["calls"]["min_virus_score"] is None  # VirNucPro's chunk rule
    for value in (None, 0, 0.5, 0.9, 1):
        validate({**config_with(), "calls": {"min_virus_score": value}}, str(SCHEMA_PATH))
    for value in (-0.1, 1.5, "0.9", True):
        with pytest.raises(WorkflowError):
            validate({**config_with(), "calls": {"min_virus_score": value}}, str(SCHEMA_PATH))


@pytest.mark.parametrize("name", ["report", "Report", "report_plots.log", "demo_models.log", "virus_reads.tsv",
                                  "virus_reads_table.log"])
def test_sample_names_the_workflow_uses_itself_are_refused(tmp_path, name):
    from virnucflow.errors import InputError
    from virnucflow.samples import read_sample_sheet

    sheet = tmp_path / "samples.tsv"
    sheet.write_text(f"sample\tfasta\ngut_1\ta.fa\n{name}\tb.fa\n")
    with pytest.raises(InputError) as error:
        read_sample_sheet(sheet)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{sheet}: row 3: sample name {name!r} is reserved (")
    assert f"rename the sample, e.g. {name}_1" in message
    sheet.write_text("sample\tfasta\nreports\ta.fa\nmy_report\tb.fa\n")
    assert read_sample_sheet(sheet) == {"reports": ["a.fa"], "my_report": ["b.fa"]}


def named_keys(text, top_level):
    """Every `section.key` (in backticks, maybe followed by `: value`) a document names under a top-level key."""
    pattern = rf"`((?:{'|'.join(top_level)})(?:\.[a-z0-9_]+)+)"
    return set(re.findall(pattern, text))


@pytest.mark.parametrize("doc", ["README.md", "config/README.md", "profiles/slurm/config.v8+.yaml",
                                 "profiles/lsf/config.v8+.yaml",
                                 *sorted(f"docs/{page.name}" for page in (CONFIG.parent / "docs").glob("*.md"))])
def test_every_config_key_the_docs_name_exists(doc):
    """A user copies key names from the docs: each must be one the schema knows (issue: embed.token_budget)."""
    schema = load_schema()
    text = (CONFIG.parent / doc).read_text()
    unknown = []
    for dotted in named_keys(text, schema["properties"]):
        node = schema
        for key in dotted.split("."):
            node = node.get("properties", {}).get(key)
            if node is None:
                unknown.append(dotted)
                break
    assert not unknown, f"{doc} names keys the schema lacks: {sorted(unknown)}"


def test_the_key_check_finds_a_wrong_key():
    assert named_keys("lower `embed.token_budget` after", ["embed"]) == {"embed.token_budget"}
