"""The proxies' HTTP/1.1 server (security_server.httpserver) on real sockets: what a
handler sees and what it answers, keep-alive and pipelining, chunked bodies, malformed and
hostile requests, slow and vanishing peers, mutual TLS, and shutdown.

Where a test is about the wire format it writes and reads exact bytes on a plain asyncio
connection (:class:`Peer`); elsewhere the project's own client (``Pool``) or aiohttp's talks
to the server.  Every wait is bounded (:data:`WAIT`), and the timeout tests run on timeouts
of a few tenths of a second."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certs.ca import DevCA, IssuedCredentials
from security_server import httpserver
from security_server.http import error_renderer
from security_server.httpclient import MAX_HEAD, MAX_HEADERS, DisconnectedError, Pool
from security_server.httpserver import DRAIN_BYTES, HttpServer, ServerRequest, ServerResponse
from security_server.listen import Listener
from security_server.tls import client_context, server_context
from xchange.errors import BadRequestError, XRoadError

BAD = "server.serverproxy.bad_request"
INTERNAL = "server.serverproxy.internal_error"
WAIT = 5.0
"""The longest any one step of a test may take: nothing hangs."""


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run ``work`` while the block runs; cancel it after."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

Handler = Callable[[ServerRequest], Awaitable[ServerResponse]]


# -- the server, and a peer that speaks raw bytes -----------------------------------------------


@dataclass
class Running:
    """A :class:`HttpServer` behind a :class:`Listener` on loopback."""

    server: HttpServer
    port: int

    async def connect(self) -> Peer:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return Peer(reader, writer)

    def pool(self, **kw: Any) -> Pool:
        return Pool("127.0.0.1", self.port, **kw)


@contextlib.asynccontextmanager
async def serve(handler: Handler, *, tls: ssl.SSLContext | None = None,
                keepalive: float = 10.0, head: float = 10.0,
                idle: float = 10.0) -> AsyncIterator[Running]:
    """The server with ``handler`` and these timeouts; shut down afterwards."""
    server = HttpServer(handler, error_renderer(INTERNAL), bad_request_code=BAD,
                        keepalive_seconds=keepalive, head_seconds=head, idle_seconds=idle)
    listener = Listener(server, "127.0.0.1", 0, ssl_context=tls)
    await listener.start()
    try:
        yield Running(server, listener.port)
    finally:
        listener.close()
        async with asyncio.timeout(WAIT):
            await server.shutdown(0.5)


@dataclass
class Answer:
    """One answer as it came over the wire."""

    status_line: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split(" ")[1])

    def header(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def error(self) -> dict[str, Any]:
        """The X-Road JSON error of an error answer, checked for its form."""
        assert self.header("Content-Type") == "application/json; charset=utf-8"
        document = json.loads(self.body)
        assert isinstance(document, dict)
        assert set(document) == {"type", "message", "detail"}
        assert document["type"] == self.header("X-Road-Error")
        return document


class Peer:
    """A plain TCP connection to the server: bytes written as given, answers read by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        async with asyncio.timeout(WAIT):
            await self.writer.drain()

    async def answer(self) -> Answer:
        """The next answer (an interim ``1xx`` too): its head, and a body by its length."""
        async with asyncio.timeout(WAIT):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head[:-4].decode("latin-1").split("\r\n")
            headers = []
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                assert colon and name == name.strip(), f"malformed answer field {line!r}"
                headers.append((name, value.strip()))
            answer = Answer(lines[0], headers, b"")
            length = answer.header("Content-Length")
            if length is not None:
                answer.body = await self.reader.readexactly(int(length))
            return answer

    async def rest(self) -> bytes:
        """Whatever comes until the server closes the connection."""
        async with asyncio.timeout(WAIT):
            return await self.reader.read()

    async def closed(self) -> bool:
        """Does the server close the connection (a reset counts) without sending more?"""
        try:
            return await self.rest() == b""
        except ConnectionResetError:
            return True

    async def __aenter__(self) -> Peer:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(WAIT):
                await self.writer.wait_closed()


# -- handlers ---------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as a handler saw it: the request, its body's pieces, the body's error."""

    request: ServerRequest
    pieces: list[bytes] = field(default_factory=list)
    error: BadRequestError | None = None

    @property
    def body(self) -> bytes:
        return b"".join(self.pieces)


class Echo:
    """Reads each request's body to its end and answers it back (200, ``X-Echo``: the
    path); a body that fails is recorded, and its error raised on."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.ended = asyncio.Event()
        """Set when a handler call ends, however."""

    async def __call__(self, request: ServerRequest) -> ServerResponse:
        seen = Seen(request)
        self.seen.append(seen)
        try:
            async for piece in request.body():
                seen.pieces.append(piece)
        except BadRequestError as exc:
            seen.error = exc
            raise
        finally:
            self.ended.set()
        return ServerResponse(200, [("X-Echo", request.path),
                                  ("Content-Type", "application/octet-stream")], seen.body)


async def within(event: asyncio.Event, seconds: float = WAIT) -> None:
    async with asyncio.timeout(seconds):
        await event.wait()


async def _never_called(request: ServerRequest) -> ServerResponse:
    raise AssertionError(f"the handler ran for {request.method} {request.path}")


# -- requests and answers ---------------------------------------------------------------------


async def test_a_post_is_seen_whole_and_answered_with_the_server_fields() -> None:
    echo = Echo()
    body = bytes(range(256)) * 1200  # 300 KiB: more than one piece
    async with serve(echo) as running, await running.connect() as peer:
        await peer.send(b"POST /r/1?a=1&b=%%20 HTTP/1.1\r\nHost: ss1\r\n"
                        b"Content-Type: Application/Foo; q=1\r\nX-Many: 1\r\nx-many: 2\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body))
        for at in range(0, len(body), 100_000):
            await peer.send(body[at:at + 100_000])
        answer = await peer.answer()
    (seen,) = echo.seen
    request = seen.request
    assert (request.method, request.path, request.query, request.version) == (
        "POST", "/r/1", "a=1&b=%20", "HTTP/1.1")
    assert ("X-Many", "1") in request.headers and ("x-many", "2") in request.headers
    assert request.header("X-MANY") == "1"
    assert request.header("host") == "ss1"
    assert request.header("content-type") == "Application/Foo; q=1"
    assert request.target == "/r/1?a=1&b=%20"
    assert request.content_length == len(body)
    assert request.peer_certificate is None and not request.tls  # plain TCP
    assert len(seen.pieces) > 1 and all(0 < len(p) <= 64 * 1024 for p in seen.pieces)
    assert seen.body == body
    assert answer.status_line == "HTTP/1.1 200 OK"
    assert answer.header("X-Echo") == "/r/1"
    assert answer.header("Content-Type") == "application/octet-stream"
    assert answer.header("Content-Length") == str(len(body))
    assert answer.header("Server") == "xchange"
    assert answer.header("Connection") is None  # kept alive
    date = answer.header("Date")
    assert date is not None and date.endswith(" GMT")
    assert abs((email.utils.parsedate_to_datetime(date) - datetime.now(UTC)).total_seconds()) < 5
    assert answer.body == body


async def test_a_request_without_a_body_reads_an_empty_one() -> None:
    echo = Echo()
    async with serve(echo) as running, await running.connect() as peer:
        await peer.send(b"GET /a HTTP/1.1\r\n\r\n"
                        b"POST /b HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
                        b"POST /c HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc")
        answers = [await peer.answer() for _ in range(3)]
    assert [(a.status, a.body, a.header("Connection")) for a in answers] == [
        (200, b"", None), (200, b"", None), (200, b"abc", None)]
    assert [s.pieces for s in echo.seen] == [[], [], [b"abc"]]


async def test_the_body_is_read_once() -> None:
    errors: list[str] = []

    async def twice(request: ServerRequest) -> ServerResponse:
        first = b"".join([p async for p in request.body()])
        try:
            async for _ in request.body():
                pass
        except RuntimeError as exc:
            errors.append(str(exc))
        return ServerResponse(200, body=first)

    async with serve(twice) as running, await running.connect() as peer:
        await peer.send(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
        assert (await peer.answer()).body == b"hi"
    assert errors == ["the request body is read once"]


@pytest.mark.parametrize(("target", "path", "query"), [
    (b"http://provider.example/population", "/population", ""),
    (b"HTTP://provider.example:8080/a/b?x=1&y=%2F", "/a/b", "x=1&y=%2F"),
    (b"https://10.0.0.1", "/", ""),
    (b"http://host?q=1", "/", "q=1"),
    (b"http://user@host/p", "/p", ""),
])
async def test_an_absolute_form_target_is_served_by_its_path(target: bytes, path: str,
                                                             query: str) -> None:
    """As an IS sends it when it uses the security server as its HTTP proxy."""
    echo = Echo()
    async with serve(echo) as running, await running.connect() as peer:
        await peer.send(b"POST " + target + b" HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
        answer = await peer.answer()
    assert (answer.status, answer.body) == (200, b"hi")
    request = echo.seen[0].request
    assert (request.path, request.query) == (path, query)
    assert request.target == path + ("?" + query if query else "")


async def test_a_chunked_body_has_no_content_length() -> None:
    echo = Echo()
    async with serve(echo) as running, await running.connect() as peer:
        await peer.send(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"2\r\nhi\r\n0\r\n\r\nGET /g HTTP/1.1\r\n\r\n")
        answers = [await peer.answer() for _ in range(2)]
    assert [a.body for a in answers] == [b"hi", b""]
    assert [s.request.content_length for s in echo.seen] == [None, 0]


async def test_options_star_is_served() -> None:
    echo = Echo()
    async with serve(echo) as running, await running.connect() as peer:
        await peer.send(b"OPTIONS * HTTP/1.1\r\n\r\n")
        assert (await peer.answer()).status == 200
    assert echo.seen[0].request.path == "*"


async def test_answer_fields_with_cr_lf_or_nul_are_left_out() -> None:
    async def injecting(request: ServerRequest) -> ServerResponse:
        return ServerResponse(200, [("X-Good", "yes"), ("X-Bad", "1\r\nX-Injected: yes"),
                                  ("X-Nul", "a\0b"), ("X-Bad\r\nX-Name", "v")], b"ok")

    async with serve(injecting) as running, await running.connect() as peer:
        await peer.send(b"GET / HTTP/1.1\r\n\r\n")
        answer = await peer.answer()
        await peer.send(b"GET / HTTP/1.1\r\n\r\n")  # the framing held: the next one too
        again = await peer.answer()
    assert answer.header("X-Good") == "yes"
    assert [n for n, _ in answer.headers] == ["X-Good", "Content-Length", "Date", "Server"]
    assert (answer.body, again.body) == (b"ok", b"ok")


async def test_the_framing_fields_of_an_answer_are_the_servers_own() -> None:
    """A handler passing on another party's fields (a provider's, say) cannot frame the
    answer, nor end the connection: one Content-Length, the right one."""
    async def framing(request: ServerRequest) -> ServerResponse:
        return ServerResponse(200, [("content-length", "1"), ("Transfer-Encoding", "chunked"),
                                    ("Connection", "close"), ("Keep-Alive", "timeout=1"),
                                    ("Date", "Thu, 01 Jan 1970 00:00:00 GMT"),
                                    ("server", "Apache"), ("X-Kept", "yes")], b"hello")

    async with serve(framing) as running, await running.connect() as peer:
        await peer.send(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        answers = [await peer.answer() for _ in range(2)]
    for answer in answers:
        assert [n for n, _ in answer.headers] == ["X-Kept", "Content-Length", "Date", "Server"]
        assert (answer.header("Content-Length"), answer.body) == ("5", b"hello")
        assert answer.header("Server") == "xchange"
        assert "1970" not in (answer.header("Date") or "")


async def test_an_unknown_status_has_a_reason() -> None:
    async def odd(request: ServerRequest) -> ServerResponse:
        return ServerResponse(599, body=b"odd")

    async with serve(odd) as running, await running.connect() as peer:
        await peer.send(b"GET / HTTP/1.1\r\n\r\n")
        answer = await peer.answer()
    assert (answer.status_line, answer.body) == ("HTTP/1.1 599 Unknown", b"odd")


async def test_an_answer_to_head_has_no_body() -> None:
    async def get_only(request: ServerRequest) -> ServerResponse:
        if request.method != "GET":
            raise XRoadError(f"{request.method} is not allowed",
                             code="client.unsupported_method")
        return ServerResponse(200, body=b"got")

    async with serve(get_only) as running, await running.connect() as peer:
        await peer.send(b"HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        async with asyncio.timeout(WAIT):
            head = await peer.reader.readuntil(b"\r\n\r\n")
            following = await peer.reader.readuntil(b"\r\n")
    assert head.startswith(b"HTTP/1.1 405 ")
    assert following == b"HTTP/1.1 200 OK\r\n"


# -- keep-alive and pipelining ----------------------------------------------------------------


async def test_requests_on_one_connection_are_answered_in_order() -> None:
    echo = Echo()
    async with serve(echo) as running:
        pool = running.pool()
        try:
            for i in range(3):
                async with await pool.request("POST", f"/n/{i}", body=b"body %d" % i,
                                              timeout=WAIT) as resp:
                    assert (resp.status, await resp.read(100)) == (200, b"body %d" % i)
                    assert resp.header("x-echo") == f"/n/{i}"
            assert pool.open_connections == 1
            assert running.server.connections == 1
        finally:
            await pool.close()
    assert [s.request.path for s in echo.seen] == ["/n/0", "/n/1", "/n/2"]


async def test_pipelined_requests_are_answered_in_order() -> None:
    events: list[str] = []

    async def handler(request: ServerRequest) -> ServerResponse:
        events.append(f"start {request.path}")
        body = b"".join([p async for p in request.body()])
        if request.path == "/slow":
            await asyncio.sleep(0.05)  # the next ones wait for this one's answer
        events.append(f"end {request.path}")
        return ServerResponse(200, body=request.path.encode() + b":" + body)

    async with serve(handler) as running, await running.connect() as peer:
        await peer.send(b"POST /slow HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                        b"GET /fast HTTP/1.1\r\n\r\n"
                        b"POST /third HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"1\r\nz\r\n0\r\n\r\n")
        bodies = [(await peer.answer()).body for _ in range(3)]
    assert bodies == [b"/slow:abc", b"/fast:", b"/third:z"]
    assert events == ["start /slow", "end /slow", "start /fast", "end /fast",
                      "start /third", "end /third"]


async def test_empty_lines_before_a_request_line_are_skipped() -> None:
    echo = Echo()
    async with serve(echo) as running, await running.connect() as peer:
        await peer.send(b"\r\n\r\nGET /a HTTP/1.1\r\n\r\n")
        assert (await peer.answer()).status == 200
        # after a body, as old clients send it
        await peer.send(b"POST /b HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\n"
                        b"GET /c HTTP/1.1\r\n\r\n")
        assert [(await peer.answer()).status for _ in range(2)] == [200, 200]
    assert [s.request.path for s in echo.seen] == ["/a", "/b", "/c"]


async def test_an_empty_line_split_across_reads_is_skipped() -> None:
    echo = Echo()
    async with serve(echo) as running, await running.connect() as peer:
        await peer.send(b"GET /a HTTP/1.1\r\n\r\n")
        assert (await peer.answer()).status == 200
        await peer.send(b"\r")
        await asyncio.sleep(0.05)  # the server reads the CR on its own
        await peer.send(b"\nGET /b HTTP/1.1\r\n\r\n")
        answer = await peer.answer()
    assert answer.status == 200, answer.body


# -- chunked bodies ---------------------------------------------------------------------------


async def test_a_chunked_body_with_an_extension_and_a_trailer_is_reassembled() -> None:
    echo = Echo()
    async with serve(echo) as running, await running.connect() as peer:
        await peer.send(b"POST /c HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"
                        b"5;name=value\r\nhello\r\n")
        await asyncio.sleep(0.01)  # the rest in another read
        await peer.send(b"6 ; x\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
                        b"GET /after HTTP/1.1\r\n\r\n")
        answer, after = await peer.answer(), await peer.answer()
    assert (answer.status, answer.body, answer.header("Connection")) == (
        200, b"hello world", None)
    assert answer.header("Content-Length") == "11"
    assert after.header("X-Echo") == "/after"
    assert [s.body for s in echo.seen] == [b"hello world", b""]


async def test_the_project_client_sends_a_streamed_body_chunked() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(20):
            yield bytes([65 + i]) * 10_000

    echo = Echo()
    async with serve(echo) as running:
        pool = running.pool()
        try:
            async with await pool.request("PUT", "/up", body=pieces(), timeout=WAIT) as resp:
                assert await resp.read(1 << 20) == b"".join([bytes([65 + i]) * 10_000
                                                            for i in range(20)])
        finally:
            await pool.close()
    assert echo.seen[0].request.header("transfer-encoding") == "chunked"


@pytest.mark.parametrize("chunks", [
    b"zz\r\nhello\r\n0\r\n\r\n",
    b"\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhelloXX0\r\n\r\n",
    b"1" * 17 + b"\r\n",
    b"5;" + b"x" * 2000 + b"\r\nhello\r\n0\r\n\r\n",
], ids=["not hex", "empty", "no CRLF after the data", "too large", "line too long"])
async def test_a_malformed_chunked_body_is_a_bad_request(chunks: bytes) -> None:
    echo = Echo()
    async with serve(echo) as running, await running.connect() as peer:
        await peer.send(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
        answer = await peer.answer()
    (seen,) = echo.seen
    assert isinstance(seen.error, BadRequestError) and seen.error.code == BAD
    assert (answer.status, answer.header("X-Road-Error")) == (400, BAD)
    assert answer.header("Connection") == "close"
    assert answer.error()["type"] == BAD


# -- malformed requests -----------------------------------------------------------------------

REFUSED = [
    pytest.param(b"GET /\r\n\r\n", 400, id="two parts"),
    pytest.param(b"GET  / HTTP/1.1\r\n\r\n", 400, id="two spaces"),
    pytest.param(b"G(T / HTTP/1.1\r\n\r\n", 400, id="method not a token"),
    pytest.param(b"GET /a\x7fb HTTP/1.1\r\n\r\n", 400, id="target not visible"),
    pytest.param(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, id="space before colon"),
    pytest.param(b"GET / HTTP/1.1\r\n: x\r\n\r\n", 400, id="no field name"),
    pytest.param(b"GET / HTTP/1.1\r\nX-A: 1\nX-B: 2\r\n\r\n", 400, id="bare LF"),
    pytest.param(b"GET / HTTP/1.1\r\nX-A: 1\rX-B: 2\r\n\r\n", 400, id="bare CR"),
    pytest.param(b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400, id="folded line"),
    pytest.param(b"GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n", 400, id="NUL"),
    pytest.param(b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * (MAX_HEADERS + 1) + b"\r\n", 400,
                 id="too many fields"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n0\r\n\r\n", 400, id="length and chunked"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                 400, id="two lengths"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello", 400,
                 id="a list of lengths"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 5a\r\n\r\nhello", 400, id="length 5a"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, id="length -1"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello", 400, id="length +5"),
    pytest.param("POST / HTTP/1.1\r\nContent-Length: \u00b2\r\n\r\nhi".encode(), 400,
                 id="length a superscript digit"),
    pytest.param(b"GET ftp://ss1/ HTTP/1.1\r\n\r\n", 400, id="absolute target, not HTTP"),
    pytest.param(b"GET http:/ss1/ HTTP/1.1\r\n\r\n", 400, id="absolute target, one slash"),
    pytest.param(b"GET ss1:443 HTTP/1.1\r\n\r\n", 400, id="authority target"),
    pytest.param(b"GET * HTTP/1.1\r\n\r\n", 400, id="star not OPTIONS"),
    pytest.param(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501, id="gzip"),
    pytest.param(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501,
                 id="gzip, chunked"),
    pytest.param(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 501,
                 id="chunked in HTTP/1.0"),
    pytest.param(b"GET / HTTP/2.0\r\n\r\n", 505, id="HTTP/2.0"),
    pytest.param(b"GET / HTTP/1.2\r\n\r\n", 505, id="HTTP/1.2"),
    pytest.param(b"GET / http/1.1\r\n\r\n", 505, id="lower-case version"),
]


@pytest.mark.parametrize(("request_bytes", "status"), REFUSED)
async def test_a_malformed_request_is_refused_and_the_connection_closed(
    request_bytes: bytes, status: int
) -> None:
    async with serve(_never_called) as running, await running.connect() as peer:
        await peer.send(request_bytes)
        answer = await peer.answer()
        assert await peer.rest() == b""
    assert answer.status == status
    assert answer.status_line.startswith(f"HTTP/1.1 {status} ")
    assert answer.header("X-Road-Error") == BAD
    assert answer.header("Connection") == "close"
    assert answer.header("Server") == "xchange"
    error = answer.error()
    assert error["message"]
    assert "Traceback" not in answer.body.decode()


async def test_a_head_of_64_kib_is_served_and_one_byte_more_is_refused() -> None:
    def head(size: int) -> bytes:
        start, end = b"GET /big HTTP/1.1\r\nX-Big: ", b"\r\n\r\n"
        return start + b"a" * (size - len(start) - len(end)) + end

    echo = Echo()
    async with serve(echo) as running:
        async with await running.connect() as peer:
            await peer.send(head(MAX_HEAD))
            assert (await peer.answer()).status == 200
        async with await running.connect() as peer:
            await peer.send(head(MAX_HEAD + 1))
            answer = await peer.answer()
            assert await peer.rest() == b""
    assert len(echo.seen) == 1
    assert (answer.status, answer.header("X-Road-Error")) == (400, BAD)
    assert answer.header("Connection") == "close"
    assert "longer than" in answer.error()["message"]


@pytest.mark.parametrize(("request_bytes", "status"), [
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 8388608\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n" + b"x" * (8 << 20), 400,
                 id="length and chunked"),
    pytest.param(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n" + b"x" * (8 << 20),
                 501, id="gzip"),
    pytest.param(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n", 400,
                 id="a head of 1 MiB"),
])
async def test_a_refused_request_still_being_sent_is_not_reset(
    request_bytes: bytes, status: int
) -> None:
    async with serve(_never_called) as running, await running.connect() as peer:
        peer.writer.write(request_bytes)
        answer = await peer.answer()
        assert (answer.status, answer.header("Connection")) == (status, "close")
        await peer.send(b"")  # the rest of it went
        assert await peer.rest() == b""


# -- closing after the answer -----------------------------------------------------------------


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
], ids=["close", "keep-alive, Close", "HTTP/1.0", "HTTP/1.0 keep-alive, close"])
async def test_a_connection_that_asks_to_close_is_closed_after_the_answer(
    request_bytes: bytes
) -> None:
    echo = Echo()
    async with serve(echo) as running, await running.connect() as peer:
        # a second request behind it is not served
        await peer.send(request_bytes + b"GET /second HTTP/1.1\r\n\r\n")
        answer = await peer.answer()
        assert await peer.rest() == b""
    assert (answer.status, answer.header("Connection")) == (200, "close")
    assert len(echo.seen) == 1


async def test_an_http_1_0_peer_that_asks_to_keep_the_connection_is_told_so() -> None:
    echo = Echo()
    async with serve(echo) as running, await running.connect() as peer:
        await peer.send(b"POST /1 HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n"
                        b"\r\nhi")
        first = await peer.answer()
        await peer.send(b"GET /2 HTTP/1.0\r\nconnection: keep-alive\r\n\r\n"
                        b"GET /3 HTTP/1.0\r\n\r\n")
        second, third = await peer.answer(), await peer.answer()
        assert await peer.rest() == b""
    assert [(a.status, a.header("Connection")) for a in (first, second, third)] == [
        (200, "keep-alive"), (200, "keep-alive"), (200, "close")]
    assert first.body == b"hi"
    assert [s.request.path for s in echo.seen] == ["/1", "/2", "/3"]


# -- the handler's errors ---------------------------------------------------------------------


async def test_an_xroad_error_is_answered_with_its_status_and_code() -> None:
    async def refusing(request: ServerRequest) -> ServerResponse:
        if request.path == "/known":
            request.message_id = "msg-1"
        raise XRoadError("no right to the service", code="server.serverproxy.access_denied")

    async with serve(refusing) as running, await running.connect() as peer:
        await peer.send(b"GET /known HTTP/1.1\r\n\r\nGET /unknown HTTP/1.1\r\n\r\n")
        known, unknown = await peer.answer(), await peer.answer()
    assert known.status_line == "HTTP/1.1 403 Forbidden"
    assert known.header("X-Road-Error") == "server.serverproxy.access_denied"
    assert known.header("X-Road-Id") == "msg-1"
    assert known.header("Connection") is None  # the request was whole: the connection stays
    assert known.error() == {"type": "server.serverproxy.access_denied",
                             "message": "no right to the service", "detail": None}
    assert unknown.header("X-Road-Id") is None
    assert unknown.status == 403


async def test_an_unexpected_exception_is_an_internal_error_without_a_traceback(
    caplog: pytest.LogCaptureFixture
) -> None:
    async def failing(request: ServerRequest) -> ServerResponse:
        raise RuntimeError("secret path /etc/xchange/key.pem")

    async with serve(failing) as running, await running.connect() as peer:
        await peer.send(b"GET / HTTP/1.1\r\n\r\n")
        with caplog.at_level(logging.ERROR):
            answer = await peer.answer()
    assert answer.status_line == "HTTP/1.1 500 Internal Server Error"
    assert answer.header("X-Road-Error") == INTERNAL
    error = answer.error()
    incident = error["detail"]
    assert str(uuid.UUID(incident)) == incident
    text = answer.body.decode()
    for leak in ("secret", "RuntimeError", "Traceback", "httpserver"):
        assert leak not in text
    (record,) = [r for r in caplog.records if incident in r.getMessage()]
    assert record.exc_info is not None  # the stack trace is in the log, under the incident


# -- bodies the handler did not read ----------------------------------------------------------


async def _refuse_unread(request: ServerRequest) -> ServerResponse:
    """Refuses without reading the body -- or after its first piece, on ``/one``."""
    if request.path == "/one":
        async for _ in request.body():
            break
    return ServerResponse(403, [("X-Refused", "yes")], b"refused")


async def test_a_short_unread_body_is_read_and_the_connection_kept() -> None:
    """A refused request's short body is read to its end before the answer, so that the
    connection carries the next request (as a refused caller's retry would)."""
    calls = 0

    async def counting(request: ServerRequest) -> ServerResponse:
        nonlocal calls
        calls += 1
        if request.path == "/second":
            return ServerResponse(200, body=b"second")
        return await _refuse_unread(request)

    async with serve(counting) as running, await running.connect() as peer:
        await peer.send(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789"
                        b"GET /second HTTP/1.1\r\n\r\n")
        first, second = await peer.answer(), await peer.answer()
    assert (first.status, first.body, first.header("Connection")) == (403, b"refused", None)
    assert (second.status, second.body) == (200, b"second")
    assert calls == 2


async def test_a_long_unread_body_closes_the_connection_after_the_answer() -> None:
    body = b"x" * (DRAIN_BYTES + 1)
    async with serve(_refuse_unread) as running, await running.connect() as peer:
        await peer.send(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                        + b"GET /second HTTP/1.1\r\n\r\n")
        answer = await peer.answer()
        assert await peer.closed()
    assert (answer.status, answer.body, answer.header("Connection")) == (403, b"refused",
                                                                          "close")


@pytest.mark.parametrize("path", ["/none", "/one"])
async def test_the_answer_to_an_unread_large_body_is_not_lost(path: str) -> None:
    """The peer is still sending when the answer comes: the rest is read and dropped before
    the close, so the peer is not reset before it reads the answer."""
    body = b"x" * (8 << 20)
    async with serve(_refuse_unread) as running, await running.connect() as peer:
        peer.writer.write(b"POST %s HTTP/1.1\r\nContent-Length: %d\r\n\r\n"
                          % (path.encode(), len(body)) + body)
        answer = await peer.answer()
        await peer.send(b"")  # all of it went
        assert await peer.rest() == b""
    assert (answer.status, answer.body, answer.header("Connection")) == (403, b"refused",
                                                                          "close")


async def test_dropping_an_unread_body_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpserver, "LINGER_SECONDS", 0.3)
    async with serve(_refuse_unread) as running, await running.connect() as peer:
        await peer.send(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        answer = await peer.answer()
        started = time.monotonic()

        async def trickle() -> None:  # never ends the body, never pauses long
            with contextlib.suppress(ConnectionError):
                while True:
                    await peer.send(b"1\r\nx\r\n")
                    await asyncio.sleep(0.02)

        async with in_background(trickle()):
            assert await peer.closed()
    assert answer.status == 403
    assert 0.25 <= time.monotonic() - started < 2


# -- streamed answers -------------------------------------------------------------------------


class Streamed:
    """A handler that answers ``size`` bytes in 64 KiB pieces from an async generator,
    counting what it handed over; what ended, and when, is in :attr:`ended`."""

    def __init__(self, size: int, *, announced: int | None = None,
                 fail_at: int | None = None) -> None:
        self.size, self.fail_at = size, fail_at
        self.announced = size if announced is None else announced
        self.handed = 0
        self.ended: list[str] = []
        self.closed = asyncio.Event()

    async def pieces(self) -> AsyncIterator[bytes]:
        try:
            while self.handed < self.size:
                if self.fail_at is not None and self.handed >= self.fail_at:
                    raise RuntimeError("the source failed")
                piece = bytes([self.handed // 65536 % 251]) * min(65536, self.size - self.handed)
                self.handed += len(piece)
                yield piece
        finally:
            self.ended.append("pieces")

    def close(self) -> None:
        self.ended.append("close")
        self.closed.set()

    def expected(self) -> bytes:
        return b"".join(bytes([at // 65536 % 251]) * min(65536, self.size - at)
                        for at in range(0, self.size, 65536))

    async def __call__(self, request: ServerRequest) -> ServerResponse:
        if request.path == "/small":
            return ServerResponse(200, body=b"small")
        return ServerResponse(200, [("Content-Type", "application/x-big")],
                            stream=(self.announced, self.pieces()), close=self.close)


async def test_a_streamed_answer_arrives_whole_and_is_closed_after() -> None:
    streamed = Streamed(4 << 20)
    async with serve(streamed) as running:
        pool = running.pool()
        try:
            async with await pool.request("GET", "/big", timeout=WAIT) as resp:
                assert resp.content_length == 4 << 20
                assert resp.header("content-type") == "application/x-big"
                assert resp.header("server") == "xchange"
                data = await resp.read(4 << 20)
            assert data == streamed.expected()
            assert streamed.ended == ["pieces", "close"]
            async with await pool.request("GET", "/small", timeout=WAIT) as resp:
                assert await resp.read(100) == b"small"
            assert pool.open_connections == 1  # kept alive after a streamed answer
        finally:
            await pool.close()


async def test_a_peer_that_goes_away_mid_answer_is_survived(
    caplog: pytest.LogCaptureFixture
) -> None:
    streamed = Streamed(256 << 20)
    async with serve(streamed) as running:
        with caplog.at_level(logging.INFO, logger="security_server.httpserver"):
            async with await running.connect() as peer:
                await peer.send(b"GET /big HTTP/1.1\r\n\r\n")
                async with asyncio.timeout(WAIT):
                    await peer.reader.readuntil(b"\r\n\r\n")
                    await peer.reader.readexactly(100_000)
                peer.writer.transport.abort()
            await within(streamed.closed)
        assert streamed.ended == ["pieces", "close"]
        assert streamed.handed < 256 << 20
        assert "went away" in caplog.text
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        async with await running.connect() as peer:
            await peer.send(b"GET /small HTTP/1.1\r\n\r\n")
            assert (await peer.answer()).body == b"small"


@pytest.mark.parametrize("how", [
    pytest.param({"size": 1 << 20, "announced": 2 << 20}, id="shorter than announced"),
    pytest.param({"size": 2 << 20, "fail_at": 1 << 20}, id="the source fails"),
])
async def test_a_streamed_answer_that_fails_closes_the_connection(
    how: dict[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    streamed = Streamed(**how)
    async with serve(streamed) as running:
        pool = running.pool()
        try:
            with caplog.at_level(logging.ERROR, logger="security_server.httpserver"):
                async with await pool.request("GET", "/big", timeout=WAIT) as resp:
                    assert resp.content_length == streamed.announced
                    with pytest.raises(DisconnectedError):
                        await resp.read(4 << 20)
            await within(streamed.closed)
            assert pool.open_connections == 0
        finally:
            await pool.close()
    assert streamed.ended == ["pieces", "close"]
    assert [r.levelno for r in caplog.records] == [logging.ERROR]


# -- timeouts ---------------------------------------------------------------------------------


async def test_an_idle_connection_is_closed_after_the_keepalive() -> None:
    echo = Echo()
    async with serve(echo, keepalive=0.3) as running, await running.connect() as used, \
            await running.connect() as unused:
        await used.send(b"GET / HTTP/1.1\r\n\r\n")
        assert (await used.answer()).status == 200
        started = time.monotonic()
        assert await used.closed() and await unused.closed()
        assert 0.25 <= time.monotonic() - started < 2
    assert len(echo.seen) == 1


async def test_a_head_trickled_slower_than_head_seconds_is_closed() -> None:
    echo = Echo()
    async with serve(echo, head=0.3) as running:
        async with await running.connect() as peer:  # a whole head in time is served
            for byte in b"GET /quick HTTP/1.1\r\n\r\n":
                await peer.send(bytes([byte]))
                await asyncio.sleep(0.002)
            assert (await peer.answer()).status == 200

        async with await running.connect() as peer:
            async def trickle() -> None:  # a byte every 20 ms: never still, never done
                with contextlib.suppress(ConnectionError):
                    for byte in b"GET /slow HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
                        await peer.send(bytes([byte]))
                        await asyncio.sleep(0.02)

            started = time.monotonic()
            async with in_background(trickle()):
                assert await peer.closed()
            assert 0.25 <= time.monotonic() - started < 2
    assert [s.request.path for s in echo.seen] == ["/quick"]


async def test_a_body_that_stops_arriving_closes_the_connection() -> None:
    echo = Echo()
    async with serve(echo, idle=0.3) as running, await running.connect() as peer:
        await peer.send(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789")
        started = time.monotonic()
        assert await peer.rest() == b""  # no answer: the connection is gone
        assert 0.25 <= time.monotonic() - started < 2
        await within(echo.ended)
    (seen,) = echo.seen
    assert seen.pieces == [b"0123456789"]
    assert isinstance(seen.error, BadRequestError) and seen.error.code == BAD


async def test_a_body_that_keeps_moving_is_not_cut_off() -> None:
    echo = Echo()
    async with serve(echo, idle=0.25) as running, await running.connect() as peer:
        await peer.send(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n")
        for byte in b"abcd":  # 0.4 s in all, never 0.25 s still
            await asyncio.sleep(0.1)
            await peer.send(bytes([byte]))
        answer = await peer.answer()
    assert (answer.status, answer.body) == (200, b"abcd")


async def test_a_peer_that_does_not_read_the_answer_is_closed() -> None:
    streamed = Streamed(256 << 20)
    async with serve(streamed, idle=0.3) as running, await running.connect() as peer:
        await peer.send(b"GET /big HTTP/1.1\r\n\r\n")
        await within(streamed.closed)  # the peer never reads
    assert streamed.ended == ["pieces", "close"]
    assert streamed.handed < 256 << 20


async def test_the_handlers_own_time_does_not_count() -> None:
    """Idle is the peer's silence only: a handler slower than ``idle_seconds`` before it reads
    the body, or before its streamed answer, is not cut off."""

    async def slow(request: ServerRequest) -> ServerResponse:
        await asyncio.sleep(0.45)
        if request.path == "/body":
            body = b"".join([p async for p in request.body()])
            return ServerResponse(200, body=body)
        return await streamed(request)

    async def body_after_100_continue(running: Running) -> bytes:
        async with await running.connect() as peer:
            await peer.send(b"POST /body HTTP/1.1\r\nExpect: 100-continue\r\n"
                            b"Content-Length: 5\r\n\r\n")
            assert (await peer.answer()).status == 100
            await asyncio.sleep(0.05)  # well within idle_seconds
            await peer.send(b"hello")
            return (await peer.answer()).body

    async def streamed_answer(running: Running) -> bytes:
        async with await running.connect() as peer:
            await peer.send(b"GET /big HTTP/1.1\r\n\r\n")
            async with asyncio.timeout(WAIT):
                await peer.reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(0.05)  # the server's buffer fills meanwhile
                return await peer.reader.readexactly(8 << 20)

    streamed = Streamed(8 << 20)
    async with serve(slow, idle=0.15, keepalive=0.15) as running:
        body, answer = await asyncio.gather(body_after_100_continue(running),
                                            streamed_answer(running))
    assert body == b"hello"
    assert answer == streamed.expected()


# -- Expect: 100-continue ---------------------------------------------------------------------


async def test_expect_100_continue_is_answered_before_the_body_is_read() -> None:
    echo = Echo()
    async with serve(echo) as running, await running.connect() as peer:
        await peer.send(b"POST /e HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n")
        async with asyncio.timeout(WAIT):
            interim = await peer.reader.readuntil(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        await peer.send(b"hello")
        answer = await peer.answer()
    assert (answer.status, answer.body, answer.header("Connection")) == (200, b"hello", None)


async def test_a_refusal_without_reading_sends_no_100_continue() -> None:
    async with serve(_refuse_unread) as running, await running.connect() as peer:
        await peer.send(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        answer = await peer.answer()
    assert (answer.status, answer.header("Connection")) == (403, "close")


# -- mutual TLS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mutual_tls(issue_server_auth: Callable[..., IssuedCredentials],
               dev_ca: DevCA) -> tuple[ssl.SSLContext, ssl.SSLContext, bytes]:
    """The server's and the client's contexts (auth certificates of the dev CA), and the
    client's certificate (DER)."""
    provider = issue_server_auth("TEST/GOV/1234/provider")
    consumer = issue_server_auth("TEST/GOV/5678/consumer")
    server = server_context(provider.cert_path, provider.key_path, [dev_ca.certificate],
                            passphrase=provider.key_passphrase)
    client = client_context(consumer.cert_path, consumer.key_path, [dev_ca.certificate],
                            passphrase=consumer.key_passphrase)
    return server, client, consumer.certificate.public_bytes(Encoding.DER)


async def get_through_pool(running: Running, path: str, tls: ssl.SSLContext) -> None:
    """One GET through the project's client over TLS, answered 200."""
    pool = running.pool(tls=tls)
    try:
        async with await pool.request("GET", path, timeout=WAIT) as resp:
            assert resp.status == 200
    finally:
        await pool.close()


async def test_the_client_certificate_reaches_the_handler(
    mutual_tls: tuple[ssl.SSLContext, ssl.SSLContext, bytes]
) -> None:
    server_tls, client_tls, client_der = mutual_tls
    echo = Echo()
    async with serve(echo, tls=server_tls) as running:
        async with aiohttp.ClientSession() as session:
            for body in (b"first", b"second"):  # on one kept-alive connection
                async with session.post(f"https://127.0.0.1:{running.port}/tls", data=body,
                                        ssl=client_tls) as response:
                    assert (response.status, await response.read()) == (200, body)
                    assert response.headers["Server"] == "xchange"
        await get_through_pool(running, "/pool", client_tls)
    assert [s.request.peer_certificate for s in echo.seen] == [client_der] * 3
    assert all(s.request.tls for s in echo.seen)


async def test_tls_without_a_client_certificate_is_tls_without_a_certificate(
    mutual_tls: tuple[ssl.SSLContext, ssl.SSLContext, bytes], dev_ca: DevCA
) -> None:
    """As an IS connects to the client proxy's HTTPS port (the certificate is optional)."""
    server_tls, _, _ = mutual_tls
    server_tls.verify_mode = ssl.CERT_OPTIONAL
    anonymous = ssl.create_default_context(cafile=None)
    anonymous.load_verify_locations(cadata=dev_ca.certificate.public_bytes(Encoding.PEM)
                                    .decode())
    anonymous.check_hostname = False
    echo = Echo()
    async with serve(echo, tls=server_tls) as running:
        await get_through_pool(running, "/anonymous", anonymous)
    (seen,) = echo.seen
    assert seen.request.tls and seen.request.peer_certificate is None


# -- shutdown ---------------------------------------------------------------------------------


class Held:
    """A handler that waits for :attr:`release` before it answers; :attr:`entered` is set
    once it waits, :attr:`cancelled` if it was cut off."""

    def __init__(self) -> None:
        self.entered, self.release = asyncio.Event(), asyncio.Event()
        self.cancelled = False

    async def __call__(self, request: ServerRequest) -> ServerResponse:
        if request.path == "/quick":
            return ServerResponse(200, body=b"quick")
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return ServerResponse(200, body=b"held")


async def test_shutdown_closes_idle_connections_at_once() -> None:
    held = Held()
    async with serve(held) as running, await running.connect() as used, \
            await running.connect() as unused:
        await used.send(b"GET /quick HTTP/1.1\r\n\r\n")
        assert (await used.answer()).header("Connection") is None
        started = time.monotonic()
        await running.server.shutdown(5.0)
        assert time.monotonic() - started < 1
        assert await used.closed() and await unused.closed()
        assert running.server.connections == 0
        async with await running.connect() as late:  # the listener is still open
            await late.send(b"GET /quick HTTP/1.1\r\n\r\n")
            assert await late.closed()


async def test_shutdown_lets_a_request_in_flight_finish_within_the_grace() -> None:
    held = Held()
    async with serve(held) as running, await running.connect() as busy, \
            await running.connect() as idle:
        await busy.send(b"GET /held HTTP/1.1\r\n\r\n")
        await within(held.entered)
        stopping = asyncio.create_task(running.server.shutdown(5.0))
        assert await idle.closed()  # at once, while the other is served
        assert not stopping.done()
        held.release.set()
        answer = await busy.answer()
        assert (answer.status, answer.body, answer.header("Connection")) == (200, b"held",
                                                                             "close")
        assert await busy.closed()
        async with asyncio.timeout(1):
            await stopping
    assert not held.cancelled


async def test_shutdown_cuts_off_a_request_after_the_grace() -> None:
    held = Held()
    async with serve(held) as running, await running.connect() as busy:
        await busy.send(b"GET /held HTTP/1.1\r\n\r\n")
        await within(held.entered)
        started = time.monotonic()
        await running.server.shutdown(0.3)
        assert 0.25 <= time.monotonic() - started < 2
        assert await busy.closed()
        assert held.cancelled
        assert running.server.connections == 0


# -- peers that go away -----------------------------------------------------------------------


@pytest.mark.parametrize("start", [
    b"POST /gone HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100,
    b"POST /gone HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" + b"x" * 100,
    b"POST /gone HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
], ids=["by length", "in a chunk", "between chunks"])
async def test_a_peer_that_goes_away_mid_body_is_a_bad_request_and_survived(
    start: bytes
) -> None:
    echo = Echo()
    async with serve(echo) as running:
        async with await running.connect() as peer:
            await peer.send(start)
            await asyncio.sleep(0.02)  # the handler reads what came
        await within(echo.ended)
        (seen,) = echo.seen
        assert isinstance(seen.error, BadRequestError) and seen.error.code == BAD
        async with await running.connect() as peer:
            await peer.send(b"GET /next HTTP/1.1\r\n\r\n")
            assert (await peer.answer()).header("X-Echo") == "/next"
    assert running.server.connections == 0
