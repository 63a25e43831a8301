"""Tests of the message log storage, on SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from certs.tsa import TimeStampAuthority
from security_server import messagelog as messagelog_module
from security_server.db import create_db_engine, create_tables
from security_server.messagelog import (
    ORPHAN_BODY_AGE,
    LoggingFailedCode,
    MessageLog,
    MessageLogError,
)
from xchange.body import BodyDigest, ExternalBody, read_all
from xchange.errors import StampInvalidError
from xchange.logbatch import TimestampBatch, plan_batch, verify_batch, verify_record_stamp
from xchange.logcrypto import Keyring
from xchange.messagelog import (
    GENESIS_HASH,
    ChainBrokenError,
    ChainCheckpoint,
    LogEntry,
    StoredRecord,
    chain_record,
)
from xchange.timestamp import parse_timestamp_response, timestamp_request, verify_timestamp_token

T0 = datetime(2025, 3, 1, 12, 0, 0, 654321, tzinfo=UTC)
CP: LoggingFailedCode = "server.clientproxy.logging_failed"
SP: LoggingFailedCode = "server.serverproxy.logging_failed"


def entry(i: int, **changes: Any) -> LogEntry:
    fields: dict[str, Any] = {
        "query_id": f"q-{i}",
        "kind": "request" if i % 2 else "response",
        "direction": "outgoing",
        "client": "EE/GOV/1234/consumer",
        "service": "EE/GOV/5678/provider/getPerson",
        "user_id": "EE12345" if i % 3 else None,
        "issue": None,
        "header_part": b"hdr-%d" % i,
        "body": b"\x00\xff binary body %d" % i,
        "signature": f"eyJhbGciOiJFUzI1NiJ9..sig{i}",
        "status": "ok",
        "error_code": None,
        "created_at": T0 + timedelta(seconds=i),
        "ocsp_responses": (b"\x30\x03\x0a\x01\x06", b"ocsp-%d" % i),
    }
    fields.update(changes)
    return LogEntry(**fields)


@pytest.fixture
def log(engine: Engine) -> Iterator[MessageLog]:
    log = MessageLog(engine)
    yield log
    log.close()


async def fill(log: MessageLog, n: int) -> None:
    for i in range(1, n + 1):
        await log.append(entry(i), error_code=SP)


def execute(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text(sql), params)


def _through_the_thread(log: MessageLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Send ``log``'s records to its writer thread, as on PostgreSQL, also on SQLite."""
    monkeypatch.setattr(log, "_commit_on_loop", False)


# -- append, read, verify


async def test_append_read_verify(log: MessageLog) -> None:
    rejected = entry(2, status="rejected", error_code="server.serverproxy.invalid_signature")
    r1 = await log.append(entry(1, issue="ISSUE-7"), error_code=CP)
    r2 = await log.append(rejected, error_code=SP)
    r3 = await log.append(entry(3, direction="incoming", body=b""), error_code=CP)
    assert [r.sequence for r in (r1, r2, r3)] == [1, 2, 3]
    assert r1.prev_hash == GENESIS_HASH
    assert (r2.prev_hash, r3.prev_hash) == (r1.record_hash, r2.record_hash)
    assert r2.entry == rejected

    assert await log.records() == [r1, r2, r3]
    assert await log.records(query_id="q-2") == [r2]
    assert await log.records(query_id="q-404") == []

    report = await log.verify()
    assert (report.count, report.first_sequence, report.last_sequence) == (3, 1, 3)
    assert report.last_hash == r3.record_hash


async def test_records_between_reads_what_a_select_reads(log: MessageLog) -> None:
    # The audit's page reader runs on the driver's cursor; it must give what the Core
    # select gives, on either database, with every column converted (created_at aware).
    await fill(log, 5)
    await log.append(entry(6, status="rejected", error_code="server.serverproxy.x",
                           user_id=None, issue="ISSUE-1"), error_code=CP)
    reader = log.reader()
    everything = await log.records()
    assert reader.records_between(0, None, 100) == everything
    assert reader.records_between(1, 4, 100) == everything[1:4]
    assert reader.records_between(1, None, 2) == everything[1:3]
    assert reader.records_between(6, None, 10) == []
    assert all(r.entry.created_at.tzinfo is UTC for r in reader.records_between(0, None, 9))


async def test_verify_empty_log(log: MessageLog) -> None:
    report = await log.verify()
    assert (report.count, report.first_sequence, report.last_hash) == (0, None, GENESIS_HASH)


async def test_chain_continues_after_reopening(db_url: str, log: MessageLog) -> None:
    await fill(log, 2)
    last = (await log.records())[-1]
    log.close()

    engine = create_db_engine(db_url)
    reopened = MessageLog(engine)
    try:
        record = await reopened.append(entry(3), error_code=SP)
        assert (record.sequence, record.prev_hash) == (3, last.record_hash)
        assert (await reopened.verify()).count == 3
    finally:
        reopened.close()
        engine.dispose()


async def test_concurrent_appends_form_one_chain(log: MessageLog) -> None:
    stored = await asyncio.gather(*(log.append(entry(i), error_code=CP) for i in range(1, 201)))
    assert sorted(r.sequence for r in stored) == list(range(1, 201))
    report = await log.verify()
    assert (report.count, report.last_sequence) == (200, 200)
    assert [r.sequence for r in await log.records()] == list(range(1, 201))


async def test_records_waiting_during_a_commit_share_the_next_one(
    engine: Engine, log: MessageLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: the writer thread is held inside the first commit while 99 more
    records arrive; they must all go into the second commit, and every record still chains.
    (On SQLite's own path the first commit holds the loop itself: nothing arrives.)"""
    _through_the_thread(log, monkeypatch)
    entered, release = threading.Event(), threading.Event()
    commits: list[int] = []

    def on_commit(_connection: Any) -> None:
        commits.append(1)
        if len(commits) == 1:
            entered.set()
            release.wait(10)

    sa.event.listen(engine, "commit", on_commit)
    try:
        first = asyncio.ensure_future(log.append(entry(1), error_code=CP))
        assert await asyncio.to_thread(entered.wait, 10)
        rest = [asyncio.ensure_future(log.append(entry(i), error_code=CP))
                for i in range(2, 101)]
        await asyncio.sleep(0)  # every append has queued its record
        assert not first.done()  # not acknowledged before its commit
        release.set()
        stored = await asyncio.gather(first, *rest)
    finally:
        release.set()
        sa.event.remove(engine, "commit", on_commit)
    assert len(commits) == 2
    assert [r.sequence for r in stored] == list(range(1, 101))
    assert (await log.verify()).count == 100


async def test_a_failed_batch_fails_every_record_in_it(engine: Engine, log: MessageLog) -> None:
    await fill(log, 2)
    _refuse_inserts(engine)
    results = await asyncio.gather(*(log.append(entry(i), error_code=SP) for i in range(3, 53)),
                                   return_exceptions=True)
    assert all(isinstance(r, MessageLogError) and r.code == SP for r in results)
    _allow_inserts(engine)
    record = await log.append(entry(53), error_code=SP)
    assert record.sequence == 3
    assert (await log.verify()).count == 3


async def test_verify_reads_in_batches(
    engine: Engine, log: MessageLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messagelog_module, "_VERIFY_BATCH", 3)
    await fill(log, 10)
    assert (await log.verify()).count == 10
    # 7 starts a batch: the gap must still be seen across the batch boundary
    execute(engine, "DELETE FROM message_log WHERE sequence = 7")
    with pytest.raises(ChainBrokenError) as caught:
        await log.verify()
    assert caught.value.sequence == 7


# -- tampering in the database


@pytest.mark.parametrize(
    ("sql", "params", "reason"),
    [
        ("UPDATE message_log SET body = :v WHERE sequence = 5", {"v": b"forged"}, "content"),
        ("UPDATE message_log SET header_part = :v WHERE sequence = 5", {"v": b""}, "content"),
        (
            "UPDATE message_log SET status = 'rejected', error_code = :v WHERE sequence = 5",
            {"v": "server.serverproxy.invalid_signature"},
            "content",
        ),
        ("UPDATE message_log SET status = 'rejected' WHERE sequence = 5", {}, "malformed"),
        ("UPDATE message_log SET prev_hash = :v WHERE sequence = 5", {"v": "f" * 64}, "prev_hash"),
        ("UPDATE message_log SET record_hash = :v WHERE sequence = 5", {"v": "f" * 64}, "content"),
        ("UPDATE message_log SET query_id = 'other' WHERE sequence = 5", {}, "content"),
        ("UPDATE message_log SET created_at = :v WHERE sequence = 5", {"v": T0}, "content"),
        ("DELETE FROM message_log WHERE sequence = 5", {}, "found record 6"),
    ],
    ids=["body", "header_part", "status", "status_malformed", "prev_hash", "record_hash",
         "query_id", "created_at", "deleted"],
)
async def test_tampering_is_detected_at_its_record(
    engine: Engine, log: MessageLog, sql: str, params: dict[str, Any], reason: str
) -> None:
    await fill(log, 8)
    execute(engine, sql, **params)
    with pytest.raises(ChainBrokenError) as caught:
        await log.verify()
    assert caught.value.sequence == 5
    assert reason in caught.value.reason


@pytest.mark.parametrize("query_id", [None, "q-5"])
async def test_undecodable_value_is_reported_at_its_record(
    tmp_path: Path, query_id: str | None
) -> None:
    # Only SQLite lets a column hold a value of another type; PostgreSQL refuses the UPDATE.
    engine = create_db_engine(f"sqlite:///{tmp_path / 'ss.db'}")
    create_tables(engine)
    log = MessageLog(engine)
    try:
        await fill(log, 8)
        execute(engine, "UPDATE message_log SET created_at = 'garbage' WHERE sequence = 5")
        with pytest.raises(ChainBrokenError) as caught:
            await log.records(query_id=query_id)
        assert caught.value.sequence == 5
        assert caught.value.reason == "stored record cannot be decoded"
        with pytest.raises(ChainBrokenError) as caught:
            await log.verify()
        assert caught.value.sequence == 5
        for after, through in ((0, None), (2, 7), (4, 5)):
            with pytest.raises(ChainBrokenError) as caught:
                log.reader().records_between(after, through, 10)
            assert (caught.value.sequence, caught.value.reason) == (
                5, "stored record cannot be decoded")
        assert [r.sequence for r in log.reader().records_between(5, None, 10)] == [6, 7, 8]
    finally:
        log.close()
        engine.dispose()


# -- write failures fail closed and leave the chain consistent


def _refuse_inserts(engine: Engine, query_id: str | None = None) -> None:
    """Make the database refuse inserts into the log (of one message id, if given)."""
    if engine.dialect.name == "sqlite":
        when = "" if query_id is None else f" WHEN NEW.query_id = '{query_id}'"
        execute(
            engine,
            f"CREATE TRIGGER refuse BEFORE INSERT ON message_log{when} "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
    else:
        cond = "TRUE" if query_id is None else f"NEW.query_id = '{query_id}'"
        execute(
            engine,
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF {cond} THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$",
        )
        execute(
            engine,
            "CREATE TRIGGER refuse BEFORE INSERT ON message_log "
            "FOR EACH ROW EXECUTE FUNCTION refuse()",
        )


def _allow_inserts(engine: Engine) -> None:
    suffix = "" if engine.dialect.name == "sqlite" else " ON message_log"
    execute(engine, "DROP TRIGGER refuse" + suffix)


@pytest.mark.parametrize("via_thread", [False, True])
@pytest.mark.parametrize("code", [CP, SP])
async def test_failed_write_raises_and_logging_resumes(
    engine: Engine, log: MessageLog, code: LoggingFailedCode, via_thread: bool,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    if via_thread:
        _through_the_thread(log, monkeypatch)
    await fill(log, 3)
    _refuse_inserts(engine)
    for i in (4, 5):
        with pytest.raises(MessageLogError) as caught:
            await log.append(entry(i), error_code=code)
        assert caught.value.code == code
        assert isinstance(caught.value.__cause__, sa.exc.SQLAlchemyError)
        assert "refused" not in str(caught.value)  # database details stay out of the message
    assert len(await log.records()) == 3

    _allow_inserts(engine)
    record = await log.append(entry(6), error_code=code)
    assert record.sequence == 4
    report = await log.verify()
    assert (report.count, report.last_hash) == (4, record.record_hash)


def _hold_writer(log: MessageLog) -> threading.Event:
    """Keep the log's writer thread busy until the returned event is set, so that appends
    made meanwhile wait and are committed as one group."""
    release, started = threading.Event(), threading.Event()

    def blocker() -> None:
        started.set()
        release.wait(10)

    log._writer.submit(blocker)
    assert started.wait(10)
    return release


async def _when_queued(log: MessageLog, n: int) -> None:
    # append() queues synchronously when its coroutine first runs; a few loop turns suffice
    for _ in range(n + 5):
        await asyncio.sleep(0)


async def test_waiting_appends_share_one_commit(
    engine: Engine, log: MessageLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = []
    real = log._commit_group

    def counting(entries: Sequence[LogEntry]) -> list[StoredRecord]:
        commits.append(len(entries))
        return real(entries)

    monkeypatch.setattr(log._writer, "_commit_group", counting)
    release = _hold_writer(log)
    appends = [asyncio.ensure_future(log.append(entry(i), error_code=CP)) for i in range(1, 31)]
    await _when_queued(log, 30)
    release.set()
    stored = await asyncio.gather(*appends)
    assert commits == [30]
    assert [r.sequence for r in stored] == list(range(1, 31))  # chain order = queue order
    assert (await log.verify()).count == 30


async def test_a_failed_group_fails_every_waiter(engine: Engine, log: MessageLog) -> None:
    await fill(log, 2)
    _refuse_inserts(engine, query_id="q-bad")
    release = _hold_writer(log)
    entries = [entry(i, query_id="q-bad") if i == 5 else entry(i) for i in range(3, 9)]
    appends = [asyncio.ensure_future(log.append(e, error_code=SP)) for e in entries]
    await _when_queued(log, 6)
    release.set()
    results = await asyncio.gather(*appends, return_exceptions=True)
    # one transaction: the bad record takes its whole group down, and nothing is acknowledged
    assert all(isinstance(r, MessageLogError) and r.code == SP for r in results)
    assert len(await log.records()) == 2
    record = await log.append(entry(9), error_code=SP)
    assert record.sequence == 3
    assert (await log.verify()).count == 3


@pytest.mark.parametrize("via_thread", [False, True])
async def test_head_is_reread_after_a_failed_write(engine: Engine, log: MessageLog,
                                                   via_thread: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    other = MessageLog(engine)
    if via_thread:
        _through_the_thread(log, monkeypatch)
        _through_the_thread(other, monkeypatch)
    try:
        await log.append(entry(1), error_code=SP)
        r2 = await other.append(entry(2), error_code=SP)
        # `log` still believes record 1 is the head: its write collides and fails closed
        with pytest.raises(MessageLogError):
            await log.append(entry(3), error_code=SP)
        r3 = await log.append(entry(3), error_code=SP)
        assert (r3.sequence, r3.prev_hash) == (3, r2.record_hash)
        assert (await log.verify()).count == 3
    finally:
        other.close()


def _writer_backend(log: MessageLog) -> int:
    """The PostgreSQL backend of the connection the log's writer keeps."""
    connection = log._connection
    assert connection is not None, "the writer keeps its connection between groups"
    return int(connection.connection.dbapi_connection.info.backend_pid)  # type: ignore[union-attr]


def _terminate(engine: Engine, pid: int) -> None:
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"),
                                  {"pid": pid}).scalar() is True


def _backend_lost_at_insert(engine: Engine, log: MessageLog, monkeypatch: pytest.MonkeyPatch,
                            *, after_insert: bool) -> list[int]:
    """From now on the writer's backend is terminated at each group's INSERT, before it runs
    or right after it (before COMMIT); returns the list the terminated backends go to."""
    real, attempts = log._insert.execute, []

    def lost(connection: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        if after_insert:
            real(connection, rows)
        attempts.append(connection.connection.dbapi_connection.info.backend_pid)  # type: ignore[union-attr]
        _terminate(engine, attempts[-1])
        if not after_insert:
            real(connection, rows)

    monkeypatch.setattr(log._insert, "execute", lost)
    return attempts


postgres_only = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
"""A backend to terminate: the PostgreSQL case of the ``db_url`` fixture only."""


async def test_the_writer_keeps_its_connection_between_groups(log: MessageLog) -> None:
    await fill(log, 1)
    kept = log._connection
    assert kept is not None
    await log.append(entry(2), error_code=SP)
    assert log._connection is kept


@postgres_only
async def test_a_connection_lost_between_groups_fails_no_message(
    engine: Engine, log: MessageLog, caplog: pytest.LogCaptureFixture
) -> None:
    await fill(log, 2)
    for i in (3, 4):  # twice: the replacement connection is kept and can be lost too
        old = _writer_backend(log)
        _terminate(engine, old)
        record = await log.append(entry(i), error_code=SP)
        assert record.sequence == i
        assert _writer_backend(log) != old
    assert caplog.text.count("writing the group again on a fresh connection") == 2
    report = await log.verify()
    assert (report.count, report.last_hash) == (4, record.record_hash)


@postgres_only
async def test_a_group_whose_fresh_connection_is_lost_too_fails_closed(
    engine: Engine, log: MessageLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Retried once only: the fresh connection dying before COMMIT as well fails the group.
    await fill(log, 2)
    attempts = _backend_lost_at_insert(engine, log, monkeypatch, after_insert=False)
    with pytest.raises(MessageLogError) as caught:
        await log.append(entry(3), error_code=CP)
    assert caught.value.code == CP
    assert isinstance(caught.value.__cause__, sa.exc.OperationalError)
    assert len(attempts) == 2 and attempts[0] != attempts[1]
    monkeypatch.undo()
    assert (await log.append(entry(3), error_code=CP)).sequence == 3
    assert (await log.verify()).count == 3


@postgres_only
async def test_a_connection_lost_at_commit_fails_the_group_and_rereads_the_head(
    engine: Engine, log: MessageLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After the INSERT the COMMIT's outcome is unknown: no retry, the group fails closed.
    await fill(log, 2)
    attempts = _backend_lost_at_insert(engine, log, monkeypatch, after_insert=True)
    with pytest.raises(MessageLogError) as caught:
        await log.append(entry(3), error_code=SP)
    assert caught.value.code == SP
    assert len(attempts) == 1
    monkeypatch.undo()
    assert log._head is None  # to be re-read
    record = await log.append(entry(4), error_code=SP)
    assert record.sequence == 3  # the lost transaction did not commit
    report = await log.verify()
    assert (report.count, report.last_hash) == (3, record.record_hash)


async def test_a_refused_insert_is_not_retried(engine: Engine, log: MessageLog,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Only a lost connection is retried; a statement the database refuses fails at once.
    await fill(log, 1)
    calls = []
    real = log._insert.execute

    def counting(connection: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        calls.append(len(rows))
        real(connection, rows)

    monkeypatch.setattr(log._insert, "execute", counting)
    _refuse_inserts(engine)
    with pytest.raises(MessageLogError):
        await log.append(entry(2), error_code=SP)
    assert calls == [1]


async def test_missing_table_fails_writes_and_reads(engine: Engine, log: MessageLog) -> None:
    await fill(log, 1)
    execute(engine, "DROP TABLE message_log")
    with pytest.raises(MessageLogError) as caught:
        await log.append(entry(2), error_code=CP)
    assert caught.value.code == CP
    with pytest.raises(MessageLogError) as read_caught:
        await log.records()
    assert read_caught.value.code == "server.clientproxy.internal_error"
    with pytest.raises(MessageLogError):
        await log.verify()
    with pytest.raises(MessageLogError):
        log.reader().records_between(0, None, 10)


@pytest.mark.parametrize("via_thread", [False, True])
async def test_append_after_close_fails_closed(log: MessageLog, via_thread: bool,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    if via_thread:
        _through_the_thread(log, monkeypatch)
    log.close()
    with pytest.raises(MessageLogError) as caught:
        await log.append(entry(1), error_code=SP)
    assert caught.value.code == SP


def _commit_threads(log: MessageLog, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The threads the log's commits run on, from now on, in order."""
    threads = []
    real = log._commit_group

    def where(entries: Sequence[LogEntry]) -> list[StoredRecord]:
        threads.append(threading.get_ident())
        return real(entries)

    monkeypatch.setattr(log._writer, "_commit_group", where)
    return threads


async def test_records_are_committed_on_the_loops_thread_on_sqlite_only(
    engine: Engine, log: MessageLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = _commit_threads(log, monkeypatch)
    await fill(log, 2)
    together = await asyncio.gather(*[log.append(entry(i), error_code=SP) for i in (3, 4, 5)])
    here = threading.get_ident()
    if engine.dialect.name == "sqlite":
        # one commit per record appended alone, one for the three appended in one turn
        assert threads == [here] * 3
    else:  # PostgreSQL: the writer thread, so that its round trips never block the loop
        assert here not in threads
    assert [r.sequence for r in together] == [3, 4, 5]
    # durable and chained like any other: read back through a connection of its own
    fresh = create_db_engine(engine.url.render_as_string(hide_password=False))
    try:
        reopened = MessageLog(fresh)
        try:
            report = await reopened.verify()
        finally:
            reopened.close()
    finally:
        fresh.dispose()
    assert report.count == 5


async def test_a_record_waits_for_a_busy_writer_thread(
    engine: Engine, log: MessageLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = _commit_threads(log, monkeypatch)
    await fill(log, 1)
    release = _hold_writer(log)  # stamping a batch, say
    pending = asyncio.ensure_future(log.append(entry(2), error_code=CP))
    await _when_queued(log, 1)
    assert not pending.done()  # neither committed beside the writer nor ahead of it
    release.set()
    assert (await pending).sequence == 2
    assert threads[-1] != threading.get_ident()
    assert (await log.verify()).count == 2


async def test_append_requires_a_logging_code(log: MessageLog) -> None:
    with pytest.raises(ValueError):
        await log.append(entry(1), error_code="server.serverproxy.internal_error")  # type: ignore[arg-type]


# -- engine creation


def test_sqlite_engine_is_durable(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'ss.db'}")
    try:
        create_tables(engine)
        with engine.connect() as connection:
            pragma = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
    finally:
        engine.dispose()
    assert pragma == {"journal_mode": "wal", "synchronous": 2, "busy_timeout": 5000,
                      "foreign_keys": 1}


def test_sqlite_log_sequence_is_the_rowid(tmp_path: Path) -> None:
    """INTEGER PRIMARY KEY: a record writes the table's B-tree, no separate key index."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'ss.db'}")
    try:
        create_tables(engine)
        with engine.connect() as connection:
            origins = [row[3] for row in connection.exec_driver_sql(
                "PRAGMA index_list(message_log)")]
            declared = {row[1]: row[2] for row in connection.exec_driver_sql(
                "PRAGMA table_info(message_log)")}
    finally:
        engine.dispose()
    assert declared["sequence"] == "INTEGER"
    assert "pk" not in origins  # a BIGINT key would have its own index (origin "pk")


@pytest.mark.parametrize(
    "url",
    ["postgresql://u@db.example/x", "postgres://u@db.example/x",
     "postgresql+psycopg://u@db.example/x"],
)
def test_postgresql_urls_use_psycopg3(url: str) -> None:
    engine = create_db_engine(url)
    assert engine.url.drivername == "postgresql+psycopg"
    engine.dispose()


@pytest.mark.parametrize(
    "url", ["mysql://u@h/x", "sqlite://", "sqlite:///:memory:", "not a url", ""]
)
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        create_db_engine(url)


# -- time-stamp batches


async def _stamp(log: MessageLog, tsa: TimeStampAuthority, at: datetime,
                 limit: int = 100) -> TimestampBatch:
    plan = plan_batch(await log.unstamped(limit))
    reply = tsa.respond(timestamp_request(plan.root, nonce=1), at, serial=1)
    der = parse_timestamp_response(reply, data_hash=plan.root, nonce=1)
    token = verify_timestamp_token(der, data_hash=plan.root, tsa_certs=[tsa.certificate])
    return await log.add_batch(plan, token)


async def test_batches_are_stored_with_every_path(
    log: MessageLog, tsa: TimeStampAuthority, pki_now: datetime
) -> None:
    await fill(log, 5)
    first = await _stamp(log, tsa, pki_now, limit=3)
    assert (first.id, first.first_sequence, first.last_sequence) == (1, 1, 3)
    assert [r.sequence for r in await log.unstamped(10)] == [4, 5]
    await fill(log, 2)  # records 6 and 7
    second = await _stamp(log, tsa, pki_now + timedelta(seconds=1))
    assert (second.id, second.first_sequence, second.last_sequence) == (2, 4, 7)
    assert await log.unstamped(10) == []

    batches = await log.batches()
    assert batches == [first, second]
    by_id = {b.id: b for b in batches}
    for batch in batches:
        verify_batch(batch, [tsa.certificate])
    records = await log.records()
    assert [r.stamp.batch_id if r.stamp else None for r in records] == [1, 1, 1, 2, 2, 2, 2]
    for record in records:
        assert record.stamp is not None
        verify_record_stamp(record, by_id[record.stamp.batch_id])
    assert (await log.verify()).count == 7  # stamping does not touch the chain


async def test_a_record_is_stamped_once(
    log: MessageLog, tsa: TimeStampAuthority, pki_now: datetime
) -> None:
    await fill(log, 2)
    plan = plan_batch(await log.unstamped(10))
    await _stamp(log, tsa, pki_now)
    token_der = (await log.batches())[0].token
    token = verify_timestamp_token(token_der, data_hash=plan.root, tsa_certs=[tsa.certificate])
    with pytest.raises(MessageLogError):
        await log.add_batch(plan, token)
    assert len(await log.batches()) == 1


async def test_a_plan_overlapping_a_stamped_record_changes_nothing(
    log: MessageLog, tsa: TimeStampAuthority, pki_now: datetime
) -> None:
    await fill(log, 2)
    await _stamp(log, tsa, pki_now)
    await fill(log, 2)  # records 3 and 4, unstamped
    plan = plan_batch((await log.records())[1:])  # 2 (stamped), 3, 4
    reply = tsa.respond(timestamp_request(plan.root, nonce=1), pki_now, serial=2)
    der = parse_timestamp_response(reply, data_hash=plan.root, nonce=1)
    token = verify_timestamp_token(der, data_hash=plan.root, tsa_certs=[tsa.certificate])
    with pytest.raises(MessageLogError, match="records 2-4: 1 missing or already stamped"):
        await log.add_batch(plan, token)
    assert len(await log.batches()) == 1
    assert [r.sequence for r in await log.unstamped(10)] == [3, 4]


async def test_altered_merkle_path_is_detected(
    engine: Engine, log: MessageLog, tsa: TimeStampAuthority, pki_now: datetime
) -> None:
    await fill(log, 4)
    batch = await _stamp(log, tsa, pki_now)
    execute(engine, "UPDATE message_log SET merkle_path = :v WHERE sequence = 3",
            v=b"\x00" * 64)
    records = await log.records()
    verify_record_stamp(records[1], batch)
    with pytest.raises(StampInvalidError) as caught:
        verify_record_stamp(records[2], batch)
    assert caught.value.sequence == 3


# -- encryption at rest

K1 = Keyring({"k1": b"\x01" * 32}, "k1")
K12 = Keyring({"k1": b"\x01" * 32, "k2": b"\x02" * 32}, "k2")


def _raw(engine: Engine, sequence: int) -> tuple[bytes, bytes, str | None]:
    with engine.connect() as connection:
        row = connection.execute(sa.text(
            "SELECT header_part, body, key_id FROM message_log WHERE sequence = :s"),
            {"s": sequence}).one()
    return bytes(row[0]), bytes(row[1]), row[2]


async def test_encrypted_log_stores_ciphertext_and_reads_plaintext(
    engine: Engine, tmp_path: Path
) -> None:
    plain_engine = create_db_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    create_tables(plain_engine)
    encrypted, plain = MessageLog(engine, keyring=K1), MessageLog(plain_engine)
    try:
        stored = [await encrypted.append(entry(i), error_code=SP) for i in (1, 2)]
        clear = [await plain.append(entry(i), error_code=SP) for i in (1, 2)]
        # the same chain, encrypted or not: hashes are over the plaintext
        assert [r.record_hash for r in stored] == [r.record_hash for r in clear]
        header, body, key_id = _raw(engine, 1)
        assert key_id == "k1"
        assert b"binary body" not in body and b"hdr-" not in header
        assert _raw(plain_engine, 1)[1] == entry(1).body
        assert await encrypted.records() == stored
        assert (await encrypted.verify()).count == 2
    finally:
        encrypted.close()
        plain.close()
        plain_engine.dispose()


async def test_rotation_keeps_old_records_readable(engine: Engine) -> None:
    first = MessageLog(engine, keyring=K1)
    try:
        await first.append(entry(1), error_code=SP)
    finally:
        first.close()
    rotated = MessageLog(engine, keyring=K12)
    try:
        await rotated.append(entry(2), error_code=SP)
        assert [_raw(engine, s)[2] for s in (1, 2)] == ["k1", "k2"]
        assert [r.entry.body for r in await rotated.records()] == [entry(1).body, entry(2).body]
        assert (await rotated.verify()).count == 2
    finally:
        rotated.close()
    without_k1 = MessageLog(engine, keyring=Keyring({"k2": b"\x02" * 32}, "k2"))
    keyless = MessageLog(engine)
    try:
        for log in (without_k1, keyless):
            with pytest.raises(MessageLogError, match="record 1"):
                await log.records()
    finally:
        without_k1.close()
        keyless.close()


@pytest.mark.parametrize(("index", "sql"), [
    (1, "UPDATE message_log SET body = :v WHERE sequence = 3"),
    (0, "UPDATE message_log SET header_part = :v WHERE sequence = 3"),
])
async def test_altered_ciphertext_is_reported_at_its_record(engine: Engine, index: int,
                                                            sql: str) -> None:
    log = MessageLog(engine, keyring=K1)
    try:
        await fill(log, 4)
        # a valid ciphertext from another record does not decrypt here either
        execute(engine, sql, v=_raw(engine, 2)[index])
        with pytest.raises(ChainBrokenError) as caught:
            await log.verify()
        assert caught.value.sequence == 3
        assert "does not decrypt" in caught.value.reason
    finally:
        log.close()


# -- large bodies: stored in chunks beside their record, never whole in memory

# 2.5 MiB and a bit, no two chunks alike: three chunks
BIG = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(80 * 1024)) + b"tail"


class Pieces:
    """A body reader yielding odd-sized pieces, as a spool file read might."""

    def __init__(self, data: bytes, size: int = 300 * 1024) -> None:
        self.data, self.size = data, size

    def chunks(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), self.size):
            yield self.data[start:start + self.size]


def large(data: bytes = BIG) -> ExternalBody:
    return ExternalBody(BodyDigest.of(data), Pieces(data))


def _chunks(engine: Engine) -> list[tuple[str, int, bytes]]:
    with engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT body_id, \"index\", data FROM message_body_chunk ORDER BY body_id, \"index\""))
        return [(r[0], r[1], bytes(r[2])) for r in rows]


@pytest.mark.parametrize("keyring", [None, K1], ids=["clear", "encrypted"])
async def test_a_large_body_is_stored_in_chunks_and_read_back(
    engine: Engine, keyring: Keyring | None
) -> None:
    log = MessageLog(engine, keyring=keyring)
    try:
        await log.append(entry(1), error_code=CP)
        stored = await log.append(entry(2, body=large()), error_code=CP)
        # the same record hash as with the body inline: the chain does not know the difference
        assert stored.record_hash == chain_record(entry(2, body=BIG), 2,
                                                  stored.prev_hash).record_hash
        _, body, _ = _raw(engine, 2)
        assert body == b""
        chunks = _chunks(engine)
        assert [c[1] for c in chunks] == [0, 1, 2]
        assert len({c[0] for c in chunks}) == 1
        assert (b"".join(c[2] for c in chunks) == BIG) == (keyring is None)
        (record,) = await log.records(query_id="q-2")
        assert isinstance(record.entry.body, ExternalBody)
        assert record.entry.body.digest == BodyDigest.of(BIG)
        assert read_all(record.entry.body) == BIG
        assert record.record_hash == stored.record_hash
        assert (await log.verify()).count == 2
    finally:
        log.close()


@pytest.mark.parametrize(("keyring", "alter", "why"), [
    (None, "UPDATE message_body_chunk SET data = :v WHERE \"index\" = 1",
     "does not match its hash"),
    (None, "DELETE FROM message_body_chunk WHERE \"index\" = 2", "does not match its hash"),
    (K1, "UPDATE message_body_chunk SET data = :v WHERE \"index\" = 1", "does not decrypt"),
    # cut short after a chunk that does not say it is the last
    (K1, "DELETE FROM message_body_chunk WHERE \"index\" = 2", "does not decrypt"),
    (K1, "DELETE FROM message_body_chunk WHERE \"index\" = 1", "missing"),
], ids=["clear-altered", "clear-cut", "encrypted-altered", "encrypted-cut", "encrypted-gap"])
async def test_an_altered_large_body_breaks_its_record(
    engine: Engine, keyring: Keyring | None, alter: str, why: str
) -> None:
    log = MessageLog(engine, keyring=keyring)
    try:
        await log.append(entry(1), error_code=CP)
        await log.append(entry(2, body=large()), error_code=CP)
        await log.append(entry(3), error_code=CP)
        # another chunk's valid bytes: right length, wrong place
        execute(engine, alter, v=_chunks(engine)[0][2])
        with pytest.raises(ChainBrokenError) as caught:
            await log.verify()
        assert caught.value.sequence == 2
        assert why in caught.value.reason
    finally:
        log.close()


async def test_a_large_body_whose_record_fails_leaves_no_chunks(engine: Engine,
                                                               log: MessageLog) -> None:
    _refuse_inserts(engine)
    with pytest.raises(MessageLogError) as caught:
        await log.append(entry(1, body=large()), error_code=SP)
    assert caught.value.code == SP
    assert _chunks(engine) == [] and _pending(engine) == set()
    _allow_inserts(engine)
    await log.append(entry(2, body=large()), error_code=SP)
    assert len(_chunks(engine)) == 3


async def test_a_body_shorter_than_its_digest_says_is_not_logged(engine: Engine,
                                                                log: MessageLog) -> None:
    lying = ExternalBody(BodyDigest.of(BIG), Pieces(BIG[:-1]))
    with pytest.raises(MessageLogError):
        await log.append(entry(1, body=lying), error_code=CP)
    assert _chunks(engine) == []
    assert await log.records() == []


async def test_purging_records_removes_their_chunks(
    engine: Engine, log: MessageLog, tsa: TimeStampAuthority, pki_now: datetime
) -> None:
    for i in (1, 2, 3):
        await log.append(entry(i, body=large(BIG + bytes([i]))), error_code=CP)
    await _stamp(log, tsa, pki_now)
    assert await log.purge_through(2) == 2
    assert len({c[0] for c in _chunks(engine)}) == 1  # one body's chunks are left
    (record,) = await log.records()
    assert isinstance(record.entry.body, ExternalBody)
    assert read_all(record.entry.body) == BIG + b"\x03"


async def test_the_chunks_of_a_logged_body_are_never_dropped(engine: Engine,
                                                            log: MessageLog) -> None:
    stored = await log.append(entry(1, body=large()), error_code=CP)
    assert isinstance(stored.entry.body, ExternalBody)
    (body_id,) = {c[0] for c in _chunks(engine)}
    # e.g. a commit that reported failure but had committed: the clean-up must not bite
    await asyncio.to_thread(log._drop_body, body_id)
    assert len(_chunks(engine)) == 3
    assert (await log.verify()).count == 1


# -- orphaned bodies: chunks whose record never committed


def _pending(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(sa.text(
            "SELECT body_id FROM message_body_pending")).scalars())


def _store_without_record(log: MessageLog, data: bytes = BIG) -> str:
    """What a crash between a body's chunks and its record leaves behind."""
    store = log.body_store()
    for piece in Pieces(data).chunks():
        store.write(piece)
    store.finish()
    return store.body_id


@pytest.mark.parametrize("keyring", [None, K1], ids=["clear", "encrypted"])
async def test_the_chunks_a_crash_left_without_a_record_are_removed(
    engine: Engine, keyring: Keyring | None
) -> None:
    crashed = MessageLog(engine, keyring=keyring)
    orphan = await asyncio.to_thread(_store_without_record, crashed)
    crashed.close()
    log = MessageLog(engine, keyring=keyring)  # the restarted server
    try:
        stored = await log.append(entry(1, body=large(BIG + b"1")), error_code=CP)
        await log.append(entry(2), error_code=CP)
        assert _pending(engine) == {orphan}  # a committed record's body is not pending
        assert len({c[0] for c in _chunks(engine)}) == 2
        now = datetime.now(UTC)
        # young: it could be another process's body on its way
        assert await log.remove_orphan_bodies(now) == 0
        assert orphan in {c[0] for c in _chunks(engine)}
        assert await log.remove_orphan_bodies(now + ORPHAN_BODY_AGE) == 1
        assert orphan not in {c[0] for c in _chunks(engine)}
        assert len({c[0] for c in _chunks(engine)}) == 1 and _pending(engine) == set()
        assert (await log.verify()).count == 2
        record = (await log.records(query_id="q-1"))[0]
        assert record.record_hash == stored.record_hash
        assert read_all(record.entry.body) == BIG + b"1"
        assert await log.remove_orphan_bodies(now + 10 * ORPHAN_BODY_AGE) == 0
    finally:
        log.close()


async def test_a_body_on_its_way_is_never_removed(engine: Engine, log: MessageLog) -> None:
    data = BIG * 4  # eleven chunks: all but the last are committed while it arrives
    later = datetime.now(UTC) + 10 * ORPHAN_BODY_AGE
    store = log.body_store()
    await asyncio.to_thread(store.write, data)
    assert _pending(engine) == {store.body_id} and len(_chunks(engine)) == 10
    assert await log.remove_orphan_bodies(later) == 0  # still arriving
    reader = await asyncio.to_thread(store.finish)
    del store
    assert await log.remove_orphan_bodies(later) == 0  # complete, its record not yet written
    assert len(_chunks(engine)) == 11
    await log.append(entry(1, body=ExternalBody(BodyDigest.of(data), reader)), error_code=CP)
    del reader
    assert _pending(engine) == set()
    assert await log.remove_orphan_bodies(later) == 0  # logged: a record names it
    (record,) = await log.records()
    assert read_all(record.entry.body) == data
    # the same, let go of before its record: removed
    orphan = await asyncio.to_thread(_store_without_record, log)
    assert await log.remove_orphan_bodies(later) == 1
    assert orphan not in {c[0] for c in _chunks(engine)}
    assert (await log.verify()).count == 1


async def test_a_running_server_sweeps_at_start_and_then_periodically(
    engine: Engine, log: MessageLog
) -> None:
    orphan = await asyncio.to_thread(_store_without_record, log)
    sweep = asyncio.create_task(log.run_orphan_sweep(
        lambda: datetime.now(UTC) + 2 * ORPHAN_BODY_AGE, interval_seconds=0.05))

    async def removed(body_id: str) -> None:
        while body_id in {c[0] for c in _chunks(engine)}:
            await asyncio.sleep(0.02)

    try:
        for body in (orphan, await asyncio.to_thread(_store_without_record, log)):
            await asyncio.wait_for(removed(body), 30)
            assert body not in _pending(engine)
    finally:
        sweep.cancel()


async def test_a_pending_body_a_record_names_keeps_its_chunks(engine: Engine,
                                                             log: MessageLog) -> None:
    await log.append(entry(1, body=large()), error_code=CP)
    (body_id,) = {c[0] for c in _chunks(engine)}
    # a pending row that outlived its record's commit (it cannot, but if it did)
    execute(engine, "INSERT INTO message_body_pending (body_id, started_at) VALUES (:b, :t)",
            b=body_id, t=T0)
    restarted = MessageLog(engine)
    try:
        assert await restarted.remove_orphan_bodies(datetime.now(UTC)) == 0
        assert _pending(engine) == set() and len(_chunks(engine)) == 3
        assert (await restarted.verify()).count == 1
    finally:
        restarted.close()


async def test_unstamped_hashes_name_what_unstamped_returns(
    log: MessageLog, tsa: TimeStampAuthority, pki_now: datetime
) -> None:
    await fill(log, 4)
    await _stamp(log, tsa, pki_now, limit=1)
    unstamped = await log.unstamped(10)
    assert [r.sequence for r in unstamped] == [2, 3, 4]
    assert await log.unstamped_hashes(2) == [ChainCheckpoint(r.sequence, r.record_hash)
                                             for r in unstamped[:2]]
    assert plan_batch(await log.unstamped_hashes(10)) == plan_batch(unstamped)
