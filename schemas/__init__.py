"""JSON Schemas, OpenAPI documents and XSDs of xchange: the one source of truth.

Code loads them from here (they ship as package data); docs link to the files.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["load_json_schema", "schema_file", "schema_text"]


def schema_text(name: str) -> str:
    """The text of the schema file ``name`` (for example ``globalconf.schema.json``)."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def schema_file(name: str) -> Path:
    """The path of the schema file ``name`` (XSDs: their imports are resolved beside it)."""
    path = Path(str(resources.files(__name__).joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"schema {name} is not installed as a file")
    return path


@cache
def load_json_schema(name: str) -> dict[str, Any]:
    """Parse a JSON Schema shipped in this package (cached; schemas are immutable)."""
    value = json.loads(schema_text(name))
    if not isinstance(value, dict):
        raise ValueError(f"schema {name} is not a JSON object")
    return value
