"""TLS between security servers: mutual authentication with the servers' auth certificates.

* The server proxy requires a client certificate chaining to an approved CA (the TLS layer
  checks the chain; the handler then checks the certificate's hash against global
  configuration -- the authoritative check).
* The client proxy connects with its own auth certificate, verifies the peer's chain against
  the approved CAs, and pins the peer: the SHA-256 of the peer's certificate must be one of
  the hashes global configuration registers for the server it meant to reach.  The pin is
  checked right after the handshake, before a byte of the request is sent.

TLS 1.2 is the minimum; TLS 1.3 is preferred.  Hostnames are not checked: identity is the
registered certificate hash, not a DNS name.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from security_server.httpclient import peer_certificate_der, pinned_certificate

__all__ = ["PinnedPeer", "add_anchors", "client_context", "peer_certificate_der", "server_context"]


def _pem_bundle(certs: Iterable[x509.Certificate]) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in certs)


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise ssl.SSLError("the TLS key is encrypted and no passphrase was given")


def _base_context(purpose: int, cert: Path, key: Path, passphrase: bytes | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile=str(cert), keyfile=str(key),
                        password=_no_passphrase if passphrase is None else passphrase)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def server_context(cert: Path, key: Path, anchors: Iterable[x509.Certificate], *,
                   passphrase: bytes | None = None) -> ssl.SSLContext:
    """The server proxy's context.  More anchors can be added later with
    :func:`add_anchors`; removal is enforced by the handler's global-configuration check.
    ``passphrase`` opens an encrypted ``key``."""
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, cert, key, passphrase)
    add_anchors(ctx, anchors)
    return ctx


def client_context(cert: Path, key: Path, anchors: Iterable[x509.Certificate], *,
                   passphrase: bytes | None = None) -> ssl.SSLContext:
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, cert, key, passphrase)
    ctx.check_hostname = False  # identity is the pinned certificate hash
    add_anchors(ctx, anchors)
    return ctx


def add_anchors(ctx: ssl.SSLContext, anchors: Iterable[x509.Certificate]) -> None:
    bundle = _pem_bundle(anchors)
    if bundle:
        ctx.load_verify_locations(cadata=bundle)


class PinnedPeer:
    """Accept a peer only if its certificate's SHA-256 is one of the registered hashes.

    :class:`security_server.httpclient.Pool` calls :meth:`check` on every new connection
    right after the TLS handshake, before a byte of a request is written.
    """

    def __init__(self, hashes: Iterable[str]) -> None:
        self.hashes = frozenset(h.lower() for h in hashes)
        self.presented: bytes | None = None
        """The DER certificate the peer presented on its latest accepted connection (the
        client proxy checks that certificate's OCSP status)."""

    def check(self, transport: asyncio.Transport) -> bytes:
        """The peer's DER certificate, if pinned; else :class:`PinMismatchError`."""
        der = pinned_certificate(transport, self.hashes)
        self.presented = der
        return der
