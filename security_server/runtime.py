"""The running state of one security server, shared by its client proxy and server proxy.

Holds the loaded keys, the configuration client, the message log and the outgoing HTTP
connection pools, and offers the operations both proxies need: "sign this", "log this
message durably or fail closed" and "what time is it".  Opened and closed by
:func:`security_server.app.lifespan`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Mapping,
)
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final, Literal

from aiohttp import web
from cryptography import x509

from certs.keys import load_certificates
from security_server.batchsign import KeySigner
from security_server.body import Body, spool
from security_server.confclient import GlobalConfClient
from security_server.config import SecurityServerConfig
from security_server.directory import ConfigDirectory, Directory
from security_server.httpclient import Client, Pool
from security_server.logstamper import LogStamper
from security_server.messagelog import LoggingFailedCode, MessageLog
from security_server.ocsp import OwnCertificates
from security_server.tls import PinnedPeer, add_anchors, client_context
from xchange.certstatus import StapleVerifier, approved_ca_of
from xchange.errors import (
    BadRequestError,
    ClientProxyError,
    GlobalConfOutdatedError,
    ServerProxyError,
    TimestampingFailedError,
    XRoadError,
)
from xchange.globalconf import GlobalConf, SecurityServerInfo
from xchange.identifiers import ClientId, SecurityServerId
from xchange.messagelog import LogEntry, StoredRecord
from xchange.messages import Request
from xchange.ocsp import OcspStatus
from xchange.replay import ReplayWindow
from xchange.signing import SigningIdentity
from xchange.transport import FrameDecoder, FrameHead, encode_frame_head

__all__ = ["RUNTIME", "ProviderStatus", "Runtime", "certificate_of", "frame_payload",
           "make_entry", "utc_now"]


log = logging.getLogger(__name__)

PEER_CONNECTIONS: Final = 64
"""At most this many TLS connections to one provider security server; further requests wait
for one of them (within ``peer_timeout``).  Unbounded, a burst of a thousand requests
opened a thousand TLS connections at once, and the handshakes' CPU starved the messages."""
PEER_CONNECT_TIMEOUT: Final = 5.0
"""Seconds to open a connection to a provider security server (TCP and TLS)."""


_MAX_FRAME_HEAD = 16 * 1024 * 1024
"""The most a frame's sections (header part, signature, OCSP responses) may take together."""


def frame_payload(head: FrameHead, body: Body) -> tuple[int, AsyncIterator[bytes]]:
    """A frame to send: its length, and its bytes in pieces (the body read from its spool)."""
    prefix = encode_frame_head(head)

    async def pieces() -> AsyncIterator[bytes]:
        yield prefix
        async for chunk in body.stream():
            yield chunk

    return len(prefix) + body.size, pieces()


def utc_now() -> datetime:
    return datetime.now(UTC)


async def _close_later(pool: Pool, *, delay: float) -> None:
    try:
        await asyncio.sleep(delay)
    finally:
        await pool.close()


@dataclass
class _Peer:
    pin: PinnedPeer
    pool: Pool
    address: str


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """The TLS certificate a provider server last presented and its latest verified OCSP
    status, as the client proxy knows it."""

    cert_hash: str
    status: OcspStatus
    checked_at: datetime


class Runtime:
    def __init__(
        self,
        config: SecurityServerConfig,
        conf_client: GlobalConfClient,
        message_log: MessageLog,
        identities: Mapping[ClientId, SigningIdentity],
        own_certs: OwnCertificates,
        stamper: LogStamper,
        *,
        clock: Callable[[], datetime] = utc_now,
        in_token: frozenset[ClientId] = frozenset(),
    ) -> None:
        self.config = config
        self.conf_client = conf_client
        self.log = message_log
        self.stamper = stamper
        self.identities = identities
        self.own_certs = own_certs
        self.auth_certificate = load_certificates(config.auth_cert)[0]
        self.clock = clock
        self.staples = StapleVerifier()
        self.provider_auth: dict[SecurityServerId, ProviderStatus] = {}
        """Per provider server, what the client proxy knows of its TLS certificate."""
        self._in_token = in_token
        # One thread: a token session signs one message at a time anyway.
        self._token_thread = (ThreadPoolExecutor(1, thread_name_prefix="xchange-token")
                              if in_token else None)
        self.signers: dict[ClientId, KeySigner] = {}
        """One batching signer per member key (:mod:`security_server.batchsign`)."""
        self.provider_client: Client | None = None
        """The provider server's connections to the provider systems (set by the app)."""
        self._peers: dict[SecurityServerId, _Peer] = {}
        self._client_ctx = client_context(config.auth_cert, config.auth_key, [],
                                          passphrase=config.key_passphrase)
        self._known_anchor_hashes: set[str] = set()
        self._anchors_version: int | None = None
        self._retired: set[asyncio.Task[None]] = set()
        self.replay = ReplayWindow()
        self.server_tls: ssl.SSLContext | None = None
        """The server proxy's TLS context, set by the app before it serves."""
        self.directory = Directory(ConfigDirectory(config))
        """Local clients, services and access rights; the app puts the store's behind it."""
        self.spool_dir = config.state_dir / "spool"
        """Where bodies over 1 MiB are spooled while they cross (security_server.body)."""

    async def spool(self, chunks: AsyncIterable[bytes], *, limit: int,
                    too_large: XRoadError) -> Body:
        """Read a body as it arrives into a :class:`~security_server.body.Body`; a large one
        is written to the message log's chunk store as it arrives, ready to be logged."""
        return await spool(chunks, self.spool_dir, limit=limit, too_large=too_large,
                           sink=self.log.body_store)

    async def read_frame(self, chunks: AsyncIterable[bytes], *, limit: int, code: str,
                         too_large: XRoadError) -> tuple[FrameHead, Body]:
        """Read a frame (docs/protocol.md, "Frame") as it arrives: its sections into
        memory, its body into a spool, hashed.  Malformed: ``BadRequestError`` with
        ``code``; a body over ``limit`` bytes: ``too_large``.  Nothing is verified here."""
        decoder = FrameDecoder(code=code)

        async def body_bytes() -> AsyncIterator[bytes]:
            head_bytes = 0
            async for chunk in chunks:
                if decoder.head is None:
                    head_bytes += len(chunk)
                yield decoder.feed(chunk)
                if decoder.head is None and head_bytes > _MAX_FRAME_HEAD:
                    raise BadRequestError("malformed message frame: sections too long",
                                          code=code)

        body = await self.spool(body_bytes(), limit=limit, too_large=too_large)
        try:
            return decoder.finish(), body
        except BadRequestError:
            body.close()
            raise

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

    # -- certificate status (OCSP) ------------------------------------------------------------

    @staticmethod
    def ocsp_max_age(conf: GlobalConf) -> timedelta:
        return timedelta(seconds=conf.settings.ocsp_freshness_seconds)

    def own_staples(self, identity: SigningIdentity, conf: GlobalConf, at: datetime, *,
                    code: str) -> tuple[bytes, bytes]:
        """OCSP responses to staple: the signing member's certificate, then this server's
        auth certificate.  Raises ``cert_validation`` if either is not good and fresh."""
        max_age = self.ocsp_max_age(conf)
        return (self.own_certs.staple(identity.chain[0], at=at, max_age=max_age, code=code),
                self.own_certs.staple(self.auth_certificate, at=at, max_age=max_age,
                                      code=code))

    def check_peer_signer(self, staples: tuple[bytes, ...],
                          sign_chain: tuple[x509.Certificate, ...], conf: GlobalConf,
                          at: datetime, *, code: str) -> None:
        """The peer's signing certificate (verified chain, leaf first) must be proven good and
        fresh by one of its staples."""
        self.staples.check(staples, sign_chain[0], sign_chain[1], at=at,
                           max_age=self.ocsp_max_age(conf), code=code)

    def peer_auth_status(self, staples: tuple[bytes, ...], auth_cert: x509.Certificate,
                         conf: GlobalConf, at: datetime, *, code: str) -> OcspStatus:
        """The verified, fresh status of the peer's TLS certificate from its staples (not
        yet required to be good)."""
        issuer = approved_ca_of(auth_cert, conf.approved_cas, code=code).certificate
        return self.staples.find(staples, auth_cert, issuer, at=at,
                                 max_age=self.ocsp_max_age(conf), code=code)

    # -- peers ----------------------------------------------------------------------------

    def peer_pool(self, server: SecurityServerInfo) -> Pool:
        """Connections to ``server``, pinned to its registered certificates."""
        hashes = frozenset(server.auth_cert_hashes)
        peer = self._peers.get(server.id)
        if peer is not None and peer.pin.hashes == hashes and peer.address == server.address:
            return peer.pool
        if peer is not None:
            # New pins or address: new connections.  In-flight requests on the old ones
            # may finish.
            del self._peers[server.id]
            task = asyncio.create_task(_close_later(peer.pool, delay=120))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
        pin = PinnedPeer(hashes)
        pool = Pool(server.host, server.port, tls=self._client_ctx, verify=pin.check,
                    limit=PEER_CONNECTIONS, connect_timeout=PEER_CONNECT_TIMEOUT)
        self._peers[server.id] = _Peer(pin, pool, server.address)
        return pool

    def presented_certificate(self, server: SecurityServerId) -> x509.Certificate | None:
        """The TLS certificate the server presented on its latest connection, if any."""
        peer = self._peers.get(server)
        der = None if peer is None else peer.pin.presented
        return None if der is None else certificate_of(der)

    @property
    def client_tls(self) -> ssl.SSLContext:
        return self._client_ctx

    async def close(self) -> None:
        for task in list(self._retired):
            task.cancel()  # _close_later closes its pool when cancelled
        await asyncio.gather(*self._retired, return_exceptions=True)
        for peer in self._peers.values():
            await peer.pool.close()
        self._peers.clear()
        if self.provider_client is not None:
            await self.provider_client.close()
        if self._token_thread is not None:
            self._token_thread.shutdown(wait=True)

    # -- signing ----------------------------------------------------------------------------

    async def sign(self, identity: SigningIdentity, payload: bytes, *,
                   side: Literal["client", "server"], signed_at: datetime | None = None,
                   nonce: str | None = None, then: Callable[[str], None] | None = None) -> str:
        """Sign a digest payload with ``identity`` (see :func:`xchange.signing.sign_payload`),
        batched with the other messages that wait for the same key
        (:mod:`security_server.batchsign`).

        A key in memory signs in the event loop (tens of microseconds).  A key in a token
        signs in the token's thread: the call blocks on the device (SoftHSM2 here: 0.07 ms
        for EC P-256, 2.4 ms for RSA 3072; a network HSM takes longer).  Any failure is
        ``cannot_create_signature``, and the message goes no further.  ``then`` is the
        batch signer's (:meth:`KeySigner.sign`); it must not raise.
        """
        signer = self.signers.get(identity.member)
        if signer is None or signer.identity is not identity:
            in_token = self._token_thread is not None and identity.member in self._in_token
            signer = KeySigner(identity, executor=self._token_thread if in_token else None,
                               max_batch=self.config.signing_batch_max)
            self.signers[identity.member] = signer
        try:
            return await signer.sign(payload, signed_at=signed_at, nonce=nonce, then=then)
        except Exception as exc:  # a token can fail in many ways; none may leak to a client
            log.error("signing as %s failed: %r", identity.member, exc)
            if side == "client":
                raise ClientProxyError(f"could not sign as {identity.member}",
                                       code="server.clientproxy.cannot_create_signature") from exc
            raise ServerProxyError(f"could not sign as {identity.member}",
                                   code="server.serverproxy.cannot_create_signature") from exc

    async def sign_and_log(self, identity: SigningIdentity, payload: bytes,
                           header_part: bytes, staples: tuple[bytes, ...],
                           record: Callable[[FrameHead], LogEntry], *,
                           side: Literal["client", "server"], signed_at: datetime | None = None,
                           nonce: str | None = None) -> FrameHead:
        """Sign ``payload`` (:meth:`sign`; the digest payload of ``header_part`` and the
        body), then write ``record(head)`` durably (:meth:`log_message`); return the signed
        message's head (``header_part``, its signature, ``staples``) once its record is
        committed.  Fails as those two do, and nothing is logged if signing failed.

        The record is appended in the loop turn that made the signature, before the caller
        is woken (:mod:`security_server.batchsign`), so its commit comes first at the next
        turn: a message that waited for a batch resumes signed and logged, two turns sooner
        than signing, then logging (docs/decisions.md, "A message's record is appended in
        the turn that signs it").
        """
        started: list[tuple[FrameHead, LogEntry, Coroutine[Any, Any, StoredRecord]]] = []
        refused: list[Exception] = []

        def then(signature: str) -> None:
            try:
                head = FrameHead(header_part, signature, staples)
                entry = record(head)
                started.append((head, entry, self._start_logging(entry, side)))
            except Exception as exc:  # told to the caller below, not as a signing failure
                refused.append(exc)

        try:
            await self.sign(identity, payload, side=side, signed_at=signed_at, nonce=nonce,
                            then=then)
        except BaseException:
            for _, _, appending in started:  # gone while its record commits: nobody waits
                appending.close()
            raise
        if refused:
            raise refused[0]
        [(head, entry, appending)] = started
        await self._finish_logging(entry, appending, side)
        return head

    # -- message log ------------------------------------------------------------------------

    async def log_message(self, entry: LogEntry, *, side: Literal["client", "server"]) -> None:
        """Write ``entry`` durably or raise ``logging_failed``: fail closed.

        A new request (not a response, not a refusal being recorded) is first refused with
        ``timestamping_failed`` if time-stamping has failed for too long.  In ``sync`` mode
        the record's time-stamp is awaited too, and its failure is ``timestamping_failed``
        (not for a refusal being recorded: its own error code is what the caller must see).
        """
        await self._finish_logging(entry, self._start_logging(entry, side), side)

    def _start_logging(self, entry: LogEntry, side: Literal["client", "server"]
                       ) -> Coroutine[Any, Any, StoredRecord]:
        """:meth:`log_message` up to the append, which starts here (:meth:`MessageLog.append`)."""
        if entry.kind == "request" and entry.status == "ok":
            self.stamper.check(entry.created_at, code=f"server.{_PROXY[side]}.timestamping_failed")
        return self.log.append(entry, error_code=_LOGGING_FAILED[side])

    async def _finish_logging(self, entry: LogEntry, appending: Coroutine[Any, Any, StoredRecord],
                              side: Literal["client", "server"]) -> None:
        """:meth:`log_message` from the append on."""
        try:
            record = await appending
        except Exception as exc:  # any failure to persist must stop the message
            # The client sees only the code; the operator needs the database's own words.
            log.error("message log write failed (%s %s of %s): %r", entry.direction,
                      entry.kind, entry.query_id, exc.__cause__ or exc)
            if isinstance(exc, XRoadError):
                raise
            raise XRoadError("message log could not be written",
                             code=_LOGGING_FAILED[side]) from exc
        if self.config.timestamping == "sync" and entry.status == "ok":
            try:
                await self.stamper.stamp_through(record.sequence)
            except XRoadError as exc:
                raise TimestampingFailedError(
                    f"the message could not be time-stamped: {exc.message}",
                    code=f"server.{_PROXY[side]}.timestamping_failed") from exc


_PROXY: Final = {"client": "clientproxy", "server": "serverproxy"}
_LOGGING_FAILED: Final[dict[str, LoggingFailedCode]] = {
    "client": "server.clientproxy.logging_failed",
    "server": "server.serverproxy.logging_failed",
}


def make_entry(
    req: Request,
    kind: Literal["request", "response"],
    direction: Literal["incoming", "outgoing"],
    head: FrameHead,
    body: Body,
    at: datetime,
    *,
    error_code: str | None = None,
) -> LogEntry:
    """The log entry of one signed message, as sent or received with its OCSP staples;
    ``error_code`` marks it as rejected.  A spooled body is logged from its spool."""
    return LogEntry(
        query_id=req.message_id,
        kind=kind,
        direction=direction,
        client=str(req.client),
        service=str(req.service),
        user_id=req.user_id,
        issue=req.issue,
        header_part=head.header_part,
        body=body.for_log(),
        signature=head.signature,
        status="rejected" if error_code else "ok",
        error_code=error_code,
        created_at=at,
        ocsp_responses=tuple(head.ocsp_responses),
    )


@lru_cache(maxsize=256)
def certificate_of(der: bytes) -> x509.Certificate:
    """A peer's DER certificate, parsed (remembered: a few peers present the same one for
    every message)."""
    return x509.load_der_x509_certificate(der)


RUNTIME = web.AppKey("xchange_runtime", Runtime)
