"""``xchange ss keys ...``: a security server's keys and certificates.

``generate`` makes a key pair in an encrypted key file and writes a PKCS#10 request with the
subject fields the CA needs (country, organisation, member class and code, server code, and
the identifier in serialNumber): ``--kind auth`` for the security server's TLS
authentication certificate, ``--kind sign`` for a member's signing certificate.
``import-cert`` takes the certificate the CA issued, checks that it matches the key and has
the profile of its kind, and installs it next to the key.  ``generate-pkcs11`` generates a
member's signing key inside a token (sensitive, not extractable) and writes a PKCS#10 request
for its signing certificate, signed through the token.  The CA's certificate then goes into
``[[keys.signing]]`` ``cert`` next to a ``pkcs11`` table naming the token and the key label
(docs/pki.md, "Protected keys").
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from certs.ca import make_csr
from certs.keys import (
    ProtectedKeyError,
    SecretSource,
    generate_private_key,
    load_certificates,
    load_private_key,
    write_certificate,
    write_private_key,
)
from xchange.certificates import (
    auth_cert_subject,
    member_of_sign_cert,
    server_of_auth_cert,
    sign_cert_subject,
    verify_chain,
)
from xchange.identifiers import ClientId, SecurityServerId

__all__ = ["passphrase_from"]


def passphrase_from(args: argparse.Namespace) -> bytes | None:
    """The passphrase named by :func:`xchange_cli.commands.add_passphrase_options`, or None
    if none was named."""
    if args.passphrase_file is None and args.passphrase_env is None:
        return None
    try:
        return SecretSource(file=args.passphrase_file, env=args.passphrase_env).read(os.environ)
    except ProtectedKeyError as exc:
        raise ValueError(f"key passphrase: {exc}") from exc


def _generate_pkcs11(args: argparse.Namespace) -> int:
    try:
        from certs.pkcs11 import Token, generate_sign_key_and_csr
    except ImportError as exc:
        raise ValueError("PKCS#11 support needs python-pkcs11: install xchange[hsm]") from exc
    member = ClientId.parse(args.member)
    out: Path = args.out_csr
    if out.exists():
        raise FileExistsError(f"{out} exists; refusing to replace it")
    source = SecretSource(file=args.pin_file, env=args.pin_env)
    try:
        pin = source.read(os.environ)
    except ProtectedKeyError as exc:
        raise ValueError(f"token PIN: {exc}") from exc
    with Token.open(args.module, args.token_label, pin, rw=True) as token:
        _key, csr = generate_sign_key_and_csr(token, args.key_label, member, args.member_name,
                                              kind=args.key_type, country=args.country)
    out.write_bytes(csr)
    kind = "EC P-256" if args.key_type == "ec" else "RSA 3072"
    print(f"generated {kind} key {args.key_label!r} in token {args.token_label!r} "
          f"(sensitive, not extractable); signing certificate request for {member} "
          f"written to {out}")
    return 0


def _passphrase(args: argparse.Namespace) -> bytes:
    passphrase = passphrase_from(args)
    if passphrase is None:
        raise ValueError("give --passphrase-file or --passphrase-env: keys are stored encrypted")
    return passphrase


def _generate(args: argparse.Namespace) -> int:
    key_path, csr_path = args.out_key, args.out_csr
    for path in (key_path, csr_path):
        if path.exists():
            raise FileExistsError(f"{path} exists; refusing to replace it")
    if args.kind == "auth":
        subject = auth_cert_subject(SecurityServerId.parse(args.id), args.member_name,
                                    country=args.country)
    else:
        subject = sign_cert_subject(ClientId.parse(args.id), args.member_name,
                                    country=args.country)
    passphrase = _passphrase(args)
    key = generate_private_key(args.key_type)
    write_private_key(key_path, key, passphrase)
    csr_path.write_bytes(make_csr(key, subject))
    print(f"{args.kind} key written to {key_path} (encrypted); certificate request for "
          f"{subject.rfc4514_string()} written to {csr_path}")
    return 0


def _import_cert(args: argparse.Namespace) -> int:
    chain = load_certificates(args.cert)
    if not chain:
        raise ValueError(f"{args.cert} holds no certificate")
    key = load_private_key(args.key, _passphrase(args))
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != chain[0].public_key().public_bytes(*spki):
        raise ValueError(f"the certificate in {args.cert} is not for the key in {args.key}")
    anchors = [c for c in chain[1:] if c.subject == c.issuer]
    if anchors:  # the CA sent its root along: check the whole profile now, not at first use
        verify_chain(chain[0], chain[1:], anchors, at=datetime.now(UTC), purpose=args.kind)
    identity = (server_of_auth_cert(chain[0]) if args.kind == "auth"
                else member_of_sign_cert(chain[0]))
    out: Path = args.out
    if out.exists() and not args.replace:
        raise FileExistsError(f"{out} exists; give --replace to install the new certificate")
    write_certificate(out, *chain)
    print(f"{args.kind} certificate for {identity} (serial {chain[0].serial_number:x}, valid "
          f"until {chain[0].not_valid_after_utc.isoformat()}) installed as {out}")
    return 0
