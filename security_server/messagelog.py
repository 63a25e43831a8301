"""The security server's message log: durable, hash-chained storage of every message.

Stores the core's :class:`~xchange.messagelog.StoredRecord` in the ``message_log`` table
(SQLite or PostgreSQL, see :mod:`security_server.db`) and implements the design's fail-closed
rule: awaiting :meth:`MessageLog.append` returns only once the record is committed, and raises
:class:`MessageLogError` (``server.clientproxy.logging_failed`` or
``server.serverproxy.logging_failed``, as the caller says) if it is not, so the message is
not passed on.

Ordering and group commit: sequence numbers and ``prev_hash`` are assigned by one writer at
a time (:class:`~security_server.logwriter.GroupWriter`), so the chain is strictly ordered
however many coroutines append at once.  On PostgreSQL the writer is a dedicated thread, so
the event loop never waits for the database's round trips.  On SQLite (a local file) the
records a loop appends in one of its turns are committed together on the loop's own thread
at its next turn, while the writer thread is idle (:meth:`GroupWriter.append_on_loop`): one
flush per turn, without the hand-overs between two threads.
Either way, the records waiting are committed in one transaction (one WAL flush on SQLite
with ``synchronous=FULL``, one commit on PostgreSQL); each appender is
answered only after that commit, and if it fails every appender in the group gets
``logging_failed``.  Chain order is commit order.  The writer keeps the chain head in memory
and reads it back from the database at start and after any failed write (the failure may
have struck after the commit).
The writer keeps its connection between groups (SQLite and PostgreSQL); one found dead
before COMMIT was sent (a database restart, a dropped connection) is replaced and the group
written again once, as it surely did not commit; a failure during or after COMMIT fails
the group closed.

Time-stamp batches (:class:`~xchange.logbatch.TimestampBatch`) are kept in the
``timestamp_batch`` table; each record names its batch and carries its Merkle path once
stamped (:meth:`MessageLog.add_batch`, also on the writer thread).

Encryption at rest: given a :class:`~xchange.logcrypto.Keyring`, header parts and bodies
are stored encrypted with its current key (AES-256-GCM, bound to the record's hash) and the
row names the key id (``key_id``; NULL: stored in the clear).  Reading decrypts with the key
the row names; an undecryptable field is reported as a broken record, a missing key as a
read failure.  Hashes are over the plaintext, so the chain is the same either way.

Large bodies (docs/decisions.md, "Large bodies in the message log"): a body given as an
:class:`~xchange.body.ExternalBody` (a spooled body, over 1 MiB) is not put in its row.
:meth:`MessageLog.append` first copies it, chunk by chunk, into the ``message_body_chunk``
table under a random body id (encrypted chunk by chunk under the keyring, if there is
one; each chunk committed on its own, on a worker thread, so no write transaction waits
for the network while other messages' records are committed), then chains and commits the
record, whose ``body_id`` names the chunks and whose ``body`` is empty.  No step holds the
body whole.  Reading such a record reads the chunks back once to take their digest (so an
altered chunk breaks the record's hash like any other alteration) and hands the body on as
an external body that reads them again on demand.  Chunks of a record that failed to commit
are deleted; chunks go with their record when it is purged.

Orphaned chunks: a body's chunks are committed before its record, so a crash (or a failed
clean-up) in between leaves chunks no record names.  The first commit of a body's chunks
also writes a ``message_body_pending`` row (its id and when it started), and the
transaction that commits the record deletes that row: a pending row older than
:data:`ORPHAN_BODY_AGE` whose body no body store of this process still holds marks an
orphan, which :meth:`MessageLog.remove_orphan_bodies` deletes with its chunks -- at start
and every :data:`ORPHAN_SWEEP_SECONDS` (:meth:`MessageLog.run_orphan_sweep`).  A body being
stored or waiting for its record here is never removed, whatever its age; the age protects
the bodies of another process writing the same database.  Chunks left before the pending
table existed have neither a pending row nor a record: :meth:`MessageLog.remove_unmarked_bodies`
deletes them, once at start (see there why that is safe while messages are logged).

Not done here: asking for time-stamps, archiving, and several processes writing
one log (a second writer's records collide on the sequence number and fail closed; per-node
logs come with a ``log_id`` column later).  Tables are created by
:func:`security_server.db.create_tables` until Alembic migrations take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
import weakref
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeVar, cast, get_args

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from security_server.logtables import BODY_CHUNK, MESSAGE_LOG, PENDING_BODY, TIMESTAMP_BATCH
from security_server.logwriter import GroupWriter, WriterClosedError
from xchange.body import CHUNK_SIZE, ExternalBody
from xchange.errors import XRoadError
from xchange.logbatch import BatchPlan, TimestampBatch
from xchange.logcrypto import Keyring, LogDecryptionError, UnknownKeyError
from xchange.messagelog import (
    GENESIS,
    ChainBrokenError,
    ChainCheckpoint,
    ChainReport,
    Direction,
    Kind,
    LogEntry,
    RecordStamp,
    Status,
    StoredRecord,
    chain_record,
    decode_der_list,
    encode_der_list,
    verify_chain,
)
from xchange.timestamp import TimestampToken

__all__ = [
    "ORPHAN_BODY_AGE",
    "ORPHAN_SWEEP_SECONDS",
    "BodyStore",
    "LogQuery",
    "LogReader",
    "LoggingFailedCode",
    "MessageLog",
    "MessageLogError",
]

LoggingFailedCode = Literal[
    "server.clientproxy.logging_failed", "server.serverproxy.logging_failed"
]
"""The code of a failed write: the client proxy's or the server proxy's."""

_VERIFY_BATCH: Final = 1000
ORPHAN_BODY_AGE: Final = timedelta(hours=1)
"""How long a large body may wait for its record before its chunks are removed, unless
this process still holds it (then it is never removed).  Far above the time from a body's
first chunk to its record in a running server; it matters only for another process's
bodies."""
ORPHAN_SWEEP_SECONDS: Final = 600.0
"""How often a running server looks for orphaned bodies (and once at start)."""
_SWEEP_BATCH: Final = 100
"""Orphaned bodies removed per transaction (and ids per statement)."""
R = TypeVar("R")
log = logging.getLogger(__name__)


class MessageLogError(XRoadError):
    """The message log could not be written (code given by the caller) or read.

    A read failure carries the generic internal-error code.  The database's own error is
    the ``__cause__``; it is not put in the message, which may reach a client.
    """


@dataclass(frozen=True, slots=True)
class LogQuery:
    """What an auditor searches by; ``None`` matches anything.  Times are aware, ``until``
    exclusive."""

    query_id: str | None = None
    client: str | None = None
    service: str | None = None
    user_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class _HeldBodies:
    """The large bodies this process holds: their :class:`BodyStore` or the reader it made
    (kept by the message on its way, until its record is committed or it is dropped).  Held
    weakly: a body nothing refers to any more is not in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders: weakref.WeakSet[BodyStore | _ChunkReader] = weakref.WeakSet()

    def add(self, holder: BodyStore | _ChunkReader) -> None:
        with self._lock:
            self._holders.add(holder)

    def discard(self, holder: BodyStore) -> None:
        with self._lock:
            self._holders.discard(holder)

    def body_ids(self) -> set[str]:
        with self._lock:
            return {holder.body_id for holder in self._holders}


class BodyStore:
    """Stores one large body in ``message_body_chunk`` as it arrives, chunk by chunk
    (encrypted under the keyring's current key, if any), each chunk in a transaction of its
    own.  No transaction stays open while the next chunk arrives: on SQLite an open write
    transaction holds the database's one write lock, and the records committed meanwhile
    (on the event loop's thread, which is also the one receiving the body) would wait for
    it -- up to the busy timeout, and then fail.

    Blocking: call it from a worker thread.  :meth:`finish` writes the last chunk (its
    encryption says it is the last, so it is written only once the end is known) and
    returns the reader a log entry's :class:`~xchange.body.ExternalBody` takes;
    :meth:`drop` removes whatever was stored (a body that will not be logged after all).
    """

    def __init__(self, engine: Engine, keyring: Keyring | None, held: _HeldBodies) -> None:
        self._engine, self._keyring, self._held = engine, keyring, held
        self.body_id = uuid.uuid4().hex
        self._held.add(self)
        self._key_id = None if keyring is None else keyring.current
        self._pending = bytearray()
        self._index = 0
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        self._pending += data
        # Keep at least one byte back: the last chunk is only known at the end.
        while len(self._pending) > CHUNK_SIZE:
            self._insert(bytes(self._pending[:CHUNK_SIZE]), last=False)
            del self._pending[:CHUNK_SIZE]

    def finish(self) -> _ChunkReader:
        if self._pending or self._index == 0:
            self._insert(bytes(self._pending), last=True)
            self._pending.clear()
        reader = _ChunkReader(self._engine, self._keyring, self.body_id, self._key_id)
        self._held.add(reader)
        return reader

    def drop(self) -> None:
        """Best effort: remove the chunks stored so far."""
        self._held.discard(self)  # if this fails, the sweep removes it later
        _drop_chunks(self._engine, self.body_id)

    def _insert(self, piece: bytes, *, last: bool) -> None:
        data = piece if self._keyring is None else self._keyring.encrypt_chunk(
            self.body_id, self._index, last, piece)
        with self._engine.begin() as connection:
            if self._index == 0:  # committed with the first chunk: see _unmarked
                connection.execute(sa.insert(_PENDING).values(
                    body_id=self.body_id, started_at=datetime.now(UTC)))
            connection.execute(sa.insert(_CHUNKS).values(
                body_id=self.body_id, index=self._index, data=data))
        self._index += 1


def _drop_chunks(engine: Engine, body_id: str) -> None:
    """Best effort: remove the chunks of a body whose record was not written.  Never those
    of a body a record names (a failed commit may have committed after all)."""
    table = _CHUNKS
    named = sa.select(_RECORDS.c.sequence).where(_RECORDS.c.body_id == body_id).exists()
    try:
        with engine.begin() as connection:
            connection.execute(sa.delete(table).where(table.c.body_id == body_id, ~named))
            connection.execute(sa.delete(_PENDING).where(_PENDING.c.body_id == body_id,
                                                         ~named))
    except SQLAlchemyError:
        pass  # an orphaned body is unreferenced, never read; the failure is reported


class _ChunkReader:
    """Reads a large body back from ``message_body_chunk`` (:class:`xchange.body.BodyReader`),
    one chunk per query, decrypting with the key its record names."""

    def __init__(self, engine: Engine, keyring: Keyring | None, body_id: str,
                 key_id: str | None) -> None:
        self._engine, self._keyring = engine, keyring
        self.body_id, self.key_id = body_id, key_id

    def chunks(self) -> Iterator[bytes]:
        table = _CHUNKS
        with self._engine.connect() as connection:
            count = connection.execute(sa.select(sa.func.count()).select_from(table)
                                    .where(table.c.body_id == self.body_id)).scalar_one()
            for index in range(count):
                data = connection.execute(sa.select(table.c.data).where(
                    table.c.body_id == self.body_id, table.c.index == index)).scalar()
                if data is None:
                    raise LogDecryptionError(f"chunk {index} of the body is missing")
                if self.key_id is None:
                    yield data
                    continue
                if self._keyring is None:
                    raise MessageLogError("the body is encrypted and no message-log keys "
                                          "were given")
                yield self._keyring.decrypt_chunk(self.key_id, self.body_id, index,
                                                  index == count - 1, data)


def _unmarked(body_id: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
    """``body_id`` is named by no record and covered by no pending row."""
    return sa.and_(~sa.exists().where(_RECORDS.c.body_id == body_id),
                   ~sa.exists().where(_PENDING.c.body_id == body_id))


_RECORDS: Final = MESSAGE_LOG
_PENDING: Final = PENDING_BODY
_BATCHES: Final = TIMESTAMP_BATCH
_CHUNKS: Final = BODY_CHUNK
_PLACEHOLDERS: Final = {"qmark": "?", "format": "%s", "pyformat": "%s"}


class MessageLog:
    """The message log over one database.  The engine is the caller's to dispose of."""

    def __init__(self, engine: Engine, *, keyring: Keyring | None = None,
                 max_group: int = 1000) -> None:
        self._engine = engine
        self._keyring = keyring
        self._held = _HeldBodies()
        # Head of the chain; touched only on the writer thread.  None means "not known":
        # read it from the database before the next write.
        self._head: ChainCheckpoint | None = None
        self._insert = _RecordInsert(engine.dialect)
        self._stamp = _stamp_update(engine.dialect)
        # The writer keeps one connection between groups: a pool checkout, its reset and
        # its return (and on PostgreSQL the pool's pre-ping round trip) cost more than the
        # insert of a lone record.  A kept connection that went stale (a database restart,
        # a dropped connection) is replaced in :meth:`_commit_group`.
        self._connection: sa.Connection | None = None
        # SQLite: records are committed on the loop's thread (a local file); PostgreSQL's
        # network round trips must not block the loop.
        self._commit_on_loop = engine.dialect.name == "sqlite"
        self._writer: GroupWriter[LogEntry, StoredRecord] = GroupWriter(
            self._commit_group, max_group=max_group, name="messagelog-writer")

    def append(self, entry: LogEntry, *, error_code: LoggingFailedCode
               ) -> Coroutine[Any, Any, StoredRecord]:
        """Chain ``entry`` after the last record and commit it; the awaited result is the
        stored record.

        Awaiting raises :class:`MessageLogError` with ``error_code`` if the record is not
        durably written, for whatever reason; the message must then not be passed on.

        On SQLite the record is committed on the loop's thread at its next turn, with every
        record appended meanwhile, unless the writer thread is busy
        (:meth:`GroupWriter.append_on_loop`); on PostgreSQL it goes to the writer thread.  A
        record whose body needs no storing first is queued when this is *called*, not when
        its result is awaited: the batch signer's callers append their records in the turn
        that signed them, before they resume (``Runtime.sign_and_log``).
        """
        if error_code not in get_args(LoggingFailedCode):
            raise ValueError(f"not a logging failure code: {error_code!r}")
        queued = None
        if not _to_store(entry):
            # A closed writer refuses here; _append then meets the same refusal and reports
            # it as any other failure, when awaited.
            with contextlib.suppress(WriterClosedError):
                queued = (self._writer.append_on_loop(entry) if self._commit_on_loop
                          else self._writer.append_async(entry))
        return self._append(entry, error_code, queued)

    async def _append(self, entry: LogEntry, error_code: LoggingFailedCode,
                      queued: asyncio.Future[StoredRecord] | None) -> StoredRecord:
        stored: _ChunkReader | None = None
        try:
            if queued is not None:
                return await queued
            if _to_store(entry):
                assert isinstance(entry.body, ExternalBody)
                stored = await asyncio.to_thread(self._store_body, entry.body)
                entry = replace(entry, body=ExternalBody(entry.body.digest, stored))
            if self._commit_on_loop:
                return await self._writer.append_on_loop(entry)
            return await self._writer.append_async(entry)
        except Exception as exc:
            if stored is not None:
                await asyncio.to_thread(self._drop_body, stored.body_id)
            if isinstance(exc, WriterClosedError):
                raise MessageLogError("the message log is closed", code=error_code) from exc
            # Anything -- a full disk, a lost connection, a constraint, a trigger, a corrupt
            # head -- means the record may not be there: fail closed.
            raise MessageLogError("the message log could not be written", code=error_code) from exc

    def body_store(self) -> BodyStore:
        """A sink that stores a large body's chunks as it arrives (see :class:`BodyStore`)."""
        return BodyStore(self._engine, self._keyring, self._held)

    def _store_body(self, body: ExternalBody) -> _ChunkReader:
        """Copy a large body into ``message_body_chunk``."""
        store = self.body_store()
        try:
            for chunk in body.chunks():
                store.write(chunk)
            if store.size != body.digest.size:
                raise ValueError("the body's reader did not yield its declared size")
            return store.finish()
        except BaseException:
            store.drop()
            raise

    def _drop_body(self, body_id: str) -> None:
        _drop_chunks(self._engine, body_id)

    async def records(self, *, query_id: str | None = None) -> list[StoredRecord]:
        """All records in sequence order, or those of one X-Road message id.

        Raises :class:`~xchange.messagelog.ChainBrokenError` for a row that is not a valid
        record (altered in the database) and :class:`MessageLogError` if reading fails.
        """
        statement = sa.select(_RECORDS).order_by(_RECORDS.c.sequence)
        if query_id is not None:
            statement = statement.where(_RECORDS.c.query_id == query_id)
        return await asyncio.to_thread(self._read, statement)

    async def verify(self, checkpoint: ChainCheckpoint = GENESIS) -> ChainReport:
        """Verify the whole chain from ``checkpoint`` (the start, unless records before it
        were archived and removed), read in batches.

        Raises :class:`~xchange.messagelog.ChainBrokenError` at the first bad record and
        :class:`MessageLogError` if reading fails.
        """
        return await asyncio.to_thread(verify_chain, self._iter_all(checkpoint.sequence),
                                       checkpoint=checkpoint)

    # -- audit and archiving (security_server.archiver, xchange_cli.audit) --

    async def records_after(self, after: int, limit: int) -> list[StoredRecord]:
        """At most ``limit`` records numbered above ``after``, in sequence order."""
        return await asyncio.to_thread(self.reader().records_between, after, None, limit)

    async def find(self, query: LogQuery, limit: int) -> list[StoredRecord]:
        """The records matching every criterion of ``query``, oldest first, at most
        ``limit``."""
        statement = sa.select(_RECORDS)
        for column, value in ((_RECORDS.c.query_id, query.query_id),
                              (_RECORDS.c.client, query.client),
                              (_RECORDS.c.service, query.service),
                              (_RECORDS.c.user_id, query.user_id)):
            if value is not None:
                statement = statement.where(column == value)
        if query.since is not None:
            statement = statement.where(_RECORDS.c.created_at >= query.since)
        if query.until is not None:
            statement = statement.where(_RECORDS.c.created_at < query.until)
        return await asyncio.to_thread(
            self._read, statement.order_by(_RECORDS.c.sequence).limit(limit))

    async def purge_through(self, sequence: int) -> int:
        """Delete the time-stamped records numbered up to ``sequence`` (archived ones: the
        caller's rule); return how many went.  The newest record always stays: the chain
        goes on from it."""
        def purge() -> int:
            with self._engine.begin() as connection:
                head = _read_head(connection).sequence
                last = min(sequence, head - 1)
                connection.execute(sa.delete(_CHUNKS).where(_CHUNKS.c.body_id.in_(
                    sa.select(_RECORDS.c.body_id).where(
                        _RECORDS.c.sequence <= last,
                        _RECORDS.c.batch_id.is_not(None),
                        _RECORDS.c.body_id.is_not(None)))))
                result = connection.execute(
                    sa.delete(_RECORDS).where(_RECORDS.c.sequence <= last,
                                              _RECORDS.c.batch_id.is_not(None)))
                return int(result.rowcount)
        try:
            return await _wait(self._writer.submit(purge))
        except WriterClosedError as exc:
            raise MessageLogError("the message log is closed") from exc
        except SQLAlchemyError as exc:
            raise MessageLogError("archived records could not be removed") from exc

    async def remove_orphan_bodies(self, now: datetime,
                                   min_age: timedelta = ORPHAN_BODY_AGE) -> int:
        """Delete the chunks of large bodies pending since before ``now - min_age`` that no
        record names (their record never committed) and this process no longer holds;
        return how many bodies went."""
        def remove() -> int:
            held = self._held.body_ids()
            chunks, removed = _CHUNKS, 0
            with self._engine.connect() as connection:
                stale = [body_id for body_id in connection.execute(
                    sa.select(_PENDING.c.body_id).where(_PENDING.c.started_at < now - min_age)
                ).scalars() if body_id not in held]
            for start in range(0, len(stale), _SWEEP_BATCH):
                part = stale[start:start + _SWEEP_BATCH]
                with self._engine.begin() as connection:
                    # A record's commit deletes its body's pending row; looking at the
                    # records as well keeps any body a record names, whatever happened.
                    orphans = set(part) - set(connection.execute(sa.select(
                        _RECORDS.c.body_id).where(_RECORDS.c.body_id.in_(part))).scalars())
                    connection.execute(sa.delete(chunks).where(
                        chunks.c.body_id.in_(sorted(orphans))))
                    connection.execute(sa.delete(_PENDING).where(_PENDING.c.body_id.in_(part)))
                removed += len(orphans)
            return removed
        return await _removing_orphans(remove)

    async def remove_unmarked_bodies(self) -> int:
        """Delete the chunks of bodies that no record names and no pending row covers (left
        by a crash before ``message_body_pending`` existed); return how many bodies went.

        Safe while messages are logged, whatever their age: a body's first chunks are
        committed together with its pending row, and that row is deleted only together with
        the chunks or in the transaction that commits the record naming them.  So in any one
        snapshot a body whose chunks are visible has its pending row or its record, and one
        with neither can never get a record.  The chunks are deleted by one statement that
        checks both in its own snapshot (chunks committed after it are not seen)."""
        def remove() -> int:
            chunks, removed = _CHUNKS, 0
            bodies = sa.select(chunks.c.body_id).distinct().subquery()
            with self._engine.connect() as connection:
                found = list(connection.execute(sa.select(bodies.c.body_id).where(
                    _unmarked(bodies.c.body_id))).scalars())
            for start in range(0, len(found), _SWEEP_BATCH):
                part = found[start:start + _SWEEP_BATCH]
                with self._engine.begin() as connection:
                    connection.execute(sa.delete(chunks).where(
                        chunks.c.body_id.in_(part), _unmarked(chunks.c.body_id)))
                removed += len(part)
            return removed
        return await _removing_orphans(remove)

    async def run_orphan_sweep(self, clock: Callable[[], datetime],
                               interval_seconds: float = ORPHAN_SWEEP_SECONDS) -> None:
        """:meth:`remove_orphan_bodies` now and every ``interval_seconds``, and
        :meth:`remove_unmarked_bodies` once first (no new ones appear while running); a
        failure is logged and tried again next time."""
        unmarked_done = False
        while True:
            try:
                if not unmarked_done:
                    if removed := await self.remove_unmarked_bodies():
                        log.info("removed the chunks of %d unmarked orphaned large bodies",
                                 removed)
                    unmarked_done = True
                if removed := await self.remove_orphan_bodies(clock()):
                    log.info("removed the chunks of %d orphaned large bodies", removed)
            except MessageLogError as exc:
                log.error("%s: %s", exc.message, exc.__cause__)
            await asyncio.sleep(interval_seconds)

    async def unstamped(self, limit: int) -> list[StoredRecord]:
        """The oldest records not yet time-stamped, at most ``limit``, in sequence order."""
        return await asyncio.to_thread(
            self._read,
            sa.select(_RECORDS)
            .where(_RECORDS.c.batch_id.is_(None))
            .order_by(_RECORDS.c.sequence)
            .limit(limit),
        )

    async def unstamped_hashes(self, limit: int) -> list[ChainCheckpoint]:
        """The sequence and hash of the oldest records not yet time-stamped, at most
        ``limit``, in sequence order: all a batch's Merkle tree needs, read without the
        records' contents."""
        def read() -> list[ChainCheckpoint]:
            try:
                with self._engine.connect() as connection:
                    rows = connection.execute(
                        sa.select(_RECORDS.c.sequence, _RECORDS.c.record_hash)
                        .where(_RECORDS.c.batch_id.is_(None))
                        .order_by(_RECORDS.c.sequence).limit(limit)).all()
                    return [ChainCheckpoint(row[0], row[1]) for row in rows]
            except (SQLAlchemyError, TypeError, ValueError) as exc:
                raise MessageLogError("the message log could not be read") from exc
        return await asyncio.to_thread(read)

    async def batches(self) -> list[TimestampBatch]:
        """Every time-stamp batch, in order."""
        return await asyncio.to_thread(self._read_batches)

    async def add_batch(self, plan: BatchPlan, token: TimestampToken) -> TimestampBatch:
        """Store the token for ``plan`` and every record's path, in one transaction.

        Raises :class:`MessageLogError` (generic code) if that fails; the records then stay
        unstamped, to be stamped again.
        """
        try:
            return await _wait(self._writer.submit(lambda: self._add_batch_sync(plan, token)))
        except WriterClosedError as exc:
            raise MessageLogError("the message log is closed") from exc
        except SQLAlchemyError as exc:
            raise MessageLogError("the time-stamp batch could not be stored") from exc

    def close(self) -> None:
        """Wait for pending writes to finish, then refuse new ones."""
        with contextlib.suppress(WriterClosedError):
            self._writer.submit(self._release_connection)
        self._writer.close()

    def _release_connection(self) -> None:
        """On the writer thread: give the kept connection back (a failed write, close)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                connection.close()

    def reader(self) -> LogReader:
        """Blocking reads of this log's records (for a worker thread or process)."""
        return LogReader(self._engine, self._keyring)

    def _commit_group(self, entries: Sequence[LogEntry]) -> list[StoredRecord]:
        """On the writer thread: chain ``entries`` after the head and commit them at once.

        One INSERT executed for the whole group, straight on the driver's cursor: its text
        is built once per dialect and each row is one tuple (no ORM object, no statement
        compiled or parameter dictionary processed per group); the transaction, its events
        and the connection stay SQLAlchemy's.

        The connection is kept between groups, not checked out (and pinged) per group.  If
        the kept one turns out dead (a database restart, a dropped connection) before
        COMMIT was sent, the transaction surely did not commit: the group is written again,
        once, on a fresh connection, with the head re-read.  A failure during or after
        COMMIT leaves the outcome unknown: the group fails (fail closed) and the head is
        re-read before the next write.
        """
        retry = self._connection is not None  # only a kept connection can have gone stale
        while True:
            connection, self._connection = self._connection, None
            head, self._head = self._head, None
            if connection is None:
                connection = self._engine.connect()
            dbapi_connection = connection.connection.dbapi_connection
            try:
                transaction = connection.begin()
                records, head = self._insert_group(connection, head, entries)
            except Exception as exc:
                stale = self._is_stale(connection, dbapi_connection, exc)
                _discard(connection, invalidate=stale)
                if stale and retry:
                    retry = False
                    log.warning("message log: the kept database connection was lost before "
                                "COMMIT; writing the group again on a fresh connection")
                    continue
                raise
            except BaseException:
                _discard(connection, invalidate=False)
                raise
            try:
                transaction.commit()
            except BaseException:
                # Sent or not, the COMMIT's outcome is unknown: fail closed; never reuse
                # the connection.  The head stays unknown, to be re-read.
                _discard(connection, invalidate=False)
                raise
            self._connection = connection
            self._head = head  # only once committed
            return records

    def _insert_group(self, connection: sa.Connection, head: ChainCheckpoint | None,
                      entries: Sequence[LogEntry]
                      ) -> tuple[list[StoredRecord], ChainCheckpoint]:
        """Inside the open transaction: chain and insert ``entries``; no COMMIT."""
        if head is None:
            head = _read_head(connection)
        records, rows = [], []
        for entry in entries:
            record = chain_record(entry, head.sequence + 1, head.record_hash)
            records.append(record)
            rows.append(self._insert.row(record, self._keyring))
            head = ChainCheckpoint(record.sequence, record.record_hash)
        self._insert.execute(connection, rows)
        # Their bodies are no longer pending: in the same transaction, so that a body is
        # always either pending or named by a record.
        if bodies := [r.entry.body.reader.body_id for r in records
                      if isinstance(r.entry.body, ExternalBody)
                      and isinstance(r.entry.body.reader, _ChunkReader)]:
            connection.execute(sa.delete(_PENDING).where(_PENDING.c.body_id.in_(bodies)))
        return records, head

    def _is_stale(self, connection: sa.Connection, dbapi_connection: Any,
                  exc: Exception) -> bool:
        """Whether ``exc`` says the connection itself is gone (not the statement refused)."""
        if not isinstance(exc, sa.exc.DBAPIError):
            return False
        if exc.connection_invalidated or connection.invalidated:
            return True
        dbapi = self._engine.dialect.loaded_dbapi
        return isinstance(exc.orig, dbapi.Error) and self._engine.dialect.is_disconnect(
            exc.orig, dbapi_connection, None)

    def _add_batch_sync(self, plan: BatchPlan, token: TimestampToken) -> TimestampBatch:
        # Every record of the plan must be there and unstamped: one count inside the
        # transaction (this thread is the log's only writer), then one UPDATE executed for
        # all the paths, rather than a statement built per record.
        with self._engine.begin() as connection:
            last = connection.execute(sa.select(sa.func.max(_BATCHES.c.id))).scalar()
            batch = TimestampBatch(id=(last or 0) + 1, first_sequence=plan.first_sequence,
                                   last_sequence=plan.last_sequence, root=plan.root,
                                   token=token.der, gen_time=token.gen_time)
            connection.execute(sa.insert(_BATCHES).values(
                id=batch.id, first_sequence=batch.first_sequence,
                last_sequence=batch.last_sequence, root=batch.root, token=batch.token,
                gen_time=batch.gen_time))
            pending = connection.execute(
                sa.select(sa.func.count()).select_from(_RECORDS).where(
                    _RECORDS.c.sequence.between(plan.first_sequence, plan.last_sequence),
                    _RECORDS.c.batch_id.is_(None))).scalar_one()
            if pending != batch.size or len(plan.paths) != batch.size:
                raise MessageLogError(
                    f"records {plan.first_sequence}-{plan.last_sequence}: "
                    f"{batch.size - pending} missing or already stamped")
            self._stamp.execute(connection, [
                self._stamp.bind((batch.id, b"".join(path), plan.first_sequence + offset))
                for offset, path in enumerate(plan.paths)])
        return batch

    def _read_batches(self) -> list[TimestampBatch]:
        return self.reader().batches()

    def _read(self, statement: sa.Select[Any]) -> list[StoredRecord]:
        return self.reader().read(statement)

    def _iter_all(self, after: int = 0) -> Iterator[StoredRecord]:
        # Keyset pagination, one short transaction per batch: constant memory, no
        # long-lived cursor or snapshot, and appends may go on meanwhile.
        while True:
            batch = self._read(
                sa.select(_RECORDS)
                .where(_RECORDS.c.sequence > after)
                .order_by(_RECORDS.c.sequence)
                .limit(_VERIFY_BATCH)
            )
            yield from batch
            if len(batch) < _VERIFY_BATCH:
                return
            after = batch[-1].sequence


def _to_store(entry: LogEntry) -> bool:
    """Whether ``entry``'s body must be stored in chunks before its record is written (a
    large body not yet in this log's chunks)."""
    return isinstance(entry.body, ExternalBody) and not isinstance(entry.body.reader,
                                                                   _ChunkReader)


class LogReader:
    """Reads records of a message log, blocking: what :class:`MessageLog` reads with in a
    worker thread, and what an audit's worker processes read their share of the log with,
    each over its own engine.  Rows are decoded (and decrypted) into
    :class:`~xchange.messagelog.StoredRecord` as :class:`MessageLog` reads them."""

    def __init__(self, engine: Engine, keyring: Keyring | None) -> None:
        self._engine, self._keyring = engine, keyring
        self._select: _RecordSelect | None = None

    def records_between(self, after: int, through: int | None, limit: int
                        ) -> list[StoredRecord]:
        """At most ``limit`` records numbered above ``after`` (and up to ``through``, if
        given), in sequence order."""
        # What an audit reads its shares with, a page at a time: on the driver's cursor
        # (_RecordSelect), as read() would, without building a Core row per record.
        if self._select is None:
            self._select = _RecordSelect(self._engine.dialect)
        try:
            with self._engine.connect() as connection:
                try:
                    rows = self._select.rows(connection, after, through, limit)
                except (ValueError, TypeError) as exc:
                    # As in read(): a value its column type cannot decode.
                    statement = sa.select(_RECORDS).where(_RECORDS.c.sequence > after)
                    if through is not None:
                        statement = statement.where(_RECORDS.c.sequence <= through)
                    statement = statement.order_by(_RECORDS.c.sequence).limit(limit)
                    sequence = _find_undecodable(self._engine, statement)
                    raise ChainBrokenError(sequence, "stored record cannot be decoded") from exc
                return [_to_record(row, self._keyring, self._engine) for row in rows]
        except SQLAlchemyError as exc:
            raise MessageLogError("the message log could not be read") from exc

    @property
    def in_process(self) -> bool:
        """Whether the database is read in this process (SQLite), not from a server."""
        return self._engine.dialect.name == "sqlite"

    def last_sequence(self) -> int:
        """The number of the newest record; 0 if there is none."""
        try:
            with self._engine.connect() as connection:
                return int(connection.execute(
                    sa.select(sa.func.max(_RECORDS.c.sequence))).scalar() or 0)
        except SQLAlchemyError as exc:
            raise MessageLogError("the message log could not be read") from exc

    def batches(self, after: int | None = None, through: int | None = None
                ) -> list[TimestampBatch]:
        """The time-stamp batches, in order: every one, or those covering any record numbered
        above ``after`` and up to ``through``."""
        statement = sa.select(_BATCHES).order_by(_BATCHES.c.id)
        if after is not None:
            statement = statement.where(_BATCHES.c.last_sequence > after)
        if through is not None:
            statement = statement.where(_BATCHES.c.first_sequence <= through)
        return self._batches(statement)

    def batch(self, batch_id: int) -> TimestampBatch | None:
        """The time-stamp batch ``batch_id``, if there is one."""
        found = self._batches(sa.select(_BATCHES).where(_BATCHES.c.id == batch_id))
        return found[0] if found else None

    def _batches(self, statement: sa.Select[Any]) -> list[TimestampBatch]:
        try:
            with self._engine.connect() as connection:
                return [_to_batch(row) for row in connection.execute(statement).all()]
        except SQLAlchemyError as exc:
            raise MessageLogError("the message log could not be read") from exc

    def read(self, statement: sa.Select[Any]) -> list[StoredRecord]:
        """The records ``statement`` (a select of whole ``message_log`` rows) finds."""
        # Core rows, not ORM instances: building a mapped object per record cost more than
        # the rest of reading it.
        try:
            with self._engine.connect() as connection:
                try:
                    rows = connection.execute(statement).all()
                except (ValueError, TypeError) as exc:
                    # A value its column type cannot decode (SQLite stores anything in any
                    # column): an altered record, to be reported like any other.
                    sequence = _find_undecodable(self._engine, statement)
                    raise ChainBrokenError(sequence, "stored record cannot be decoded") from exc
                return [_to_record(row, self._keyring, self._engine) for row in rows]
        except SQLAlchemyError as exc:
            raise MessageLogError("the message log could not be read") from exc


async def _wait(future: Future[R]) -> R:
    """Await a writer future; its failure (a database error) propagates as it is."""
    return await asyncio.wrap_future(future)


def _discard(connection: sa.Connection, *, invalidate: bool) -> None:
    """Never reuse ``connection`` after a failed write: it may be in any state.  A dead one
    is invalidated (no round trip); another is closed (rolled back, back to the pool)."""
    with contextlib.suppress(SQLAlchemyError):
        if invalidate:
            connection.invalidate()
        connection.close()


def _read_head(connection: sa.Connection) -> ChainCheckpoint:
    row = connection.execute(
        sa.select(_RECORDS.c.sequence, _RECORDS.c.record_hash)
        .order_by(_RECORDS.c.sequence.desc())
        .limit(1)
    ).first()
    if row is None:
        return GENESIS
    return ChainCheckpoint(row[0], row[1])


async def _removing_orphans(remove: Callable[[], int]) -> int:
    """Run an orphaned-body sweep in a thread; a database failure is a MessageLogError."""
    try:
        return await asyncio.to_thread(remove)
    except SQLAlchemyError as exc:
        raise MessageLogError("orphaned bodies could not be removed") from exc


def _find_undecodable(engine: Engine, statement: sa.Select[Any]) -> int:
    # Only on the failure path: read the statement's rows one by one to name the bad one.
    with engine.connect() as connection:
        sequences = connection.scalars(statement.with_only_columns(_RECORDS.c.sequence)).all()
        for sequence in sequences:
            try:
                connection.execute(sa.select(_RECORDS).where(
                    _RECORDS.c.sequence == sequence)).all()
            except (ValueError, TypeError):
                return int(sequence)
    raise MessageLogError("the message log could not be read")


class _RecordSelect:
    """The SELECT of whole ``message_log`` rows by sequence number for one dialect, run on
    the driver's cursor: its text, and the column types' result processors (those the
    dialect has: SQLite's text form of a datetime, say), applied as SQLAlchemy would.  An
    audit reads every record through it; a Core row per record cost about a fifth of
    reading it."""

    def __init__(self, dialect: sa.Dialect) -> None:
        mark = _PLACEHOLDERS[dialect.paramstyle]
        # Built from this module's constants only: no value ever enters the text.
        select = (f"SELECT {', '.join(_COLUMNS)} FROM {_RECORDS.name} "  # noqa: S608
                  f"WHERE sequence > {mark}")
        order = f" ORDER BY sequence LIMIT {mark}"
        self._open_ended = select + order
        self._bounded = f"{select} AND sequence <= {mark}{order}"
        processors = [(i, _RECORDS.c[name].type.dialect_impl(dialect).result_processor(
            dialect, None)) for i, name in enumerate(_COLUMNS)]
        self._processors = [(i, p) for i, p in processors if p is not None]
        self._dialect = dialect

    def rows(self, connection: sa.Connection, after: int, through: int | None, limit: int
             ) -> list[Sequence[Any]]:
        """The rows numbered above ``after`` (up to ``through``), at most ``limit``, their
        values converted; :class:`ValueError` or :class:`TypeError` if one cannot be."""
        sql, parameters = ((self._open_ended, (after, limit)) if through is None
                           else (self._bounded, (after, through, limit)))
        dbapi_error = self._dialect.loaded_dbapi.Error
        try:
            cursor = connection.connection.cursor()
            try:
                cursor.execute(sql, parameters)
                rows = cast(list[Sequence[Any]], cursor.fetchall())
            finally:
                cursor.close()
        except dbapi_error as exc:  # the driver's own error, wrapped as SQLAlchemy would
            raise sa.exc.DBAPIError.instance(sql, parameters, exc, dbapi_error,
                                             dialect=self._dialect) from exc
        if not self._processors:
            return rows
        converted: list[Sequence[Any]] = []
        for row in rows:
            values = list(row)
            for i, process in self._processors:
                values[i] = process(values[i])
            converted.append(values)
        return converted


class _DriverStatement:
    """A statement on ``message_log`` executed with ``executemany`` on the driver's cursor
    for one dialect: its text, its parameters' column types' bind processors (those the
    dialect has: SQLite's text form of a datetime, say), applied as SQLAlchemy would, and
    the driver's errors wrapped as SQLAlchemy would.  Compiling a statement and processing a
    parameter dictionary per row cost more than the row's own write."""

    def __init__(self, dialect: sa.Dialect, text: str, columns: Sequence[str]) -> None:
        """``text`` has a ``?`` for each parameter, bound to ``columns``' values in order;
        built from this module's constants only: no value ever enters it."""
        self.sql = text.replace("?", _PLACEHOLDERS[dialect.paramstyle])
        processors = [(i, _RECORDS.c[name].type.bind_processor(dialect))
                      for i, name in enumerate(columns)]
        self._processors = [(i, p) for i, p in processors if p is not None]
        self._dialect = dialect

    def bind(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        """One row's parameters as the driver takes them."""
        if not self._processors:
            return values
        converted = list(values)
        for i, process in self._processors:
            converted[i] = process(converted[i])
        return tuple(converted)

    def execute(self, connection: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        dbapi_error = self._dialect.loaded_dbapi.Error
        try:
            cursor = connection.connection.cursor()
            try:
                cursor.executemany(self.sql, rows)
            finally:
                cursor.close()
        except dbapi_error as exc:  # the driver's own error, wrapped as SQLAlchemy would
            raise sa.exc.DBAPIError.instance(self.sql, None, exc, dbapi_error,
                                             dialect=self._dialect) from exc


class _RecordInsert(_DriverStatement):
    """The INSERT of new ``message_log`` rows."""

    def __init__(self, dialect: sa.Dialect) -> None:
        columns, marks = ", ".join(_INSERT_COLUMNS), ", ".join(["?"] * len(_INSERT_COLUMNS))
        text = f"INSERT INTO {_RECORDS.name} ({columns}) VALUES ({marks})"  # noqa: S608
        super().__init__(dialect, text, _INSERT_COLUMNS)

    def row(self, record: StoredRecord, keyring: Keyring | None) -> tuple[Any, ...]:
        return self.bind(_row_values(record, keyring))


def _stamp_update(dialect: sa.Dialect) -> _DriverStatement:
    """The UPDATE that puts an unstamped record into its time-stamp batch, with its path."""
    text = (f"UPDATE {_RECORDS.name} SET batch_id = ?, merkle_path = ? "  # noqa: S608
            "WHERE sequence = ? AND batch_id IS NULL")
    return _DriverStatement(dialect, text, ("batch_id", "merkle_path", "sequence"))


def _row_values(record: StoredRecord, keyring: Keyring | None) -> tuple[Any, ...]:
    """The ``message_log`` row of ``record``: the values of :data:`_INSERT_COLUMNS`, in
    order."""
    e = record.entry
    body_id = None
    if isinstance(e.body, ExternalBody):
        # MessageLog.append stored it already; anything else is a programming error.
        if not isinstance(e.body.reader, _ChunkReader):
            raise TypeError("a large body must be stored before its record")
        body, body_id = b"", e.body.reader.body_id
    else:
        body = e.body
    header_part, key_id = e.header_part, None
    if keyring is not None:
        key_id = keyring.current
        header_part = keyring.encrypt("header_part", header_part, record.record_hash)
        if body_id is None:
            body = keyring.encrypt("body", body, record.record_hash)
    return (record.sequence, record.prev_hash, record.record_hash, e.query_id, e.kind,
            e.direction, e.client, e.service, e.user_id, e.issue, header_part, body, key_id,
            body_id, e.signature, e.status, e.error_code, e.created_at,
            encode_der_list(e.ocsp_responses))


_COLUMNS: Final = ("sequence", "prev_hash", "record_hash", "query_id", "kind", "direction",
                   "client", "service", "user_id", "issue", "header_part", "body", "key_id",
                   "body_id", "signature", "status", "error_code", "created_at",
                   "ocsp_responses", "batch_id", "merkle_path")
"""The columns of ``message_log`` in the order ``select(_RECORDS)`` returns them: a row is
unpacked by position (reading a Core row's values by name was about a third of decoding it)."""
if tuple(_RECORDS.c.keys()) != _COLUMNS:  # pragma: no cover - a model change must come here
    raise RuntimeError("message_log's columns changed: update _COLUMNS and _to_record")
_INSERT_COLUMNS: Final = _COLUMNS[:-2]
"""The columns a new record's INSERT sets, in the order of :func:`_row_values`; the last two
(``batch_id``, ``merkle_path``) start NULL."""
if _COLUMNS[-2:] != ("batch_id", "merkle_path"):  # pragma: no cover - as above
    raise RuntimeError("message_log's columns changed: update _INSERT_COLUMNS and _row_values")


def _plaintext(sequence: int, record_hash: str, header_part: bytes, body: bytes,
               key_id: str | None, body_id: str | None, keyring: Keyring | None,
               engine: Engine) -> tuple[bytes, bytes | ExternalBody]:
    if key_id is not None and keyring is None:
        raise MessageLogError(f"record {sequence} is encrypted and no message-log keys "
                              "were given")
    try:
        if body_id is not None:
            # Read through once: the digest must be of what is stored now.
            stored: bytes | ExternalBody = ExternalBody.measure(
                _ChunkReader(engine, keyring, body_id, key_id))
        elif key_id is None or keyring is None:
            stored = body
        else:
            stored = keyring.decrypt(key_id, "body", body, record_hash)
        if key_id is None or keyring is None:
            return header_part, stored
        return keyring.decrypt(key_id, "header_part", header_part, record_hash), stored
    except UnknownKeyError as exc:
        raise MessageLogError(f"record {sequence}: {exc}") from exc
    except LogDecryptionError as exc:
        raise ChainBrokenError(sequence, str(exc)) from exc


def _to_record(row: sa.Row[Any] | Sequence[Any], keyring: Keyring | None, engine: Engine
               ) -> StoredRecord:
    (sequence, prev_hash, record_hash, query_id, kind, direction, client, service, user_id,
     issue, header_part, body, key_id, body_id, signature, status, error_code, created_at,
     ocsp_responses, batch_id, merkle_path) = cast(tuple[Any, ...], row)
    header_part, stored_body = _plaintext(sequence, record_hash, header_part, body, key_id,
                                          body_id, keyring, engine)
    try:
        entry = LogEntry(
            query_id=query_id,
            # LogEntry checks these literals itself; the casts only tell mypy.
            kind=cast(Kind, kind),
            direction=cast(Direction, direction),
            client=client,
            service=service,
            user_id=user_id,
            issue=issue,
            header_part=header_part,
            body=stored_body,
            signature=signature,
            status=cast(Status, status),
            error_code=error_code,
            created_at=created_at,
            ocsp_responses=decode_der_list(ocsp_responses),
        )
        stamp = None
        if batch_id is not None:
            path = merkle_path or b""
            stamp = RecordStamp(batch_id, tuple(path[i:i + 32]
                                                for i in range(0, len(path), 32)))
        return StoredRecord(
            entry=entry,
            sequence=sequence,
            prev_hash=prev_hash,
            record_hash=record_hash,
            stamp=stamp,
        )
    except (TypeError, ValueError) as exc:
        raise ChainBrokenError(sequence, f"stored record is malformed: {exc}") from exc


def _to_batch(row: sa.Row[Any]) -> TimestampBatch:
    return TimestampBatch(id=row.id, first_sequence=row.first_sequence,
                          last_sequence=row.last_sequence, root=row.root, token=row.token,
                          gen_time=row.gen_time.replace(tzinfo=UTC)
                          if row.gen_time.tzinfo is None else row.gen_time)
