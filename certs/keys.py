"""Private keys and PEM files: generation, encrypted writing, loading; secrets for keys.

Keys are generated locally and never leave the machine that made them.  At rest they are
encrypted PKCS#8 (PBES2 with scrypt and AES-256-CBC, :mod:`certs.pkcs8`) under a passphrase,
in files created with mode 0600 before a byte is written.  EC P-256 is the default (ES256
signatures); RSA 3072 is available for deployments whose CA or HSM requires RSA.

A passphrase (or a token PIN) comes from a :class:`SecretSource`: a file that only its owner
can read, or an environment variable; never from a configuration file itself.  Reading the
source is the configuration loaders' job (``from_env``), so this module only offers the check.

What it does not: keys in hardware (:mod:`certs.pkcs11`), key rotation, or the TLS key
loading itself (Python's ``ssl`` reads the same files with the same passphrase).
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.pkcs8 import PEM_BEGIN, encrypt_private_key

__all__ = [
    "KeyKind",
    "PrivateKey",
    "ProtectedKeyError",
    "SecretSource",
    "generate_private_key",
    "load_certificate",
    "load_certificates",
    "load_private_key",
    "random_passphrase",
    "read_secret_file",
    "self_signed_certificate",
    "self_signed_tls_certificate",
    "unsafe_write_plaintext_key",
    "write_certificate",
    "write_private_key",
    "write_secret_file",
]

KeyKind = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_ENCRYPTED_MARKS = (PEM_BEGIN.encode("ascii"), b"Proc-Type: 4,ENCRYPTED")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ProtectedKeyError(ValueError):
    """A private key or its secret cannot be used: the passphrase is wrong or missing, the
    key is not encrypted where it must be, a secret file can be read by others, a variable is
    not set.  The message names the file or variable, never the secret."""


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


def read_secret_file(path: Path) -> bytes:
    """The secret in ``path`` (one trailing newline dropped), if only its owner can use it.

    A file that its group or others may read or write is refused, as ssh refuses such a key:
    the secret would already be out.  So is an empty file, or anything but a regular file.
    """
    try:
        with path.open("rb") as f:
            info = os.fstat(f.fileno())  # of the file read, not of what the name points to now
            data = f.read() if stat.S_ISREG(info.st_mode) else b""
    except OSError as exc:
        raise ProtectedKeyError(f"{path}: cannot read the secret file: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ProtectedKeyError(f"{path}: a secret file must be a regular file")
    if info.st_mode & 0o077:
        raise ProtectedKeyError(
            f"{path}: a secret file must be readable by its owner only "
            f"(mode {stat.S_IMODE(info.st_mode):04o}; chmod 600 it)"
        )
    secret = data.removesuffix(b"\n").removesuffix(b"\r")
    if not secret:
        raise ProtectedKeyError(f"{path}: the secret file is empty")
    return secret


@dataclass(frozen=True, slots=True)
class SecretSource:
    """Where a secret (a key passphrase, a token PIN) comes from: exactly one of a file only
    its owner can read, or an environment variable.  The configuration names the source; the
    secret itself is never in a configuration file."""

    file: Path | None = None
    env: str | None = None

    def __post_init__(self) -> None:
        if (self.file is None) == (self.env is None):
            raise ProtectedKeyError("give exactly one of a secret file and an environment "
                                    "variable")
        if self.env is not None and not _ENV_NAME.fullmatch(self.env):
            raise ProtectedKeyError(f"{self.env!r} is not an environment variable name")

    def read(self, environ: Mapping[str, str]) -> bytes:
        """The secret, from the file or from ``environ`` (passed in: the caller decides which
        environment counts)."""
        if self.file is not None:
            return read_secret_file(self.file)
        assert self.env is not None
        value = environ.get(self.env)
        if not value:
            raise ProtectedKeyError(f"environment variable {self.env} is not set or empty")
        return value.encode("utf-8")

    def __str__(self) -> str:
        return f"file {self.file}" if self.file is not None else f"variable {self.env}"


def random_passphrase() -> bytes:
    """A passphrase for keys that no person types: 256 random bits, as URL-safe text (so it
    survives being kept in a file or an environment variable)."""
    return secrets.token_urlsafe(32).encode("ascii")


def write_private_key(path: Path, key: PrivateKey, passphrase: bytes) -> None:
    """Write ``key`` as encrypted PKCS#8 under ``passphrase`` (see :mod:`certs.pkcs8`)."""
    write_secret_file(path, encrypt_private_key(key, passphrase))


def unsafe_write_plaintext_key(path: Path, key: PrivateKey) -> None:
    """Write ``key`` unencrypted (mode 0600 still).  Only for tools and tests that need the
    old form; servers refuse such keys unless told ``unsafe_plaintext_keys``."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_secret_file(path, pem)


def load_private_key(
    path: Path, passphrase: bytes | None, *, unsafe_plaintext: bool = False
) -> PrivateKey:
    """Read an EC or RSA private key from a PEM file.

    An encrypted key needs its ``passphrase``.  An unencrypted key is refused unless
    ``unsafe_plaintext`` is true (then ``passphrase`` is not needed for it).  Every refusal
    is a :class:`ProtectedKeyError`; an unreadable file is an ``OSError``.
    """
    data = path.read_bytes()
    # PKCS#8 says so in its PEM label; the older OpenSSL form in a Proc-Type header.
    encrypted = any(mark in data for mark in _ENCRYPTED_MARKS)
    if not encrypted and not unsafe_plaintext:
        raise ProtectedKeyError(
            f"{path}: the private key is not encrypted; encrypt it (PKCS#8 with a passphrase), "
            "or allow unencrypted keys with unsafe_plaintext_keys = true"
        )
    if encrypted and passphrase is None:
        raise ProtectedKeyError(f"{path}: the private key is encrypted, but no passphrase "
                                "was given (passphrase_file or passphrase_env)")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
    except ValueError as exc:
        # cryptography says "Incorrect password" for a wrong passphrase and other words for a
        # damaged file; neither message is worth more than ours.
        what = "wrong passphrase, or a damaged file" if encrypted else "not a PEM private key"
        raise ProtectedKeyError(f"{path}: cannot read the private key ({what})") from exc
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise ProtectedKeyError(f"{path}: cannot read the private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ProtectedKeyError(f"{path}: only EC and RSA keys are supported")
    return key


def write_certificate(path: Path, *certs: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))


def load_certificates(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def load_certificate(path: Path) -> x509.Certificate:
    return load_certificates(path)[0]


def _self_signed_builder(key: PrivateKey, name: x509.Name, now: datetime,
                         days: int) -> x509.CertificateBuilder:
    """An end-entity certificate issued by itself, valid from five minutes before ``now``
    (clock skew) for ``days`` days."""
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )


def self_signed_certificate(
    key: PrivateKey, common_name: str, *, now: datetime, days: int = 3650,
    organization: str | None = None,
) -> x509.Certificate:
    """A self-signed end-entity certificate for a pinned key: the registry's
    configuration-signing certificate, which the configuration anchor carries.  Valid from
    five minutes before ``now`` (clock skew) for ``days`` days; digitalSignature only."""
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return (
        _self_signed_builder(key, x509.Name(attrs), now, days)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=False, crl_sign=False, encipher_only=False,
                          decipher_only=False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


def self_signed_tls_certificate(
    key: PrivateKey, common_name: str, *, now: datetime, hosts: tuple[str, ...] = (),
    client: bool = False, days: int = 3650,
) -> x509.Certificate:
    """A self-signed TLS certificate: a security server's internal certificate (``hosts``
    as DNS names or IP addresses; for server authentication on the client proxy's HTTPS
    port, and client authentication towards provider systems) or an information system's
    client certificate (``client=True``).  Each is trusted by pinning it, not by a CA."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    purposes = ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    builder = (
        _self_signed_builder(key, name, now, days)
        .add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256())
