"""Information-system connections to the client proxy: HTTP, HTTPS, or HTTPS with a
registered client certificate, per client (X-Road's NOSSL, SSLNOAUTH, SSLAUTH).

* The client proxy serves HTTPS on ``[client_proxy] tls_port`` with the server's *internal*
  TLS certificate: imported (``tls_cert``/``tls_key`` point at existing files) or generated
  at the first start (:func:`ensure_internal_certificate`).  Information systems trust it by
  pinning it; the admin API shows it.
* An information system's certificate is registered for its client through the admin API.
  The TLS layer asks for a certificate but does not require one (``CERT_OPTIONAL``) and
  trusts exactly the registered certificates (each is its own trust anchor);
  :class:`IsTls` adds newly registered ones when the configuration changes.  A removed
  certificate stays in the TLS layer's store until restart, which is harmless: the
  authoritative check is :func:`check_is_connection`, against the client's current
  registrations, on every request.
* :func:`check_is_connection` refuses with ``server.clientproxy.is_authentication_failed``
  a request that did not come the way its client requires.
"""

from __future__ import annotations

import hashlib
import ssl
from datetime import datetime
from pathlib import Path

from certs.keys import (
    generate_private_key,
    self_signed_tls_certificate,
    unsafe_write_plaintext_key,
    write_certificate,
    write_private_key,
)
from security_server.directory import Directory, Snapshot
from xchange.errors import XRoadError
from xchange.identifiers import ClientId

__all__ = ["IsTls", "check_is_connection", "ensure_internal_certificate"]

_CODE = "server.clientproxy.is_authentication_failed"


def ensure_internal_certificate(cert: Path, key: Path, server: str, host: str,
                                now: datetime, passphrase: bytes | None) -> bool:
    """Generate the internal TLS key and certificate unless both exist; True if it did.  The
    key is encrypted under ``passphrase`` (the server's key passphrase); only a server told
    ``unsafe_plaintext_keys`` has none."""
    if cert.exists() and key.exists():
        return False
    private = generate_private_key()
    hosts = tuple(dict.fromkeys((host, "localhost", "127.0.0.1")))
    if passphrase is None:
        unsafe_write_plaintext_key(key, private)
    else:
        write_private_key(key, private, passphrase)
    write_certificate(cert, self_signed_tls_certificate(private, server, now=now, hosts=hosts))
    return True


class IsTls:
    """The client proxy's HTTPS context and the IS certificates it has learnt."""

    def __init__(self, cert: Path, key: Path, passphrase: bytes | None) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key), password=passphrase)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        self.context = ctx
        self._known: set[str] = set()

    def learn(self, snapshot: Snapshot) -> None:
        for client in snapshot.clients.values():
            for sha256, pem in client.certs:
                if sha256 not in self._known:
                    self.context.load_verify_locations(cadata=pem)
                    self._known.add(sha256)


def check_is_connection(directory: Directory, client: ClientId, *, tls: bool,
                        peer_certificate: bytes | None) -> None:
    """Raise unless the request came over the connection ``client`` requires (``tls``: it
    came over TLS; ``peer_certificate``: the DER certificate the IS presented there).
    Unknown or disabled clients pass here; the client proxy refuses them as
    ``unknown_member``."""
    local = directory.client(client)
    if local is None or local.is_connection == "HTTP":
        return
    if not tls:
        raise XRoadError(f"client {client} requires HTTPS; this connection is plain HTTP",
                         code=_CODE)
    if local.is_connection == "HTTPS":
        return
    if peer_certificate is None:
        raise XRoadError(f"client {client} requires HTTPS with a registered TLS client "
                         "certificate; none was presented", code=_CODE)
    if hashlib.sha256(peer_certificate).hexdigest() not in local.cert_hashes:
        raise XRoadError(f"the TLS client certificate is not registered for client {client}",
                         code=_CODE)
