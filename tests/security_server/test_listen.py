"""Tests of the listeners' site: a burst of connections accepted in one turn, HTTP and TLS
served as by aiohttp's own site, failed handshakes and exhausted descriptors survived."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509

from security_server import listen
from security_server.listen import AcceptingSite
from security_server.tls import client_context, server_context
from tests.security_server.test_httpclient import tls_files


async def _hello(_request: web.Request) -> web.Response:
    return web.Response(text="hello")


@pytest.fixture
async def runner() -> AsyncIterator[web.AppRunner]:
    app = web.Application()
    app.router.add_get("/", _hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    yield runner
    await runner.cleanup()


async def _turns_until(done: Callable[[], bool], limit: int) -> int:
    """Let the loop run turn by turn until ``done()``; return how many turns it took."""
    for turn in range(1, limit + 1):
        await asyncio.sleep(0)
        if done():
            return turn
    raise AssertionError(f"not done after {limit} turns")


async def test_a_burst_of_connections_is_accepted_at_once(runner: web.AppRunner) -> None:
    site = AcceptingSite(runner, "127.0.0.1", 0, backlog=256)
    await site.start()
    clients = []
    try:
        for _ in range(100):  # the kernel completes each handshake; none is accepted yet
            client = socket.create_connection(("127.0.0.1", site.port))
            clients.append(client)
        server = runner.server
        assert server is not None
        # A listener from create_server on uvloop takes one connection per turn: 100 turns.
        turns = await _turns_until(lambda: len(server.connections) == 100, 100)
        assert turns <= 10
    finally:
        for client in clients:
            client.close()


async def test_http_is_served_and_stop_closes_the_listener(runner: web.AppRunner) -> None:
    site = AcceptingSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site.name == f"http://127.0.0.1:{site.port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(3):  # and again on the kept-alive connection
            async with session.get(f"http://127.0.0.1:{site.port}/") as response:
                assert (response.status, await response.text()) == (200, "hello")
    await site.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", site.port), timeout=5).close()


async def test_mutual_tls_is_served_and_a_failed_handshake_is_survived(
    runner: web.AppRunner, tmp_path: Path
) -> None:
    s_cert, s_key, s_der = tls_files(tmp_path, "server", client=False)
    c_cert, c_key, c_der = tls_files(tmp_path, "client", client=True)
    server_tls = server_context(s_cert, s_key, [x509.load_der_x509_certificate(c_der)])
    client_tls = client_context(c_cert, c_key, [x509.load_der_x509_certificate(s_der)])
    site = AcceptingSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    assert site.name.startswith("https://")
    # not TLS at all: the handshake fails, the listener goes on
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"https://127.0.0.1:{site.port}/", ssl=client_tls) as response:
            assert (response.status, await response.text()) == (200, "hello")
        # without the client certificate the server refuses the handshake
        anonymous = ssl.create_default_context(cadata=None)
        anonymous.check_hostname, anonymous.verify_mode = False, ssl.CERT_NONE
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"https://127.0.0.1:{site.port}/", ssl=anonymous) as bad:
                await bad.read()


async def test_out_of_descriptors_the_listener_pauses_and_resumes(
    runner: web.AppRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listen, "ACCEPT_RETRY_SECONDS", 0.05)
    site = AcceptingSite(runner, "127.0.0.1", 0)
    await site.start()
    listener = site.listener
    assert listener is not None
    (real,) = listener._sockets

    class Exhausted:
        """The listener as seen by the site, out of descriptors for one accept."""

        def __init__(self) -> None:
            self.failed = False

        def fileno(self) -> int:
            return real.fileno()

        def accept(self) -> tuple[socket.socket, object]:
            if not self.failed:
                self.failed = True
                raise OSError(errno.EMFILE, "Too many open files")
            return real.accept()

    exhausted = Exhausted()
    loop = asyncio.get_running_loop()
    loop.remove_reader(real.fileno())
    loop.add_reader(real.fileno(), listener._accept, loop, cast(socket.socket, exhausted))
    client = socket.create_connection(("127.0.0.1", site.port))
    try:
        assert runner.server is not None
        await _turns_until(lambda: exhausted.failed, 100)
        assert not runner.server.connections  # paused: the connection waits in the queue
        async with asyncio.timeout(10):
            while not runner.server.connections:
                await asyncio.sleep(0.01)
        assert not listener._retry
    finally:
        client.close()
