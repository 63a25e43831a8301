"""The kinds of data silo an adapter service can front, by name.

Each kind is a module with ``from_config(code, section, base_dir) -> Backend``
(:data:`adapters.base.BackendFactory`) and a JSON Schema for its own table of a service
(``[services.<kind>]``), ``schemas/adapter-<kind>.schema.json``.  Modules are imported only
when a configuration uses their kind, so a file-only adapter never loads a database driver.

To add a kind: one line in :data:`KINDS` and its schema file.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Final, cast

from adapters.base import BackendFactory
from schemas import load_json_schema

__all__ = ["KINDS", "factory", "kind_schema"]

KINDS: Final[Mapping[str, str]] = {
    # kind: "module:function"
    "sql": "adapters.sql:from_config",
    "file": "adapters.files:from_config",
    "soap": "adapters.soap_rest:from_config",
}


def factory(kind: str) -> BackendFactory:
    """The ``from_config`` of ``kind`` (:class:`KeyError` for an unknown kind)."""
    module, _, name = KINDS[kind].partition(":")
    return cast(BackendFactory, getattr(importlib.import_module(module), name))


def kind_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of ``kind``'s table of a service."""
    return load_json_schema(f"adapter-{kind}.schema.json")
