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
import multiprocessing
from collections.abc import AsyncIterator, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from sqlalchemy.engine import Engine

from security_server.archiver import live_checkpoint
from security_server.confclient import CACHE_FILE, learned_keys
from security_server.config import SecurityServerConfig
from security_server.messagelog import LogQuery, MessageLog
from xchange.archive import ArchiveLinking
from xchange.audit import AuditMemo, AuditTrust, RecordCheck, verify_evidence
from xchange.errors import ChainBrokenError, EvidenceError, StampInvalidError, XRoadError
from xchange.evidence import MessageEvidence, write_bundle
from xchange.globalconf import ConfigurationAnchor, GlobalConf, verify_envelope
from xchange.logbatch import TimestampBatch
from xchange.messagelog import ChainCheckpoint, ChainReport, StoredRecord, check_link

__all__ = ["BROKEN", "AuditReport", "LiveBatches", "audit_pool", "export_query", "server_trust",
           "trust_from_files", "verify_live_log"]

_PAGE = 1000
BROKEN = (ChainBrokenError, EvidenceError, StampInvalidError)
"""What a verification raises when evidence does not verify (as opposed to bad input)."""


@dataclass
class AuditReport:
    """What was verified, and the first failure if any."""

    subject: str
    checks: list[RecordCheck] = field(default_factory=list)
    chain: ChainReport | None = None
    archives: list[ArchiveLinking] = field(default_factory=list)
    unstamped: int = 0
    failure: XRoadError | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def failures(self) -> list[str]:
        return [] if self.failure is None else [self.failure.message]

    @property
    def signatures_verified(self) -> int:
        return sum(c.signer is not None for c in self.checks)

    @property
    def stamps_verified(self) -> int:
        return sum(c.stamped_at is not None for c in self.checks)

    @property
    def batches_verified(self) -> int:
        return len({c.batch for c in self.checks if c.batch is not None})

    @property
    def rejected(self) -> int:
        return sum(c.status == "rejected" for c in self.checks)

    def lines(self) -> Iterable[str]:
        yield f"{self.subject}:"
        for a in self.archives:
            link = "first archive" if a.number == 1 else f"follows {a.previous_archive[:16]}..."
            yield (f"  archive {a.number} of {a.server}: records {a.first_sequence}.."
                   f"{a.last_sequence}, hash {a.archive_hash} ({link})")
        if self.chain is not None:
            yield (f"  hash chain intact: {self.chain.count} records"
                   + (f" (sequence {self.chain.first_sequence}..{self.chain.last_sequence})"
                      if self.chain.count else ""))
        requests = sum(c.kind == "request" for c in self.checks)
        yield (f"  {requests} requests, {len(self.checks) - requests} responses, "
               f"{self.rejected} logged as rejected")
        yield f"  signatures verified: {self.signatures_verified}"
        yield f"  OCSP responses good at signing time: " \
              f"{sum(c.ocsp_this_update is not None for c in self.checks)}"
        stamped = [c.stamped_at for c in self.checks if c.stamped_at is not None]
        span = f" ({min(stamped).isoformat()} .. {max(stamped).isoformat()})" if stamped else ""
        yield (f"  time-stamps verified: {len(stamped)} records in {self.batches_verified} "
               f"batches{span}")
        if self.unstamped:
            yield f"  not yet time-stamped: {self.unstamped} (newest records)"
        for c in self.checks:
            if c.note is not None:
                yield f"  note: rejected record {c.sequence}: its signature: {c.note}"
        if self.failure is None:
            yield "OK: everything verifies"
        else:
            where = getattr(self.failure, "sequence", None)
            name = f"record {where}" if where is not None else "archive link"
            yield f"FAILED at {name}: {self.failure.message}"


async def _all_records(log: MessageLog, after: int) -> AsyncIterator[list[StoredRecord]]:
    while page := await log.records_after(after, _PAGE):
        yield page
        after = page[-1].sequence


async def verify_live_log(log: MessageLog, engine: Engine, trust: AuditTrust, *,
                          subject: str, pool: Executor | None = None) -> AuditReport:
    """Verify a live log record by record; the first failure goes in the report.

    With a ``pool`` (worker processes set up by :func:`audit_pool`), each page's evidence
    checks -- signatures, OCSP responses, stamps -- run in the workers while the next page
    is read; links and batches are still followed here, in order, and the failure reported
    is the first in sequence order whichever check it fails, as without a pool.
    """
    report = AuditReport(subject=subject)
    try:
        checkpoint = await live_checkpoint(log, engine)
        batches = LiveBatches(await log.batches())
        head, first, memo = checkpoint, None, AuditMemo()
        pending: asyncio.Future[list[RecordCheck]] | None = None
        # One pass, record by record, so the first broken record is named whatever
        # check it fails: its link, its content, its batch, its evidence.
        async for page in _all_records(log, checkpoint.sequence):
            evidence, broken = [], None
            for record in page:
                try:
                    check_link(record, head)  # verify_evidence checks its content hash
                    evidence.append(MessageEvidence(record, batches.of(record)))
                except BROKEN as exc:
                    broken = exc
                    break
                head = ChainCheckpoint(record.sequence, record.record_hash)
                first = first or record.sequence
            if pending is not None:
                _add_checks(report, await pending)
            pending = asyncio.ensure_future(_evidence_checks(evidence, trust, memo, pool))
            if broken is not None:
                _add_checks(report, await pending)  # an earlier record may fail first
                raise broken
        if pending is not None:
            _add_checks(report, await pending)
        report.chain = ChainReport(count=len(report.checks), first_sequence=first,
                                   last_sequence=head.sequence, last_hash=head.record_hash)
    except BROKEN as exc:
        report.failure = exc
    return report


def _add_checks(report: AuditReport, checks: list[RecordCheck]) -> None:
    report.checks += checks
    report.unstamped += sum(c.stamped_at is None for c in checks)


# -- evidence checks in worker processes ------------------------------------------------------

_CHUNK = 250
"""Records per task handed to a worker: large enough that pickling is a small share."""

_worker_trust: AuditTrust | None = None
_worker_memo = AuditMemo()


async def _evidence_checks(evidence: list[MessageEvidence], trust: AuditTrust,
                           memo: AuditMemo, pool: Executor | None) -> list[RecordCheck]:
    """``verify_evidence`` of each, in order; raises the first failure."""
    if pool is None:
        return [verify_evidence(e, trust, require_stamp=False, memo=memo) for e in evidence]
    loop = asyncio.get_running_loop()
    chunks = [evidence[i:i + _CHUNK] for i in range(0, len(evidence), _CHUNK)]
    results = await asyncio.gather(*(loop.run_in_executor(pool, _worker_checks, chunk)
                                     for chunk in chunks))
    checks: list[RecordCheck] = []
    for chunk, (done, failed) in zip(chunks, results, strict=True):
        checks += done
        if failed is not None:
            # Exceptions do not cross processes intact: redo the failing record here, where
            # it raises what it raises without a pool.
            bad = chunk[failed]
            verify_evidence(bad, trust, require_stamp=False, memo=memo)
            raise EvidenceError(bad.record.sequence, "the record failed in an audit worker")
    return checks


def _worker_checks(chunk: list[MessageEvidence]) -> tuple[list[RecordCheck], int | None]:
    """In a worker: the checks of ``chunk`` up to the first that fails, and its index."""
    assert _worker_trust is not None, "audit_pool sets the trust of its workers"
    checks = []
    for i, evidence in enumerate(chunk):
        try:
            checks.append(verify_evidence(evidence, _worker_trust, require_stamp=False,
                                          memo=_worker_memo))
        except Exception:  # any failure: the parent redoes this record and reports it
            return checks, i
    return checks, None


def _set_worker_trust(trust: AuditTrust) -> None:
    global _worker_trust
    _worker_trust = trust


def _ready(_: int) -> bool:
    return True


def audit_pool(trust: AuditTrust, workers: int) -> ProcessPoolExecutor:
    """Worker processes for :func:`verify_live_log`, forked now and sharing ``trust``.

    Call it while the process has a single thread (before an event loop's worker threads
    exist): the workers are forked, all at once, by this call -- ``trust`` holds
    certificates, which cannot be pickled, so it reaches them by inheritance.  The caller
    shuts the pool down.
    """
    pool = ProcessPoolExecutor(max_workers=workers,
                               mp_context=multiprocessing.get_context("fork"),
                               initializer=_set_worker_trust, initargs=(trust,))
    try:
        list(pool.map(_ready, range(workers)))  # every worker forked and initialised
    except BaseException:
        pool.shutdown(cancel_futures=True)
        raise
    return pool


class LiveBatches:
    """The live log's time-stamp batches, by id and by the range of records they cover."""

    def __init__(self, batches: Iterable[TimestampBatch]) -> None:
        self._by_id = {b.id: b for b in batches}
        self._ranges = sorted((b.first_sequence, b.last_sequence, b.id)
                              for b in self._by_id.values())

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
        batch = self._by_id.get(record.stamp.batch_id)
        if batch is None:
            raise StampInvalidError(seq, f"batch {record.stamp.batch_id} is missing")
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
