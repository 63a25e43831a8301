"""A small HTTP/1.1 server for the message path: the client proxy, where the agency's
information systems call, and the server proxy, where other security servers deliver
messages.

Both proxies answer a few endpoints each, to programs (information systems, security
servers), never to browsers.  This server does what that needs, on an asyncio protocol,
with the reading primitives of the hand-written client (:mod:`security_server.httpclient`),
and costs far less CPU per request than aiohttp's general server, and a turn of the event
loop less: each connection has one task that reads a request and runs its handler itself
(docs/decisions.md, "A hand-written HTTP/1.1 server for the message path").

What it does:

* **Requests.**  A request line in origin form (``*`` for ``OPTIONS``) or absolute form
  (``http://host/path``, as an IS that uses the security server as its HTTP proxy sends
  it: the path is taken, the rest ignored), HTTP/1.1 or 1.0, and header fields (at most
  :data:`~security_server.httpclient.MAX_HEAD` bytes together, at most
  :data:`~security_server.httpclient.MAX_HEADERS` fields, each a token name and a value
  without CR, LF or NUL); empty lines before a request line are skipped.  The body is
  framed by ``Content-Length`` or by ``Transfer-Encoding: chunked`` (both at once, or
  any other transfer coding, are refused: a request whose framing could be read two ways
  is never served) and reaches the handler as it arrives (:meth:`ServerRequest.body`).
  ``Expect: 100-continue`` is answered before the body is read.
* **Answers.**  What the handler returns, with ``Content-Length``, ``Date`` and
  ``Server: xchange`` (the handler's own framing fields left out): a body in memory in one
  write with the head, or a streamed one written piece by piece as the peer takes it.
* **Errors.**  A malformed request is answered 400 (an unknown transfer coding 501, an
  unknown HTTP version 505) as ``error_response`` renders it, and the connection closed
  once the peer has sent nothing more for :data:`QUIET_SECONDS`; an exception of the
  handler is rendered by ``error_response`` too, never a stack trace.  A peer that goes
  away is the end of its connection, not an error.
* **Connections.**  Kept alive between requests (HTTP/1.1 unless ``Connection: close``;
  HTTP/1.0 only with ``Connection: keep-alive``, which the answer then carries), requests
  served in order (pipelined ones wait).  A body the handler did not read (a refused
  caller's) is read to its end before the answer when it is at most :data:`DRAIN_BYTES`
  long, and the connection kept; a longer one, or a chunked one, closes the connection
  after the answer, what the peer still sends read and dropped for up to
  :data:`LINGER_SECONDS` first, so that the peer is not reset before it reads the answer.
* **Timeouts.**  An idle connection is closed after ``keepalive_seconds``; a request's
  head must arrive within ``head_seconds`` of its first byte; a body (or a peer reading
  the answer) that moves no byte for ``idle_seconds`` closes the connection.  The
  handler's own time is the handler's business (the service timeout).
* **Shutdown.**  :meth:`HttpServer.shutdown` closes idle connections at once, lets the
  requests in flight finish within a grace period, then closes what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, cast

from security_server.httpclient import (
    MAX_HEAD,
    HttpClientError,
    ProtocolError,
    StreamConnection,
    framing_fields,
    header_value,
    parse_fields,
    peer_certificate_der,
    read_chunked,
)
from xchange.errors import BadRequestError, XRoadError

__all__ = [
    "DRAIN_BYTES",
    "HEAD_SECONDS",
    "IDLE_SECONDS",
    "KEEPALIVE_SECONDS",
    "LINGER_SECONDS",
    "QUIET_SECONDS",
    "HttpServer",
    "ServerRequest",
    "ServerResponse",
]

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS: Final = 75.0
"""An idle connection (between requests) is closed after this long (aiohttp's default)."""
HEAD_SECONDS: Final = 30.0
"""A request's line and header fields must all arrive within this long of its first byte."""
IDLE_SECONDS: Final = 60.0
"""A request body that stops arriving, or an answer the peer stops reading, for this long
closes the connection."""
LINGER_SECONDS: Final = 5.0
"""How long unread request bytes are read and dropped (below)."""
QUIET_SECONDS: Final = 0.2
"""Dropping a request of unknown length ends when the peer sends nothing for this long."""
DRAIN_BYTES: Final = 1024 * 1024
"""A request body the handler did not read, up to this long, is read to its end before the
answer, and the connection kept; a longer one closes the connection after the answer."""
_TOKEN: Final = (b"!#$%&'*+-.^_`|~0123456789"
                 b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
"""The characters of a token (RFC 9110, 5.6.2): a method."""
_VISIBLE: Final = bytes(range(0x21, 0x7F))
"""Visible ASCII: a request target."""
_REASONS: Final = {status.value: status.phrase for status in http.HTTPStatus}
"""The reason phrase of each status an answer's first line may carry."""
_OWN_FIELDS: Final = frozenset({"content-length", "transfer-encoding", "connection",
                                 "keep-alive", "date", "server"})
"""Answer header fields only the server writes: a handler's are left out."""
_ABSOLUTE: Final = re.compile(r"[hH][tT][tT][pP][sS]?://[^/?#]*")
"""The scheme and authority of an absolute-form request target (RFC 9112, 3.2.2)."""
_UNSAFE: Final = re.compile(r"[\r\n\0]")
"""What an answer's header field must not hold (it would end the field, or the head)."""


@dataclass(slots=True)
class ServerResponse:
    """What a handler answers: a status, header fields (``Content-Length``, ``Date``,
    ``Server``, ``Connection`` and ``Transfer-Encoding`` are the server's: the handler's are
    left out), and a body in memory (``body``) or streamed (``stream``: its size and its
    pieces, which must add up to it).  ``close`` is called once the answer has been sent,
    or given up (the peer went away)."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: tuple[int, AsyncIterable[bytes]] | None = None
    close: Callable[[], None] | None = None


class ServerRequest:
    """A request whose head has been read; its body is read with :meth:`body`."""

    __slots__ = ("_close", "_conn", "_done", "_framing", "_left", "_reader", "_server",
                 "content_length", "headers", "message_id", "method", "path",
                 "peer_certificate", "query", "target", "tls", "version")

    def __init__(self, server: HttpServer, conn: _ServerConn, method: str, target: str,
                 version: str, headers: list[tuple[str, str]], framing: str,
                 length: int, *, close: bool) -> None:
        self._server, self._conn = server, conn
        self.method, self.version, self.headers = method, version, headers
        self.target = target
        """The request target as sent, percent-encoding kept: path and query (of an
        absolute-form target, only those)."""
        self.path, _, self.query = target.partition("?")
        self.tls = conn.tls
        """Whether the connection is TLS."""
        self.peer_certificate = conn.peer_cert
        """The DER certificate the peer presented on this connection (TLS only)."""
        self.message_id: str | None = None
        """Set by the handler once known: echoed on an error answer (``X-Road-Id``)."""
        self._framing, self._left = framing, length
        self.content_length = length if framing == "length" else None
        """The body's length as announced (None: chunked)."""
        self._close = close
        """The peer asked to close the connection after this request."""
        self._done = framing == "length" and length == 0
        self._reader: AsyncGenerator[bytes, None] | None = None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), if any."""
        return header_value(self.headers, name)

    def _expects_continue(self) -> bool:
        expect = self.header("expect")
        return (expect is not None and expect.lower() == "100-continue"
                and self.version == "HTTP/1.1")

    def _awaits_continue(self) -> bool:
        """Does the peer wait for ``100 Continue`` before it sends the body (not sent yet)?"""
        return self._reader is None and self._expects_continue()

    def body(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in pieces; a body cut short or malformed is the sender's
        fault (:class:`~xchange.errors.BadRequestError` with the server's code).  Read once;
        a reader left unfinished is closed when the handler returns."""
        if self._reader is not None:
            raise RuntimeError("the request body is read once")
        self._reader = self._read()
        return self._reader

    async def _read(self) -> AsyncGenerator[bytes, None]:
        if self._done:
            return
        conn = self._conn
        if self._expects_continue():
            conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.state = _BODY
        try:
            if self._framing == "length":
                async for data in conn.pieces(self._left, "the body"):
                    self._left -= len(data)
                    yield data
            else:
                async for data in read_chunked(conn):
                    yield data
        except HttpClientError as exc:
            raise BadRequestError(f"the request body was cut short or malformed: {exc}",
                                  code=self._server.bad_request_code) from exc
        finally:
            conn.state = _BUSY
        self._done = True


Handler = Callable[[ServerRequest], Awaitable[ServerResponse]]
ErrorResponse = Callable[[Exception, "ServerRequest | None"], ServerResponse]


# -- connection states (for the watchdog) ----------------------------------------------------

_IDLE, _HEAD, _BODY, _BUSY, _SENDING = range(5)


class _ServerConn(StreamConnection):
    """One accepted connection: the client's buffer and flow control, plus this server's
    task and watchdog."""

    def __init__(self, server: HttpServer) -> None:
        super().__init__(asyncio.get_running_loop())
        self.server = server
        self.task: asyncio.Task[None] | None = None
        self.state = _IDLE
        self.since = self.loop.time()
        """When the current state's clock started (head: its first byte; else the latest
        byte moved)."""
        self.watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.tls = transport.get_extra_info("ssl_object") is not None
        self.peer_cert = peer_certificate_der(transport)
        self.server._connections.add(self)
        self.task = self.loop.create_task(self.server._serve(self))
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.state != _HEAD:  # a head's clock runs from its first byte
            self.since = self.loop.time()
        super().data_received(data)

    async def fill(self) -> bool:
        if self.state != _HEAD:  # waiting for the peer starts now
            self.since = self.loop.time()
        return await super().fill()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.server._connections.discard(self)
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None

    def pause_writing(self) -> None:
        self.since = self.loop.time()
        super().pause_writing()

    def resume_writing(self) -> None:
        self.since = self.loop.time()
        super().resume_writing()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(data)

    def finish(self) -> None:
        """Close once what was written has been sent (:meth:`close` drops it)."""
        self.eof = True
        if self.transport is not None:
            self.transport.close()

    def _arm(self) -> None:
        server = self.server
        self.watchdog = self.loop.call_later(
            min(server.keepalive_seconds, server.head_seconds, server.idle_seconds) / 4,
            self._watch)

    def _watch(self) -> None:
        """Close a connection that has waited too long for its peer (module docstring)."""
        self.watchdog = None
        if self.lost:
            return
        # Only while this server waits for the peer: to send (idle, head, body) or to take
        # what was written (a streamed answer); never while a handler works.
        server, state = self.server, self.state
        limit = None
        if state == _SENDING:
            limit = server.idle_seconds if self.write_paused else None
        elif self.waiter is not None:
            limit = {_IDLE: server.keepalive_seconds, _HEAD: server.head_seconds,
                     _BODY: server.idle_seconds}.get(state)
        if limit is not None and self.loop.time() - self.since > limit:
            if state != _IDLE:
                log.info("peer connection closed: no progress for %.0f s", limit)
            self.close()  # the task sees the end of the stream
            return
        self._arm()


class HttpServer:
    """The protocol factory for the proxies' listeners (module docstring).

    ``handler`` answers each request; ``error_response`` renders an exception (an
    :class:`~xchange.errors.XRoadError` or anything else) as an answer, with the request if
    there is one; ``bad_request_code`` is the X-Road code of a malformed request."""

    def __init__(self, handler: Handler, error_response: ErrorResponse, *,
                 bad_request_code: str, keepalive_seconds: float = KEEPALIVE_SECONDS,
                 head_seconds: float = HEAD_SECONDS,
                 idle_seconds: float = IDLE_SECONDS) -> None:
        self.handler, self.error_response = handler, error_response
        self.bad_request_code = bad_request_code
        self.keepalive_seconds = keepalive_seconds
        self.head_seconds = head_seconds
        self.idle_seconds = idle_seconds
        self._connections: set[_ServerConn] = set()
        self._closing = False
        self._date = ("", 0)

    def __call__(self) -> asyncio.Protocol:
        return _ServerConn(self)

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def shutdown(self, grace: float) -> None:
        """Stop serving: idle connections close now, requests in flight get ``grace``
        seconds to be answered, then every connection is closed."""
        self._closing = True
        for conn in list(self._connections):
            if conn.state in (_IDLE, _HEAD):
                conn.close()
        tasks = [c.task for c in self._connections if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for conn in list(self._connections):
            conn.close()
            if conn.task is not None:
                conn.task.cancel()
        tasks = [c.task for c in self._connections if c.task is not None]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- one connection ----------------------------------------------------------------------

    async def _serve(self, conn: _ServerConn) -> None:
        try:
            while not self._closing:
                conn.state = _IDLE
                request = await self._read_request(conn)
                if request is None:
                    return
                keep = await self._answer(conn, request)
                if not keep:
                    if not request._done:
                        await self._drop(conn, request._left if request._framing == "length"
                                         else None)
                    return
        except HttpClientError:
            return  # the peer went away, or stopped sending: nothing more to answer
        except Exception:
            log.exception("peer connection failed")
        finally:
            conn.finish()

    async def _read_request(self, conn: _ServerConn) -> ServerRequest | None:
        """The next request's head, or None at the end of the stream.  A malformed one is
        answered here and ends the connection (None)."""
        conn.state, conn.since = _IDLE, conn.loop.time()
        while True:
            while conn.buf[:2] == b"\r\n":  # empty lines before a request line: skipped
                del conn.buf[:2]
            if conn.buf and conn.buf != b"\r":  # a lone CR: perhaps half an empty line
                break
            if not await conn.fill():
                return None
        conn.state, conn.since = _HEAD, conn.loop.time()
        try:
            head = await conn.read_until(b"\r\n\r\n", MAX_HEAD, "request head")
            return self._parse(conn, head)
        except _Refused as exc:
            response = self.error_response(exc.error, None)
            response.status = exc.status or response.status
        except ProtocolError as exc:  # the head too long, or malformed fields
            error = BadRequestError(str(exc), code=self.bad_request_code)
            response = self.error_response(error, None)
        self._send(conn, response, connection="close", head_only=False)
        await self._drop(conn, None)  # whatever the peer still sends
        return None

    def _parse(self, conn: _ServerConn, head: bytes) -> ServerRequest:
        end = head.index(b"\r\n")
        parts = head[:end].split(b" ")
        if (len(parts) != 3 or not parts[0] or parts[0].translate(None, _TOKEN)
                or not parts[1] or parts[1].translate(None, _VISIBLE)):
            raise self._refuse(f"bad request line {bytes(head[:min(end, 80)])!r}")
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
        version = parts[2].decode("ascii", "replace")
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise _Refused(BadRequestError(f"HTTP version {version[:16]!r} is not supported",
                                           code=self.bad_request_code), 505)
        if not target.startswith("/") and not (target == "*" and method == "OPTIONS"):
            absolute = _ABSOLUTE.match(target)
            if absolute is None:
                raise self._refuse("the request target must be a path or an absolute URL")
            target = target[absolute.end():]
            target = target if target.startswith("/") else "/" + target
        headers = parse_fields(head[end + 2:-2])
        lengths, codings, tokens = framing_fields(headers)
        # HTTP/1.1 keeps the connection unless asked to close; HTTP/1.0 only when asked.
        close = "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens)
        if codings:
            if lengths:
                raise self._refuse("both Content-Length and Transfer-Encoding")
            if codings != ["chunked"] or version != "HTTP/1.1":
                raise _Refused(BadRequestError(f"transfer coding {', '.join(codings)!r} is "
                                               "not supported", code=self.bad_request_code),
                               501)
            return ServerRequest(self, conn, method, target, version, headers, "chunked", 0,
                               close=close)
        length = 0
        if lengths:
            if len(set(lengths)) != 1 or not lengths[0].isdigit() or not lengths[0].isascii():
                raise self._refuse(f"bad Content-Length: {', '.join(lengths)[:40]!r}")
            length = int(lengths[0])
        return ServerRequest(self, conn, method, target, version, headers, "length", length,
                           close=close)

    def _refuse(self, message: str) -> _Refused:
        return _Refused(BadRequestError(message, code=self.bad_request_code), None)

    async def _answer(self, conn: _ServerConn, request: ServerRequest) -> bool:
        """Run the handler and send its answer; whether the connection may carry another
        request."""
        conn.state = _BUSY
        try:
            response = await self.handler(request)
        except Exception as exc:  # rendered, never a stack trace to the peer
            response = self.error_response(exc, request)
        try:
            if request._reader is not None:
                await request._reader.aclose()  # a body left half-read: its reader ends here
            if (not request._done and request._framing == "length"
                    and request._left <= DRAIN_BYTES and not request._awaits_continue()):
                # A short body the handler did not want (a refused caller): read to its
                # end, so that the connection can carry the next request.
                request._done = await self._drop(conn, request._left)
            return await self._send_answer(conn, request, response)
        finally:
            if response.close is not None:
                response.close()

    async def _send_answer(self, conn: _ServerConn, request: ServerRequest,
                           response: ServerResponse) -> bool:
        keep = not self._closing and request._done and not request._close
        # An HTTP/1.0 peer keeps the connection only when told so.
        connection = None if keep and request.version == "HTTP/1.1" else \
            "keep-alive" if keep else "close"
        head_only = request.method == "HEAD"  # its answer has a length, but no body
        if response.stream is None:
            self._send(conn, response, connection=connection, head_only=head_only)
            return keep
        size, pieces = response.stream
        if head_only:
            conn.write(self._head(response, size, connection=connection))
            return keep
        conn.state = _SENDING
        conn.write(self._head(response, size, connection=connection))
        sent = 0
        try:
            async for piece in pieces:
                sent += len(piece)
                conn.write(piece)
                await conn.drain()
        except HttpClientError:
            log.info("%s %s: the peer went away while the answer was sent", request.method,
                     request.path)
            return False
        except Exception:
            # The head went out: nothing can be answered any more; the peer sees the
            # connection close before the announced length.
            log.exception("%s %s: the answer failed while it was sent", request.method,
                          request.path)
            return False
        finally:
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:
                await aclose()
        if sent != size:
            log.error("%s %s: the answer was %d bytes, not the %d announced", request.method,
                      request.path, sent, size)
            return False
        return keep

    async def _drop(self, conn: _ServerConn, left: int | None) -> bool:
        """Read and drop the rest of a request not read to its end (``left`` bytes;
        ``None``: what comes until the peer closes), for at most :data:`LINGER_SECONDS`;
        whether all of it was.  After a final answer: closing with unread bytes would
        reset the connection, and the peer could lose the answer."""
        conn.state = _BODY
        with contextlib.suppress(HttpClientError, TimeoutError):
            async with asyncio.timeout(LINGER_SECONDS):
                while True:
                    if left is None:
                        conn.buf.clear()
                        try:  # what the peer still sends comes soon, or not at all
                            async with asyncio.timeout(QUIET_SECONDS):
                                if not await conn.fill():
                                    return False
                        except TimeoutError:
                            return False
                        continue
                    else:
                        dropped = min(left, len(conn.buf))
                        del conn.buf[:dropped]
                        left -= dropped
                        if not left:
                            return True
                    if not await conn.fill():
                        return False
        return False

    def _send(self, conn: _ServerConn, response: ServerResponse, *, connection: str | None,
              head_only: bool) -> None:
        head = self._head(response, len(response.body), connection=connection)
        conn.write(head if head_only else head + response.body)

    def _head(self, response: ServerResponse, size: int, *, connection: str | None) -> bytes:
        """The answer's status line and header fields; ``connection``: the ``Connection``
        field's value, if one is sent."""
        status = response.status
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
        for name, value in response.headers:
            if _UNSAFE.search(name) or _UNSAFE.search(value):
                log.warning("answer header %r left out: it holds CR, LF or NUL", name[:40])
                continue
            if name.lower() in _OWN_FIELDS:
                continue  # the server's own: one of each, always right
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {size}")
        lines.append(f"Date: {self._http_date()}")
        lines.append("Server: xchange")
        if connection is not None:
            lines.append(f"Connection: {connection}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")

    def _http_date(self) -> str:
        now = int(time.time())
        text, at = self._date
        if at != now:
            text = email.utils.formatdate(now, usegmt=True)
            self._date = (text, now)
        return text


class _Refused(Exception):
    """A request refused before its handler ran: the error, and the status to answer with
    if not the error's own (501, 505)."""

    def __init__(self, error: XRoadError, status: int | None) -> None:
        super().__init__(error.message)
        self.error, self.status = error, status
