"""Database engine creation for the security server (design: "Storage").

SQLite by default (one file per server), PostgreSQL when the URL says so:

* ``sqlite:///path/to/server.db`` -- every connection is set to WAL journaling (readers do
  not block the writer), ``synchronous=FULL`` (a committed message log record survives a
  power cut), a busy timeout instead of an immediate "database is locked", and foreign keys
  enforced;
* ``postgresql://...`` or ``postgresql+psycopg://...`` -- always through psycopg 3.

The message log's tables (:mod:`security_server.logtables`) are created by
:func:`create_tables` until Alembic migrations take over; the configuration store's are
migrated (:mod:`security_server.migrate`).

This module does not read configuration or the environment: the URL is passed in.
"""

from __future__ import annotations

from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ArgumentError

from security_server.logtables import LOG_METADATA, LOG_TABLES

__all__ = ["PG_TOAST_TUPLE_TARGET", "create_db_engine", "create_tables"]

SQLITE_BUSY_TIMEOUT_MS: Final = 5000
"""How long an SQLite connection waits for a lock held by another connection."""

_PG_DRIVERS = frozenset({"postgresql", "postgres", "postgresql+psycopg"})


def create_db_engine(url: str) -> Engine:
    """Create an engine for ``url`` (SQLite file or PostgreSQL via psycopg 3).

    Raises :class:`ValueError` for a malformed URL or an unsupported database.  No
    connection is opened here.
    """
    try:
        parsed = sa.make_url(url)
    except ArgumentError as exc:
        raise ValueError("malformed database URL") from exc
    if parsed.drivername in _PG_DRIVERS:
        # pre_ping: after a database restart, pooled connections are dead; test before use
        # rather than failing the first message of every pooled connection.
        return sa.create_engine(parsed.set(drivername="postgresql+psycopg"), pool_pre_ping=True)
    if parsed.drivername in {"sqlite", "sqlite+pysqlite"}:
        return _sqlite_engine(parsed)
    raise ValueError(f"unsupported database {parsed.drivername!r}: use sqlite or postgresql")


def create_tables(engine: Engine) -> None:
    """Create the message log's tables that do not exist yet, and bring existing ones up to
    date (columns added since, PostgreSQL's storage setting)."""
    LOG_METADATA.create_all(engine, tables=list(LOG_TABLES))
    _add_missing_columns(engine)
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(sa.text(
                f"ALTER TABLE message_log SET (toast_tuple_target = {PG_TOAST_TUPLE_TARGET})"))


PG_TOAST_TUPLE_TARGET: Final = 8160
"""On PostgreSQL, a message log row is compressed or moved out of line (TOAST) only when it
is longer than this, the most a heap page holds.  A record is about 3 KB (its signature 2 KB
of base64, which compresses poorly): by PostgreSQL's default (2 KB) every record was
compressed and then stored out of line anyway, in a second table and its index, which took
a third of the database's CPU per row (docs/performance.md).  Longer records (large header
parts) are stored as before; the setting holds for rows written after it."""


_ADDED_COLUMNS: Final = (("message_log", "body_id", "VARCHAR(32)"),)
"""Columns added to existing tables since they were first created (until Alembic migrations
take over these tables): table, column, SQL type.  Each is nullable."""


def _add_missing_columns(engine: Engine) -> None:
    inspector = sa.inspect(engine)
    for table, column, sql_type in _ADDED_COLUMNS:
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            with engine.begin() as connection:
                connection.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))


def _sqlite_engine(url: URL) -> Engine:
    if url.database in (None, "", ":memory:"):
        # each pooled connection would get its own empty database, and nothing would last
        raise ValueError("SQLite needs a database file, not an in-memory database")
    engine = sa.create_engine(url)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    return engine
