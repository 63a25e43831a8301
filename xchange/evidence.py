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
     "timestamp": null | {"token": "evidence/timestamp.tst", "hash_alg": "sha256",
                          "leaf": hex, "root": hex,
                          "path": [{"side": "left" | "right", "hash": hex}, ...]}}

``created_at`` is ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` as in the record hash.  This module writes
and reads the container and checks that its parts fit together as a record
(:class:`~xchange.messagelog.StoredRecord` validation); the cryptographic checks are
:mod:`xchange.audit`'s.  No I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, cast

from xchange.asic import BAD_CONTAINER_CODE, Limits, read_container, write_container
from xchange.canonical import canonical_json, parse_json
from xchange.errors import BadRequestError
from xchange.messagelog import Direction, Kind, LogEntry, Status, StoredRecord

__all__ = [
    "EVIDENCE_TYPE",
    "BatchStamp",
    "MerkleStep",
    "MessageEvidence",
    "format_time",
    "read_evidence",
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
_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True, slots=True)
class MerkleStep:
    """One step from a leaf towards the root: the sibling hash and on which side it is."""

    side: Literal["left", "right"]
    hash: bytes


@dataclass(frozen=True, slots=True)
class BatchStamp:
    """The time-stamp of a record's batch: the token over the batch's Merkle root, the
    record's leaf and its path to that root."""

    token: bytes
    hash_alg: str
    leaf: bytes
    root: bytes
    path: tuple[MerkleStep, ...]


@dataclass(frozen=True, slots=True)
class MessageEvidence:
    """A logged record and the evidence that goes with it."""

    record: StoredRecord
    ocsp_responses: tuple[bytes, ...] = ()
    stamp: BatchStamp | None = None


def _bad(message: str) -> BadRequestError:
    return BadRequestError(f"malformed message evidence: {message}", code=BAD_CONTAINER_CODE)


def format_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime(_TIME_FORMAT)


def write_evidence(evidence: MessageEvidence) -> bytes:
    """The ASiC-E container of ``evidence`` (deterministic bytes)."""
    record, entry = evidence.record, evidence.record.entry
    if len(evidence.ocsp_responses) > _MAX_OCSP:
        raise ValueError(f"at most {_MAX_OCSP} OCSP responses per message")
    ocsp_names = [f"evidence/ocsp-{i}.der" for i in range(1, len(evidence.ocsp_responses) + 1)]
    stamp = evidence.stamp
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
        "timestamp": None if stamp is None else {
            "token": TOKEN,
            "hash_alg": stamp.hash_alg,
            "leaf": stamp.leaf.hex(),
            "root": stamp.root.hex(),
            "path": [{"side": s.side, "hash": s.hash.hex()} for s in stamp.path],
        },
    }
    objects = [
        (HEADER, entry.header_part),
        (BODY, entry.body),
        (SIGNATURE, entry.signature.encode("utf-8")),
        *zip(ocsp_names, evidence.ocsp_responses, strict=True),
        *([(TOKEN, stamp.token)] if stamp is not None else []),
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
    record = _record(doc["record"], container.objects)
    ocsp_names = doc["ocsp"]
    expected = [f"evidence/ocsp-{i}.der" for i in range(1, len(ocsp_names) + 1)] \
        if isinstance(ocsp_names, list) else None
    if ocsp_names != expected:
        raise _bad("ocsp must list evidence/ocsp-1.der, evidence/ocsp-2.der, ... in order")
    stamp = _stamp(doc["timestamp"], container.objects)
    present = {HEADER, BODY, SIGNATURE, RECORD, *ocsp_names, *([TOKEN] if stamp else [])}
    if set(container.objects) != present:
        extra = sorted(set(container.objects) ^ present)
        raise _bad(f"entries not described by {RECORD}: {', '.join(extra)}")
    ocsp = tuple(container.get(name) for name in ocsp_names)
    return MessageEvidence(record=record, ocsp_responses=ocsp, stamp=stamp)


def _exact_keys(doc: Mapping[str, Any], keys: set[str], what: str) -> None:
    if set(doc) != keys:
        raise _bad(f"{what} must have exactly the keys {', '.join(sorted(keys))}")


def _record(doc: object, objects: Mapping[str, bytes]) -> StoredRecord:
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
        )
        return StoredRecord(entry=entry, sequence=doc["sequence"], prev_hash=doc["prev_hash"],
                            record_hash=doc["record_hash"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(f"record: {exc}") from exc


def _hex(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise _bad(f"{what} must be 64 lowercase hex characters")
    return bytes.fromhex(value)


def _stamp(doc: object, objects: Mapping[str, bytes]) -> BatchStamp | None:
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise _bad("timestamp must be an object or null")
    _exact_keys(doc, {"token", "hash_alg", "leaf", "root", "path"}, "timestamp")
    if doc["token"] != TOKEN or TOKEN not in objects:
        raise _bad(f"timestamp.token must be {TOKEN}, present in the container")
    if doc["hash_alg"] != "sha256":
        raise _bad("timestamp.hash_alg must be sha256")
    path = doc["path"]
    if not isinstance(path, list) or len(path) > 64:
        raise _bad("timestamp.path must be a list of at most 64 steps")
    steps = []
    for step in path:
        if not isinstance(step, dict) or set(step) != {"side", "hash"} or step["side"] not in (
            "left", "right"
        ):
            raise _bad('each timestamp.path step must be {"side": "left"|"right", "hash": hex}')
        steps.append(MerkleStep(step["side"], _hex(step["hash"], "timestamp.path hash")))
    return BatchStamp(token=objects[TOKEN], hash_alg="sha256", leaf=_hex(doc["leaf"], "leaf"),
                      root=_hex(doc["root"], "root"), path=tuple(steps))
