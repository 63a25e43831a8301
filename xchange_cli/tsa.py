"""``xchange tsa serve`` and ``xchange ca issue-tsa``: the development time-stamping authority.

``ca issue-tsa`` makes a TSA key and certificate with the development CA in a CA directory
(``ca.key``, ``ca.pem``); ``tsa serve`` runs :mod:`certs.tsa_server` with them.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from certs.ca import DevCA
from certs.keys import write_certificate, write_private_key
from xchange_cli.keys import passphrase_from

__all__ = ["issue_tsa"]


def _serve(args: argparse.Namespace) -> int:
    from certs.tsa_server import serve

    passphrase = passphrase_from(args)
    if passphrase is None:
        raise ValueError("give --passphrase-file or --passphrase-env for the TSA's key")
    serve(args.key, args.cert, passphrase, host=args.host, port=args.port, policy=args.policy,
          accuracy_seconds=args.accuracy or None)
    return 0


def issue_tsa(
    ca_dir: Path, key_path: Path, cert_path: Path, *, name: str, days: int, now: datetime,
    ca_passphrase: bytes | None = None,
) -> None:
    """Issue a TSA certificate from the CA in ``ca_dir``; write the key (0600, encrypted under
    the CA's passphrase, like every key the development CA hands out) and the certificate
    followed by the CA certificate.  Existing files are not replaced."""
    for path in (key_path, cert_path):
        if path.exists():
            raise FileExistsError(f"{path} exists; refusing to replace it")
    ca = DevCA.load(ca_dir, ca_passphrase)
    key, cert = ca.issue_tsa_cert(name, now=now, days=days)
    write_private_key(key_path, key, ca.key_passphrase)
    write_certificate(cert_path, cert, ca.certificate)


def _issue(args: argparse.Namespace) -> int:
    issue_tsa(args.dir, args.out_key, args.out_cert, name=args.name, days=args.days,
              now=datetime.now(UTC), ca_passphrase=passphrase_from(args))
    print(f"TSA key in {args.out_key}, certificate (then the CA's) in {args.out_cert}")
    return 0
