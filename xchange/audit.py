"""Offline verification of message-log evidence with the federation's trust anchors (pure).

What an auditor runs, years later, on a container, an archive or a live log: each record's
evidence is checked against only

* the approved CAs (their certificates, for signatures and OCSP responses),
* the approved TSA certificates (for time-stamp tokens),
* the federation's OCSP freshness limit,

gathered in an :class:`AuditTrust` (from a global configuration, or given by hand).
:func:`verify_evidence` checks one record and returns what it established as a
:class:`RecordCheck`, or raises naming the record: :class:`~xchange.errors.ChainBrokenError`
when the record does not match its hash, :class:`~xchange.errors.StampInvalidError` for its
time-stamp, :class:`~xchange.errors.EvidenceError` for anything else.
:func:`verify_archive` does so for every record of an archive already read by
:func:`xchange.archive.read_archive` (which checked its links and chain).

No I/O, no clock: every time is the record's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509

from xchange.archive import ArchiveContents
from xchange.canonical import parse_json
from xchange.certstatus import StapleVerifier, approved_ca_of
from xchange.errors import (
    BadRequestError,
    CertificateValidationError,
    ChainBrokenError,
    EvidenceError,
    InvalidSignatureError,
    StampInvalidError,
)
from xchange.evidence import MessageEvidence
from xchange.globalconf import ApprovedCA, GlobalConf
from xchange.identifiers import ClientId, ServiceId
from xchange.logbatch import TimestampBatch, verify_batch, verify_record_stamp
from xchange.merkle import PathMemo
from xchange.messagelog import StoredRecord, content_hash
from xchange.ocsp import CLOCK_SKEW
from xchange.signing import VerifiedSignature, verify_message

__all__ = [
    "AuditMemo",
    "AuditTrust",
    "CheckTally",
    "RecordCheck",
    "verify_all",
    "verify_archive",
    "verify_evidence",
]

_CODE = EvidenceError.default_code
_MEMO_SIZE = 1024
"""Certificates an :class:`AuditMemo` remembers the issuer of; when full it starts again."""


@dataclass(frozen=True, slots=True)
class AuditTrust:
    """The trust anchors of an audit: approved CAs and TSA certificates, OCSP freshness."""

    cas: tuple[ApprovedCA, ...]
    tsas: tuple[x509.Certificate, ...]
    ocsp_max_age: timedelta = timedelta(hours=1)
    anchors: tuple[x509.Certificate, ...] = field(init=False, repr=False, compare=False)
    """The approved CAs' certificates: one tuple for every record checked, so that what was
    remembered of a signature's certificate path for these anchors is found at once."""

    def __post_init__(self) -> None:
        if not self.cas:
            raise ValueError("an audit needs at least one approved CA")
        if self.ocsp_max_age <= timedelta(0):
            raise ValueError("ocsp_max_age must be positive")
        object.__setattr__(self, "anchors", tuple(ca.certificate for ca in self.cas))

    @classmethod
    def from_globalconf(cls, conf: GlobalConf) -> AuditTrust:
        return cls(cas=conf.approved_cas,
                   tsas=tuple(t.certificate for t in conf.approved_tsas),
                   ocsp_max_age=timedelta(seconds=conf.settings.ocsp_freshness_seconds))


@dataclass(frozen=True, slots=True)
class RecordCheck:
    """What :func:`verify_evidence` established about one record."""

    sequence: int
    kind: str
    status: str
    signer: str | None
    """The member whose signature verified; ``None`` for a rejected record whose did not."""
    note: str | None
    """Why a rejected record's signature does not verify (it may be why it was refused)."""
    ocsp_this_update: datetime | None
    """thisUpdate of the OCSP response that proved the signing certificate good."""
    stamped_at: datetime | None
    """The time-stamp's genTime; ``None`` when not time-stamped (live log only)."""
    batch: int | None = None
    """The id of the time-stamp batch whose token covers the record."""


@dataclass(slots=True)
class CheckTally:
    """What a run of :class:`RecordCheck` established, in counts: all a report prints.

    A live log of millions of records is checked in worker processes; each sends back its
    tally (a few numbers), not a check per record, and the tallies are merged in order.
    """

    records: int = 0
    requests: int = 0
    rejected: int = 0
    signatures: int = 0
    """Records whose signature verified."""
    ocsp: int = 0
    """Records whose OCSP response proved the signing certificate good."""
    stamped: int = 0
    first_stamp: datetime | None = None
    last_stamp: datetime | None = None
    batches: set[int] = field(default_factory=set)
    notes: list[tuple[int, str]] = field(default_factory=list)
    """(sequence, why) of each rejected record whose signature does not verify."""

    def add(self, check: RecordCheck) -> None:
        self.records += 1
        self.requests += check.kind == "request"
        self.rejected += check.status == "rejected"
        self.signatures += check.signer is not None
        self.ocsp += check.ocsp_this_update is not None
        if check.note is not None:
            self.notes.append((check.sequence, check.note))
        if (at := check.stamped_at) is not None:
            self.stamped += 1
            if self.first_stamp is None or at < self.first_stamp:
                self.first_stamp = at
            if self.last_stamp is None or at > self.last_stamp:
                self.last_stamp = at
        if check.batch is not None:
            self.batches.add(check.batch)

    def add_all(self, checks: Iterable[RecordCheck]) -> None:
        for check in checks:
            self.add(check)

    def merge(self, other: CheckTally) -> None:
        """Add ``other``, the tally of the records that follow these."""
        self.records += other.records
        self.requests += other.requests
        self.rejected += other.rejected
        self.signatures += other.signatures
        self.ocsp += other.ocsp
        self.stamped += other.stamped
        stamps = [t for t in (self.first_stamp, self.last_stamp, other.first_stamp,
                              other.last_stamp) if t is not None]
        self.first_stamp = min(stamps, default=None)
        self.last_stamp = max(stamps, default=None)
        self.batches |= other.batches
        self.notes += other.notes


# -- verification -------------------------------------------------------------------------------


class AuditMemo:
    """Facts already verified during one audit, so that an OCSP response stapled to many
    messages, or a batch token covering many records, is checked once, and the Merkle
    paths of a batch's records are followed only up to where they join
    (:class:`~xchange.merkle.PathMemo`).  Holds verified facts
    only (never a decision): pass one to every :func:`verify_evidence` of a run."""

    def __init__(self) -> None:
        self.staples = StapleVerifier()
        self.paths = PathMemo()
        self._batches: dict[tuple[int, bytes, bytes, datetime], datetime] = {}
        self._issuers: dict[int, tuple[x509.Certificate, tuple[ApprovedCA, ...],
                                       ApprovedCA]] = {}

    def issuer(self, cert: x509.Certificate, trust: AuditTrust) -> ApprovedCA:
        """:func:`~xchange.certstatus.approved_ca_of` ``cert`` among ``trust``'s CAs, once
        per certificate object (a signer's parsed chain is shared by all its messages) and
        tuple of CAs: keyed by identity, the objects kept and compared with ``is``.  A
        certificate no approved CA issued raises, and is asked again next time."""
        cas = trust.cas
        hit = self._issuers.get(id(cert))
        if hit is not None and hit[0] is cert and hit[1] is cas:
            return hit[2]
        ca = approved_ca_of(cert, cas, code=_CODE)
        if len(self._issuers) >= _MEMO_SIZE:
            self._issuers.clear()
        self._issuers[id(cert)] = (cert, cas, ca)
        return ca

    def batch_time(self, batch: TimestampBatch, trust: AuditTrust) -> datetime:
        """The verified genTime of ``batch``'s token (:func:`xchange.logbatch.verify_batch`)."""
        key = (batch.id, batch.root, batch.token, batch.gen_time)
        if key not in self._batches:
            self._batches[key] = verify_batch(batch, trust.tsas).gen_time
        return self._batches[key]


def verify_evidence(
    evidence: MessageEvidence, trust: AuditTrust, *, require_stamp: bool = True,
    memo: AuditMemo | None = None,
) -> RecordCheck:
    """Verify one record's evidence; see the module docstring for what raises.

    Plan:
      1. the record's fields, header part and body match its record hash;
      2. an accepted record's header part names the logged message id, client and service,
         and its signature verifies, by the member it must be from, with a certificate that
         chained to an approved CA when the record was made (a rejected record's signature
         is tried, and the outcome noted);
      3. an accepted record's stapled OCSP responses prove that certificate good, fresh at
         the time of the record;
      4. the record's Merkle path leads from its hash to its batch's root
         (:func:`xchange.logbatch.verify_record_stamp`);
      5. the batch's token is an approved TSA's over that root, with the batch's genTime,
         not earlier than the record (within the clock skew).
    Failures of 4 and 5 raise :class:`~xchange.errors.StampInvalidError` for this record.
    """
    record, entry = evidence.record, evidence.record.entry
    seq = record.sequence
    memo = memo or AuditMemo()
    # 1.
    if content_hash(record) != record.record_hash:
        raise ChainBrokenError(seq, "record content does not match its hash")
    # 2.
    signed: VerifiedSignature | None = None
    note = None
    try:
        if entry.status == "ok":
            _check_header_part(record)
        signed = verify_message(entry.signature, entry.header_part, entry.body,
                                expected_signer=_expected_signer(record),
                                anchors=trust.anchors, at=entry.created_at, code=_CODE)
    except (InvalidSignatureError, BadRequestError) as exc:
        if entry.status == "ok":
            raise EvidenceError(seq, f"signature: {exc.message}") from exc
        note = exc.message
    # 3.
    this_update = None
    if signed is not None and entry.status == "ok":
        try:
            issuer = memo.issuer(signed.certificate, trust)
            status = memo.staples.check(
                entry.ocsp_responses, signed.certificate, issuer.certificate,
                at=entry.created_at, max_age=trust.ocsp_max_age, code=_CODE)
        except CertificateValidationError as exc:
            raise EvidenceError(seq, f"OCSP: {exc.message}") from exc
        this_update = status.this_update
    # 4. and 5.
    stamped_at = None
    if evidence.batch is not None:
        stamped_at = _check_stamp(record, evidence.batch, trust, memo)
    elif require_stamp:
        raise StampInvalidError(seq, "the record is not time-stamped")
    return RecordCheck(sequence=seq, kind=entry.kind, status=entry.status,
                       signer=None if signed is None else str(signed.signer), note=note,
                       ocsp_this_update=this_update, stamped_at=stamped_at,
                       batch=None if evidence.batch is None else evidence.batch.id)


def verify_archive(contents: ArchiveContents, trust: AuditTrust) -> list[RecordCheck]:
    """Verify the evidence of every record of an archive, in order (all are time-stamped)."""
    return verify_all(contents.evidence, trust)


def verify_all(
    evidence: Iterable[MessageEvidence], trust: AuditTrust, *, require_stamp: bool = True
) -> list[RecordCheck]:
    memo = AuditMemo()
    return [verify_evidence(e, trust, require_stamp=require_stamp, memo=memo) for e in evidence]


def _expected_signer(record: StoredRecord) -> ClientId:
    try:
        if record.entry.kind == "request":
            return ClientId.parse(record.entry.client)
        return ServiceId.parse(record.entry.service).provider
    except BadRequestError as exc:
        raise EvidenceError(record.sequence, f"the record names no valid signer: {exc.message}"
                            ) from exc


def _check_header_part(record: StoredRecord) -> None:
    entry = record.entry
    try:
        header = parse_json(entry.header_part)
    except BadRequestError as exc:
        raise EvidenceError(record.sequence, f"header part: {exc.message}") from exc
    expected: dict[str, str | None] = {"id": entry.query_id, "client": entry.client,
                                       "service": entry.service}
    if entry.kind == "request":
        expected |= {"user_id": entry.user_id, "issue": entry.issue}
    if not isinstance(header, dict) or any(header.get(k) != v for k, v in expected.items()):
        raise EvidenceError(record.sequence,
                            "the signed header part does not name the logged message id, "
                            "client, service, user id or issue")


def _check_stamp(record: StoredRecord, batch: TimestampBatch, trust: AuditTrust,
                 memo: AuditMemo) -> datetime:
    seq = record.sequence
    verify_record_stamp(record, batch, memo=memo.paths)
    if not trust.tsas:
        raise StampInvalidError(seq, "no TSA certificate to verify the time-stamp with")
    try:
        gen_time = memo.batch_time(batch, trust)
    except StampInvalidError as exc:
        # verify_batch names the batch's first record; this is about this one.
        raise StampInvalidError(seq, exc.reason) from exc
    if gen_time < record.entry.created_at - CLOCK_SKEW:
        raise StampInvalidError(seq, f"the time-stamp ({gen_time.isoformat()}) is older "
                                     f"than the record ({record.entry.created_at.isoformat()})")
    return gen_time
