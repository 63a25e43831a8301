"""The security server's message log: durable, hash-chained storage of every message.

Stores the core's :class:`~xchange.messagelog.StoredRecord` in the ``message_log`` table
(SQLite or PostgreSQL, see :mod:`security_server.db`) and implements the design's fail-closed
rule: :meth:`MessageLog.append` returns only once the record is committed, and raises
:class:`MessageLogError` (``server.clientproxy.logging_failed`` or
``server.serverproxy.logging_failed``, as the caller says) if it is not, so the message is
not passed on.

Ordering: sequence numbers and ``prev_hash`` are assigned on one dedicated writer thread,
so the chain is strictly ordered however many coroutines append at once and the event loop
never blocks on disk.  The writer keeps the chain head in memory and reads it back from the
database at start and after any failed write (the failure may have struck after the commit).

Group commit: the writer takes every record waiting when it is free (up to
:data:`MAX_BATCH`), chains them in arrival order and commits them in one transaction -- one
fsync for the batch instead of one per record.  Each ``append`` still returns only after the
commit that holds its record; if that commit fails, every record of the batch fails closed.
A record waits for at most the commit in progress: no timer holds a batch open, so a lone
message costs what it did before and a busy server gets bigger batches.

Not done here: time-stamping, encryption at rest, archiving, and several processes writing
one log (a second writer's records collide on the sequence number and fail closed; per-node
logs come with a ``log_id`` column later).  Tables are created by
:func:`security_server.db.create_tables` until Alembic migrations take over.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from datetime import datetime
from typing import Final, Literal, cast, get_args

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, col, select
from sqlmodel.sql.expression import SelectOfScalar

from xchange.errors import XRoadError
from xchange.messagelog import (
    GENESIS,
    ChainBrokenError,
    ChainCheckpoint,
    ChainReport,
    Direction,
    Kind,
    LogEntry,
    Status,
    StoredRecord,
    chain_record,
    verify_chain,
)

__all__ = [
    "LoggingFailedCode",
    "MessageLog",
    "MessageLogError",
    "MessageRecord",
]

LoggingFailedCode = Literal[
    "server.clientproxy.logging_failed", "server.serverproxy.logging_failed"
]
"""The code of a failed write: the client proxy's or the server proxy's."""

_VERIFY_BATCH: Final = 1000
MAX_BATCH: Final = 512
"""Most records committed in one transaction by the writer."""

_Job = tuple[LogEntry, "Future[StoredRecord]"]


class MessageLogError(XRoadError):
    """The message log could not be written (code given by the caller) or read.

    A read failure carries the generic internal-error code.  The database's own error is
    the ``__cause__``; it is not put in the message, which may reach a client.
    """


class MessageRecord(SQLModel, table=True):
    """One row of ``message_log``: a :class:`~xchange.messagelog.StoredRecord`, flattened."""

    __tablename__ = "message_log"

    # The chain's own number is the key: assigned by the writer, never by the database.
    sequence: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    prev_hash: str = Field(max_length=64)
    record_hash: str = Field(max_length=64)
    query_id: str = Field(index=True)
    kind: str = Field(max_length=16)
    direction: str = Field(max_length=16)
    client: str
    service: str
    user_id: str | None = None
    issue: str | None = None
    header_part: bytes
    body: bytes
    signature: str
    status: str = Field(max_length=16)
    error_code: str | None = None
    created_at: datetime


class MessageLog:
    """The message log over one database.  The engine is the caller's to dispose of."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closing = threading.Lock()
        self._closed = False
        # Head of the chain; touched only on the writer thread.  None means "not known":
        # read it from the database before the next write.
        self._head: ChainCheckpoint | None = None
        # A daemon: a process that exits without close() must not hang on it.  Records it
        # had not committed were never acknowledged.
        self._writer = threading.Thread(target=self._write_loop, name="messagelog-writer",
                                        daemon=True)
        self._writer.start()

    async def append(self, entry: LogEntry, *, error_code: LoggingFailedCode) -> StoredRecord:
        """Chain ``entry`` after the last record and commit it; return the stored record.

        Raises :class:`MessageLogError` with ``error_code`` if the record is not durably
        written, for whatever reason; the message must then not be passed on.
        """
        if error_code not in get_args(LoggingFailedCode):
            raise ValueError(f"not a logging failure code: {error_code!r}")
        future: Future[StoredRecord] = Future()
        with self._closing:
            if self._closed:
                raise MessageLogError("the message log is closed", code=error_code)
            self._jobs.put((entry, future))
        try:
            return await asyncio.wrap_future(future)
        except Exception as exc:
            # Anything -- a full disk, a lost connection, a constraint, a trigger, a corrupt
            # head -- means the record may not be there: fail closed.
            raise MessageLogError("the message log could not be written", code=error_code) from exc

    async def records(self, *, query_id: str | None = None) -> list[StoredRecord]:
        """All records in sequence order, or those of one X-Road message id.

        Raises :class:`~xchange.messagelog.ChainBrokenError` for a row that is not a valid
        record (altered in the database) and :class:`MessageLogError` if reading fails.
        """
        statement = select(MessageRecord).order_by(col(MessageRecord.sequence))
        if query_id is not None:
            statement = statement.where(MessageRecord.query_id == query_id)
        return await asyncio.to_thread(self._read, statement)

    async def verify(self) -> ChainReport:
        """Verify the whole chain from the first record, read in batches.

        Raises :class:`~xchange.messagelog.ChainBrokenError` at the first bad record and
        :class:`MessageLogError` if reading fails.
        """
        return await asyncio.to_thread(verify_chain, self._iter_all())

    def close(self) -> None:
        """Wait for pending writes to finish, then refuse new ones."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
            self._jobs.put(None)
        self._writer.join()

    def _write_loop(self) -> None:
        """The writer thread: take what is waiting, commit it as one batch, repeat."""
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch = [job]
            while len(batch) < MAX_BATCH:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._commit(batch)
                    return
                batch.append(job)
            self._commit(batch)

    def _commit(self, batch: Sequence[_Job]) -> None:
        # A caller that was cancelled while waiting does not pass its message on; its record
        # is not written either.
        live = [(entry, f) for entry, f in batch if f.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            records = self._append_sync([entry for entry, _ in live])
        except Exception as exc:
            for _, f in live:
                f.set_exception(exc)
            return
        for (_, f), record in zip(live, records, strict=True):
            f.set_result(record)

    def _append_sync(self, entries: Sequence[LogEntry]) -> list[StoredRecord]:
        head, self._head = self._head, None
        records = []
        with Session(self._engine) as session:
            if head is None:
                head = _read_head(session)
            for entry in entries:
                record = chain_record(entry, head.sequence + 1, head.record_hash)
                records.append(record)
                head = ChainCheckpoint(record.sequence, record.record_hash)
            session.execute(sa.insert(MessageRecord), [_to_params(r) for r in records])
            session.commit()
        self._head = head
        return records

    def _read(self, statement: SelectOfScalar[MessageRecord]) -> list[StoredRecord]:
        try:
            with Session(self._engine) as session:
                try:
                    rows = session.exec(statement).all()
                except (ValueError, TypeError) as exc:
                    # A value its column type cannot decode (SQLite stores anything in any
                    # column): an altered record, to be reported like any other.
                    sequence = _find_undecodable(session, statement)
                    raise ChainBrokenError(sequence, "stored record cannot be decoded") from exc
                return [_to_record(row) for row in rows]
        except SQLAlchemyError as exc:
            raise MessageLogError("the message log could not be read") from exc

    def iter_records(self) -> Iterator[StoredRecord]:
        """Every record in sequence order, read in batches (blocking: call it off the event
        loop).  Raises like :meth:`records`."""
        return self._iter_all()

    def _iter_all(self) -> Iterator[StoredRecord]:
        # Keyset pagination, one short transaction per batch: constant memory, no
        # long-lived cursor or snapshot, and appends may go on meanwhile.
        after = 0
        while True:
            batch = self._read(
                select(MessageRecord)
                .where(col(MessageRecord.sequence) > after)
                .order_by(col(MessageRecord.sequence))
                .limit(_VERIFY_BATCH)
            )
            yield from batch
            if len(batch) < _VERIFY_BATCH:
                return
            after = batch[-1].sequence


def _read_head(session: Session) -> ChainCheckpoint:
    row = session.exec(
        select(MessageRecord.sequence, MessageRecord.record_hash)
        .order_by(col(MessageRecord.sequence).desc())
        .limit(1)
    ).first()
    if row is None:
        return GENESIS
    return ChainCheckpoint(row[0], row[1])


def _find_undecodable(session: Session, statement: SelectOfScalar[MessageRecord]) -> int:
    # Only on the failure path: load the statement's rows one by one to name the bad one.
    sequences = session.scalars(statement.with_only_columns(col(MessageRecord.sequence))).all()
    for sequence in sequences:
        try:
            session.get(MessageRecord, sequence)
        except (ValueError, TypeError):
            return sequence
    raise MessageLogError("the message log could not be read")


def _to_params(record: StoredRecord) -> dict[str, object]:
    e = record.entry
    return {
        "sequence": record.sequence,
        "prev_hash": record.prev_hash,
        "record_hash": record.record_hash,
        "query_id": e.query_id,
        "kind": e.kind,
        "direction": e.direction,
        "client": e.client,
        "service": e.service,
        "user_id": e.user_id,
        "issue": e.issue,
        "header_part": e.header_part,
        "body": e.body,
        "signature": e.signature,
        "status": e.status,
        "error_code": e.error_code,
        "created_at": e.created_at,
    }


def _to_record(row: MessageRecord) -> StoredRecord:
    try:
        entry = LogEntry(
            query_id=row.query_id,
            # LogEntry checks these literals itself; the casts only tell mypy.
            kind=cast(Kind, row.kind),
            direction=cast(Direction, row.direction),
            client=row.client,
            service=row.service,
            user_id=row.user_id,
            issue=row.issue,
            header_part=row.header_part,
            body=row.body,
            signature=row.signature,
            status=cast(Status, row.status),
            error_code=row.error_code,
            created_at=row.created_at,
        )
        return StoredRecord(
            entry=entry,
            sequence=row.sequence,
            prev_hash=row.prev_hash,
            record_hash=row.record_hash,
        )
    except (TypeError, ValueError) as exc:
        raise ChainBrokenError(row.sequence, f"stored record is malformed: {exc}") from exc
