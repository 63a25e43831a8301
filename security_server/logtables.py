"""The message log's tables, as SQLAlchemy Core tables: ``message_log``, ``timestamp_batch``,
``message_body_chunk`` and ``message_body_pending`` (:mod:`security_server.messagelog`), and
``archive_file`` (:mod:`security_server.archiver`).

Core tables, not SQLModel classes: the log is written and read with Core statements and on
the driver's cursor, never as ORM objects, and a module that does not import sqlmodel (and
with it pydantic and SQLAlchemy's ORM) lets ``xchange ss verify-log`` start about 0.2 s
sooner (docs/performance.md, verify-log, "Start-up").  The columns, their types, keys and
indexes are those the SQLModel classes declared until then: the same DDL on SQLite and
PostgreSQL, and times still come back aware, in UTC (:class:`UTCDateTime`).

Created by :func:`security_server.db.create_tables` (:data:`LOG_TABLES`), on their own
:data:`LOG_METADATA`: the configuration store's Alembic history (``ss_*`` tables, on
SQLModel's metadata) does not manage them.  Nothing here opens a connection.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.sql.operators import OperatorType

__all__ = ["ARCHIVE_FILE", "BODY_CHUNK", "LOG_METADATA", "LOG_TABLES", "MESSAGE_LOG",
           "PENDING_BODY", "TIMESTAMP_BATCH", "UTCDateTime"]


class UTCDateTime(sa.TypeDecorator[datetime]):
    """An aware time, stored with its zone where the database has one (PostgreSQL's
    ``timestamptz``; SQLite's text form, in UTC) and read back aware, in UTC; a naive time
    is refused.  What SQLModel made of a ``datetime`` field, so that the log's times are
    written and read exactly as before."""

    impl = sa.DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def coerce_compared_value(self, op: OperatorType | None, value: Any
                              ) -> sa.types.TypeEngine[Any]:
        return sa.Interval() if isinstance(value, timedelta) else self

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect
                           ) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError("a naive time given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect
                             ) -> datetime | None:
        if value is None:
            return None
        # Databases without time zones (SQLite) hold UTC without an offset.
        return value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)


LOG_METADATA: Final = sa.MetaData()
"""The message log's tables (and the archive's), and only them."""

_HASH: Final = 64
"""The length of a hex SHA-256 (record and archive hashes)."""

TIMESTAMP_BATCH: Final = sa.Table(
    "timestamp_batch", LOG_METADATA,
    # Numbered by the log's writer, never by the database.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("first_sequence", sa.BigInteger, nullable=False),
    sa.Column("last_sequence", sa.BigInteger, nullable=False),
    sa.Column("root", sa.LargeBinary, nullable=False),
    sa.Column("token", sa.LargeBinary, nullable=False),
    sa.Column("gen_time", UTCDateTime, nullable=False, index=True),
)
"""One :class:`~xchange.logbatch.TimestampBatch` a row."""

MESSAGE_LOG: Final = sa.Table(
    "message_log", LOG_METADATA,
    # The chain's own number is the key: assigned by the writer, never by the database.
    # On SQLite it is declared INTEGER, which makes it the table's rowid: one B-tree to
    # write per record instead of the table's and a separate key index (BIGINT would be).
    sa.Column("sequence", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
              primary_key=True, autoincrement=False),
    sa.Column("prev_hash", sa.String(_HASH), nullable=False),
    sa.Column("record_hash", sa.String(_HASH), nullable=False),
    sa.Column("query_id", sa.String, nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("direction", sa.String(16), nullable=False),
    sa.Column("client", sa.String, nullable=False),
    sa.Column("service", sa.String, nullable=False),
    sa.Column("user_id", sa.String),
    sa.Column("issue", sa.String),
    sa.Column("header_part", sa.LargeBinary, nullable=False,
              doc="The header part; encrypted if key_id is set."),
    sa.Column("body", sa.LargeBinary, nullable=False,
              doc="The body; encrypted if key_id is set."),
    sa.Column("key_id", sa.String(64),
              doc="The id of the key header_part and body are encrypted with; NULL: clear."),
    # A large body's id in message_body_chunk (body is then empty); NULL: inline.  Indexed
    # where not NULL (_BODY_ID_INDEX; on a table made before the index, by the migration
    # 0003): whether a record names a body is asked per body dropped and swept.
    sa.Column("body_id", sa.String(32)),
    sa.Column("signature", sa.String, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error_code", sa.String),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("ocsp_responses", sa.LargeBinary, nullable=False,
              doc="The stapled DER OCSP responses, as xchange.messagelog.encode_der_list."),
    sa.Column("batch_id", sa.Integer, sa.ForeignKey("timestamp_batch.id"), index=True,
              doc="The time-stamp batch covering the record; NULL until it is stamped."),
    sa.Column("merkle_path", sa.LargeBinary,
              doc="The record's audit path to its batch's root: 32-byte hashes, leaf upwards."),
)
"""One :class:`~xchange.messagelog.StoredRecord` a row, flattened."""

_BODY_ID_INDEX: Final = sa.DDL(  # type: ignore[no-untyped-call]
    "CREATE INDEX ix_message_log_body_id ON message_log (body_id) WHERE body_id IS NOT NULL")
"""Only records of large bodies: a record with its body inline (nearly all) writes no page
of this index; ``body_id = ...`` implies NOT NULL, so lookups use it.  Created with the
table, in the same SQL on SQLite and PostgreSQL.  Written as DDL, not as an ``sa.Index``
with ``sqlite_where``/``postgresql_where``: those arguments load the PostgreSQL dialect when
this module is imported (about 40 ms, for an audit of an SQLite log too)."""
sa.event.listen(MESSAGE_LOG, "after_create", _BODY_ID_INDEX)

BODY_CHUNK: Final = sa.Table(
    "message_body_chunk", LOG_METADATA,
    sa.Column("body_id", sa.String(32), primary_key=True),
    sa.Column("index", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
"""One piece of a large body (see :mod:`security_server.messagelog`); encrypted like its
record."""

PENDING_BODY: Final = sa.Table(
    "message_body_pending", LOG_METADATA,
    sa.Column("body_id", sa.String(32), primary_key=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
)
"""A large body whose chunks are (being) stored and whose record is not committed yet:
written with its first chunks, deleted with its record."""

ARCHIVE_FILE: Final = sa.Table(
    "archive_file", LOG_METADATA,
    sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("archive_hash", sa.String(_HASH), nullable=False),
    sa.Column("first_sequence", sa.BigInteger, nullable=False),
    sa.Column("last_sequence", sa.BigInteger, nullable=False),
    sa.Column("last_hash", sa.String(_HASH), nullable=False),
    sa.Column("last_created_at", UTCDateTime, nullable=False,
              doc="When the archive's newest record was logged (what retention is "
                  "measured from)."),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
"""An archive this server made (:mod:`security_server.archiver`)."""

LOG_TABLES: Final = (TIMESTAMP_BATCH, MESSAGE_LOG, BODY_CHUNK, PENDING_BODY, ARCHIVE_FILE)
"""Every table of the message log, in the order they are created."""
