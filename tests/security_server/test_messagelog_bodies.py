"""Large bodies in the message log: the index on ``message_log.body_id`` (added by the
configuration store's migration ``0003`` to a table made before it) and the queries that
need it; on SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
from tests.security_server.test_messagelog import (
    BIG,
    CP,
    _store_without_record,
    entry,
    large,
)
from xchange.body import BodyDigest, ExternalBody, read_all

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


def _index_definition(engine: Engine) -> str:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            query = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"
        else:
            query = ("SELECT indexdef FROM pg_indexes WHERE indexname = :name"
                     " AND schemaname = current_schema()")
        return str(connection.execute(sa.text(query), {"name": INDEX}).scalar_one())


def test_the_index_holds_only_records_of_large_bodies(engine: Engine) -> None:
    """Partial: a record with its body inline (body_id NULL) writes nothing to it."""
    assert "body_id IS NOT NULL" in _index_definition(engine)
    _drop_index(engine)
    upgrade(engine)
    assert "body_id IS NOT NULL" in _index_definition(engine)


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
            await asyncio.to_thread(_store_unmarked, log)
            assert await log.remove_unmarked_bodies() == 1
    finally:
        log.close()
    # the drop's two deletes, the sweep's look-up, the unmarked bodies' look-up and delete
    assert len(statements) == 5
    for plan in _plans(sqlite_engine, statements):
        if indexed:
            assert INDEX in plan and "SCAN message_log" not in plan, plan
        else:
            assert "SCAN message_log" in plan, plan


@pytest.fixture
def log(engine: Engine) -> Iterator[MessageLog]:
    log = MessageLog(engine)
    yield log
    log.close()


# -- unmarked orphans: chunks neither a record nor a pending row accounts for (left by a
# crash before message_body_pending existed)


def _bodies(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(sa.text(
            "SELECT DISTINCT body_id FROM message_body_chunk")).scalars())


def _store_unmarked(log: MessageLog) -> str:
    """Chunks without a pending row, as the server wrote them before it had the table."""
    body_id = _store_without_record(log)
    with log._engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM message_body_pending WHERE body_id = :b"),
                           {"b": body_id})
    return body_id


async def test_unmarked_chunks_are_removed_and_nothing_else(engine: Engine,
                                                            log: MessageLog) -> None:
    logged = await log.append(entry(1, body=large()), error_code=CP)
    await log.append(entry(2), error_code=CP)
    unmarked = [await asyncio.to_thread(_store_unmarked, log) for _ in range(3)]
    pending = await asyncio.to_thread(_store_without_record, log)  # young: the hour decides
    assert len(_bodies(engine)) == 5
    assert await log.remove_unmarked_bodies() == 3
    assert not set(unmarked) & _bodies(engine)
    assert pending in _bodies(engine) and len(_bodies(engine)) == 2
    assert await log.remove_unmarked_bodies() == 0
    assert (await log.verify()).count == 2
    (record,) = await log.records(query_id="q-1")
    assert record.record_hash == logged.record_hash
    assert read_all(record.entry.body) == BIG


async def test_a_body_is_never_unmarked_on_its_way(engine: Engine, log: MessageLog) -> None:
    """At every step of a body's life, a record or a pending row accounts for it."""
    data = BIG * 4  # eleven chunks: all but the last are committed while it arrives
    store = log.body_store()
    await asyncio.to_thread(store.write, data)
    assert len(_bodies(engine)) == 1
    assert await log.remove_unmarked_bodies() == 0  # still arriving
    reader = await asyncio.to_thread(store.finish)
    assert await log.remove_unmarked_bodies() == 0  # complete, its record not yet written
    await log.append(entry(1, body=ExternalBody(BodyDigest.of(data), reader)), error_code=CP)
    assert await log.remove_unmarked_bodies() == 0  # logged: a record names it
    (record,) = await log.records()
    assert read_all(record.entry.body) == data


async def test_records_commit_while_a_body_is_half_stored(engine: Engine, log: MessageLog
                                                          ) -> None:
    """Between two pieces of a body no write transaction is open: a record committed
    meanwhile (on SQLite on the loop's thread, the one receiving the body) must not wait for
    the rest of the body.  (It waited for SQLite's lock until the busy timeout, and failed.)"""
    store = log.body_store()
    await asyncio.to_thread(store.write, BIG)  # two chunks committed, the rest still to come
    other = await log.append(entry(1), error_code=CP)
    await asyncio.to_thread(store.write, b"more")
    reader = await asyncio.to_thread(store.finish)
    body = BIG + b"more"
    mine = await log.append(entry(2, body=ExternalBody(BodyDigest.of(body), reader)),
                            error_code=CP)
    assert (other.sequence, mine.sequence) == (1, 2)
    records = await log.records()
    assert read_all(records[1].entry.body) == body
    assert (await log.verify()).count == 2


async def test_the_sweep_during_a_records_commit_keeps_its_body(engine: Engine,
                                                                 log: MessageLog) -> None:
    """The record's transaction has written the record and is about to delete the pending
    row: the sweep, run right then from another connection, sees neither change and must
    keep the body (checking records alone would delete it under the record).  The commit
    runs on the loop's thread (SQLite) or the writer thread (PostgreSQL), so the sweep runs
    on a loop of its own in another thread."""
    swept: list[int] = []

    def sweep_now(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("DELETE FROM message_body_pending") and not swept:
            with ThreadPoolExecutor(1) as pool:
                swept.append(pool.submit(asyncio.run, log.remove_unmarked_bodies())
                             .result(timeout=30))

    event.listen(engine, "before_cursor_execute", sweep_now)
    try:
        await log.append(entry(1, body=large()), error_code=CP)
    finally:
        event.remove(engine, "before_cursor_execute", sweep_now)
    assert swept == [0]
    (record,) = await log.records()
    assert read_all(record.entry.body) == BIG
    assert (await log.verify()).count == 1


async def test_sweeping_while_large_bodies_are_logged(engine: Engine, log: MessageLog) -> None:
    bodies = [BIG + bytes([i]) for i in range(6)]
    done = asyncio.Event()
    sweeps = 0

    async def sweep() -> None:
        nonlocal sweeps
        while not done.is_set():
            assert await log.remove_unmarked_bodies() == 0
            sweeps += 1

    sweeper = asyncio.create_task(sweep())
    try:
        for i, body in enumerate(bodies, start=1):
            await log.append(entry(i, body=large(body)), error_code=CP)
    finally:
        done.set()
        await sweeper
    assert sweeps > 1
    records = await log.records()
    assert [read_all(r.entry.body) for r in records] == bodies


async def test_a_running_server_removes_unmarked_chunks_at_start(engine: Engine,
                                                                 log: MessageLog) -> None:
    unmarked = await asyncio.to_thread(_store_unmarked, log)
    sweep = asyncio.create_task(log.run_orphan_sweep(lambda: datetime.now(UTC),
                                                     interval_seconds=0.05))
    try:
        async def removed() -> None:
            while unmarked in _bodies(engine):
                await asyncio.sleep(0.02)
        await asyncio.wait_for(removed(), 30)
    finally:
        sweep.cancel()
