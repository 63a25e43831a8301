"""``xchange tsa serve`` and ``xchange ca issue-tsa``: the development time-stamping authority.

``ca issue-tsa`` makes a TSA key and certificate with the development CA in a CA directory
(``ca.key``, ``ca.pem``); ``tsa serve`` runs :mod:`certs.tsa_server` with them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from certs.ca import DevCA
from certs.keys import write_certificate, write_private_key
from certs.tsa import DEV_TSA_POLICY
from xchange_cli.keys import add_passphrase_options, passphrase_from

__all__ = ["Command", "issue_tsa", "register"]

Command = Callable[
    [Sequence[str], Callable[[argparse.Namespace], int], str], argparse.ArgumentParser
]
"""The ``command(path, func, help)`` registrar of :mod:`xchange_cli.main`."""


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


def register(command: Command) -> None:
    """Add the TSA subcommands to the ``xchange`` parser."""
    p = command(["tsa", "serve"], _serve, "run the development time-stamping authority "
                "(RFC 3161 over HTTP)")
    p.set_defaults(serving=True)
    p.add_argument("--key", type=Path, required=True,
                   help="the TSA's private key (encrypted PKCS#8 PEM)")
    add_passphrase_options(p, "the TSA's key")
    p.add_argument("--cert", type=Path, required=True,
                   help="the TSA certificate, then its CA certificates (PEM)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=3180, help="port to listen on")
    p.add_argument("--policy", default=DEV_TSA_POLICY, help="the TSA policy OID")
    p.add_argument("--accuracy", type=int, default=1,
                   help="accuracy claimed for the clock, in seconds (0: no claim)")
    p = command(["ca", "issue-tsa"], _issue,
                "issue a time-stamping authority's key and certificate from a CA directory")
    p.add_argument("dir", type=Path, help="the CA directory (ca.key, ca.pem)")
    add_passphrase_options(p, "the CA key (default: ca.passphrase in the directory); the TSA "
                           "key is written under the same passphrase")
    p.add_argument("--out-key", type=Path, required=True, help="where to write the key")
    p.add_argument("--out-cert", type=Path, required=True, help="where to write the chain")
    p.add_argument("--name", default="xchange development TSA",
                   help="the TSA certificate's common name")
    p.add_argument("--days", type=int, default=730, help="validity in days")
