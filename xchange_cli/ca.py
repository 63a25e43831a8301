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
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.ca import DevCA
from certs.index import IssuedCertificate, parse_reason
from certs.keys import generate_private_key, load_certificate, load_private_key
from certs.ocsp import OcspResponder, OcspSigner
from xchange_cli.keys import passphrase_from

__all__: list[str] = []  # the commands are run by name from xchange_cli.commands


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


def _load(args: argparse.Namespace) -> DevCA:
    """The CA in ``args.dir``, its key read with the passphrase given, else ``ca.passphrase``."""
    return DevCA.load(args.dir, passphrase_from(args))
