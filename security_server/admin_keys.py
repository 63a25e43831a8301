"""The admin-token key of a security server: loaded from its PEM file (encrypted under the
server's key passphrase, like its other keys), never logged."""

from __future__ import annotations

from pathlib import Path

from certs.keys import load_private_key
from security_server.config import SecurityServerConfig
from xchange.adminauth import AdminPrivateKey, AdminPublicKey

__all__ = ["admin_private_key", "admin_public_key"]


def admin_private_key(config: SecurityServerConfig) -> AdminPrivateKey:
    """The key of ``[admin_api] token_key``; ``config`` must have been through ``from_env``."""
    path: Path | None = config.admin_key
    if path is None:
        raise ValueError("the configuration has no [admin_api] token_key")
    key = load_private_key(path, config.key_passphrase,
                           unsafe_plaintext=config.unsafe_plaintext_keys)
    if not isinstance(key, AdminPrivateKey):
        raise ValueError(f"{path}: admin tokens need an EC P-256 or Ed25519 key")
    return key


def admin_public_key(config: SecurityServerConfig) -> AdminPublicKey:
    return admin_private_key(config).public_key()
