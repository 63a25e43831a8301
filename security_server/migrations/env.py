"""Alembic environment for the security server's configuration store.

Run only through :func:`security_server.migrate.upgrade`, which hands over an open
connection; the version is kept in ``ss_alembic_version`` so that other components' Alembic
histories can share the database.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import security_server.store  # noqa: F401  (registers the ss_* tables on the metadata)

VERSION_TABLE = "ss_alembic_version"


def _include(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
             ) -> bool:
    return type_ != "table" or (name or "").startswith("ss_")


def run() -> None:
    connection = context.config.attributes["connection"]
    context.configure(connection=connection, target_metadata=SQLModel.metadata,
                      version_table=VERSION_TABLE, include_object=_include,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
