"""The outgoing HTTP/1.1 client (security_server.httpclient) against real servers on
loopback: plain asyncio servers that answer what each test scripts, with and without TLS."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs.keys import (
    generate_private_key,
    self_signed_tls_certificate,
    unsafe_write_plaintext_key,
    write_certificate,
)
from security_server.httpclient import (
    MAX_HEAD,
    Client,
    ConnectError,
    ConnectTimeoutError,
    DisconnectedError,
    HttpClientError,
    Limit,
    PinMismatchError,
    Pool,
    ProtocolError,
    ResponseTimeoutError,
    TlsError,
)
from security_server.is_tls import ensure_internal_certificate
from security_server.tls import PinnedPeer, client_context, server_context

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """An asyncio server on loopback that runs ``handler`` per connection, counting them."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler, self.tls = handler, tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._run, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        """One request: its head and its body (by Content-Length or chunked)."""
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        lower = head.lower()
        body = b""
        if b"transfer-encoding: chunked" in lower:
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += data[:-2]
        elif b"content-length:" in lower:
            length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
        return head, body


def ok(body: bytes, *extra: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body) + b"".join(
        e + b"\r\n" for e in extra) + b"\r\n" + body)


def echo_server(*extra: bytes, tls: ssl.SSLContext | None = None) -> Server:
    """Answers every request on a connection with its body."""
    server: Server

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                _, body = await server.read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(ok(body, *extra))
            await writer.drain()

    server = Server(handle, tls)
    return server


def scripted(answer: bytes, *, close: bool = True) -> Server:
    """Reads one request, sends ``answer`` as it is, then closes (or waits)."""
    server: Server

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(answer)
        await writer.drain()
        if not close:
            await asyncio.sleep(30)

    server = Server(handle)
    return server


def pool_for(server: Server, **kw: object) -> Pool:
    return Pool("127.0.0.1", server.port, **kw)  # type: ignore[arg-type]


async def get(pool: Pool, body: bytes | None = None, *, timeout: float = 5) -> tuple[int, bytes]:
    async with await pool.request("POST" if body else "GET", "/x", body=body,
                                  timeout=timeout) as resp:
        data = await resp.read(1 << 20)
        assert data is not None
        return resp.status, data


# -- framing, reuse ---------------------------------------------------------------------------


async def test_keep_alive_reuses_one_connection() -> None:
    async with echo_server() as server:
        pool = pool_for(server)
        for i in range(3):
            assert await get(pool, b"hello %d" % i) == (200, b"hello %d" % i)
        assert server.connections == 1
        assert pool.idle_connections == 1
        assert server.requests[0].startswith(b"POST /x HTTP/1.1\r\nHost: 127.0.0.1:")
        await pool.close()
        assert pool.open_connections == 0


async def test_streamed_bodies_with_length_and_chunked() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(50):
            yield bytes([65 + i % 26]) * 10_000

    expected = b"".join([bytes([65 + i % 26]) * 10_000 for i in range(50)])
    async with echo_server() as server:
        pool = pool_for(server)
        for length in (len(expected), None):
            async with await pool.request("PUT", "/up?a=1", body=pieces(),
                                          content_length=length, timeout=5) as resp:
                assert await resp.read(1 << 20) == expected
        assert b"content-length: 500000" in server.requests[0].lower()
        assert b"transfer-encoding: chunked" in server.requests[1].lower()
        assert server.connections == 1
        await pool.close()


async def test_chunked_answer_with_extensions_and_trailers() -> None:
    answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n")
    async with scripted(answer, close=False) as server:
        pool = pool_for(server)
        assert await get(pool) == (200, b"hello world")
        assert pool.idle_connections == 1  # read to its end: reusable
        await pool.close()


async def test_answer_read_to_close_is_not_reused() -> None:
    async with scripted(b"HTTP/1.1 200 OK\r\n\r\nall of it") as server:
        pool = pool_for(server)
        async with await pool.request("GET", "/", timeout=5) as resp:
            assert resp.content_length is None
            assert b"".join([c async for c in resp.chunks()]) == b"all of it"
        assert pool.open_connections == 0
        await pool.close()


@pytest.mark.parametrize("extra", [b"Connection: close", b"Connection: keep-alive, Close"])
async def test_connection_close_honoured(extra: bytes) -> None:
    async with echo_server(extra) as server:
        pool = pool_for(server)
        assert await get(pool, b"a") == (200, b"a")
        assert pool.open_connections == 0
        assert await get(pool, b"b") == (200, b"b")
        assert server.connections == 2
        await pool.close()


async def test_http10_answer_not_reused_and_interim_answers_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 201 Created\r\nContent-Length: 2\r\n\r\nok"
    async with scripted(answer, close=False) as server:
        pool = pool_for(server)
        assert await get(pool) == (201, b"ok")
        assert pool.open_connections == 0
        await pool.close()


async def test_unread_body_closes_the_connection() -> None:
    async with echo_server() as server:
        pool = pool_for(server)
        async with await pool.request("POST", "/", body=b"x" * 1000, timeout=5) as resp:
            assert resp.status == 200
            assert resp.header("content-length") == "1000"
        assert pool.open_connections == 0
        assert await get(pool, b"y") == (200, b"y")
        assert server.connections == 2
        await pool.close()


async def test_read_over_the_limit_gives_none_and_closes() -> None:
    async with echo_server() as server:
        pool = pool_for(server)
        async with await pool.request("POST", "/", body=b"x" * 1000, timeout=5) as resp:
            assert await resp.read(999) is None
        assert pool.open_connections == 0
        await pool.close()


async def test_headers_and_content_type() -> None:
    answer = ok(b"{}", b"Content-Type: Application/JSON; charset=utf-8", b"X-Road-Error:  e.x ")
    async with scripted(answer, close=False) as server:
        pool = pool_for(server)
        async with await pool.request("GET", "/", [("X-A", "1")], timeout=5) as resp:
            assert resp.content_type == "application/json"
            assert resp.header("x-road-error") == "e.x"
            assert resp.header("missing") is None
            assert await resp.read(10) == b"{}"
        assert b"\r\nX-A: 1\r\n" in server.requests[0]
        await pool.close()


@pytest.mark.parametrize("headers", [[("X-A", "1\r\nX-Injected: 1")], [("X-A\n", "1")],
                                     [("X:A", "1")]])
async def test_request_header_injection_refused(headers: list[tuple[str, str]]) -> None:
    pool = Pool("127.0.0.1", 9)
    with pytest.raises(ValueError):
        await pool.request("GET", "/", headers, timeout=1)
    with pytest.raises(ValueError):
        await pool.request("GET", "/ HTTP/1.1\r\nX: y", timeout=1)


# -- hostile and broken answers --------------------------------------------------------------


@pytest.mark.parametrize("answer", [
    b"HTTP/2 200 OK\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nNo-Colon\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\nb\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\xd9\xa3\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n",
])
async def test_garbled_heads(answer: bytes) -> None:
    async with scripted(answer, close=False) as server:
        pool = pool_for(server)
        with pytest.raises(ProtocolError):
            await pool.request("GET", "/", timeout=5)
        assert pool.open_connections == 0
        await pool.close()


@pytest.mark.parametrize("body", [b"zz\r\nab\r\n0\r\n\r\n", b"\r\n", b"2\r\nabX\r\n0\r\n\r\n",
                                  b"fffffffffffffffff\r\n", b"2" * 2000])
async def test_bad_chunks(body: bytes) -> None:
    async with scripted(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body,
                        close=False) as server:
        pool = pool_for(server)
        async with await pool.request("GET", "/", timeout=5) as resp:
            with pytest.raises(ProtocolError):
                await resp.read(1 << 20)
        assert pool.open_connections == 0
        await pool.close()


@pytest.mark.parametrize("answer", [
    b"",
    b"HTTP/1.1 200 OK\r\nContent-",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
])
async def test_early_close_is_an_error_and_not_retried(answer: bytes) -> None:
    async with scripted(answer) as server:
        pool = pool_for(server)
        with pytest.raises(DisconnectedError):
            async with await pool.request("POST", "/", body=b"once", timeout=5) as resp:
                await resp.read(100)
        assert len(server.requests) == 1  # sent once, never again
        assert pool.open_connections == 0
        await pool.close()


async def test_timeout_waiting_for_the_answer_and_in_its_body() -> None:
    for answer in (b"", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"):
        async with scripted(answer, close=False) as server:
            pool = pool_for(server)
            start = time.monotonic()
            with pytest.raises(ResponseTimeoutError):
                async with await pool.request("GET", "/", timeout=0.3) as resp:
                    await resp.read(100)
            assert 0.25 < time.monotonic() - start < 2
            assert pool.open_connections == 0
            await pool.close()


async def test_connect_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = Pool("127.0.0.1", port)
    with pytest.raises(ConnectError) as info:
        await pool.request("GET", "/", timeout=2)
    assert not isinstance(info.value, TlsError)
    assert pool.open_connections == 0


# -- the pool ---------------------------------------------------------------------------------


async def test_pool_limit_queues_requests() -> None:
    active = 0
    most = 0
    server: Server

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active, most
        while True:
            try:
                await server.read_request(reader)
            except asyncio.IncompleteReadError:
                return
            active += 1
            most = max(most, active)
            await asyncio.sleep(0.05)
            active -= 1
            writer.write(ok(b"k"))
            await writer.drain()

    server = Server(handle)
    async with server:
        pool = pool_for(server, limit=2)
        results = await asyncio.gather(*(get(pool) for _ in range(8)))
        assert results == [(200, b"k")] * 8
        assert server.connections == 2
        assert most == 2
        # A request that cannot get a connection within its timeout was not sent.
        slow = [asyncio.create_task(get(pool)) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(ConnectTimeoutError):
            await get(pool, timeout=0.02)
        await asyncio.gather(*slow)
        assert len(server.requests) == 10
        await pool.close()


async def test_limit_hands_a_freed_slot_to_the_longest_waiting() -> None:
    loop = asyncio.get_running_loop()
    far = loop.time() + 5
    limit = Limit(1)
    await limit.acquire(loop, far)
    first = asyncio.create_task(limit.acquire(loop, far))
    second = asyncio.create_task(limit.acquire(loop, far))
    await asyncio.sleep(0)
    limit.release()  # to ``first``: a newcomer does not overtake it
    newcomer = asyncio.create_task(limit.acquire(loop, far))
    await asyncio.sleep(0)
    assert first.done() and not second.done() and not newcomer.done()
    # A waiter that gives up leaves no trace; its turn passes on.
    with pytest.raises(ConnectTimeoutError):
        await limit.acquire(loop, loop.time() + 0.01)
    limit.release()
    await asyncio.sleep(0)
    assert second.done() and not newcomer.done()
    second.cancel()  # already handed the slot: cancelling the task gives nothing back
    limit.release()
    await asyncio.sleep(0)
    assert newcomer.done() and limit.busy == 1
    limit.release()
    assert limit.busy == 0


async def test_idle_connections_expire() -> None:
    async with echo_server() as server:
        pool = pool_for(server, idle_seconds=0.1)
        await asyncio.gather(get(pool, b"a"), get(pool, b"b"))
        assert pool.idle_connections == 2
        await asyncio.sleep(0.3)
        assert pool.open_connections == 0
        assert await get(pool, b"c") == (200, b"c")
        await pool.close()


@pytest.fixture
def closing_server() -> Iterator[tuple[int, list[bytes]]]:
    """A threaded server that answers one request per connection and closes it at once,
    without saying so (no ``Connection: close``)."""
    listener = socket.create_server(("127.0.0.1", 0))
    requests: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    got = conn.recv(4096)
                    if not got:
                        break
                    data += got
                requests.append(data)
                conn.sendall(ok(b"hi"))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], requests
    listener.close()


async def test_idle_connection_found_closed_goes_to_a_fresh_one(
        closing_server: tuple[int, list[bytes]]) -> None:
    port, requests = closing_server
    pool = Pool("127.0.0.1", port)
    assert await get(pool) == (200, b"hi")
    # The server's close reaches the socket while the event loop is busy: the idle
    # connection looks open to the loop, but is found closed before the request is sent.
    time.sleep(0.2)
    assert await get(pool) == (200, b"hi")
    assert len(requests) == 2
    await pool.close()


async def test_early_answer_while_the_body_streams() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\n\r\nbig")
        await writer.drain()
        while await reader.read(65536):
            pass

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 65536
            await asyncio.sleep(0.001)

    async with Server(handle) as server:
        pool = pool_for(server)
        async with await pool.request("POST", "/", body=endless(), content_length=1 << 40,
                                      timeout=5) as resp:
            assert resp.status == 413
            assert await resp.read(10) == b"big"
        assert pool.open_connections == 0  # the request was not whole: never reused
        await pool.close()


async def test_body_source_failure_is_raised() -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"x"
        raise OSError("spool unreadable")

    async with echo_server() as server:
        pool = pool_for(server)
        with pytest.raises(OSError, match="spool unreadable"):
            await pool.request("POST", "/", body=failing(), content_length=10, timeout=5)
        assert pool.open_connections == 0
        await pool.close()


# -- TLS --------------------------------------------------------------------------------------


def tls_files(tmp: Path, name: str, *, client: bool) -> tuple[Path, Path, bytes]:
    key = generate_private_key()
    cert = self_signed_tls_certificate(key, name, now=datetime.now(UTC),
                                       hosts=("127.0.0.1",), client=client)
    cert_path, key_path = tmp / f"{name}.pem", tmp / f"{name}.key"
    write_certificate(cert_path, cert)
    unsafe_write_plaintext_key(key_path, key)
    return cert_path, key_path, cert.public_bytes(Encoding.DER)


@pytest.fixture
def tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext, bytes]:
    """Mutual TLS: the server's context, the client's context, the server's DER."""
    s_cert, s_key, s_der = tls_files(tmp_path, "server", client=False)
    c_cert, c_key, c_der = tls_files(tmp_path, "client", client=True)
    server = server_context(s_cert, s_key, [x509.load_der_x509_certificate(c_der)])
    client = client_context(c_cert, c_key, [x509.load_der_x509_certificate(s_der)])
    return server, client, s_der


async def test_pinned_mutual_tls(tls_pair: tuple[ssl.SSLContext, ssl.SSLContext, bytes]
                                 ) -> None:
    server_ctx, client_ctx, der = tls_pair
    pin = PinnedPeer([hashlib.sha256(der).hexdigest().upper()])
    async with echo_server(tls=server_ctx) as server:
        pool = pool_for(server, tls=client_ctx, verify=pin.check)
        async with await pool.request("POST", "/", body=b"secret", timeout=5) as resp:
            assert await resp.read(100) == b"secret"
            assert resp.peer_certificate == der
        assert pin.presented == der
        assert await get(pool, b"again") == (200, b"again")
        assert server.connections == 1
        await pool.close()


async def test_pin_mismatch_sends_nothing(tls_pair: tuple[ssl.SSLContext, ssl.SSLContext, bytes]
                                          ) -> None:
    server_ctx, client_ctx, _ = tls_pair
    pin = PinnedPeer(["00" * 32])
    async with echo_server(tls=server_ctx) as server:
        pool = pool_for(server, tls=client_ctx, verify=pin.check)
        with pytest.raises(PinMismatchError):
            await pool.request("POST", "/", body=b"secret", timeout=5)
        await asyncio.sleep(0.05)
        # Whether the server saw its side of the handshake finish before the client's reset
        # depends on the loop (asyncio's does, uvloop's does not); no request reached it.
        assert server.connections <= 1
        assert server.requests == []
        assert pin.presented is None
        assert pool.open_connections == 0
        await pool.close()


async def test_untrusted_server_is_a_tls_error(
        tmp_path: Path, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext, bytes]) -> None:
    _, client_ctx, _ = tls_pair
    o_cert, o_key, _ = tls_files(tmp_path, "other", client=False)
    other = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    other.load_cert_chain(o_cert, o_key)
    async with echo_server(tls=other) as server:
        pool = pool_for(server, tls=client_ctx)
        with pytest.raises(TlsError):
            await pool.request("GET", "/", timeout=5)
        assert server.requests == []
        await pool.close()


# -- the client of the provider systems --------------------------------------------------------


async def test_client_pools_by_origin_and_sends_the_host_as_aiohttp_did() -> None:
    client = Client()
    a, target = client.pool("http://Example.org/a/b%20c?x=1&y=%2F#frag")
    assert (a.host, a.port, a.host_header, target) == ("example.org", 80, "example.org",
                                                        "/a/b%20c?x=1&y=%2F")
    b, target = client.pool("http://example.org:80")
    assert b is a and target == "/"
    c, _ = client.pool("https://example.org:8443/s", unsafe_no_tls_verify=True)
    assert c is not a and c.host_header == "example.org:8443"
    d, _ = client.pool("https://[::1]/s")
    assert d.host_header == "[::1]"
    assert client.pool("https://[::1]/t", unsafe_no_tls_verify=False)[0] is d
    assert client.pool("https://[::1]/t", unsafe_no_tls_verify=True)[0] is not d
    for bad in ("ftp://example.org/", "/relative", "http://", "http://h:99999/"):
        with pytest.raises(ValueError):
            client.pool(bad)
    await client.close()


async def test_client_limit_is_shared_by_its_pools() -> None:
    active = most = 0
    servers: list[Server] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active, most
        while True:
            try:
                await servers[0].read_request(reader)
            except asyncio.IncompleteReadError:
                return
            active += 1
            most = max(most, active)
            await asyncio.sleep(0.03)
            active -= 1
            writer.write(ok(b"k"))
            await writer.drain()

    servers += [Server(handle), Server(handle)]
    async with servers[0], servers[1]:
        client = Client(limit=3)

        async def call(server: Server) -> tuple[int, bytes]:
            pool, target = client.pool(f"http://127.0.0.1:{server.port}/x")
            async with await pool.request("GET", target, timeout=5) as resp:
                return resp.status, await resp.read(10) or b""

        results = await asyncio.gather(*(call(servers[i % 2]) for i in range(12)))
        assert results == [(200, b"k")] * 12
        assert most == 3
        await client.close()


async def test_client_tls_verified_or_not(tmp_path: Path) -> None:
    cert, key, _ = tls_files(tmp_path, "provider", client=False)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    async with echo_server(tls=ctx) as server:
        client = Client()
        url = f"https://127.0.0.1:{server.port}/x"
        pool, target = client.pool(url)  # a self-signed certificate: not trusted
        with pytest.raises(TlsError):
            await pool.request("POST", target, body=b"a", timeout=5)
        pool, target = client.pool(url, unsafe_no_tls_verify=True)  # unsafe-no-tls-verify
        async with await pool.request("POST", target, body=b"a", timeout=5) as resp:
            assert await resp.read(10) == b"a"
        assert server.requests and len(server.requests) == 1
        await client.close()


async def test_client_presents_the_internal_certificate(tmp_path: Path) -> None:
    """A provider system that requires a client certificate gets the server's internal TLS
    certificate (generated as the server generates it, its key encrypted)."""
    cert, key = tmp_path / "internal-tls.pem", tmp_path / "internal-tls.key"
    passphrase = b"correct horse"
    assert ensure_internal_certificate(cert, key, "DEV/GOV/1/ss1", "127.0.0.1",
                                       datetime.now(UTC), passphrase)
    purposes = x509.load_pem_x509_certificate(cert.read_bytes()).extensions \
        .get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(purposes) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    p_cert, p_key, _ = tls_files(tmp_path, "provider", client=False)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(p_cert, p_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=cert)  # the provider system trusts exactly that one
    async with echo_server(tls=ctx) as server:
        url = f"https://127.0.0.1:{server.port}/x"
        client = Client(certificate=(cert, key, passphrase))
        pool, target = client.pool(url, unsafe_no_tls_verify=True)  # unsafe-no-tls-verify
        async with await pool.request("POST", target, body=b"mine", timeout=5) as resp:
            assert await resp.read(10) == b"mine"
        await client.close()
        anonymous = Client()
        pool, target = anonymous.pool(url, unsafe_no_tls_verify=True)  # unsafe-no-tls-verify
        with pytest.raises(HttpClientError):
            async with await pool.request("POST", target, body=b"anon", timeout=5) as resp:
                await resp.read(10)
        await anonymous.close()
        assert len(server.requests) == 1  # the anonymous one never got through TLS


async def test_client_pins_a_registered_provider_certificate(tmp_path: Path) -> None:
    """A provider system's certificate registered for its subsystem is trusted by its
    SHA-256 alone (self-signed, any host name); another certificate is refused before a
    byte is sent; new pins get a new pool and the old one is retired."""
    cert, key, der = tls_files(tmp_path, "provider", client=False)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    pin = hashlib.sha256(der).hexdigest()
    async with echo_server(tls=ctx) as server:
        client = Client()
        url = f"https://localhost:{server.port}/x"  # not a name the certificate has
        pool, target = client.pool(url, pins=frozenset({pin.upper()}))
        async with await pool.request("POST", target, body=b"ok", timeout=5) as resp:
            assert await resp.read(10) == b"ok"
            assert resp.peer_certificate == der
        assert client.pool(url, pins=frozenset({pin}))[0] is pool  # the same pins
        other, _ = client.pool(url, pins=frozenset({"00" * 32}))
        assert other is not pool
        assert pool.open_connections == 0  # retired: its idle connection closed
        with pytest.raises(PinMismatchError, match="is not registered"):
            await other.request("POST", target, body=b"no", timeout=5)
        with pytest.raises(TlsError):  # without pins: the system's trust store
            await client.pool(url)[0].request("POST", target, body=b"no", timeout=5)
        assert len(server.requests) == 1
        await client.close()
