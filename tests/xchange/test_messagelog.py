"""Tests of the message log's record model, canonical encoding and hash chain."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from xchange.errors import ERROR_CODES, Fault, XRoadError
from xchange.messagelog import (
    GENESIS,
    GENESIS_HASH,
    ChainBrokenError,
    ChainCheckpoint,
    LogEntry,
    StoredRecord,
    canonical_record_bytes,
    chain_record,
    decode_der_list,
    encode_der_list,
    verify_chain,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
OCSP_UNAUTHORIZED = bytes.fromhex("3003 0a01 06")  # a whole DER OCSPResponse: "unauthorized"
# record 1 of make_entry(); pins the canonical encoding (docs/protocol.md test vector)
KNOWN_HASH = "b784bf9f3fd579f494e3a3759c3cc7640766d42a46b258b7651d9791ef9822ba"


def make_entry(**changes: Any) -> LogEntry:
    fields: dict[str, Any] = {
        "query_id": "q-1",
        "kind": "request",
        "direction": "outgoing",
        "client": "EE/GOV/1234/sub",
        "service": "EE/GOV/5678/sub/getPerson/v1",
        "user_id": "EE12345",
        "issue": None,
        "header_part": b"header",
        "body": b'{"id": 1}',
        "signature": "eyJhbGciOiJFUzI1NiJ9..c2ln",
        "status": "ok",
        "error_code": None,
        "created_at": T0,
        "ocsp_responses": (OCSP_UNAUTHORIZED,),
    }
    fields.update(changes)
    return LogEntry(**fields)


def make_chain(n: int) -> list[StoredRecord]:
    records: list[StoredRecord] = []
    prev = GENESIS_HASH
    for i in range(1, n + 1):
        record = chain_record(make_entry(query_id=f"q-{i}", body=bytes([i])), i, prev)
        records.append(record)
        prev = record.record_hash
    return records


def f(value: bytes | None) -> bytes:
    return b"\x00" if value is None else b"\x01" + struct.pack(">I", len(value)) + value


# -- canonical encoding


def test_canonical_encoding_is_the_documented_one() -> None:
    entry = make_entry()
    expected = b"".join(
        [
            f(b"xchange-messagelog-v2"),
            f(b"7"),
            f(b"ab" * 32),
            f(b"q-1"),
            f(b"request"),
            f(b"outgoing"),
            f(b"EE/GOV/1234/sub"),
            f(b"EE/GOV/5678/sub/getPerson/v1"),
            f(b"EE12345"),
            f(None),
            f(hashlib.sha256(b"header").digest()),
            f(hashlib.sha256(b'{"id": 1}').digest()),
            f(b"eyJhbGciOiJFUzI1NiJ9..c2ln"),
            f(f(OCSP_UNAUTHORIZED)),
            f(b"ok"),
            f(None),
            f(b"2025-03-01T12:00:00.123456Z"),
        ]
    )
    assert canonical_record_bytes(entry, 7, "ab" * 32) == expected
    record = chain_record(entry, 7, "ab" * 32)
    assert record.record_hash == hashlib.sha256(expected).hexdigest()


def test_known_answer() -> None:
    # Pins the format: if this changes, every existing log stops verifying.
    record = chain_record(make_entry(), 1, GENESIS_HASH)
    assert record.record_hash == KNOWN_HASH



@pytest.mark.parametrize(
    "change",
    [
        {"query_id": "q-2"},
        {"kind": "response"},
        {"direction": "incoming"},
        {"client": "EE/GOV/1234/other"},
        {"service": "EE/GOV/5678/sub/getPerson/v2"},
        {"user_id": None},
        {"user_id": ""},
        {"issue": "ISSUE-1"},
        {"header_part": b"header2"},
        {"body": b'{"id": 2}'},
        {"signature": "eyJhbGciOiJFUzI1NiJ9..c2lo"},
        {"ocsp_responses": ()},
        {"ocsp_responses": (OCSP_UNAUTHORIZED, b"")},
        {"ocsp_responses": (OCSP_UNAUTHORIZED + b"\x00",)},
        {"status": "rejected", "error_code": "server.serverproxy.invalid_signature"},
        {"created_at": T0 + timedelta(microseconds=1)},
    ],
    ids=lambda change: ",".join(change),
)
def test_every_field_is_hashed(change: dict[str, Any]) -> None:
    base = chain_record(make_entry(), 1, GENESIS_HASH)
    assert chain_record(make_entry(**change), 1, GENESIS_HASH).record_hash != base.record_hash


def test_sequence_and_prev_hash_are_hashed() -> None:
    base = chain_record(make_entry(), 1, GENESIS_HASH).record_hash
    assert chain_record(make_entry(), 2, GENESIS_HASH).record_hash != base
    assert chain_record(make_entry(), 1, "1" * 64).record_hash != base


def test_no_delimiter_ambiguity() -> None:
    # Moving characters across a field boundary, or absent vs empty, must change the hash.
    a = make_entry(client="EE/GOV/1", service="2/sub/svc")
    b = make_entry(client="EE/GOV/12", service="/sub/svc")
    assert canonical_record_bytes(a, 1, GENESIS_HASH) != canonical_record_bytes(b, 1, GENESIS_HASH)
    c = make_entry(user_id=None, issue="")
    d = make_entry(user_id="", issue=None)
    assert canonical_record_bytes(c, 1, GENESIS_HASH) != canonical_record_bytes(d, 1, GENESIS_HASH)


def test_created_at_is_the_instant_whatever_the_zone() -> None:
    helsinki = T0.astimezone(timezone(timedelta(hours=2)))
    entry = make_entry(created_at=helsinki)
    assert entry.created_at.tzinfo is UTC
    assert chain_record(entry, 1, GENESIS_HASH) == chain_record(make_entry(), 1, GENESIS_HASH)


def test_ocsp_response_boundaries_are_hashed() -> None:
    one = make_entry(ocsp_responses=(b"ab", b"c"))
    other = make_entry(ocsp_responses=(b"a", b"bc"))
    assert chain_record(one, 1, GENESIS_HASH) != chain_record(other, 1, GENESIS_HASH)


@pytest.mark.parametrize("items", [(), (b"",), (OCSP_UNAUTHORIZED, b"x" * 70000)])
def test_der_list_round_trips(items: tuple[bytes, ...]) -> None:
    assert decode_der_list(encode_der_list(items)) == items


@pytest.mark.parametrize("data", [b"\x00", b"\x01\x00\x00", b"\x01\x00\x00\x00\x02a"])
def test_der_list_refuses_garbage(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_der_list(data)


def test_unicode_text_is_utf8() -> None:
    entry = make_entry(user_id="Jüri Õun")
    assert f("Jüri Õun".encode()) in canonical_record_bytes(entry, 1, GENESIS_HASH)


# -- value objects reject bad input


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"kind": "reply"}, ValueError),
        ({"direction": "sideways"}, ValueError),
        ({"status": "maybe"}, ValueError),
        ({"status": "rejected"}, ValueError),
        ({"error_code": "server.serverproxy.invalid_signature"}, ValueError),
        ({"created_at": datetime(2025, 3, 1, 12, 0)}, ValueError),  # naive
        ({"body": "text"}, TypeError),
        ({"header_part": bytearray(b"x")}, TypeError),
        ({"client": None}, TypeError),
        ({"user_id": 42}, TypeError),
        ({"query_id": "\udcff"}, ValueError),
        ({"ocsp_responses": [OCSP_UNAUTHORIZED]}, TypeError),
        ({"ocsp_responses": ("text",)}, TypeError),
    ],
)
def test_log_entry_rejects(change: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        make_entry(**change)


class _Text(str):
    __slots__ = ()


class _Instant(datetime):
    pass


@pytest.mark.parametrize(
    "change",
    [
        {"client": _Text("EE/GOV/1234/sub")},
        {"signature": _Text("eyJhbGciOiJFUzI1NiJ9..c2ln")},
        {"issue": _Text("")},
        {"created_at": _Instant(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)},
        {"created_at": T0.astimezone(timezone(timedelta(hours=-5)))},
    ],
)
def test_log_entry_accepts_what_is_not_plainly_valid(change: dict[str, Any]) -> None:
    # Exact types and ASCII are recognised at once; anything else is checked in full, and
    # what is valid is accepted and encoded alike.
    entry = make_entry(**change)
    assert entry.created_at.tzinfo is UTC
    plain = make_entry(**{k: (v if k == "created_at" else str(v)) for k, v in change.items()})
    assert canonical_record_bytes(entry, 1, GENESIS_HASH) == canonical_record_bytes(
        plain, 1, GENESIS_HASH)


def test_rejected_entry_with_error_code() -> None:
    entry = make_entry(status="rejected", error_code="server.serverproxy.invalid_signature")
    assert entry.status == "rejected"


@pytest.mark.parametrize(
    ("sequence", "prev_hash", "error"),
    [
        (0, GENESIS_HASH, ValueError),
        (-1, GENESIS_HASH, ValueError),
        (True, GENESIS_HASH, TypeError),
        (1, "0" * 63, ValueError),
        (1, "A" * 64, ValueError),
        (1, "g" * 64, ValueError),
    ],
)
def test_chain_record_rejects(sequence: Any, prev_hash: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        chain_record(make_entry(), sequence, prev_hash)


def test_checkpoint_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        ChainCheckpoint(-1, GENESIS_HASH)
    with pytest.raises(ValueError):
        ChainCheckpoint(3, "xyz")


# -- verification


def test_verify_intact_chain() -> None:
    records = make_chain(5)
    report = verify_chain(iter(records))
    assert (report.count, report.first_sequence, report.last_sequence) == (5, 1, 5)
    assert report.last_hash == records[-1].record_hash


def test_verify_empty_chain_reports_the_checkpoint() -> None:
    report = verify_chain([])
    assert (report.count, report.first_sequence) == (0, None)
    assert (report.last_sequence, report.last_hash) == (GENESIS.sequence, GENESIS_HASH)


def test_verify_from_checkpoint() -> None:
    records = make_chain(6)
    checkpoint = ChainCheckpoint(3, records[2].record_hash)
    report = verify_chain(records[3:], checkpoint=checkpoint)
    assert (report.count, report.first_sequence, report.last_sequence) == (3, 4, 6)
    with pytest.raises(ChainBrokenError) as caught:
        verify_chain(records[3:], checkpoint=ChainCheckpoint(3, "e" * 64))
    assert caught.value.sequence == 4
    with pytest.raises(ChainBrokenError) as caught:
        verify_chain(records[3:])
    assert caught.value.sequence == 1


def _alter(records: list[StoredRecord], index: int, **changes: Any) -> list[StoredRecord]:
    altered = list(records)
    altered[index] = dataclasses.replace(
        records[index], entry=dataclasses.replace(records[index].entry, **changes)
    )
    return altered


def _relink(records: list[StoredRecord], index: int, **changes: Any) -> list[StoredRecord]:
    altered = list(records)
    altered[index] = dataclasses.replace(records[index], **changes)
    return altered


@pytest.mark.parametrize(
    ("tamper", "sequence", "reason"),
    [
        (lambda r: _alter(r, 2, body=b"forged"), 3, "content"),
        (lambda r: _alter(r, 2, header_part=b"forged"), 3, "content"),
        (lambda r: _alter(r, 2, status="rejected", error_code="x.y.z"), 3, "content"),
        (lambda r: _alter(r, 0, created_at=T0 + timedelta(seconds=1)), 1, "content"),
        (lambda r: _alter(r, 2, ocsp_responses=()), 3, "content"),
        (lambda r: _relink(r, 2, record_hash="f" * 64), 3, "content"),
        (lambda r: _relink(r, 2, prev_hash="f" * 64), 3, "prev_hash"),
        # a record re-hashed after alteration still breaks the next record's link
        (lambda r: [*r[:2], chain_record(make_entry(body=b"x"), 3, r[1].record_hash), *r[3:]],
         4, "prev_hash"),
        (lambda r: r[:2] + r[3:], 3, "found record 4"),
        (lambda r: r[1:], 1, "found record 2"),
        (lambda r: [r[0], r[2], r[1], *r[3:]], 2, "found record 3"),
        (lambda r: [*r[:3], r[2], *r[3:]], 4, "found record 3"),
    ],
    ids=["body", "header", "status", "created_at", "ocsp", "record_hash", "prev_hash", "rehashed",
         "deleted", "first_deleted", "swapped", "duplicated"],
)
def test_verify_detects_tampering(tamper: Any, sequence: int, reason: str) -> None:
    records = make_chain(5)
    with pytest.raises(ChainBrokenError) as caught:
        verify_chain(tamper(records))
    assert caught.value.sequence == sequence
    assert reason in caught.value.reason


def test_chain_broken_error_is_an_xroad_error() -> None:
    error = ChainBrokenError(7, "gap")
    assert isinstance(error, XRoadError)
    assert error.code == "server.messagelog.chain_broken"
    assert ERROR_CODES[error.code].fault is Fault.PROVIDER_SERVER
    assert error.status == 500
    assert "record 7" in str(error)
