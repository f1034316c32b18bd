"""The JSON Schema of the report, shipped inside the package."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

SCHEMA_FILE = "report-1.schema.json"


@cache
def load_schema() -> dict:
    text = resources.files("rankwise.cli").joinpath("schemas", SCHEMA_FILE).read_text("utf-8")
    return json.loads(text)


def validate(report: dict) -> None:
    """Raise jsonschema.ValidationError unless ``report`` follows the schema (needs the
    optional jsonschema package, a dev dependency)."""
    import jsonschema

    jsonschema.validate(report, load_schema(), format_checker=jsonschema.FormatChecker())
