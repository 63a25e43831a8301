"""The registry's private keys on disk: configuration-signing keys and the admin-token key.

``keys_dir`` holds one file per configuration-signing key, named by its key id (the hex
SHA-256 of its certificate's DER, as in the envelope's ``keyid``), and ``admin-token.key``,
which signs and verifies the admin API's bearer tokens.  Every one is encrypted PKCS#8 under
the registry's key passphrase (:mod:`certs.keys`, mode 0600), as a security server keeps its
keys; only ``unsafe_plaintext_keys = true`` lets the registry write and read them
unencrypted.  The certificates and the keys' states are in the database
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
    PrivateKey,
    ProtectedKeyError,
    generate_private_key,
    load_private_key,
    self_signed_certificate,
    unsafe_write_plaintext_key,
    write_private_key,
)
from registry.config import ConfigError, RegistryConfig
from xchange.certificates import cert_sha256
from xchange.globalconf import ConfSigner

__all__ = ["ADMIN_KEY_FILE", "KeyStore"]

ADMIN_KEY_FILE: Final = "admin-token.key"


class KeyStore:
    """The key files of ``keys_dir``, written and read under one passphrase.

    ``passphrase`` ``None`` with ``unsafe_plaintext`` false can still be built (a registry
    without keys to read yet), but refuses every write and every encrypted read.
    """

    def __init__(self, directory: Path, passphrase: bytes | None, *,
                 unsafe_plaintext: bool = False) -> None:
        self.directory = directory
        self._passphrase = passphrase
        self._unsafe_plaintext = unsafe_plaintext

    @classmethod
    def from_config(cls, config: RegistryConfig) -> KeyStore:
        """The key store of ``config``, which must have been through ``from_env``."""
        if config.key_passphrase_source is not None and config.key_passphrase is None:
            # A programming error, but one an operator could meet through a new entry point.
            raise ConfigError("the key passphrase was not read: call RegistryConfig.from_env")
        return cls(config.keys_dir, config.key_passphrase,
                   unsafe_plaintext=config.unsafe_plaintext_keys)

    def conf_key_path(self, key_id: str) -> Path:
        return self.directory / f"conf-sign-{key_id}.key"

    def _write(self, path: Path, key: PrivateKey) -> None:
        if self._passphrase is not None:
            write_private_key(path, key, self._passphrase)
        elif self._unsafe_plaintext:
            unsafe_write_plaintext_key(path, key)
        else:
            raise ConfigError(f"{path}: no passphrase to encrypt the new key with; set "
                              "passphrase_file or passphrase_env (or unsafe_plaintext_keys)")

    def _read(self, path: Path, what: str, hint: str = "") -> PrivateKey:
        try:
            return load_private_key(path, self._passphrase,
                                    unsafe_plaintext=self._unsafe_plaintext)
        except ProtectedKeyError as exc:
            raise ConfigError(f"{what}: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"{what} {path}: {exc.strerror or exc}{hint}") from exc

    def new_conf_key(self, instance: str, now: datetime) -> x509.Certificate:
        """Generate a configuration-signing key; write it; return its self-signed
        certificate (the certificate is what goes into the database and the anchor)."""
        key = generate_private_key()
        cert = self_signed_certificate(key, f"{instance} configuration signer", now=now,
                                       organization=instance)
        self._write(self.conf_key_path(cert_sha256(cert)), key)
        return cert

    def conf_signer(self, cert: x509.Certificate) -> ConfSigner:
        path = self.conf_key_path(cert_sha256(cert))
        key = self._read(path, "configuration-signing key")
        if key.public_key() != cert.public_key():
            raise ConfigError(f"{path} does not match its certificate")
        return key, cert

    def admin_key(self, *, create: bool = False) -> ec.EllipticCurvePrivateKey:
        path = self.directory / ADMIN_KEY_FILE
        if create and not path.exists():
            self._write(path, generate_private_key())
        key = self._read(path, "admin-token key", " (run xchange registry init)")
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"admin-token key {path} must be an EC P-256 key")
        return key
