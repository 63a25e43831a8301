"""The running state of one security server, shared by its client proxy and server proxy.

Holds the loaded keys, the configuration client, the message log and the outgoing HTTP
sessions, and offers the two operations both proxies need: "log this message durably or
fail closed" and "what time is it".  Opened and closed by :func:`security_server.app.lifespan`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import aiohttp
from aiohttp import web

from certs.keys import load_certificates, load_private_key
from security_server.confclient import GlobalConfClient
from security_server.config import SecurityServerConfig
from security_server.directory import ConfigDirectory, Directory
from security_server.messagelog import LoggingFailedCode, MessageLog
from security_server.tls import PinnedPeer, add_anchors, client_context
from xchange.errors import GlobalConfOutdatedError, XRoadError
from xchange.globalconf import GlobalConf, SecurityServerInfo
from xchange.identifiers import ClientId, SecurityServerId
from xchange.messagelog import LogEntry
from xchange.replay import ReplayWindow
from xchange.rest import RestRequest
from xchange.signing import SigningIdentity

__all__ = ["RUNTIME", "Runtime", "load_identities", "make_entry", "read_limited", "utc_now"]


log = logging.getLogger(__name__)


async def read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body of ``resp``, or None if it is larger than ``limit`` bytes."""
    if resp.content_length is not None and resp.content_length > limit:
        return None
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def utc_now() -> datetime:
    return datetime.now(UTC)


def load_identities(config: SecurityServerConfig) -> dict[ClientId, SigningIdentity]:
    identities = {}
    for sk in config.signing_keys:
        chain = tuple(load_certificates(sk.cert))
        identities[sk.member] = SigningIdentity(sk.member, load_private_key(sk.key), chain)
    return identities


async def _close_later(session: aiohttp.ClientSession, *, delay: float) -> None:
    try:
        await asyncio.sleep(delay)
    finally:
        await session.close()


@dataclass
class _Peer:
    hashes: frozenset[str]
    session: aiohttp.ClientSession


class Runtime:
    def __init__(
        self,
        config: SecurityServerConfig,
        conf_client: GlobalConfClient,
        message_log: MessageLog,
        identities: dict[ClientId, SigningIdentity],
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.config = config
        self.conf_client = conf_client
        self.log = message_log
        self.identities = identities
        self.clock = clock
        self.provider_session: aiohttp.ClientSession | None = None
        self._peers: dict[SecurityServerId, _Peer] = {}
        self._client_ctx = client_context(config.auth_cert, config.auth_key, [])
        self._known_anchor_hashes: set[str] = set()
        self._anchors_version: int | None = None
        self._retired: set[asyncio.Task[None]] = set()
        self.replay = ReplayWindow()
        self.server_tls: ssl.SSLContext | None = None
        """The server proxy's TLS context, set by the app before it serves."""
        self.directory = Directory(ConfigDirectory(config))
        """Local clients, services and access rights; the app puts the store's behind it."""

    def is_local_client(self, client: ClientId) -> bool:
        """Is ``client`` an enabled local client of this server (see security_server.directory)?"""
        return self.directory.client(client) is not None

    # -- global configuration -----------------------------------------------------------

    def conf(self, now: datetime, *, side: Literal["client", "server"]) -> GlobalConf:
        try:
            conf = self.conf_client.current(now)
        except GlobalConfOutdatedError as exc:
            if side == "server":
                raise GlobalConfOutdatedError(
                    exc.message, code="server.serverproxy.global_conf_outdated"
                ) from exc
            raise
        self._learn_anchors(conf)
        return conf

    def _learn_anchors(self, conf: GlobalConf) -> None:
        """Add newly approved CAs to the TLS trust stores (which only ever grow; the
        handlers check every peer against the configuration in force)."""
        if conf.version == self._anchors_version:
            return
        self._anchors_version = conf.version
        by_hash = {hashlib.sha256(c.tbs_certificate_bytes).hexdigest(): c
                   for c in conf.trust_anchors()}
        new = [c for h, c in by_hash.items() if h not in self._known_anchor_hashes]
        if not new:
            return
        add_anchors(self._client_ctx, new)
        if self.server_tls is not None:
            add_anchors(self.server_tls, new)
        self._known_anchor_hashes.update(by_hash)

    # -- peers ----------------------------------------------------------------------------

    def peer_session(self, server: SecurityServerInfo) -> aiohttp.ClientSession:
        """A session whose connections are pinned to the server's registered certificates."""
        hashes = frozenset(server.auth_cert_hashes)
        peer = self._peers.get(server.id)
        if peer is not None and peer.hashes == hashes:
            return peer.session
        if peer is not None:
            # New pins: new connections.  In-flight requests on the old ones may finish.
            del self._peers[server.id]
            task = asyncio.create_task(_close_later(peer.session, delay=120))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
        connector = aiohttp.TCPConnector(ssl=PinnedPeer(hashes), limit=0,
                                         enable_cleanup_closed=False)
        session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        self._peers[server.id] = _Peer(hashes, session)
        return session

    @property
    def client_tls(self) -> ssl.SSLContext:
        return self._client_ctx

    async def close(self) -> None:
        for task in list(self._retired):
            task.cancel()  # _close_later closes its session when cancelled
        await asyncio.gather(*self._retired, return_exceptions=True)
        for peer in self._peers.values():
            await peer.session.close()
        self._peers.clear()
        if self.provider_session is not None:
            await self.provider_session.close()

    # -- message log ------------------------------------------------------------------------

    async def log_message(self, entry: LogEntry, *, side: Literal["client", "server"]) -> None:
        """Write ``entry`` durably or raise ``logging_failed``: fail closed."""
        code: LoggingFailedCode = (
            "server.clientproxy.logging_failed" if side == "client"
            else "server.serverproxy.logging_failed"
        )
        try:
            await self.log.append(entry, error_code=code)
        except Exception as exc:  # any failure to persist must stop the message
            # The client sees only the code; the operator needs the database's own words.
            log.error("message log write failed (%s %s of %s): %r", entry.direction,
                      entry.kind, entry.query_id, exc.__cause__ or exc)
            if isinstance(exc, XRoadError):
                raise
            raise XRoadError("message log could not be written", code=code) from exc

def make_entry(
    req: RestRequest,
    kind: Literal["request", "response"],
    direction: Literal["incoming", "outgoing"],
    header_part: bytes,
    body: bytes,
    signature: str,
    at: datetime,
    *,
    error_code: str | None = None,
) -> LogEntry:
    """The log entry of one signed message; ``error_code`` marks it as rejected."""
    return LogEntry(
        query_id=req.message_id,
        kind=kind,
        direction=direction,
        client=str(req.client),
        service=str(req.service),
        user_id=req.user_id,
        issue=req.issue,
        header_part=header_part,
        body=body,
        signature=signature,
        status="rejected" if error_code else "ok",
        error_code=error_code,
        created_at=at,
    )


RUNTIME = web.AppKey("xchange_runtime", Runtime)
