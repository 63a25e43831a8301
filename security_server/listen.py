"""The security server's listeners: sockets that accept every waiting connection at once,
for the proxies' own server (security_server.httpserver) and for aiohttp's sites.

A listener made by ``loop.create_server`` on uvloop accepts one connection per turn of the
event loop (asyncio's own loop accepts up to its backlog per turn).  A busy server's turns
last milliseconds, so a burst of new clients -- a thousand information systems connecting
at once, or reconnecting after a restart -- waited in the kernel's queue for seconds, and
some gave up (docs/performance.md, "Accepting a burst of connections").
:class:`Listener` owns its listening sockets and accepts, each time one is readable,
everything the kernel has queued (up to the backlog), then hands each connection to the
loop with ``connect_accepted_socket``: the same transports and TLS as ``create_server``.
:class:`AcceptingSite` is an aiohttp site on one.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web
from yarl import URL

__all__ = ["ACCEPT_RETRY_SECONDS", "AcceptingSite", "Listener"]

log = logging.getLogger(__name__)

ACCEPT_RETRY_SECONDS: Final = 1.0
"""Out of file descriptors or memory, a listener stops accepting for this long (as asyncio's
does); the connections wait in the kernel's queue meanwhile."""

_RESOURCE_ERRORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Listener:
    """Listening sockets on ``host`` (each of its addresses) and ``port`` (0: a free one,
    :attr:`port` tells which) that accept every queued connection each time they are
    readable (module docstring) and hand each to ``factory``'s protocol, over TLS if
    ``ssl_context`` is given."""

    __slots__ = ("_backlog", "_bound_port", "_factory", "_handshakes", "_host", "_port",
                 "_retry", "_sockets", "_ssl_context")

    def __init__(self, factory: Callable[[], asyncio.BaseProtocol], host: str, port: int, *,
                 ssl_context: ssl.SSLContext | None = None, backlog: int = 128) -> None:
        self._factory, self._host, self._port = factory, host, port
        self._ssl_context, self._backlog = ssl_context, backlog
        self._bound_port: int | None = None
        self._sockets: list[socket.socket] = []
        self._handshakes: set[asyncio.Task[object]] = set()
        self._retry: dict[socket.socket, asyncio.TimerHandle] = {}

    @property
    def name(self) -> str:
        """How log lines name this listener."""
        return f"{self._host or '*'}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port once started (the requested one before)."""
        return self._port if self._bound_port is None else self._bound_port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for family, address in await _addresses(loop, self._host, self._port):
                sock = socket.socket(family, socket.SOCK_STREAM)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(self._backlog)
                sock.setblocking(False)
                loop.add_reader(sock.fileno(), self._accept, loop, sock)
            self._bound_port = int(self._sockets[0].getsockname()[1])
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop accepting (connections already made are their protocol's business)."""
        loop = asyncio.get_running_loop()
        for handle in self._retry.values():
            handle.cancel()
        for sock in self._sockets:
            if sock.fileno() != -1:
                loop.remove_reader(sock.fileno())
                sock.close()
        for task in list(self._handshakes):
            task.cancel()

    def _accept(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        """The listener is readable: accept everything queued, up to the backlog."""
        for _ in range(self._backlog):
            try:
                conn, _peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    log.error("listener %s: cannot accept (%s); retrying in %.0f s", self.name,
                              exc.strerror, ACCEPT_RETRY_SECONDS)
                    loop.remove_reader(sock.fileno())
                    self._retry[sock] = loop.call_later(
                        ACCEPT_RETRY_SECONDS, self._resume, loop, sock)
                    return
                continue  # the client went away before it was accepted (ECONNABORTED)
            conn.setblocking(False)
            task = loop.create_task(loop.connect_accepted_socket(
                self._factory, conn, ssl=self._ssl_context))
            self._handshakes.add(task)
            task.add_done_callback(self._connected)

    def _resume(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        del self._retry[sock]
        if sock.fileno() != -1:
            loop.add_reader(sock.fileno(), self._accept, loop, sock)

    def _connected(self, task: asyncio.Task[object]) -> None:
        self._handshakes.discard(task)
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:
            # A client that fails its TLS handshake or drops: its problem, not the server's.
            log.debug("listener %s: connection not set up: %r", self.name, exc)


class AcceptingSite(web.BaseSite):
    """An aiohttp site on a :class:`Listener` (``host``, ``port``; TLS if ``ssl_context``
    is given)."""

    __slots__ = ("_host", "_listener", "_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 ssl_context: ssl.SSLContext | None = None, backlog: int = 128) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host, self._port = host, port
        self._listener: Listener | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        host = self._host or "0.0.0.0"  # noqa: S104 - shown, not bound: "" binds every address
        return str(URL.build(scheme=scheme, host=host, port=self.port))

    @property
    def port(self) -> int:
        """The bound port once started (the requested one before)."""
        return self._port if self._listener is None else self._listener.port

    @property
    def listener(self) -> Listener | None:
        return self._listener

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._listener = Listener(server, self._host, self._port,
                                  ssl_context=self._ssl_context, backlog=self._backlog)
        await self._listener.start()

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        await super().stop()


_Address = tuple[socket.AddressFamily, tuple[Any, ...]]


async def _addresses(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[_Address]:
    """Every address to bind for ``host`` (once each), as ``create_server`` binds them."""
    infos = await loop.getaddrinfo(host or None, port, family=socket.AF_UNSPEC,
                                   type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    found: list[_Address] = []
    for family, _type, _proto, _name, address in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, address) not in found:
            found.append((family, address))
    if not found:
        raise OSError(f"no address to listen on for {host!r}")
    return found
