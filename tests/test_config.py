"""config/schema.yaml: what it accepts and refuses, on the shipped configs."""

from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

CONFIG = Path(__file__).resolve().parents[1] / "config"


def config_with(file="config.yaml", **embed):
    config = yaml.safe_load((CONFIG / file).read_text())
    config["embed"].update(embed)
    return config


@pytest.mark.parametrize("file", ["config.yaml", "demo.yaml"])
def test_the_shipped_configs_are_valid(file):
    validate(config_with(file), str(CONFIG / "schema.yaml"))


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_devices_that_are_accepted(device):
    validate(config_with(device=device), str(CONFIG / "schema.yaml"))


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "CPU", "cuda:0,1"])
def test_devices_that_are_refused(device):
    with pytest.raises(WorkflowError):
        validate(config_with(device=device), str(CONFIG / "schema.yaml"))


def test_embed_threads_default_and_minimum():
    config = config_with()
    del config["embed"]["threads"]
    validate(config, str(CONFIG / "schema.yaml"))  # fills in the defaults
    assert config["embed"]["threads"] == 2
    with pytest.raises(WorkflowError):
        validate(config_with(threads=0), str(CONFIG / "schema.yaml"))
