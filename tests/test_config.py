"""The configuration schema (virnucflow/config_schema.yaml): what it accepts and refuses, on the shipped configs."""

from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from virnucflow.schema import SCHEMA_PATH

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
    assert config["merge"] == {"buffer_rows": 10000, "allow_missing": False}
    for old in ({"allow_missing": True}, {"merge": {"chunk_rows": 10}}):  # the old names
        with pytest.raises(WorkflowError):
            validate({**config_with(), **old}, str(SCHEMA_PATH))


def test_config_schema_yaml_is_the_package_schema():
    """config/schema.yaml, where workflow users look, is the package's file (one schema, not two)."""
    assert (CONFIG / "schema.yaml").resolve() == SCHEMA_PATH.resolve()
