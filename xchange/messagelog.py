"""The message log's record model and hash chain (pure core).

A security server logs one :class:`LogEntry` for every signed message it passes on -- before
passing it on (design: "Message log") -- and for every signed message it refuses once it has
parsed it (bad signature, access denied, replay, bad response), as *rejected* with the code
it answered.  Records are
numbered 1, 2, 3... and hash-chained: each :class:`StoredRecord` carries the hash of the
record before it, so altering, inserting, deleting or reordering any record breaks the chain
at that record and :func:`verify_chain` reports where.

Canonical encoding (the bytes that are hashed; copied into ``docs/protocol.md``)
---------------------------------------------------------------------------------
::

    record_hash = lowercase_hex( SHA-256( F(tag) || F(v1) || F(v2) || ... || F(v16) ) )

where ``||`` is concatenation and every field is encoded by ``F``::

    F(absent)  = 0x00
    F(b)       = 0x01 || uint32_be(len(b)) || b          (b: a byte string)

Text is UTF-8 (strict; no BOM, no normalisation).  The fields, in this order:

==  ==============  ==========================================================
 #  field           bytes
==  ==============  ==========================================================
 0  tag             ``xchange-messagelog-v2`` (ASCII; names this format)
 1  sequence        decimal ASCII, no sign, no leading zeros (``1``, ``42``)
 2  prev_hash       64 lowercase hex ASCII characters
 3  query_id        UTF-8
 4  kind            ``request`` | ``response``
 5  direction       ``outgoing`` | ``incoming``
 6  client          UTF-8, REST form (``INSTANCE/CLASS/CODE/SUBSYSTEM``)
 7  service         UTF-8, REST form
 8  user_id         UTF-8, or absent
 9  issue           UTF-8, or absent
10  header_part     the 32 raw bytes of SHA-256(header_part)
11  body            the 32 raw bytes of SHA-256(body)
12  signature       UTF-8 (compact detached JWS, or its batch form)
13  ocsp_responses  F(r1) || F(r2) || ... over the stapled DER OCSP responses, in
                    the order stapled (present, and empty, when there are none)
14  status          ``ok`` | ``rejected``
15  error_code      UTF-8, or absent
16  created_at      UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (always 6 fraction digits)
==  ==============  ==========================================================

Version 2 added ``ocsp_responses``: the OCSP responses stapled to the message (the signer's
certificate status, then the sending server's TLS certificate status), kept whole so that an
auditor can check the signer's certificate status offline, years later.  A v1 log does not
verify as v2 (its tag differs); none were kept in production.

The first record's ``prev_hash`` is 64 zeros (:data:`GENESIS_HASH`).  The encoding is
prefix-free (every field says whether it is present and how long it is), so no two different
records share an encoding, whatever characters their fields contain.  Body and header part
enter as digests so the chain can be checked, and bodies later encrypted or purged, without
changing any hash.

Time-stamps are not part of a record: a record is chained when it is logged and stamped
later, in a batch, by a token over a Merkle root (:mod:`xchange.logbatch`).  The batch and
audit path a stored record is stamped by travel beside it (:attr:`StoredRecord.stamp`).

This module does not store, time-stamp or encrypt anything and never reads the clock:
``created_at`` is passed in.  A verified chain proves the records are unaltered relative to
each other; cutting records off the *end* of a log is only detectable against an outside
anchor (a checkpoint, a time-stamp or an archive), which callers pass as ``checkpoint``.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, Protocol, get_args

from xchange.body import ExternalBody, MessageBody, body_sha256
from xchange.errors import ChainBrokenError

__all__ = [
    "CHAIN_BROKEN_CODE",
    "FORMAT_TAG",
    "GENESIS",
    "GENESIS_HASH",
    "ChainBrokenError",
    "ChainCheckpoint",
    "ChainReport",
    "Direction",
    "Kind",
    "Linked",
    "LogEntry",
    "RecordStamp",
    "Status",
    "StoredRecord",
    "canonical_record_bytes",
    "chain_record",
    "check_link",
    "content_hash",
    "decode_der_list",
    "encode_der_list",
    "verify_chain",
]

Kind = Literal["request", "response"]
Direction = Literal["outgoing", "incoming"]
Status = Literal["ok", "rejected"]

_LITERALS: Final = (("kind", get_args(Kind)), ("direction", get_args(Direction)),
                    ("status", get_args(Status)))

_KINDS: Final = frozenset(get_args(Kind))
_DIRECTIONS: Final = frozenset(get_args(Direction))

GENESIS_HASH: Final = "0" * 64
FORMAT_TAG: Final = b"xchange-messagelog-v2"
CHAIN_BROKEN_CODE: Final = "server.messagelog.chain_broken"

_HASH_RE = re.compile(r"[0-9a-f]{64}")
_MAX_FIELD = 2**32 - 1


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str")
    if value.isascii():  # the usual case, and encodable by definition
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} is not valid Unicode text") from exc


def _check_sequence(sequence: object) -> None:
    if isinstance(sequence, bool) or not isinstance(sequence, int):
        raise TypeError("sequence must be an int")
    if sequence < 1:
        raise ValueError("sequence starts at 1")


def _check_hash(name: str, value: object) -> None:
    if not isinstance(value, str) or not _HASH_RE.fullmatch(value):
        raise ValueError(f"{name} must be 64 lowercase hex characters")


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One logged message, as handed to the log (before it is numbered and chained).

    ``direction`` is seen from the logging server.  ``status`` is ``rejected`` (with the
    ``error_code`` that was answered) when the message was refused, e.g. its signature did
    not verify; it is logged all the same.  ``created_at`` must be timezone-aware and is
    normalised to UTC.  Callers build entries from already-parsed messages, so a malformed
    entry is a programming error: :class:`ValueError` or :class:`TypeError`.
    """

    query_id: str
    kind: Kind
    direction: Direction
    client: str
    service: str
    user_id: str | None
    issue: str | None
    header_part: bytes
    body: MessageBody
    """The body's bytes, or -- for a large body -- an :class:`~xchange.body.ExternalBody`."""
    signature: str
    status: Status
    error_code: str | None
    created_at: datetime
    ocsp_responses: tuple[bytes, ...]
    """The DER OCSP responses stapled to the message, in the order stapled."""

    def __post_init__(self) -> None:
        if not self._plainly_valid():
            self._check()
        created = self.created_at
        if created.tzinfo is not UTC:
            object.__setattr__(self, "created_at", created.astimezone(UTC))

    def _plainly_valid(self) -> bool:
        """The usual entry, recognised at once (every record an audit reads is built
        again): exact types, ASCII text, a UTC time.  ``False`` does not mean invalid:
        :meth:`_check` then decides, and says what is wrong."""
        user_id, issue, error_code = self.user_id, self.issue, self.error_code
        created = self.created_at
        return (self.kind in _KINDS and self.direction in _DIRECTIONS
                and ((self.status == "ok" and error_code is None)
                     or (self.status == "rejected" and type(error_code) is str
                         and error_code.isascii()))
                and type(self.query_id) is str and self.query_id.isascii()
                and type(self.client) is str and self.client.isascii()
                and type(self.service) is str and self.service.isascii()
                and type(self.signature) is str and self.signature.isascii()
                and (user_id is None or (type(user_id) is str and user_id.isascii()))
                and (issue is None or (type(issue) is str and issue.isascii()))
                and type(self.header_part) is bytes and type(self.body) is bytes
                and type(self.ocsp_responses) is tuple
                and all(type(r) is bytes for r in self.ocsp_responses)
                and type(created) is datetime and created.tzinfo is UTC)

    def _check(self) -> None:
        for name, allowed in _LITERALS:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}")
        if (self.status == "rejected") != (self.error_code is not None):
            raise ValueError("error_code is required for, and only for, a rejected message")
        for name in ("query_id", "client", "service", "signature"):
            _check_text(name, getattr(self, name))
        for name in ("user_id", "issue", "error_code"):
            value = getattr(self, name)
            if value is not None:
                _check_text(name, value)
        if not isinstance(self.header_part, bytes):
            raise TypeError("header_part must be bytes")
        if not isinstance(self.body, bytes | ExternalBody):
            raise TypeError("body must be bytes or an ExternalBody")
        if not isinstance(self.ocsp_responses, tuple) or not all(
            isinstance(r, bytes) for r in self.ocsp_responses
        ):
            raise TypeError("ocsp_responses must be a tuple of bytes")
        if not isinstance(self.created_at, datetime) or self.created_at.utcoffset() is None:
            raise ValueError("created_at must be a timezone-aware datetime")


@dataclass(frozen=True, slots=True)
class RecordStamp:
    """Where a record's time-stamp is: the batch whose token covers it, and the record's
    audit path (sibling hashes, leaf upwards) to that batch's Merkle root.

    The leaf's index in the tree is the record's sequence minus the batch's first sequence;
    see :mod:`xchange.logbatch`.
    """

    batch_id: int
    path: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if isinstance(self.batch_id, bool) or not isinstance(self.batch_id, int):
            raise TypeError("batch_id must be an int")
        if self.batch_id < 1:
            raise ValueError("batch ids start at 1")
        if not isinstance(self.path, tuple) or not all(
            isinstance(h, bytes) and len(h) == 32 for h in self.path
        ):
            raise ValueError("path must be a tuple of 32-byte hashes")


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A :class:`LogEntry` numbered and chained: what the log holds.

    ``stamp`` is ``None`` until the record's batch is time-stamped; it is not covered by
    ``record_hash`` (the stamp covers the record, not the other way round).
    """

    entry: LogEntry
    sequence: int
    prev_hash: str
    record_hash: str
    stamp: RecordStamp | None = None

    def __post_init__(self) -> None:
        _check_sequence(self.sequence)
        _check_hash("prev_hash", self.prev_hash)
        _check_hash("record_hash", self.record_hash)


@dataclass(frozen=True, slots=True)
class ChainCheckpoint:
    """A trusted point to verify from: the record ``sequence`` had hash ``record_hash``.

    :data:`GENESIS` (sequence 0, 64 zeros) is the start of every log.
    """

    sequence: int
    record_hash: str

    def __post_init__(self) -> None:
        if isinstance(self.sequence, bool) or not isinstance(self.sequence, int):
            raise TypeError("sequence must be an int")
        if self.sequence < 0:
            raise ValueError("sequence must not be negative")
        _check_hash("record_hash", self.record_hash)


GENESIS: Final = ChainCheckpoint(0, GENESIS_HASH)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The result of a successful :func:`verify_chain`.

    ``first_sequence`` is ``None`` when there were no records; ``last_sequence`` and
    ``last_hash`` are then the checkpoint's, so they always name the head to continue from.
    """

    count: int
    first_sequence: int | None
    last_sequence: int
    last_hash: str


def canonical_record_bytes(entry: LogEntry, sequence: int, prev_hash: str) -> bytes:
    """The canonical encoding of a record (module docstring), the input to its hash."""
    _check_sequence(sequence)
    _check_hash("prev_hash", prev_hash)
    return _canonical(entry, sequence, prev_hash)


def _canonical(entry: LogEntry, sequence: int, prev_hash: str) -> bytes:
    """:func:`canonical_record_bytes` of arguments already checked.  Written out field by
    field, in one join: it runs for every record logged and every record an audit reads."""
    # LogEntry holds created_at in UTC: "+00:00" becomes "Z".
    created = (entry.created_at.isoformat(timespec="microseconds")[:-6] + "Z").encode("ascii")
    number, prev = str(sequence).encode("ascii"), prev_hash.encode("ascii")
    query_id, client = entry.query_id.encode("utf-8"), entry.client.encode("utf-8")
    service, signature = entry.service.encode("utf-8"), entry.signature.encode("utf-8")
    user_id, issue, error_code = entry.user_id, entry.issue, entry.error_code
    ocsp = encode_der_list(entry.ocsp_responses)
    pack = _PRESENT.pack
    try:
        return b"".join((
            _TAG_FIELD,
            pack(1, len(number)), number,
            pack(1, len(prev)), prev,
            pack(1, len(query_id)), query_id,
            _LITERAL_FIELDS[entry.kind],
            _LITERAL_FIELDS[entry.direction],
            pack(1, len(client)), client,
            pack(1, len(service)), service,
            _ABSENT if user_id is None else _field(user_id),
            _ABSENT if issue is None else _field(issue),
            _DIGEST_PREFIX, hashlib.sha256(entry.header_part).digest(),
            _DIGEST_PREFIX, body_sha256(entry.body),
            pack(1, len(signature)), signature,
            pack(1, len(ocsp)), ocsp,
            _LITERAL_FIELDS[entry.status],
            _ABSENT if error_code is None else _field(error_code),
            pack(1, len(created)), created,
        ))
    except struct.error as exc:
        raise ValueError("field too long for the canonical encoding") from exc


def _field(value: bytes | str | None) -> bytes:
    """``F`` of the module docstring."""
    if value is None:
        return _ABSENT
    raw = value.encode("utf-8") if isinstance(value, str) else value
    size = len(raw)
    if size > _MAX_FIELD:
        raise ValueError("field too long for the canonical encoding")
    return _PRESENT.pack(1, size) + raw


_PRESENT: Final = struct.Struct(">BI")
"""The five bytes before a present field: 0x01 and its length."""
_ABSENT: Final = b"\x00"
_TAG_FIELD: Final = _field(FORMAT_TAG)
_DIGEST_PREFIX: Final = _PRESENT.pack(1, hashlib.sha256().digest_size)
"""The five bytes before a SHA-256 digest's field (fields 10 and 11)."""
_LITERAL_FIELDS: Final = {value: _field(value)
                          for _, allowed in _LITERALS for value in allowed}
"""The fields of kind, direction and status, encoded (LogEntry checks they are among these)."""


def encode_der_list(items: Iterable[bytes]) -> bytes:
    """``F(i1) || F(i2) || ...``: a list of byte strings as one, the form field 13 takes
    (and the log stores)."""
    return b"".join(_field(item) for item in items)


def decode_der_list(data: bytes) -> tuple[bytes, ...]:
    """The inverse of :func:`encode_der_list`; :class:`ValueError` if ``data`` is not one."""
    items, offset = [], 0
    while offset < len(data):
        if data[offset] != 1 or offset + 5 > len(data):
            raise ValueError("not an encoded list of byte strings")
        (size,) = struct.unpack_from(">I", data, offset + 1)
        start, offset = offset + 5, offset + 5 + size
        if offset > len(data):
            raise ValueError("not an encoded list of byte strings: truncated item")
        items.append(data[start:offset])
    return tuple(items)


def chain_record(entry: LogEntry, sequence: int, prev_hash: str) -> StoredRecord:
    """Number ``entry`` and link it to the record before it (whose hash is ``prev_hash``)."""
    digest = hashlib.sha256(canonical_record_bytes(entry, sequence, prev_hash)).hexdigest()
    return StoredRecord(entry=entry, sequence=sequence, prev_hash=prev_hash, record_hash=digest)


def content_hash(record: StoredRecord) -> str:
    """The record hash ``record``'s content calls for (whatever hash it claims): what an
    audit compares with :attr:`StoredRecord.record_hash`."""
    # A StoredRecord's sequence and prev_hash were checked when it was built.
    return hashlib.sha256(_canonical(record.entry, record.sequence, record.prev_hash)
                          ).hexdigest()


class Linked(Protocol):
    """What :func:`check_link` looks at: a record's number and its predecessor's hash."""

    @property
    def sequence(self) -> int: ...

    @property
    def prev_hash(self) -> str: ...


def check_link(record: Linked, head: ChainCheckpoint | StoredRecord) -> None:
    """Steps 1 and 2 of :func:`verify_chain` for one record after ``head`` (a checkpoint, or
    the record before): its number and its link, not its content (for a caller that
    recomputes the record hash anyway)."""
    expected = head.sequence + 1
    # 1. Numbering: a gap means a record was deleted, a lower number means one was
    #    inserted, duplicated or moved.
    if record.sequence != expected:
        raise ChainBrokenError(
            expected, f"expected record {expected}, found record {record.sequence}"
        )
    # 2. Link: the record must name its predecessor's hash.
    if record.prev_hash != head.record_hash:
        raise ChainBrokenError(
            record.sequence, "prev_hash does not match the previous record's hash"
        )


def verify_chain(
    records: Iterable[StoredRecord], *, checkpoint: ChainCheckpoint = GENESIS
) -> ChainReport:
    """Verify that ``records``, in order, continue the chain from ``checkpoint``.

    Raises :class:`ChainBrokenError` at the first record that is missing, out of place,
    altered or not linked to its predecessor.  ``records`` is consumed once, so a lazy
    iterable (a database cursor read in batches) verifies in constant memory.
    """
    count = 0
    first: int | None = None
    head = checkpoint
    for record in records:
        check_link(record, head)  # 1. and 2.
        # 3. Content: recompute the hash over every field, so any alteration shows here.
        if content_hash(record) != record.record_hash:
            raise ChainBrokenError(record.sequence, "record content does not match its hash")
        if first is None:
            first = record.sequence
        count += 1
        head = ChainCheckpoint(record.sequence, record.record_hash)
    return ChainReport(
        count=count, first_sequence=first, last_sequence=head.sequence, last_hash=head.record_hash
    )
