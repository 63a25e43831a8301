"""The registry's private keys on disk: configuration-signing keys and the admin-token key.

``keys_dir`` holds one PEM file per configuration-signing key, named by its key id (the hex
SHA-256 of its certificate's DER, as in the envelope's ``keyid``), and ``admin-token.key``,
which signs and verifies the admin API's bearer tokens.  Files are written 0600
(:mod:`certs.keys`).  The certificates and the keys' states are in the database
(:class:`~registry.models.ConfSigningKeyRow`), so several registry nodes can share them; the
private keys never enter the database.

Not here: which key signs when (``registry.service`` and ``registry.publisher``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certs.keys import (
    generate_private_key,
    load_private_key,
    self_signed_certificate,
    write_private_key,
)
from registry.config import ConfigError
from xchange.certificates import cert_sha256
from xchange.globalconf import ConfSigner

__all__ = ["ADMIN_KEY_FILE", "KeyStore"]

ADMIN_KEY_FILE: Final = "admin-token.key"


class KeyStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def conf_key_path(self, key_id: str) -> Path:
        return self.directory / f"conf-sign-{key_id}.key"

    def new_conf_key(self, instance: str, now: datetime) -> x509.Certificate:
        """Generate a configuration-signing key; write it; return its self-signed
        certificate (the certificate is what goes into the database and the anchor)."""
        key = generate_private_key()
        cert = self_signed_certificate(key, f"{instance} configuration signer", now=now,
                                       organization=instance)
        write_private_key(self.conf_key_path(cert_sha256(cert)), key)
        return cert

    def conf_signer(self, cert: x509.Certificate) -> ConfSigner:
        path = self.conf_key_path(cert_sha256(cert))
        try:
            key = load_private_key(path)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"configuration-signing key {path}: {exc}") from exc
        if key.public_key() != cert.public_key():
            raise ConfigError(f"{path} does not match its certificate")
        return key, cert

    def admin_key(self, *, create: bool = False) -> ec.EllipticCurvePrivateKey:
        path = self.directory / ADMIN_KEY_FILE
        if create and not path.exists():
            write_private_key(path, generate_private_key())
        try:
            key = load_private_key(path)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"admin-token key {path}: {exc} (run xchange registry init)") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"admin-token key {path} must be an EC P-256 key")
        return key
