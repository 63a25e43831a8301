"""A small HTTP/1.1 client for the security server's outgoing hops.

The client proxy's exchange with a provider security server goes through a :class:`Pool`
(one per provider server): keep-alive connections, at most ``limit`` of them, requests
beyond that waiting for one within their timeout.  It is built on an asyncio protocol and
does only what the hop needs, which costs far less CPU per request than aiohttp's general
client (docs/decisions.md, "A hand-written HTTP/1.1 client").

What it does:

* **Connections.**  TCP, or TLS with the given context; after the handshake ``verify``
  (the certificate pin, :class:`security_server.tls.PinnedPeer`) runs on every new
  connection before a byte of a request is written.  Connecting is limited to
  ``connect_timeout`` and the request's own deadline.
* **Requests.**  The body is bytes (one write) or an async iterable of pieces, sent with
  ``Content-Length`` when the size is given, else chunked; a streamed body is written while
  the answer is read, so an early answer (an error) is seen.  Header names and values with
  CR, LF or NUL are refused.
* **Responses.**  Status line and headers (at most :data:`MAX_HEAD` bytes together, at most
  :data:`MAX_HEADERS` fields), interim ``1xx`` answers skipped; the body by
  ``Content-Length``, chunked, or read to the close, streamed as it arrives.  Anything
  malformed is :class:`ProtocolError`; a close before the answer's end is
  :class:`DisconnectedError`.
* **Timeouts.**  One deadline per request covers waiting for a connection, connecting,
  sending, and reading the answer to its end (like aiohttp's ``total``).
* **Reuse.**  A connection goes back to the pool only when its answer was read to the end,
  nothing failed, the answer was framed by length or chunks, and neither side asked to
  close (``Connection: close``, HTTP/1.0).  Idle connections are closed after
  ``idle_seconds``.

**When a request is retried.**  Only when it provably was not sent: an idle connection is
checked just before it carries a request -- the peer's close already seen by the event
loop, or bytes or end-of-file waiting in its socket -- and one found closed is dropped and
the request goes on another connection (a fresh one when no other idle one passes the same
check).  Once a byte of a request has been written, a failure is never retried: the server
may have acted on it, and the security-server protocol must never deliver a message twice.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import select
import ssl
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Final, cast
from urllib.parse import urlsplit

__all__ = [
    "MAX_HEAD",
    "MAX_HEADERS",
    "Client",
    "ConnectError",
    "ConnectTimeoutError",
    "DisconnectedError",
    "HttpClientError",
    "Limit",
    "PinMismatchError",
    "Pool",
    "ProtocolError",
    "Response",
    "ResponseTimeoutError",
    "StreamConnection",
    "TlsError",
    "framing_fields",
    "header_value",
    "parse_fields",
    "peer_certificate_der",
    "pinned_certificate",
]

MAX_HEAD: Final = 64 * 1024
"""The most a message's first line and headers may take together (bytes)."""
MAX_HEADERS: Final = 128
"""The most header fields a message may have."""
_MAX_CHUNK_LINE: Final = 1024
"""The most a chunk-size line (with extensions) may take."""
_FIELDS: Final = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\0]*\r\n)*")
"""Header fields, each ending in CRLF: a name that is a token (RFC 9110, 5.6.2: no spaces,
so no obsolete line folding), a colon, a value without CR, LF or NUL."""
_READ: Final = 64 * 1024
"""Bytes read into the protocol's buffer before the socket is paused; pieces handed on."""


# -- errors ---------------------------------------------------------------------------------


class HttpClientError(Exception):
    """An exchange failed.  Callers map these to their X-Road codes."""


class ConnectError(HttpClientError):
    """No connection could be made: nothing of the request was sent."""


class ConnectTimeoutError(ConnectError, TimeoutError):
    """No connection within the connect timeout (or the request's deadline, waiting for the
    pool included): nothing was sent."""


class TlsError(ConnectError):
    """The TLS handshake failed (the peer's chain not trusted, no common protocol, ...)."""


class PinMismatchError(TlsError):
    """The peer's certificate is not one of the pinned ones."""


class ProtocolError(HttpClientError):
    """The answer is not well-formed HTTP/1.1 (or breaks a limit)."""


class DisconnectedError(HttpClientError):
    """The connection closed (or broke) before the answer's end."""


class ResponseTimeoutError(HttpClientError, TimeoutError):
    """The request's deadline passed after it was (perhaps) sent."""


# -- one connection ---------------------------------------------------------------------------


class StreamConnection(asyncio.Protocol):
    """One connection: a receive buffer, the reader's waiter, and write flow control (the
    proxies' server's connections too: security_server.httpserver)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self.lost = False
        self.error: BaseException | None = None
        """Why reads fail beyond the end of the stream: the deadline, or the socket's error."""
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.peer_cert: bytes | None = None
        self.poller: select.poll | None = None
        """Polls the socket for a close (or bytes) the event loop has not seen yet."""

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.poller = select.poll()
            self.poller.register(sock.fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.paused and len(self.buf) > _READ:
            self.paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = self.lost = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(DisconnectedError("connection lost while sending"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # the client's side

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _failed(self) -> HttpClientError:
        if isinstance(self.error, HttpClientError):
            return self.error
        return DisconnectedError(
            "connection closed" if self.error is None
            else f"connection failed: {type(self.error).__name__}")

    async def fill(self) -> bool:
        """Wait for more bytes than the buffer holds now; False at the end of the stream."""
        have = len(self.buf)
        while len(self.buf) == have:
            if self.eof:
                if self.error is not None:
                    raise self._failed() from self.error
                return False
            if self.paused:
                self.paused = False
                assert self.transport is not None
                self.transport.resume_reading()
            self.waiter = self.loop.create_future()
            await self.waiter
        return True

    async def read_some(self, most: int) -> bytes:
        """Up to ``most`` bytes as soon as there are any; b"" at the end of the stream."""
        if not self.buf and not await self.fill():
            return b""
        data = bytes(self.buf[:most])
        del self.buf[:most]
        return data

    async def pieces(self, size: int, what: str) -> AsyncIterator[bytes]:
        """The next ``size`` bytes as they arrive, in pieces of at most 64 KiB;
        :class:`DisconnectedError` if the stream ends before (in ``what``)."""
        while size:
            data = await self.read_some(min(size, _READ))
            if not data:
                raise DisconnectedError(f"connection closed in {what}")
            size -= len(data)
            yield data

    async def read_exactly(self, size: int, what: str) -> bytes:
        while len(self.buf) < size:
            if not await self.fill():
                raise DisconnectedError(f"connection closed in the {what}")
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data

    async def read_until(self, sep: bytes, limit: int, what: str) -> bytes:
        """The bytes up to and including ``sep``, which must come within ``limit`` bytes."""
        start = 0
        while True:
            at = self.buf.find(sep, start)
            if at >= 0:
                end = at + len(sep)
                if end > limit:
                    break
                data = bytes(self.buf[:end])
                del self.buf[:end]
                return data
            if len(self.buf) > limit:
                break
            start = max(0, len(self.buf) - len(sep) + 1)
            if not await self.fill():
                raise DisconnectedError(f"connection closed in the {what}")
        raise ProtocolError(f"{what} longer than {limit} bytes")

    async def drain(self) -> None:
        if self.lost:
            raise self._failed()
        if self.write_paused:
            self.drain_waiter = self.loop.create_future()
            await self.drain_waiter

    def expire(self) -> None:
        """The request's deadline: fail whatever waits on this connection, and close it."""
        self.timer = None
        if self.error is None:
            self.error = ResponseTimeoutError("no complete answer within the timeout")
        self.eof = True
        self.buf.clear()
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def alive(self) -> bool:
        """May this idle connection carry a request?  Not if the peer closed it or sent
        anything (an idle HTTP/1.1 connection has nothing to say), whether or not the event
        loop has seen it yet."""
        transport = self.transport
        if self.eof or self.buf or transport is None or transport.is_closing():
            return False
        if self.poller is None:
            return True
        try:
            return not self.poller.poll(0)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.eof = True
        if self.transport is not None:
            self.transport.abort()


# -- responses ------------------------------------------------------------------------------


class Response:
    """An answer whose head has been read; its body is read with :meth:`chunks` or
    :meth:`read`.  :meth:`close` (or leaving ``async with``) hands the connection back --
    kept only if the body was read to its end."""

    __slots__ = ("_conn", "_done", "_framing", "_keep", "_length", "_pool", "_sender",
                 "content_length", "headers", "peer_certificate", "reason", "status",
                 "version")

    def __init__(self, pool: Pool, conn: StreamConnection, version: str, status: int, reason: str,
                 headers: list[tuple[str, str]], *, method: str) -> None:
        self._pool, self._conn = pool, conn
        self.version, self.status, self.reason, self.headers = version, status, reason, headers
        self.peer_certificate = conn.peer_cert
        """The DER certificate the server presented on this connection (TLS only)."""
        self._sender: asyncio.Task[None] | None = None
        self._done = False
        lengths, codings, tokens = framing_fields(headers)
        self._keep = version == "HTTP/1.1" and "close" not in tokens
        self.content_length: int | None = None
        self._length = 0
        if method == "HEAD" or status in (204, 304):
            self._framing = "length"
        elif codings:
            # A length beside a transfer coding is ignored, and the connection not reused
            # (RFC 9112, 6.3); a body not chunked last runs to the close.
            self._framing = "chunked" if codings[-1] == "chunked" else "close"
            if lengths or self._framing == "close":
                self._keep = False
        elif lengths:
            if len(set(lengths)) != 1 or not lengths[0].isdigit() or not lengths[0].isascii():
                raise ProtocolError(f"bad Content-Length: {', '.join(lengths)!r}")
            self._framing = "length"
            self._length = self.content_length = int(lengths[0])
        else:
            self._framing = "close"
            self._keep = False

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), if any."""
        return header_value(self.headers, name)

    @property
    def content_type(self) -> str:
        """The media type, lower case, without parameters (``application/octet-stream`` if
        none is given), as aiohttp's ``ClientResponse.content_type``."""
        value = self.header("content-type")
        if not value:
            return "application/octet-stream"
        return value.partition(";")[0].strip().lower()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in pieces; the whole of it, or an error."""
        conn = self._conn
        if self._done:
            return
        if self._framing == "length":
            async for data in conn.pieces(self._length, "the body"):
                yield data
        elif self._framing == "chunked":
            async for data in read_chunked(conn):
                yield data
        else:
            while data := await conn.read_some(_READ):
                yield data
        self._done = True
        self._finish()

    async def read(self, limit: int) -> bytes | None:
        """The whole body, or None if it is longer than ``limit`` bytes (left unread)."""
        if self.content_length is not None and self.content_length > limit:
            return None
        pieces, size = [], 0
        async for piece in self.chunks():
            size += len(piece)
            if size > limit:
                return None
            pieces.append(piece)
        return b"".join(pieces)

    def _finish(self) -> None:
        """The body has been read to its end: the connection goes back, or is closed."""
        sender, conn = self._sender, self._conn
        if sender is not None and not sender.done():
            sender.cancel()  # answered before the whole request was sent
            self._keep = False
        elif sender is not None and (sender.cancelled() or sender.exception() is not None):
            self._keep = False
        self._pool._release(conn, reuse=self._keep and conn.error is None and not conn.eof)

    def close(self) -> None:
        """Done with the answer: an unread (or partly read) body closes the connection."""
        if not self._done:
            self._done = True
            self._keep = False
            self._finish()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def framing_fields(headers: Iterable[tuple[str, str]]
                   ) -> tuple[list[str], list[str], list[str]]:
    """What frames a message and its connection: the ``Content-Length`` values, the transfer
    codings in order, and the ``Connection`` options (both lower case)."""
    lengths: list[str] = []
    codings: list[str] = []
    tokens: list[str] = []
    for name, value in headers:
        low = name.lower()
        if low == "content-length":
            lengths.append(value)
        elif low == "transfer-encoding":
            codings += [c.strip().lower() for c in value.split(",")]
        elif low == "connection":
            tokens += [t.strip().lower() for t in value.split(",")]
    return lengths, codings, tokens


def header_value(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of header ``name`` (any case) among ``headers``, if any."""
    low = name.lower()
    for n, v in headers:
        if n.lower() == low:
            return v
    return None


async def read_chunked(conn: StreamConnection) -> AsyncIterator[bytes]:
    """A chunked body (RFC 9112, 7.1) as it arrives, its trailer fields read and dropped;
    :class:`ProtocolError` if malformed, :class:`DisconnectedError` if cut short."""
    while size := _chunk_size(await conn.read_until(b"\r\n", _MAX_CHUNK_LINE,
                                                   "chunk size line")):
        async for data in conn.pieces(size, "a chunk"):
            yield data
        if await conn.read_exactly(2, "chunk end") != b"\r\n":
            raise ProtocolError("chunk not followed by CRLF")
    await _read_trailers(conn)


def _chunk_size(line: bytes) -> int:
    text = line[:-2].partition(b";")[0].strip(b" \t")
    if not text or len(text) > 16 or text.strip(b"0123456789abcdefABCDEF"):
        raise ProtocolError(f"bad chunk size line {bytes(line[:40])!r}")
    return int(text, 16)


async def _read_trailers(conn: StreamConnection) -> None:
    taken = 0
    while True:
        line = await conn.read_until(b"\r\n", MAX_HEAD - taken, "chunked trailer")
        taken += len(line)
        if line == b"\r\n":
            return


def _parse_head(head: bytes) -> tuple[str, int, str, list[tuple[str, str]]]:
    """Version, status, reason and header fields of a response head (ending in CRLF CRLF)."""
    end = head.index(b"\r\n")
    parts = head[:end].split(b" ", 2)
    if (len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or len(parts[1]) != 3
            or not parts[1].isdigit() or not parts[1].isascii()
            or not b"100" <= parts[1] <= b"999"):
        raise ProtocolError(f"bad status line {bytes(head[:min(end, 80)])!r}")
    reason = parts[2].decode("utf-8", "surrogateescape") if len(parts) > 2 else ""
    return parts[0].decode("ascii"), int(parts[1]), reason, parse_fields(head[end + 2:-2])


def parse_fields(block: bytes) -> list[tuple[str, str]]:
    """The header fields of a message head: ``block`` is the head after its first line,
    without the final empty line (each field with its CRLF).  :class:`ProtocolError` for a
    malformed field or more than :data:`MAX_HEADERS`."""
    if not _FIELDS.fullmatch(block):
        raise ProtocolError("bad header field (no name, a space before the colon, a folded "
                            "line, a bare CR or LF, or a NUL)")
    fields = block.split(b"\r\n")
    fields.pop()
    if len(fields) > MAX_HEADERS:
        raise ProtocolError(f"more than {MAX_HEADERS} header fields")
    headers = []
    for field in fields:
        name, _, value = field.partition(b":")
        headers.append((name.decode("ascii"),
                        value.strip(b" \t").decode("utf-8", "surrogateescape")))
    return headers


# -- the pool -------------------------------------------------------------------------------

Body = bytes | AsyncIterable[bytes] | None


class Limit:
    """At most ``size`` connections busy at once (carrying a request, or being opened for
    one), in one pool or shared by several; idle connections do not count.  A request
    beyond that waits within its timeout, first come first served: a freed slot is handed
    to the longest waiting request, and no request overtakes one that waits."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Take a slot, waiting until ``deadline`` at most (else
        :class:`ConnectTimeoutError`)."""
        if self.busy < self.size and not self._waiters:
            self.busy += 1
            return
        waiter = loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter  # woken with the slot of a finished request
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot, but leaving: it passes on
            else:
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise ConnectTimeoutError("no connection free within the timeout") from exc
            raise

    def release(self) -> None:
        """Give a slot back: to the longest waiting request if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.busy -= 1


class Pool:
    """Keep-alive connections to one server (``host``, ``port``; TLS if ``tls`` is given).

    At most ``limit`` connections carry requests at once (a :class:`Limit` may be shared
    with other pools); a request beyond that waits, first come first served, within its
    timeout.  A request takes the most recently used idle connection that passes the check
    before reuse, else opens one.  ``verify`` sees the transport of every new connection
    right after the TLS handshake and returns the peer's certificate to record, or raises (a
    :class:`PinMismatchError`) to refuse it.  ``Host`` is ``host_header``, by default
    ``host[:port]`` as aiohttp sends it (the port left out when it is the scheme's own).
    """

    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None = None,
                 verify: Callable[[asyncio.Transport], bytes | None] | None = None,
                 limit: int | Limit = 64, idle_seconds: float = 15.0,
                 connect_timeout: float | None = 5.0, host_header: str | None = None,
                 server_hostname: str | None = None) -> None:
        self.host, self.port, self.tls, self.verify = host, port, tls, verify
        self.idle_seconds, self.connect_timeout = idle_seconds, connect_timeout
        self.server_hostname = server_hostname or host
        self._limit = limit if isinstance(limit, Limit) else Limit(limit)
        if host_header is None:
            host_header = f"[{host}]" if ":" in host else host
            if port != (443 if tls is not None else 80):
                host_header += f":{port}"
        self.host_header = host_header
        self._idle: deque[StreamConnection] = deque()
        """Idle connections, the longest idle first."""
        self._open = 0
        """Connections open or being opened, idle ones included."""
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def request(self, method: str, target: str,
                      headers: Iterable[tuple[str, str]] = (), body: Body = None, *,
                      content_length: int | None = None, timeout: float) -> Response:
        """Send a request and read its answer's head; the body is read from the
        :class:`Response`, which must be closed.  ``target`` is the request target as sent
        (path and query, already encoded); ``body``: bytes, or pieces with
        ``content_length`` if known (else sent chunked)."""
        if self._closed:
            raise ConnectError("the pool is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        head = _request_head(method, target, self.host_header, headers, body, content_length)
        conn = await self._acquire(loop, deadline)
        conn.timer = loop.call_at(deadline, conn.expire)
        transport = conn.transport
        assert transport is not None
        sender: asyncio.Task[None] | None = None
        try:
            if body is None or isinstance(body, bytes):
                transport.write(head + body if body else head)
            else:
                transport.write(head)
                sender = loop.create_task(_send(conn, body, content_length))
            resp = await self._read_response(conn, method)
        except BaseException as exc:
            if sender is not None and not sender.done():
                sender.cancel()
            self._release(conn, reuse=False)
            if sender is not None and sender.done() and not sender.cancelled():
                failed = sender.exception()
                if failed is not None and not isinstance(failed, HttpClientError):
                    raise failed from exc  # the body's own source failed
            raise
        resp._sender = sender
        if resp._framing == "length" and resp._length == 0:
            resp._done = True
            resp._finish()
        return resp

    async def _read_response(self, conn: StreamConnection, method: str) -> Response:
        while True:
            raw = await conn.read_until(b"\r\n\r\n", MAX_HEAD, "response head")
            version, status, reason, headers = _parse_head(raw)
            if status >= 200:
                return Response(self, conn, version, status, reason, headers, method=method)
            if status == 101:
                raise ProtocolError("unexpected protocol switch")

    # connections

    async def _acquire(self, loop: asyncio.AbstractEventLoop, deadline: float) -> StreamConnection:
        await self._limit.acquire(loop, deadline)
        try:
            if self._closed:
                raise ConnectError("the pool is closed")
            while self._idle:
                conn = self._idle.pop()  # the most recently used: least likely timed out
                if conn.alive():
                    return conn
                self._discard(conn)
            self._open += 1
            try:
                return await self._connect(loop, deadline)
            except BaseException:
                self._open -= 1
                raise
        except BaseException:
            self._limit.release()
            raise

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> StreamConnection:
        limit = deadline - loop.time()
        if self.connect_timeout is not None:
            limit = min(limit, self.connect_timeout)
        try:
            async with asyncio.timeout(limit):
                transport, conn = await loop.create_connection(
                    lambda: StreamConnection(loop), self.host, self.port, ssl=self.tls,
                    server_hostname=self.server_hostname if self.tls is not None else None)
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                f"no connection to {self.host_header} within {limit:.3g} s") from exc
        except ssl.SSLError as exc:
            raise TlsError(f"TLS with {self.host_header} failed: {exc}") from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self.host_header}: {exc}") from exc
        if self.verify is not None:
            try:
                conn.peer_cert = self.verify(transport)
            except BaseException:
                transport.abort()
                raise
        return conn

    def _release(self, conn: StreamConnection, *, reuse: bool) -> None:
        """A busy connection is done: idle again if ``reuse`` (and nothing speaks
        against it), else closed."""
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if reuse and not self._closed and not conn.buf:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.append(conn)
            if self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().call_later(self.idle_seconds,
                                                                      self._sweep)
        else:
            self._discard(conn)
        self._limit.release()

    def _discard(self, conn: StreamConnection) -> None:
        conn.close()
        self._open -= 1

    def _sweep(self) -> None:
        """Close the connections idle for ``idle_seconds``; come back for the rest."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        expired = loop.time() - self.idle_seconds
        while self._idle and self._idle[0].idle_since <= expired:
            self._discard(self._idle.popleft())
        if self._idle:
            self._sweeper = loop.call_at(self._idle[0].idle_since + self.idle_seconds,
                                         self._sweep)

    def retire(self) -> None:
        """Take no more requests: close the idle connections now, and the others when
        their answers are done."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._idle:
            self._discard(self._idle.popleft())

    async def close(self) -> None:
        """:meth:`retire`, and let the transports' close callbacks run."""
        self.retire()
        await asyncio.sleep(0)


def peer_certificate_der(transport: asyncio.BaseTransport | None) -> bytes | None:
    """The DER certificate the peer presented on ``transport``, if it is a TLS connection
    whose peer presented one."""
    if transport is None:
        return None
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    der = sslobj.getpeercert(binary_form=True)
    return der if isinstance(der, bytes) else None


def pinned_certificate(transport: asyncio.BaseTransport, hashes: frozenset[str]) -> bytes:
    """The DER certificate the peer presented on ``transport``, if its SHA-256 (lower-case
    hex) is one of ``hashes``; else :class:`PinMismatchError`."""
    der = peer_certificate_der(transport)
    got = hashlib.sha256(der or b"").hexdigest()
    if der is None or got not in hashes:
        host, port, *_ = transport.get_extra_info("peername") or ("?", 0)
        raise PinMismatchError(f"{host}:{port} presented a certificate whose SHA-256 {got} "
                               "is not registered")
    return der


class Client:
    """Pools by origin (scheme, host, port, and how TLS is checked) under one
    :class:`Limit`: the provider security server's calls to the provider systems.

    Its defaults are those of the aiohttp client it replaces: 100 connections busy at once
    over all origins, idle ones closed after 15 s, no connect limit of its own (the
    request's timeout covers everything).  TLS is checked one of three ways: against
    ``pins``, the SHA-256 of the certificates registered for the provider system (no chain
    and no host name: the registration is the trust, as for information systems calling
    in); else with the system's trust store and the host name; or, for a service
    configured with ``tls_verify = false``, not at all.  ``certificate``: the client
    certificate (PEM certificate, PEM key and the key's passphrase) presented to every
    HTTPS origin that asks for one -- the security server's internal TLS certificate, as
    X-Road's presents it to provider systems.
    """

    def __init__(self, *, limit: int = 100, idle_seconds: float = 15.0,
                 certificate: tuple[Path, Path, bytes | None] | None = None) -> None:
        self._limit = Limit(limit)
        self.idle_seconds = idle_seconds
        self._pools: dict[tuple[str, str, int, str], tuple[Pool, frozenset[str]]] = {}
        self._verified = ssl.create_default_context()
        self._unsafe_unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._unsafe_unverified.check_hostname = False
        self._unsafe_unverified.verify_mode = ssl.CERT_NONE
        # Pinned: the chain is not checked by OpenSSL; the pin is, after the handshake.
        self._pinned = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._pinned.check_hostname = False
        self._pinned.verify_mode = ssl.CERT_NONE
        self._pinned.minimum_version = ssl.TLSVersion.TLSv1_2
        for ctx in (self._verified, self._unsafe_unverified, self._pinned):
            ctx.set_alpn_protocols(["http/1.1"])
            if certificate is not None:
                cert, key, passphrase = certificate
                ctx.load_cert_chain(certfile=cert, keyfile=key, password=passphrase)

    def pool(self, url: str, *, unsafe_no_tls_verify: bool = False,
             pins: frozenset[str] = frozenset()) -> tuple[Pool, str]:
        """The pool for ``url``'s origin, and the request target (path and query, as they
        are written in ``url``).  ValueError if it is not an absolute http(s) URL.  An
        origin pinned to other ``pins`` than before gets a new pool; the old one's
        connections close as their requests end."""
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname
        if scheme not in ("http", "https") or not host:
            raise ValueError(f"not an absolute http(s) URL: {url!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        pins = frozenset(h.lower() for h in pins) if pins else pins
        mode = ("plain" if scheme == "http" else "unsafe" if unsafe_no_tls_verify
                else "pinned" if pins else "verified")
        key = (scheme, host, port, mode)
        found = self._pools.get(key)
        if found is not None and found[1] != pins:
            found[0].retire()
            found = None
        if found is None:
            ctx = {"plain": None, "unsafe": self._unsafe_unverified, "pinned": self._pinned,
                   "verified": self._verified}[mode]
            verify = functools.partial(pinned_certificate, hashes=pins) if mode == "pinned" \
                else None
            found = self._pools[key] = (
                Pool(host, port, tls=ctx, verify=verify, limit=self._limit,
                     idle_seconds=self.idle_seconds, connect_timeout=None),
                pins if mode == "pinned" else frozenset())
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return found[0], target

    async def close(self) -> None:
        for pool, _ in self._pools.values():
            await pool.close()
        self._pools.clear()


def _request_head(method: str, target: str, host: str, headers: Iterable[tuple[str, str]],
                  body: Body, content_length: int | None) -> bytes:
    if not method.isalpha() or not target or _unsafe(target) or " " in target:
        raise ValueError(f"bad request line {method!r} {target!r}")
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}"]
    for name, value in headers:
        if _unsafe(name) or _unsafe(value) or ":" in name:
            raise ValueError(f"bad request header {name!r}")
        lines.append(f"{name}: {value}")
    if isinstance(body, bytes):
        lines.append(f"Content-Length: {len(body)}")
    elif body is not None:
        lines.append("Transfer-Encoding: chunked" if content_length is None
                     else f"Content-Length: {content_length}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


def _unsafe(text: str) -> bool:
    """Could ``text`` end a request line or header early?"""
    return "\r" in text or "\n" in text or "\0" in text


async def _send(conn: StreamConnection, body: AsyncIterable[bytes],
                content_length: int | None) -> None:
    """Write a streamed body (chunked when ``content_length`` is None).  If it fails the
    connection is aborted, so that the answer's reader does not wait for the deadline."""
    transport = conn.transport
    assert transport is not None
    sent = 0
    try:
        async for piece in body:
            if not piece:
                continue
            if conn.lost:
                raise conn._failed()
            sent += len(piece)
            if content_length is None:
                transport.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            elif sent > content_length:
                break
            else:
                transport.write(piece)
            await conn.drain()
        if content_length is None:
            transport.write(b"0\r\n\r\n")
        elif sent != content_length:
            # The server must not take a short or long body for the request.
            raise ValueError(f"request body longer or shorter than the {content_length} "
                             "bytes declared")
    except asyncio.CancelledError:
        raise
    except BaseException:
        transport.abort()
        raise
