"""Archiving the message log: archive files out, old archived records removed.

On a schedule (``[archive] interval_seconds``, daily by default, and once at start) and on
demand (``xchange audit archive --config``), :class:`Archiver` exports time-stamped records
into archive files (:mod:`xchange.archive`: one ASiC-E container per record, a linking file,
each archive chained to the one before), optionally encrypted to the auditors' public keys
(:mod:`xchange.archive_crypto`), and hands them to an :class:`ArchiveTarget`.  Only a run of
consecutive records is archived, from the one after the last archive, up to the first record
that is not yet time-stamped or not yet ``min_age_seconds`` old.

Each archive made is remembered in the ``archive_file`` table (number, name, archive hash,
its last record and that record's hash).  That row is written after the file is stored: a
crash in between leaves a file that the next run writes again under the same name.

Records are removed from the database ``retention_days`` after they were logged, and only
whole archives' worth: every record up to the last record of an archive whose records are all
older than that.  The archive holding the newest record stays (the chain goes on from it).
The live log then verifies from the checkpoint the last removed archive gives
(:func:`live_checkpoint`).

Targets: :class:`DirectoryTarget` writes files atomically into a folder.  Object storage is a
second implementation of the same one-method protocol -- an S3-compatible ``put`` is a
``PutObject`` of the name under a prefix (with object lock or versioning for immutability) --
not included here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy.engine import Engine

from security_server.config import ArchiveConfig
from security_server.logtables import ARCHIVE_FILE, MESSAGE_LOG
from security_server.messagelog import MessageLog
from xchange.archive import build_archive
from xchange.archive_crypto import RecipientKey, encrypt_archive
from xchange.errors import ChainBrokenError, XRoadError
from xchange.evidence import MessageEvidence
from xchange.messagelog import GENESIS, GENESIS_HASH, ChainCheckpoint, StoredRecord

__all__ = [
    "ArchiveFileRow",
    "ArchiveTarget",
    "Archiver",
    "DirectoryTarget",
    "MadeArchive",
    "live_checkpoint",
    "load_recipients",
]

log = logging.getLogger(__name__)


class ArchiveTarget(Protocol):
    """Where archive files go.  ``put`` must store the whole file durably before returning,
    replacing a file of the same name (a rewrite after a crash)."""

    def put(self, name: str, data: bytes) -> None: ...


class DirectoryTarget:
    """Archive files in a folder: written to a temporary file, flushed to disk, renamed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def put(self, name: str, data: bytes) -> None:
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad archive file name {name!r}")
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        final = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@dataclass(frozen=True, slots=True)
class ArchiveFileRow:
    """One row of ``archive_file`` (:data:`~security_server.logtables.ARCHIVE_FILE`): an
    archive this server made."""

    number: int
    name: str
    archive_hash: str
    first_sequence: int
    last_sequence: int
    last_hash: str
    last_created_at: datetime
    """When the archive's newest record was logged (what retention is measured from)."""
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MadeArchive:
    number: int
    name: str
    archive_hash: str
    first_sequence: int
    last_sequence: int
    encrypted: bool


def load_recipients(paths: Sequence[Path]) -> list[RecipientKey]:
    """The public keys in PEM files: a certificate (its key) or a bare public key."""
    keys: list[RecipientKey] = []
    for path in paths:
        data = path.read_bytes()
        try:
            key: object = (x509.load_pem_x509_certificate(data).public_key()
                           if b"BEGIN CERTIFICATE" in data
                           else serialization.load_pem_public_key(data))
        except ValueError as exc:
            raise ValueError(f"{path}: not a PEM certificate or public key") from exc
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ValueError(f"{path}: archive recipients need RSA or EC keys")
        keys.append(key)
    return keys


def _aware(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


class Archiver:
    """Makes archive files of one server's log and removes records past retention."""

    def __init__(self, message_log: MessageLog, engine: Engine, target: ArchiveTarget, *,
                 server_id: str, config: ArchiveConfig,
                 recipients: Sequence[RecipientKey] = ()) -> None:
        self._log = message_log
        self._engine = engine
        self._target = target
        self._server_id = server_id
        self._config = config
        self._recipients = tuple(recipients)
        self._lock = asyncio.Lock()

    async def run(self, clock: Callable[[], datetime]) -> None:
        """Archive and purge now and every ``interval_seconds``; a failure is logged and
        tried again next time (records stay in the database meanwhile)."""
        while True:
            try:
                made = await self.archive(clock())
                removed = await self.purge(clock())
                if made or removed:
                    log.info("archived %d file(s), removed %d archived record(s)",
                             len(made), removed)
            except (XRoadError, OSError, sa.exc.SQLAlchemyError, ValueError) as exc:
                log.error("archiving failed: %s", getattr(exc, "message", exc))
            await asyncio.sleep(self._config.interval_seconds)

    async def archive(self, now: datetime) -> list[MadeArchive]:
        """Write archive files until no eligible record is left; return what was made."""
        made = []
        async with self._lock:
            while (archive := await self._archive_once(now)) is not None:
                made.append(archive)
        return made

    async def purge(self, now: datetime) -> int:
        """Remove the records of archives whose records are all past retention."""
        cutoff = now - timedelta(days=self._config.retention_days)
        async with self._lock:
            last = await asyncio.to_thread(self._last_expired, cutoff)
            return 0 if last is None else await self._log.purge_through(last)

    async def _archive_once(self, now: datetime) -> MadeArchive | None:
        previous = await asyncio.to_thread(self._last_archive)
        after = previous.last_sequence if previous else 0
        cutoff = now - timedelta(seconds=self._config.min_age_seconds)
        records = _eligible(await self._log.records_after(after, self._config.max_records),
                            cutoff)
        if not records:
            return None
        prev_hash = previous.last_hash if previous else GENESIS_HASH
        if records[0].sequence != after + 1 or records[0].prev_hash != prev_hash:
            raise ChainBrokenError(records[0].sequence,
                                   "the record does not continue the last archive")
        batches = {b.id: b for b in await self._log.batches()}
        evidence = [MessageEvidence(r, batches[r.stamp.batch_id])
                    for r in records if r.stamp is not None]
        number = previous.number + 1 if previous else 1
        data, digest = build_archive(
            evidence, server=self._server_id, number=number,
            previous_archive=previous.archive_hash if previous else GENESIS_HASH,
            created_at=now)
        name = f"{self._server_id.replace('/', '_')}-{number:08d}.zip"
        if self._recipients:
            data, name = encrypt_archive(data, self._recipients), name + ".xenc"
        await asyncio.to_thread(self._target.put, name, data)
        last = records[-1]
        row = ArchiveFileRow(number=number, name=name, archive_hash=digest,
                             first_sequence=records[0].sequence, last_sequence=last.sequence,
                             last_hash=last.record_hash, last_created_at=last.entry.created_at,
                             created_at=now)
        await asyncio.to_thread(self._store, row)
        return MadeArchive(number, name, digest, row.first_sequence, row.last_sequence,
                           bool(self._recipients))

    def _last_archive(self) -> ArchiveFileRow | None:
        return _archive_file(self._engine, sa.select(ARCHIVE_FILE)
                             .order_by(ARCHIVE_FILE.c.number.desc()).limit(1))

    def _last_expired(self, cutoff: datetime) -> int | None:
        """The last record of the newest archive past retention that does not hold the
        newest record (which stays, and with it its whole archive)."""
        with self._engine.connect() as connection:
            head = connection.execute(sa.select(sa.func.max(MESSAGE_LOG.c.sequence))
                                      ).scalar() or 0
            rows = [ArchiveFileRow(**row._mapping) for row in connection.execute(
                sa.select(ARCHIVE_FILE).where(ARCHIVE_FILE.c.last_sequence < head)
                .order_by(ARCHIVE_FILE.c.number.desc()))]
        return next((r.last_sequence for r in rows if _aware(r.last_created_at) < cutoff), None)

    def _store(self, row: ArchiveFileRow) -> None:
        with self._engine.begin() as connection:
            connection.execute(sa.insert(ARCHIVE_FILE).values(**asdict(row)))


def _eligible(records: list[StoredRecord], cutoff: datetime) -> list[StoredRecord]:
    """The leading run of records that are time-stamped and logged before ``cutoff``."""
    out = []
    for record in records:
        if record.stamp is None or record.entry.created_at > cutoff:
            break
        out.append(record)
    return out


async def live_checkpoint(message_log: MessageLog, engine: Engine) -> ChainCheckpoint:
    """Where the live log's chain starts: the beginning, or -- after archived records were
    removed -- the last record of the archive that ends just before the first one left.

    Raises :class:`~xchange.errors.ChainBrokenError` if records are missing at the start
    with no archive to account for them.
    """
    first = await message_log.records_after(0, 1)
    if not first or first[0].sequence == 1:
        return GENESIS
    sequence = first[0].sequence

    row = await asyncio.to_thread(_archive_file, engine, sa.select(ARCHIVE_FILE).where(
        ARCHIVE_FILE.c.last_sequence == sequence - 1))
    if row is None:
        raise ChainBrokenError(1, f"the log starts at record {sequence}, and no archive "
                                  "holds the records before it")
    return ChainCheckpoint(row.last_sequence, row.last_hash)


def _archive_file(engine: Engine, statement: sa.Select[Any]) -> ArchiveFileRow | None:
    """The first ``archive_file`` row ``statement`` finds, if any."""
    with engine.connect() as connection:
        row = connection.execute(statement).first()
    return None if row is None else ArchiveFileRow(**row._mapping)
