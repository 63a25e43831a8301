"""The evidence of one logged message as an ASiC-E container (pure).

One container per message-log record.  It holds everything an auditor needs to check that
record on its own, with the federation's trust anchors only:

=============================  ==================================  =========================
entry                          content                             media type
=============================  ==================================  =========================
``mimetype``                   ``application/vnd.etsi.asic-e+zip``  (ASiC-E, stored, first)
``message/header.json``        the signed header part (canonical    ``application/json``
                               JSON, as logged)
``message/body``               the body, as logged                  ``application/octet-stream``
``message/signature.jws``      the detached JWS                     ``application/jose``
``evidence/ocsp-N.der``        the OCSP responses stapled to the    ``application/ocsp-response``
                               message, N = 1, 2, ...
``evidence/timestamp.tst``     the RFC 3161 token of the record's   ``application/vnd.etsi.
                               time-stamping batch                  timestamp-token``
``evidence/record.json``       the record's other fields, its hash  ``application/json``
                               chain link and Merkle path
``META-INF/manifest.xml``      every entry above with its type      (:mod:`xchange.asic`)
=============================  ==================================  =========================

``evidence/record.json`` is canonical JSON (:mod:`xchange.canonical`)::

    {"type": "xchange-message-evidence", "v": 1,
     "record": {"sequence", "prev_hash", "record_hash", "query_id", "kind", "direction",
                "client", "service", "user_id", "issue", "status", "error_code",
                "created_at"},
     "ocsp": ["evidence/ocsp-1.der", ...],
     "timestamp": null | {"token": "evidence/timestamp.tst", "batch": <id>,
                          "first_sequence": n, "last_sequence": m, "root": hex,
                          "gen_time": time, "path": [hex, ...]}}

Times are ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (``created_at`` exactly as in the record hash).
``record`` with the message files and the OCSP responses (in ``ocsp`` order) is the record of
:mod:`xchange.messagelog`; ``timestamp`` is its batch (:class:`xchange.logbatch.TimestampBatch`)
and ``path`` its audit path, leaf upwards.  This module writes and reads the container and
checks that its parts fit together as a record; the cryptographic checks are
:mod:`xchange.audit`'s.  No I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

from xchange.asic import (
    ASIC_E_MIMETYPE,
    BAD_CONTAINER_CODE,
    Limits,
    read_container,
    write_container,
)
from xchange.body import read_all
from xchange.canonical import canonical_json, parse_json
from xchange.errors import BadRequestError
from xchange.logbatch import TimestampBatch
from xchange.messagelog import Direction, Kind, LogEntry, RecordStamp, Status, StoredRecord

__all__ = [
    "EVIDENCE_TYPE",
    "MessageEvidence",
    "format_time",
    "read_bundle",
    "read_evidence",
    "write_bundle",
    "write_evidence",
]

EVIDENCE_TYPE: Final = "xchange-message-evidence"

HEADER: Final = "message/header.json"
BODY: Final = "message/body"
SIGNATURE: Final = "message/signature.jws"
RECORD: Final = "evidence/record.json"
TOKEN: Final = "evidence/timestamp.tst"  # noqa: S105 - a file name
_MAX_OCSP: Final = 8

_TYPES: Final[dict[str, str]] = {
    HEADER: "application/json",
    BODY: "application/octet-stream",
    SIGNATURE: "application/jose",
    TOKEN: "application/vnd.etsi.timestamp-token",
    RECORD: "application/json",
    **{f"evidence/ocsp-{i}.der": "application/ocsp-response" for i in range(1, _MAX_OCSP + 1)},
}
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_BUNDLE_ENTRY: Final = re.compile(r"records/\d{12}\.asice")
_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True, slots=True)
class MessageEvidence:
    """A logged record (its OCSP staples and Merkle path included) and, once it is
    time-stamped, the batch whose token covers it."""

    record: StoredRecord
    batch: TimestampBatch | None = None

    def __post_init__(self) -> None:
        stamp = self.record.stamp
        if (stamp is None) != (self.batch is None) or (
            stamp is not None and self.batch is not None and stamp.batch_id != self.batch.id
        ):
            raise ValueError("a record's evidence has its batch if and only if it is stamped")


def _bad(message: str) -> BadRequestError:
    return BadRequestError(f"malformed message evidence: {message}", code=BAD_CONTAINER_CODE)


def format_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime(_TIME_FORMAT)


def write_evidence(evidence: MessageEvidence) -> bytes:
    """The ASiC-E container of ``evidence`` (deterministic bytes)."""
    record, entry, batch = evidence.record, evidence.record.entry, evidence.batch
    staples = entry.ocsp_responses
    if len(staples) > _MAX_OCSP:
        raise ValueError(f"at most {_MAX_OCSP} OCSP responses per message")
    ocsp_names = [f"evidence/ocsp-{i}.der" for i in range(1, len(staples) + 1)]
    description: dict[str, Any] = {
        "type": EVIDENCE_TYPE,
        "v": 1,
        "record": {
            "sequence": record.sequence,
            "prev_hash": record.prev_hash,
            "record_hash": record.record_hash,
            "query_id": entry.query_id,
            "kind": entry.kind,
            "direction": entry.direction,
            "client": entry.client,
            "service": entry.service,
            "user_id": entry.user_id,
            "issue": entry.issue,
            "status": entry.status,
            "error_code": entry.error_code,
            "created_at": format_time(entry.created_at),
        },
        "ocsp": ocsp_names,
        "timestamp": None if batch is None or record.stamp is None else {
            "token": TOKEN,
            "batch": batch.id,
            "first_sequence": batch.first_sequence,
            "last_sequence": batch.last_sequence,
            "root": batch.root.hex(),
            "gen_time": format_time(batch.gen_time),
            "path": [h.hex() for h in record.stamp.path],
        },
    }
    objects = [
        (HEADER, entry.header_part),
        (BODY, read_all(entry.body)),  # a container holds the body whole
        (SIGNATURE, entry.signature.encode("utf-8")),
        *zip(ocsp_names, staples, strict=True),
        *([(TOKEN, batch.token)] if batch is not None else []),
        (RECORD, canonical_json(description)),
    ]
    return write_container([(name, _TYPES[name], data) for name, data in objects])


def read_evidence(data: bytes, *, limits: Limits | None = None) -> MessageEvidence:
    """Read a container written by :func:`write_evidence`.

    Checks the layout (:func:`xchange.asic.read_container`) and that the parts make a
    well-formed record; does not verify any hash, signature or token.  Raises
    :class:`~xchange.errors.BadRequestError` with code ``server.messagelog.bad_container``.
    """
    container = read_container(data, media_type_of=_TYPES.get, limits=limits)
    try:
        doc = parse_json(container.get(RECORD))
    except BadRequestError as exc:
        raise _bad(f"{RECORD}: {exc.message}") from exc
    if not isinstance(doc, dict) or doc.get("type") != EVIDENCE_TYPE or doc.get("v") != 1:
        raise _bad(f"{RECORD} is not an {EVIDENCE_TYPE} v1 document")
    _exact_keys(doc, {"type", "v", "record", "ocsp", "timestamp"}, RECORD)
    ocsp_names = doc["ocsp"]
    expected = [f"evidence/ocsp-{i}.der" for i in range(1, len(ocsp_names) + 1)] \
        if isinstance(ocsp_names, list) else None
    if ocsp_names != expected:
        raise _bad("ocsp must list evidence/ocsp-1.der, evidence/ocsp-2.der, ... in order")
    stamped = doc["timestamp"] is not None
    present = {HEADER, BODY, SIGNATURE, RECORD, *ocsp_names, *([TOKEN] if stamped else [])}
    if set(container.objects) != present:
        extra = sorted(set(container.objects) ^ present)
        raise _bad(f"entries not described by {RECORD}: {', '.join(extra)}")
    staples = tuple(container.get(name) for name in ocsp_names)
    batch, stamp = _stamp(doc["timestamp"], container.objects)
    record = _record(doc["record"], container.objects, staples, stamp)
    return MessageEvidence(record=record, batch=batch)


def write_bundle(evidence: Sequence[MessageEvidence]) -> bytes:
    """Several records' containers in one ASiC-E container (an exported query):
    ``records/<sequence, 12 digits>.asice`` each, in sequence order."""
    ordered = sorted(evidence, key=lambda e: e.record.sequence)
    return write_container([(_bundle_name(e.record.sequence), ASIC_E_MIMETYPE,
                             write_evidence(e)) for e in ordered])


def read_bundle(data: bytes, *, limits: Limits | None = None) -> list[MessageEvidence]:
    """The evidence in a container written by :func:`write_bundle`, in sequence order."""
    container = read_container(
        data, limits=limits,
        media_type_of=lambda n: ASIC_E_MIMETYPE if _BUNDLE_ENTRY.fullmatch(n) else None)
    out = []
    for name, inner in container.objects.items():
        evidence = read_evidence(inner, limits=limits)
        if name != _bundle_name(evidence.record.sequence):
            raise _bad(f"{name} holds record {evidence.record.sequence}")
        out.append(evidence)
    if not out:
        raise _bad("the bundle holds no records")
    return sorted(out, key=lambda e: e.record.sequence)


def _bundle_name(sequence: int) -> str:
    return f"records/{sequence:012d}.asice"


def _exact_keys(doc: Mapping[str, Any], keys: set[str], what: str) -> None:
    if set(doc) != keys:
        raise _bad(f"{what} must have exactly the keys {', '.join(sorted(keys))}")


def _record(doc: object, objects: Mapping[str, bytes], staples: tuple[bytes, ...],
            stamp: RecordStamp | None) -> StoredRecord:
    keys = {"sequence", "prev_hash", "record_hash", "query_id", "kind", "direction", "client",
            "service", "user_id", "issue", "status", "error_code", "created_at"}
    if not isinstance(doc, dict):
        raise _bad("record must be an object")
    _exact_keys(doc, keys, "record")
    try:
        created_at = datetime.strptime(doc["created_at"], _TIME_FORMAT).replace(tzinfo=UTC)
        signature = objects[SIGNATURE].decode("ascii")
        entry = LogEntry(
            query_id=doc["query_id"],
            kind=cast(Kind, doc["kind"]),
            direction=cast(Direction, doc["direction"]),
            client=doc["client"],
            service=doc["service"],
            user_id=doc["user_id"],
            issue=doc["issue"],
            header_part=objects[HEADER],
            body=objects[BODY],
            signature=signature,
            status=cast(Status, doc["status"]),
            error_code=doc["error_code"],
            created_at=created_at,
            ocsp_responses=staples,
        )
        return StoredRecord(entry=entry, sequence=doc["sequence"], prev_hash=doc["prev_hash"],
                            record_hash=doc["record_hash"], stamp=stamp)
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(f"record: {exc}") from exc


def _hex(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise _bad(f"{what} must be 64 lowercase hex characters")
    return bytes.fromhex(value)


def _stamp(doc: object, objects: Mapping[str, bytes]
           ) -> tuple[TimestampBatch | None, RecordStamp | None]:
    if doc is None:
        return None, None
    if not isinstance(doc, dict):
        raise _bad("timestamp must be an object or null")
    _exact_keys(doc, {"token", "batch", "first_sequence", "last_sequence", "root", "gen_time",
                      "path"}, "timestamp")
    if doc["token"] != TOKEN:
        raise _bad(f"timestamp.token must be {TOKEN}")
    path = doc["path"]
    if not isinstance(path, list) or len(path) > 64:
        raise _bad("timestamp.path must be a list of at most 64 hashes")
    try:
        batch = TimestampBatch(
            id=doc["batch"], first_sequence=doc["first_sequence"],
            last_sequence=doc["last_sequence"], root=_hex(doc["root"], "timestamp.root"),
            token=objects[TOKEN],
            gen_time=datetime.strptime(doc["gen_time"], _TIME_FORMAT).replace(tzinfo=UTC))
        stamp = RecordStamp(batch.id, tuple(_hex(h, "timestamp.path") for h in path))
    except (TypeError, ValueError) as exc:
        raise _bad(f"timestamp: {exc}") from exc
    return batch, stamp
