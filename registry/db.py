"""The registry's database: engine, Alembic migrations, sessions.

SQLite by default (a file next to the registry's configuration), PostgreSQL when the URL
says so; the engine rules (WAL, ``synchronous=FULL``, foreign keys, psycopg 3) are the
security server's, :func:`security_server.db.create_db_engine`.

The schema is owned by Alembic: the migrations ship in the package (``registry/migrations``)
and :func:`migrate` brings a database to the newest revision.  ``xchange registry serve``
migrates on start; ``xchange registry migrate`` does it alone (for an operator who wants to
migrate before rolling out new registry nodes).

This module does not read configuration or the environment: the URL is passed in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from security_server.db import create_db_engine

__all__ = [
    "MIGRATIONS",
    "VERSION_TABLE",
    "create_db_engine",
    "current_revision",
    "head_revision",
    "migrate",
    "opened_engine",
]

MIGRATIONS: Final = Path(__file__).with_name("migrations")
VERSION_TABLE: Final = "registry_alembic_version"
"""Alembic's record of the registry's revision.  Named, as the security server's is
(``ss_alembic_version``), so that the two histories never mistake each other's revision
when they share a database."""


def _alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


@contextlib.contextmanager
def opened_engine(url: str) -> Iterator[Engine]:
    """An engine for one command's work, disposed of afterwards."""
    engine = create_db_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (the newest by default).  Idempotent."""
    command.upgrade(_alembic_config(engine), revision)


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("the registry ships no migrations")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; ``None`` for an empty database."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()
