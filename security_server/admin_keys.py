"""The admin-token key of a security server: loaded from its PEM file, never logged."""

from __future__ import annotations

from pathlib import Path

from certs.keys import load_private_key
from xchange.adminauth import AdminPrivateKey, AdminPublicKey

__all__ = ["admin_private_key", "admin_public_key"]


def admin_private_key(path: Path) -> AdminPrivateKey:
    key = load_private_key(path)
    if not isinstance(key, AdminPrivateKey):
        raise ValueError(f"{path}: admin tokens need an EC P-256 or Ed25519 key")
    return key


def admin_public_key(path: Path) -> AdminPublicKey:
    return admin_private_key(path).public_key()
