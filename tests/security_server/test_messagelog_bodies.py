"""Large bodies in the message log: the index on ``message_log.body_id`` (added by the
configuration store's migration ``0003`` to a table made before it) and the queries that
need it; on SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import event
from sqlalchemy.engine import Engine

from security_server.db import create_db_engine, create_tables
from security_server.messagelog import ORPHAN_BODY_AGE, MessageLog
from security_server.migrate import alembic_config, upgrade
from tests.security_server.test_messagelog import CP, _store_without_record, entry, large

INDEX = "ix_message_log_body_id"


def _has_index(engine: Engine) -> bool:
    return INDEX in {i["name"] for i in sa.inspect(engine).get_indexes("message_log")}


def _drop_index(engine: Engine) -> None:
    """What a message log made before the index looks like."""
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP INDEX {INDEX}"))


def test_a_new_log_has_the_index_and_the_migration_keeps_it(engine: Engine) -> None:
    assert _has_index(engine)
    upgrade(engine)
    upgrade(engine)
    assert _has_index(engine)


def test_the_migration_adds_the_index_to_an_older_log(engine: Engine) -> None:
    _drop_index(engine)
    upgrade(engine)
    assert _has_index(engine)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    assert not _has_index(engine)


def test_the_migration_runs_before_the_log_exists(db_url: str) -> None:
    """``xchange ss register`` migrates the store of a server that never started."""
    engine = create_db_engine(db_url)
    try:
        upgrade(engine)
        assert not sa.inspect(engine).has_table("message_log")
        create_tables(engine)
        assert _has_index(engine)
    finally:
        engine.dispose()


# -- the queries that look for a body's record use the index (SQLite's plan)


@pytest.fixture
def sqlite_engine(tmp_path: Any) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'log.db'}")
    create_tables(engine)
    yield engine
    engine.dispose()


@contextlib.contextmanager
def _statements_on_body_id(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The statements executed meanwhile that look ``message_log`` up by ``body_id``."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
               _many: bool) -> None:
        if "message_log.body_id" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _plans(engine: Engine, statements: list[tuple[str, Any]]) -> list[str]:
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        return [" / ".join(str(row[3]) for row in raw.execute(
                    f"EXPLAIN QUERY PLAN {statement}", parameters))
                for statement, parameters in statements]


@pytest.mark.parametrize("indexed", [True, False], ids=["indexed", "older-log"])
async def test_finding_a_bodys_record_uses_the_index(sqlite_engine: Engine,
                                                     indexed: bool) -> None:
    if not indexed:
        _drop_index(sqlite_engine)
    log = MessageLog(sqlite_engine)
    try:
        for i in range(1, 4):
            await log.append(entry(i, body=large(bytes([i]) * (2 << 20))), error_code=CP)
        failed, _swept = [await asyncio.to_thread(_store_without_record, log) for _ in "ab"]
        later = datetime.now(UTC) + 2 * ORPHAN_BODY_AGE
        with _statements_on_body_id(sqlite_engine) as statements:
            await asyncio.to_thread(log._drop_body, failed)  # a body whose record failed
            assert await log.remove_orphan_bodies(later) == 1
    finally:
        log.close()
    assert len(statements) == 3  # the drop's two deletes, the sweep's look-up
    for plan in _plans(sqlite_engine, statements):
        if indexed:
            assert INDEX in plan and "SCAN message_log" not in plan, plan
        else:
            assert "SCAN message_log" in plan, plan
