"""security_server.logtables: the message log's Core tables keep what the SQLModel classes
they replaced did -- aware times in, UTC out, naive times refused; the SQLite key a rowid."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from security_server.db import PG_TOAST_TUPLE_TARGET, create_tables
from security_server.logtables import ARCHIVE_FILE, MESSAGE_LOG

_ROW = {"number": 1, "name": "a.zip", "archive_hash": "0" * 64, "first_sequence": 1,
        "last_sequence": 2, "last_hash": "1" * 64}


def test_times_go_in_aware_and_come_back_in_utc(engine: Engine) -> None:
    helsinki = datetime(2026, 11, 27, 18, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    with engine.begin() as connection:
        connection.execute(ARCHIVE_FILE.insert().values(
            **_ROW, last_created_at=helsinki, created_at=helsinki.astimezone(UTC)))
        row = connection.execute(sa.select(ARCHIVE_FILE.c.last_created_at,
                                           ARCHIVE_FILE.c.created_at)).one()
    for value in row:
        assert value == helsinki
        assert value.tzinfo is UTC
    # and compared with times, as the archiver's retention query does
    with engine.connect() as connection:
        older = connection.execute(sa.select(sa.func.count()).select_from(ARCHIVE_FILE).where(
            ARCHIVE_FILE.c.last_created_at < helsinki + timedelta(seconds=1))).scalar_one()
    assert older == 1


def test_a_naive_time_is_refused(engine: Engine) -> None:
    naive = datetime(2026, 11, 27, 16, 30)
    with pytest.raises(sa.exc.StatementError, match="naive time"), engine.begin() as c:
        c.execute(ARCHIVE_FILE.insert().values(**_ROW, last_created_at=naive,
                                               created_at=naive))


def _dialect(url: str) -> sa.Dialect:
    return sa.create_engine(url).dialect  # an engine connects only when used


def test_the_sqlite_log_key_is_the_rowid() -> None:
    ddl = str(sa.schema.CreateTable(MESSAGE_LOG).compile(dialect=_dialect("sqlite://")))
    assert "sequence INTEGER NOT NULL" in ddl
    pg = str(sa.schema.CreateTable(MESSAGE_LOG).compile(dialect=_dialect("postgresql+psycopg://")))
    assert "sequence BIGINT NOT NULL" in pg


@pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)  # a PostgreSQL setting only
def test_log_records_are_stored_inline_on_postgresql(engine: Engine) -> None:
    """A usual record (about 3 KB) is neither compressed nor moved to a TOAST table; a long
    one still is; and creating the tables again changes nothing."""
    create_tables(engine)  # idempotent on an existing log
    signature = secrets.token_urlsafe(1600)
    row: dict[str, object] = {
        "prev_hash": "0" * 64, "record_hash": "1" * 64, "kind": "request",
        "direction": "outgoing", "client": "C", "service": "S", "header_part": b"{}",
        "body": b"", "signature": signature, "status": "ok", "created_at": datetime.now(UTC),
        "ocsp_responses": b""}
    with engine.begin() as connection:
        options = connection.execute(sa.text(
            "SELECT reloptions FROM pg_class WHERE oid = 'message_log'::regclass")).scalar()
        assert options == [f"toast_tuple_target={PG_TOAST_TUPLE_TARGET}"]
        toast = sa.text("SELECT pg_relation_size(reltoastrelid) FROM pg_class "
                        "WHERE oid = 'message_log'::regclass")
        connection.execute(MESSAGE_LOG.insert().values(sequence=1, query_id="usual", **row))
        assert connection.execute(toast).scalar() == 0
        assert connection.execute(sa.text(  # as it is, with its length word
            "SELECT pg_column_size(signature) FROM message_log")).scalar() == len(signature) + 4
        connection.execute(MESSAGE_LOG.insert().values(
            sequence=2, query_id="long", **{**row, "signature": secrets.token_urlsafe(12000)}))
        assert connection.execute(toast).scalar_one() > 0
