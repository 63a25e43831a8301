"""``xchange ca ...``: the development CA from the command line.

``init`` makes a CA directory, ``issue`` signs a PKCS#10 request, ``revoke`` and ``status``
change and show what the OCSP responder answers, ``list`` shows every certificate issued, and
``ocsp-serve`` runs the OCSP responder.  Serial numbers are hexadecimal, as ``ca list`` and
``openssl x509 -serial`` print them.  Each command is a small function over :mod:`certs`;
errors reach :func:`xchange_cli.main.main`, which prints them as one line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.ca import OCSP_RESPONDER_DAYS, DevCA
from certs.index import REVOCATION_REASONS, IssuedCertificate, parse_reason
from certs.keys import generate_private_key, load_certificate, load_private_key
from certs.ocsp import DEFAULT_VALIDITY, OcspResponder, OcspSigner
from xchange_cli.keys import add_passphrase_options, passphrase_from

__all__ = ["register"]

Command = Callable[
    [Sequence[str], Callable[[argparse.Namespace], int], str], argparse.ArgumentParser
]


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _parse_serial(text: str) -> int:
    digits = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        serial = int(digits, 16)
    except ValueError:
        raise ValueError(f"serial {text!r} is not a hexadecimal number") from None
    if serial <= 0:
        raise ValueError(f"serial {text!r} must be positive")
    return serial


def _record(ca: DevCA, args: argparse.Namespace) -> IssuedCertificate:
    """The index entry named by ``--serial`` or ``--cert``; refuses a certificate file that
    merely shares a serial with one this CA issued."""
    if args.serial is not None:
        serial, cert = _parse_serial(args.serial), None
    else:
        cert = load_certificate(args.cert)
        serial = cert.serial_number
    record = ca.status_of(serial)
    if record is None:
        raise ValueError(f"serial {serial:x} was not issued by this CA")
    if cert is not None and cert.public_bytes(serialization.Encoding.DER) != record.der:
        raise ValueError(
            f"{args.cert} is not the certificate this CA issued with serial {serial:x}"
        )
    return record


def _describe_status(record: IssuedCertificate) -> str:
    if record.revoked_at is None:
        return "good"
    reason = record.reason.value if record.reason else "unspecified"
    return f"revoked at {record.revoked_at.isoformat()} ({reason})"


# -- commands -------------------------------------------------------------------------------


def _init(args: argparse.Namespace) -> int:
    ca = DevCA.create(args.dir, args.instance, now=_now(), validity_days=args.days,
                      key_kind=args.key_type, ocsp_url=args.ocsp_url)
    print(f"created {ca.certificate.subject.rfc4514_string()} in {args.dir}")
    print(f"trust anchor: {ca.cert_path}")
    if ca.ocsp_url:
        print(f"OCSP URL in issued certificates: {ca.ocsp_url}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    ca = _load(args)
    cert = ca.issue_from_csr(
        args.csr.read_bytes(), args.profile, now=_now(), days=args.days,
        dns_names=args.dns or ["localhost"], ip_addresses=args.ip or ["127.0.0.1"],
    )
    chain = _pem(cert, ca.certificate)
    if args.out is None:
        sys.stdout.buffer.write(chain)
    else:
        args.out.write_bytes(chain)
        print(f"issued {cert.subject.rfc4514_string()} serial {cert.serial_number:x} "
              f"to {args.out}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    ca = _load(args)
    record = _record(ca, args)
    ca.revoke(record.serial, reason=parse_reason(args.reason), at=_now())
    revoked = ca.status_of(record.serial) or record
    print(f"{record.serial:x} {record.subject}: {_describe_status(revoked)}")
    return 0


def _status(args: argparse.Namespace) -> int:
    record = _record(_load(args), args)
    print(f"serial:    {record.serial:x}")
    print(f"subject:   {record.subject}")
    print(f"profile:   {record.profile}")
    print(f"valid:     {record.not_before.isoformat()} to {record.not_after.isoformat()}")
    print(f"status:    {_describe_status(record)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    ca = _load(args)
    print(f"# {ca.certificate.subject.rfc4514_string()}; OCSP URL: {ca.ocsp_url or 'none'}")
    for record in ca.issued():
        print(f"{record.serial:x}  {record.profile:<4}  {record.not_after.date()}  "
              f"{_describe_status(record)}  {record.subject}")
    return 0


def _signer(ca: DevCA, args: argparse.Namespace) -> OcspSigner | None:
    if args.delegated:
        # Kept in memory only: the certificate travels in every response, the key nowhere.
        key = generate_private_key()
        cert = ca.issue_ocsp_responder_cert(key.public_key(), now=_now(),
                                            days=args.responder_days)
        return OcspSigner(key, cert)
    if args.responder_cert is not None:
        if args.responder_key is None:
            raise ValueError("--responder-cert needs --responder-key")
        return OcspSigner(load_private_key(args.responder_key, ca.key_passphrase),
                          load_certificate(args.responder_cert))
    if args.responder_key is not None:
        raise ValueError("--responder-key needs --responder-cert")
    return None


def _ocsp_serve(args: argparse.Namespace) -> int:
    from certs.ocsp_server import serve

    if args.validity_seconds <= 0:
        raise ValueError("--validity-seconds must be positive")
    ca = _load(args)
    responder = OcspResponder(ca, signer=_signer(ca, args),
                              validity=timedelta(seconds=args.validity_seconds))
    path = urlsplit(ca.ocsp_url).path if ca.ocsp_url else ""
    serve(responder, host=args.host, port=args.port, path=path or "/")
    return 0


# -- registration ---------------------------------------------------------------------------


def _certificate_choice(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--serial", help="serial number, hexadecimal")
    which.add_argument("--cert", type=Path, help="the certificate's PEM file")


def _load(args: argparse.Namespace) -> DevCA:
    """The CA in ``args.dir``, its key read with the passphrase given, else ``ca.passphrase``."""
    return DevCA.load(args.dir, passphrase_from(args))


def register(command: Command) -> None:
    """Add the ``ca`` subcommands through ``main``'s ``command`` helper."""
    p = command(["ca", "init"], _init, "create a development CA in a directory")
    p.add_argument("dir", type=Path, help="CA directory (created; must not hold a CA)")
    p.add_argument("--instance", required=True, help="the xchange instance, e.g. DEMO")
    p.add_argument("--ocsp-url", help="OCSP responder URL for issued certificates' AIA")
    p.add_argument("--key-type", choices=["ec", "rsa"], default="ec")
    p.add_argument("--days", type=int, default=3650, help="root validity (default 3650)")

    p = command(["ca", "issue"], _issue, "issue a certificate for a PKCS#10 request")
    p.add_argument("dir", type=Path, help="CA directory")
    add_passphrase_options(p, "the CA key (default: ca.passphrase in the directory)")
    p.add_argument("--csr", type=Path, required=True, help="PEM certificate signing request")
    p.add_argument("--profile", choices=["sign", "auth"], required=True)
    p.add_argument("--out", type=Path, help="write the PEM here (default: standard output)")
    p.add_argument("--days", type=int, default=730, help="validity (default 730)")
    p.add_argument("--dns", action="append", help="auth: DNS name (repeatable)")
    p.add_argument("--ip", action="append", help="auth: IP address (repeatable)")

    p = command(["ca", "revoke"], _revoke, "revoke a certificate the CA issued")
    p.add_argument("dir", type=Path, help="CA directory")
    add_passphrase_options(p, "the CA key (default: ca.passphrase in the directory)")
    _certificate_choice(p)
    p.add_argument("--reason", choices=[r.value for r in REVOCATION_REASONS], default="unspecified")

    p = command(["ca", "status"], _status, "show a certificate's revocation status")
    p.add_argument("dir", type=Path, help="CA directory")
    add_passphrase_options(p, "the CA key (default: ca.passphrase in the directory)")
    _certificate_choice(p)

    p = command(["ca", "list"], _list, "list every certificate the CA issued")
    p.add_argument("dir", type=Path, help="CA directory")
    add_passphrase_options(p, "the CA key (default: ca.passphrase in the directory)")

    p = command(["ca", "ocsp-serve"], _ocsp_serve, "run the CA's OCSP responder (RFC 6960)")
    p.set_defaults(serving=True)
    p.add_argument("dir", type=Path, help="CA directory")
    add_passphrase_options(p, "the CA key (default: ca.passphrase in the directory)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8888)
    p.add_argument("--validity-seconds", type=int,
                   default=int(DEFAULT_VALIDITY.total_seconds()),
                   help="nextUpdate - thisUpdate of responses (default one day)")
    signer = p.add_mutually_exclusive_group()
    signer.add_argument("--delegated", action="store_true",
                        help="sign with a fresh delegated responder certificate")
    signer.add_argument("--responder-cert", type=Path,
                        help="delegated responder certificate (with --responder-key)")
    p.add_argument("--responder-key", type=Path,
                   help="the responder certificate's key (encrypted under the CA's passphrase)")
    p.add_argument("--responder-days", type=int, default=OCSP_RESPONDER_DAYS,
                   help=f"--delegated: responder validity (default {OCSP_RESPONDER_DAYS})")
