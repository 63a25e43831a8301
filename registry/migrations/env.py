"""Alembic environment of the registry: run by :func:`registry.db.migrate` with an engine.

Only the registry's tables (:data:`registry.models.REGISTRY_TABLES`) are compared and
migrated; other xchange tables share SQLModel's metadata but live in other databases.  The
revision is kept in ``registry_alembic_version`` (:data:`registry.db.VERSION_TABLE`), apart
from the security server's ``ss_alembic_version``.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlmodel import SQLModel

from registry import models
from registry.db import VERSION_TABLE

config = context.config
engine = config.attributes.get("engine")
if engine is None:
    raise RuntimeError("run the registry's migrations through registry.db.migrate(engine)")


def include_name(name: str | None, type_: str, _parent: Any) -> bool:
    """Reflected names: only the registry's tables."""
    return type_ != "table" or name in models.REGISTRY_TABLES


def include_object(obj: Any, name: str | None, type_: str, _reflected: bool,
                   _compare_to: Any) -> bool:
    """Model objects: only the registry's tables."""
    return type_ != "table" or name in models.REGISTRY_TABLES


with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        include_object=include_object,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies tables
        compare_type=True,
    )
    context.run_migrations()
