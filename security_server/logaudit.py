"""Auditing a security server's live message log: the one code path behind
``xchange audit verify --config`` (alias ``xchange ss verify-log``), ``audit search`` and
``audit export``, for the command line and any API that offers the same.

:func:`verify_live_log` checks every record from the chain's start (or from the last archive
after archived records were removed) in one pass, so that the first broken record is named
whatever check it fails; :func:`export_query` bundles one query's records and their evidence
into one ASiC-E container.  The checks themselves are :mod:`xchange.audit`'s.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import gc
import itertools
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from sqlalchemy.engine import Engine

from security_server.archiver import live_checkpoint
from security_server.confclient import CACHE_FILE, learned_keys
from security_server.config import SecurityServerConfig
from security_server.messagelog import LogQuery, LogReader, MessageLog
from xchange.archive import ArchiveLinking
from xchange.audit import AuditMemo, AuditTrust, CheckTally, verify_evidence
from xchange.errors import ChainBrokenError, EvidenceError, StampInvalidError, XRoadError
from xchange.evidence import MessageEvidence, write_bundle
from xchange.globalconf import ConfigurationAnchor, GlobalConf, verify_envelope
from xchange.logbatch import TimestampBatch
from xchange.messagelog import ChainCheckpoint, ChainReport, StoredRecord, check_link

__all__ = ["BROKEN", "AuditPool", "AuditReport", "LiveBatches", "Share", "ShareResult",
           "audit_pool", "check_share", "export_query", "server_trust", "trust_from_files",
           "verify_live_log"]

BROKEN = (ChainBrokenError, EvidenceError, StampInvalidError)
"""What a verification raises when evidence does not verify (as opposed to bad input)."""


@dataclass
class AuditReport:
    """What was verified, and the first failure if any."""

    subject: str
    tally: CheckTally = field(default_factory=CheckTally)
    chain: ChainReport | None = None
    archives: list[ArchiveLinking] = field(default_factory=list)
    failure: XRoadError | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def failures(self) -> list[str]:
        return [] if self.failure is None else [self.failure.message]

    @property
    def records(self) -> int:
        """Records whose evidence verified."""
        return self.tally.records

    @property
    def signatures_verified(self) -> int:
        return self.tally.signatures

    @property
    def stamps_verified(self) -> int:
        return self.tally.stamped

    @property
    def batches_verified(self) -> int:
        return len(self.tally.batches)

    @property
    def rejected(self) -> int:
        return self.tally.rejected

    @property
    def unstamped(self) -> int:
        """Records not yet time-stamped (a live log's newest)."""
        return self.tally.records - self.tally.stamped

    def lines(self) -> Iterable[str]:
        t = self.tally
        yield f"{self.subject}:"
        for a in self.archives:
            link = "first archive" if a.number == 1 else f"follows {a.previous_archive[:16]}..."
            yield (f"  archive {a.number} of {a.server}: records {a.first_sequence}.."
                   f"{a.last_sequence}, hash {a.archive_hash} ({link})")
        if self.chain is not None:
            yield (f"  hash chain intact: {self.chain.count} records"
                   + (f" (sequence {self.chain.first_sequence}..{self.chain.last_sequence})"
                      if self.chain.count else ""))
        yield (f"  {t.requests} requests, {t.records - t.requests} responses, "
               f"{t.rejected} logged as rejected")
        yield f"  signatures verified: {t.signatures}"
        yield f"  OCSP responses good at signing time: {t.ocsp}"
        span = (f" ({t.first_stamp.isoformat()} .. {t.last_stamp.isoformat()})"
                if t.first_stamp is not None and t.last_stamp is not None else "")
        yield (f"  time-stamps verified: {t.stamped} records in {len(t.batches)} "
               f"batches{span}")
        if self.unstamped:
            yield f"  not yet time-stamped: {self.unstamped} (newest records)"
        for sequence, note in t.notes:
            yield f"  note: rejected record {sequence}: its signature: {note}"
        if self.failure is None:
            yield "OK: everything verifies"
        else:
            where = getattr(self.failure, "sequence", None)
            name = f"record {where}" if where is not None else "archive link"
            yield f"FAILED at {name}: {self.failure.message}"


# -- the live log, in shares ------------------------------------------------------------------

_PAGE = 1000
"""Records read per query."""
_SHARES_PER_WORKER = 4
"""A log is cut into this many shares per worker process: a worker that is slowed (the
machine is shared) leaves the rest to the others."""
_MIN_SHARE = 2000
"""The fewest records in a share (but the last): each costs a task and a reading of the
batches."""


@dataclass(frozen=True, slots=True)
class Share:
    """The records numbered above ``after`` and up to ``through`` (``None``: to the end,
    including records appended while the audit runs)."""

    after: int
    through: int | None


@dataclass(frozen=True, slots=True)
class RecordLink:
    """A record's number and the hash it names as its predecessor's."""

    sequence: int
    prev_hash: str


@dataclass(slots=True)
class ShareResult:
    """What :func:`check_share` found: small, as it crosses from a worker process."""

    tally: CheckTally = field(default_factory=CheckTally)
    first: RecordLink | None = None
    """The share's first record, whose link to the share before is checked on merging."""
    last: ChainCheckpoint | None = None
    """The share's last record, if every record of the share verified."""
    failure: tuple[int, int, str] | None = None
    """The first failure: the index of its class in :data:`BROKEN`, record, reason (the
    exception itself does not cross processes intact)."""

    def raise_failure(self) -> None:
        if self.failure is not None:
            kind, sequence, reason = self.failure
            raise BROKEN[kind](sequence, reason)


def check_share(reader: LogReader, share: Share, trust: AuditTrust, memo: AuditMemo
                ) -> ShareResult:
    """Check every record of ``share`` in order -- its link to the record before (but the
    first's), its batch, its evidence -- up to the first that fails.  Blocking."""
    result = ShareResult()
    tally, head = result.tally, None
    try:
        batches = LiveBatches(reader.batches(share.after, share.through), reader.batch)
        for page in _pages(reader, share):
            for record in page:
                if head is None:
                    result.first = RecordLink(record.sequence, record.prev_hash)
                else:
                    check_link(record, head)  # verify_evidence checks its content hash
                tally.add(verify_evidence(MessageEvidence(record, batches.of(record)), trust,
                                          require_stamp=False, memo=memo))
                head = record
    except BROKEN as exc:
        kind = next(i for i, cls in enumerate(BROKEN) if isinstance(exc, cls))
        result.failure = (kind, exc.sequence or 0, exc.reason)
        return result
    if head is not None:
        result.last = ChainCheckpoint(head.sequence, head.record_hash)
    return result


def _pages(reader: LogReader, share: Share) -> Iterator[list[StoredRecord]]:
    """The records of ``share``, a page at a time.  From a database server the next page is
    read (in a thread) while the caller checks this one, so that waiting for the server
    overlaps the checks; SQLite is read in this process, on the same cores as the checks,
    where reading ahead only added switching between the threads (about 5 % more CPU)."""
    with contextlib.ExitStack() as stack:
        ahead = None if reader.in_process else stack.enter_context(
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-read"))

        def start(after: int) -> Callable[[], tuple[list[StoredRecord],
                                                    ChainBrokenError | None]]:
            if ahead is None:  # read when asked for
                return functools.partial(_page, reader, after, share.through)
            return ahead.submit(_page, reader, after, share.through).result

        pending = start(share.after)
        while True:
            page, unreadable = pending()
            if unreadable is None and len(page) == _PAGE:
                pending = start(page[-1].sequence)
            yield page
            if unreadable is not None:
                raise unreadable
            if len(page) < _PAGE:
                return


def _page(reader: LogReader, after: int, through: int | None
          ) -> tuple[list[StoredRecord], ChainBrokenError | None]:
    """The next page, or the records before one that cannot be read and why it cannot: the
    records before it are checked first, so that the failure reported is the first in
    sequence order."""
    try:
        return reader.records_between(after, through, _PAGE), None
    except ChainBrokenError as exc:
        before = (reader.records_between(after, exc.sequence - 1, _PAGE)
                  if exc.sequence > after + 1 else [])
        return before, exc


def _shares(after: int, last: int, workers: int) -> list[Share]:
    count = max(1, min(workers * _SHARES_PER_WORKER, (last - after) // _MIN_SHARE))
    size = -(-(last - after) // count)
    bounds = [after + i * size for i in range(count)]
    return [Share(lo, hi) for lo, hi in itertools.pairwise(bounds)] + [
        Share(bounds[-1], None)]


def _merge(report: AuditReport, checkpoint: ChainCheckpoint,
           results: Iterable[ShareResult]) -> None:
    """Join the shares' results in order: each share's first record must follow the last of
    the shares before; the first failure in sequence order is raised."""
    head, first = checkpoint, None
    for result in results:
        if result.first is not None:
            check_link(result.first, head)
            first = first or result.first.sequence
        report.tally.merge(result.tally)
        result.raise_failure()
        if result.last is not None:
            head = result.last
    report.chain = ChainReport(count=report.tally.records, first_sequence=first,
                               last_sequence=head.sequence, last_hash=head.record_hash)


async def verify_live_log(log: MessageLog, engine: Engine, trust: AuditTrust, *,
                          subject: str, pool: AuditPool | None = None) -> AuditReport:
    """Verify a live log record by record; the first failure goes in the report.

    Without a ``pool`` the log is checked in one worker thread; with one (worker processes
    set up by :func:`audit_pool`) it is cut into shares of consecutive records, each read
    and checked by a worker on its own, and the shares joined in order (:func:`_merge`):
    the failure reported is the first in sequence order, whichever check it fails, as
    without a pool.
    """
    report = AuditReport(subject=subject)
    try:
        checkpoint = await live_checkpoint(log, engine)
        reader = log.reader()
        if pool is None:
            results = [await asyncio.to_thread(check_share, reader,
                                               Share(checkpoint.sequence, None), trust,
                                               AuditMemo())]
        else:
            last = await asyncio.to_thread(reader.last_sequence)
            loop = asyncio.get_running_loop()
            results = await asyncio.gather(*(
                loop.run_in_executor(pool.executor, _worker_share, share)
                for share in _shares(checkpoint.sequence, last, pool.workers)))
        _merge(report, checkpoint, results)
    except BROKEN as exc:
        report.failure = exc
    return report


# -- worker processes -------------------------------------------------------------------------

_worker: tuple[AuditTrust, LogReader] | None = None
_worker_memo = AuditMemo()


def _worker_share(share: Share) -> ShareResult:
    assert _worker is not None, "audit_pool sets up its workers"
    trust, reader = _worker
    return check_share(reader, share, trust, _worker_memo)


def _set_up_worker(trust: AuditTrust, open_reader: Callable[[], LogReader]) -> None:
    global _worker
    _worker = (trust, open_reader())
    # What the worker inherited (modules, the trust anchors) lives as long as it does: kept
    # out of the cyclic collector's sweeps, whose full passes over it cost about 5 % of
    # checking a share.  What the checks allocate is collected as before.
    gc.freeze()


def _ready(_: int) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class AuditPool:
    """Worker processes made by :func:`audit_pool`."""

    executor: ProcessPoolExecutor
    workers: int

    def shutdown(self) -> None:
        self.executor.shutdown(cancel_futures=True)


def audit_pool(trust: AuditTrust, workers: int, open_reader: Callable[[], LogReader]
               ) -> AuditPool:
    """Worker processes for :func:`verify_live_log`, forked now, sharing ``trust``, each
    reading the log through its own ``open_reader()`` (called in the worker: a database
    engine is not shared across processes).

    Call it while the process has a single thread (before an event loop's worker threads
    exist): the workers are forked, all at once, by this call -- ``trust`` holds
    certificates, which cannot be pickled, so it reaches them by inheritance, as do the
    message-log keys ``open_reader`` may hold.  The caller shuts the pool down.
    """
    pool = ProcessPoolExecutor(max_workers=workers,
                               mp_context=multiprocessing.get_context("fork"),
                               initializer=_set_up_worker, initargs=(trust, open_reader))
    try:
        list(pool.map(_ready, range(workers)))  # every worker forked and initialised
    except BaseException:
        pool.shutdown(cancel_futures=True)
        raise
    return AuditPool(pool, workers)


class LiveBatches:
    """The live log's time-stamp batches, by id and by the range of records they cover:
    every batch, or (with a ``lookup`` for any other, by id) those covering a share."""

    def __init__(self, batches: Iterable[TimestampBatch],
                 lookup: Callable[[int], TimestampBatch | None] | None = None) -> None:
        self._by_id = {b.id: b for b in batches}
        self._ranges = sorted((b.first_sequence, b.last_sequence, b.id)
                              for b in self._by_id.values())
        self._lookup = lookup

    def of(self, record: StoredRecord) -> TimestampBatch | None:
        """The batch that stamps ``record``; ``None`` if none does, nor should.  A record
        inside a batch's range must be stamped by it (batches cover runs of consecutive
        records): one that is not was put there afterwards."""
        seq = record.sequence
        i = bisect.bisect_right(self._ranges, (seq, float("inf"), 0)) - 1
        covering = self._ranges[i][2] if i >= 0 and self._ranges[i][1] >= seq else None
        if record.stamp is None:
            if covering is not None:
                raise StampInvalidError(seq, f"the record lies in batch {covering} but is not "
                                             "stamped by it: it was inserted or altered later")
            return None
        batch_id = record.stamp.batch_id
        batch = self._by_id.get(batch_id)
        if batch is None and self._lookup is not None:
            # Named by a record it does not cover (the stamp check says so): read it.
            batch = self._lookup(batch_id)
            if batch is not None:
                self._by_id[batch_id] = batch
        if batch is None:
            raise StampInvalidError(seq, f"batch {batch_id} is missing")
        return batch


def trust_from_files(anchor: Path, globalconf: Path,
                     learned: Sequence[x509.Certificate] = ()) -> AuditTrust:
    """The trust of an audit: the approved CAs, TSAs and OCSP freshness of a signed global
    configuration file, verified against a configuration anchor (and ``learned``: signing
    keys that later configurations announced).  Expiry is not applied: an audit looks at
    the past."""
    trusted = ConfigurationAnchor.from_json(anchor.read_bytes())
    conf = GlobalConf.from_payload(verify_envelope(globalconf.read_bytes(),
                                                   [*trusted.certificates, *learned]))
    return AuditTrust.from_globalconf(conf)


def server_trust(config: SecurityServerConfig) -> AuditTrust:
    """A server's own audit trust: its anchor, the configuration-signing keys it learnt since
    (after a key rotation the stored copy is signed by one of those), and its last good
    global configuration."""
    return trust_from_files(config.anchor, config.state_dir / CACHE_FILE,
                            learned_keys(config.state_dir))


async def export_query(log: MessageLog, query_id: str) -> tuple[bytes, int, int] | None:
    """The records of query ``query_id`` with their evidence, as one ASiC-E container
    (:func:`xchange.evidence.write_bundle`); with how many records and how many of them are
    not yet time-stamped.  ``None`` if the log has no record of the query."""
    records = await log.find(LogQuery(query_id=query_id), 100)
    if not records:
        return None
    batches = {b.id: b for b in await log.batches()}
    evidence = [MessageEvidence(r, batches[r.stamp.batch_id] if r.stamp else None)
                for r in records]
    return write_bundle(evidence), len(evidence), sum(e.batch is None for e in evidence)
