"""security_server.timestamper.TsaClient against real TSA servers on real sockets."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import datetime

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509

from certs.ca import DevCA
from certs.keys import PrivateKey
from certs.tsa import TimeStampAuthority
from certs.tsa_server import create_app
from security_server.timestamper import TsaClient
from xchange.errors import TimestampingFailedError
from xchange.globalconf import ApprovedTSA
from xchange_cli.federation import free_port

DATA_HASH = hashlib.sha256(b"merkle root").digest()

Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(app)`` runs ``app`` on a free loopback port and returns its URL."""
    async with AsyncExitStack() as stack:

        async def start(app: web.Application) -> str:
            server = await stack.enter_async_context(TestServer(app))
            return str(server.make_url("/"))

        yield start


@pytest.fixture
async def tsa_url(serve: Serve, tsa: TimeStampAuthority) -> str:
    return await serve(create_app(tsa))


def _approved(url: str, cert: x509.Certificate, name: str = "test-tsa") -> ApprovedTSA:
    return ApprovedTSA(name, url, cert)


async def test_gets_a_verified_token(
    tsa_url: str, tsa_credentials: tuple[PrivateKey, x509.Certificate], pki_now: datetime
) -> None:
    cert = tsa_credentials[1]
    async with TsaClient(lambda: [_approved(tsa_url, cert)]) as client:
        token = await client.timestamp(DATA_HASH)
    assert token.message_imprint == DATA_HASH
    assert token.tsa_certificate == cert
    assert token.gen_time >= pki_now


async def test_falls_back_to_the_next_tsa(
    tsa_url: str, tsa_credentials: tuple[PrivateKey, x509.Certificate],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cert = tsa_credentials[1]
    down = _approved(f"http://127.0.0.1:{free_port()}/", cert, "down-tsa")
    async with TsaClient(lambda: [down, _approved(tsa_url, cert)]) as client:
        token = await client.timestamp(DATA_HASH)
    assert token.tsa_certificate == cert
    assert "down-tsa" in caplog.text and "could not be reached" in caplog.text


async def test_every_failure_is_named(
    serve: Serve, dev_ca: DevCA, pki_now: datetime,
    tsa_credentials: tuple[PrivateKey, x509.Certificate],
) -> None:
    approved_cert = tsa_credentials[1]
    rogue_key, rogue_cert = dev_ca.issue_tsa_cert("Rogue TSA", now=pki_now)
    rogue_url = await serve(create_app(TimeStampAuthority(rogue_key, [rogue_cert])))

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="oops")

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>", content_type="text/html")

    broken_app, html_app = web.Application(), web.Application()
    broken_app.router.add_post("/", broken)
    html_app.router.add_post("/", html)
    tsas = [
        _approved(rogue_url, approved_cert, "rogue"),
        _approved(await serve(broken_app), approved_cert, "broken"),
        _approved(await serve(html_app), approved_cert, "html"),
    ]
    code = "server.serverproxy.timestamping_failed"
    async with TsaClient(lambda: tsas, code=code) as client:
        with pytest.raises(TimestampingFailedError) as caught:
            await client.timestamp(DATA_HASH)
    message = caught.value.message
    assert caught.value.code == code
    assert "rogue: time-stamp token is signed by 'CN=Rogue TSA', which is not an" in message
    assert "broken: HTTP status 500" in message
    assert "html: answered text/html, not application/timestamp-reply" in message


async def test_a_slow_tsa_times_out(
    serve: Serve,
    tsa_credentials: tuple[PrivateKey, x509.Certificate],
) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/", slow)
    url = await serve(app)
    try:
        async with TsaClient(lambda: [_approved(url, tsa_credentials[1])],
                             timeout=0.2) as client:
            with pytest.raises(TimestampingFailedError, match="could not be reached: timed out"):
                await client.timestamp(DATA_HASH)
    finally:
        release.set()


async def test_no_approved_tsa() -> None:
    async with TsaClient(lambda: []) as client:
        with pytest.raises(TimestampingFailedError, match="no time-stamping authority"):
            await client.timestamp(DATA_HASH)


async def test_a_given_session_is_left_open_and_an_own_one_is_closed(
    tsa_url: str, tsa_credentials: tuple[PrivateKey, x509.Certificate]
) -> None:
    tsas = [_approved(tsa_url, tsa_credentials[1])]
    async with aiohttp.ClientSession() as session:
        async with TsaClient(lambda: tsas, session=session) as client:
            await client.timestamp(DATA_HASH)
        assert not session.closed
    client = TsaClient(lambda: tsas)
    await client.timestamp(DATA_HASH)
    await client.close()
    with pytest.raises(RuntimeError, match="closed"):
        await client.timestamp(DATA_HASH)
    with pytest.raises(ValueError, match="timeout"):
        TsaClient(lambda: tsas, timeout=0)
