"""Private keys and PEM files: generation, 0600 writing, loading.

Keys are generated locally and never leave the machine that made them; files holding private
keys are created with mode 0600 before a byte is written.  EC P-256 is the default (ES256
signatures); RSA 3072 is available for deployments whose CA or HSM requires RSA.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "KeyKind",
    "PrivateKey",
    "generate_private_key",
    "load_certificate",
    "load_certificates",
    "load_private_key",
    "self_signed_certificate",
    "self_signed_tls_certificate",
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
    """A self-signed TLS certificate: a security server's internal certificate (server
    authentication, ``hosts`` as DNS names or IP addresses) or an information system's
    client certificate (``client=True``).  Each is trusted by pinning it, not by a CA."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        _self_signed_builder(key, name, now, days)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False)
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
