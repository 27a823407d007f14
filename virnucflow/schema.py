"""The configuration schema (config_schema.yaml, package data): the one place where every key's type
and default is written. The workflow validates its config against it; the `virnucflow` commands take
their option defaults from it."""

import functools
from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("config_schema.yaml")


@functools.cache
def load_schema():
    import yaml

    return yaml.safe_load(SCHEMA_PATH.read_text())


def _defaults(node):
    values = {}
    for key, spec in node.get("properties", {}).items():
        if "properties" in spec:
            values[key] = _defaults(spec)
        elif "default" in spec:
            values[key] = spec["default"]
    return values


def defaults():
    """{key: default} of every key that has one, nested as in the config (defaults()["embed"]["device"])."""
    return _defaults(load_schema())


def choices(*keys):
    """The allowed values of an enum key, e.g. choices("embed", "precision")."""
    node = load_schema()
    for key in keys:
        node = node["properties"][key]
    return node["enum"]
