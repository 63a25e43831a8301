"""Tests of bodies taken as they stream past: digests, external bodies, and where they enter
the signed payload and the message log's hash."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from xchange.body import (
    BodyDigest,
    BodyHasher,
    ExternalBody,
    body_digest,
    body_sha256,
    body_size,
    read_all,
)
from xchange.messagelog import GENESIS_HASH, LogEntry, chain_record
from xchange.rest import digest_payload, request_hash

DATA = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(5000))


class Pieces:
    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size = data, size

    def chunks(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), self.size):
            yield self.data[start:start + self.size]


@pytest.mark.parametrize("size", [1, 7, 4096, 10**9])
def test_hashing_in_pieces_gives_the_digest_of_the_whole(size: int) -> None:
    hasher = BodyHasher()
    for piece in Pieces(DATA, size).chunks():
        hasher.update(piece)
    assert hasher.digest() == BodyDigest.of(DATA)
    assert BodyDigest.of(DATA).sha512 == hashlib.sha512(DATA).digest()


def test_an_external_body_is_measured_from_what_its_reader_yields() -> None:
    body = ExternalBody.measure(Pieces(DATA, 1000))
    assert body.digest == BodyDigest.of(DATA)
    assert (body_digest(body), body_sha256(body), body_size(body)) == (
        BodyDigest.of(DATA), hashlib.sha256(DATA).digest(), len(DATA))
    assert read_all(body) == DATA == read_all(DATA)


@pytest.mark.parametrize("data", [DATA, b""])
def test_the_signed_payload_is_the_same_from_bytes_a_digest_or_an_external_body(
    data: bytes
) -> None:
    header = b'{"type":"x"}'
    external = ExternalBody.measure(Pieces(data, 999))
    expected = digest_payload(header, data)
    assert digest_payload(header, BodyDigest.of(data)) == expected
    assert digest_payload(header, external) == expected
    assert len(expected) == (64 if not data else 128)  # no body, no body digest
    assert request_hash(header, external) == request_hash(header, data)


def test_a_record_hashes_the_same_with_its_body_inline_or_external() -> None:
    inline = LogEntry(query_id="q", kind="request", direction="outgoing", client="EE/GOV/1/a",
                      service="EE/GOV/2/b/c", user_id=None, issue=None, header_part=b"h",
                      body=DATA, signature="s", status="ok", error_code=None,
                      created_at=datetime(2026, 1, 1, tzinfo=UTC), ocsp_responses=())
    external = replace(inline, body=ExternalBody.measure(Pieces(DATA, 512)))
    assert (chain_record(inline, 1, GENESIS_HASH).record_hash
            == chain_record(external, 1, GENESIS_HASH).record_hash)


@pytest.mark.parametrize(("size", "sha256", "sha512"), [
    (-1, bytes(32), bytes(64)), (0, bytes(31), bytes(64)), (0, bytes(32), bytes(32))])
def test_a_malformed_digest_is_refused(size: int, sha256: bytes, sha512: bytes) -> None:
    with pytest.raises(ValueError, match="body digest"):
        BodyDigest(size, sha256, sha512)


def test_a_log_entry_body_must_be_bytes_or_external() -> None:
    with pytest.raises(TypeError, match="body must be"):
        LogEntry(query_id="q", kind="request", direction="outgoing", client="a", service="b",
                 user_id=None, issue=None, header_part=b"h", body="text",  # type: ignore[arg-type]
                 signature="s", status="ok", error_code=None,
                 created_at=datetime(2026, 1, 1, tzinfo=UTC), ocsp_responses=())
