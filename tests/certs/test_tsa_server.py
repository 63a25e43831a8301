"""certs.tsa_server over a real socket: RFC 3161 over HTTP, limits, and failures without
stack traces."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509

from certs.keys import PrivateKey
from certs.tsa import TimeStampAuthority
from certs.tsa_server import MAX_REQUEST_BYTES, create_app
from xchange.errors import TimestampingFailedError
from xchange.timestamp import (
    QUERY_TYPE,
    REPLY_TYPE,
    parse_timestamp_response,
    timestamp_request,
    verify_timestamp_token,
)

DATA_HASH = hashlib.sha256(b"served").digest()

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(tsa: TimeStampAuthority) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(tsa))) as client:
        yield client


async def _stamp(client: Client, nonce: int) -> bytes:
    response = await client.post("/", data=timestamp_request(DATA_HASH, nonce=nonce),
                                 headers={"Content-Type": QUERY_TYPE})
    assert response.status == 200
    assert response.content_type == REPLY_TYPE
    return parse_timestamp_response(await response.read(), data_hash=DATA_HASH, nonce=nonce)


async def test_a_query_gets_a_verifiable_token_with_a_fresh_serial(
    client: Client, tsa_credentials: tuple[PrivateKey, x509.Certificate]
) -> None:
    cert = tsa_credentials[1]
    first = verify_timestamp_token(await _stamp(client, 1), data_hash=DATA_HASH, tsa_certs=[cert])
    second = verify_timestamp_token(await _stamp(client, 2), data_hash=DATA_HASH,
                                    tsa_certs=[cert])
    assert first.serial != second.serial
    assert 0 < first.serial < 2**128


async def test_a_refused_request_is_a_200_rejection(client: Client) -> None:
    response = await client.post("/", data=b"not a request",
                                 headers={"Content-Type": QUERY_TYPE})
    assert response.status == 200 and response.content_type == REPLY_TYPE
    with pytest.raises(TimestampingFailedError, match="bad_data_format"):
        parse_timestamp_response(await response.read(), data_hash=DATA_HASH, nonce=None)


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status"),
    [
        ("POST", "/", b"x", "application/octet-stream", 415),
        ("POST", "/", b"x" * (MAX_REQUEST_BYTES + 1), QUERY_TYPE, 413),
        ("GET", "/", b"", None, 405),
        ("POST", "/other", b"x", QUERY_TYPE, 404),
    ],
)
async def test_http_misuse_gets_a_plain_error(
    client: Client, method: str, path: str, body: bytes, content_type: str | None, status: int
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.request(method, path, data=body, headers=headers)
    assert response.status == status
    assert "Traceback" not in await response.text()


async def test_a_failure_inside_is_a_system_failure_rejection(
    tsa: TimeStampAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    # A clock without a time zone makes the TSA raise: a programming error, not the client's.
    naive: Callable[[], datetime] = lambda: datetime(2030, 1, 1)  # noqa: E731
    async with TestClient(TestServer(create_app(tsa, clock=naive))) as client:
        response = await client.post("/", data=timestamp_request(DATA_HASH, nonce=None),
                                     headers={"Content-Type": QUERY_TYPE})
        body = await response.read()
    assert response.status == 200
    with pytest.raises(TimestampingFailedError, match=r"system_failure\): internal error$"):
        parse_timestamp_response(body, data_hash=DATA_HASH, nonce=None)
    assert b"Traceback" not in body
    assert "time-stamping failed" in caplog.text


async def test_health(client: Client) -> None:
    response = await client.get("/health")
    assert response.status == 200 and await response.text() == "ok"

