"""Private keys and PEM files: generation, 0600 writing, loading.

Keys are generated locally and never leave the machine that made them; files holding private
keys are created with mode 0600 before a byte is written.  EC P-256 is the default (ES256
signatures); RSA 3072 is available for deployments whose CA or HSM requires RSA.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = [
    "KeyKind",
    "PrivateKey",
    "generate_private_key",
    "load_certificate",
    "load_certificates",
    "load_private_key",
    "write_certificate",
    "write_private_key",
    "write_secret_file",
]

KeyKind = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def generate_private_key(kind: KeyKind = "ec") -> PrivateKey:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def write_secret_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new or existing file that only the owner can read (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private_key(path: Path, key: PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_secret_file(path, pem)


def load_private_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{path}: only EC and RSA keys are supported")
    return key


def write_certificate(path: Path, *certs: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))


def load_certificates(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def load_certificate(path: Path) -> x509.Certificate:
    return load_certificates(path)[0]
