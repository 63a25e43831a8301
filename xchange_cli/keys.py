"""``xchange ss keys ...``: a security server's keys in a PKCS#11 token.

``generate-pkcs11`` generates a member's signing key inside a token (sensitive, not
extractable) and writes a PKCS#10 request for its signing certificate, signed through the
token.  The CA's certificate then goes into ``[[keys.signing]]`` ``cert`` next to a ``pkcs11``
table naming the token and the key label (docs/pki.md, "Protected keys").
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from certs.keys import ProtectedKeyError, SecretSource
from xchange.identifiers import ClientId

__all__ = ["add_passphrase_options", "passphrase_from", "register"]

Command = Callable[[Sequence[str], Callable[[argparse.Namespace], int], str],
                   argparse.ArgumentParser]


def add_passphrase_options(p: argparse.ArgumentParser, what: str) -> None:
    """``--passphrase-file`` / ``--passphrase-env``: where the passphrase of ``what`` is."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--passphrase-file", type=Path,
                       help=f"owner-only file holding the passphrase of {what}")
    group.add_argument("--passphrase-env", metavar="VAR",
                       help=f"environment variable holding the passphrase of {what}")


def passphrase_from(args: argparse.Namespace) -> bytes | None:
    """The passphrase named by :func:`add_passphrase_options`, or None if none was named."""
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


def register(command: Command) -> None:
    """Add the ``ss keys`` subcommands through ``main``'s ``command`` helper."""
    p = command(["ss", "keys", "generate-pkcs11"], _generate_pkcs11,
                "generate a member's signing key inside a PKCS#11 token and write a "
                "certificate signing request for it")
    p.add_argument("--module", type=Path, required=True,
                   help="the token's PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so)")
    p.add_argument("--token-label", required=True, help="label of the (initialised) token")
    p.add_argument("--key-label", required=True, help="label for the new key pair")
    pin = p.add_mutually_exclusive_group(required=True)
    pin.add_argument("--pin-env", metavar="VARIABLE",
                     help="environment variable holding the token's user PIN")
    pin.add_argument("--pin-file", type=Path, metavar="FILE",
                     help="file (mode 0600) holding the token's user PIN")
    p.add_argument("--member", required=True, help="the member, INSTANCE/CLASS/CODE")
    p.add_argument("--member-name", required=True, help="the member's name (subject O)")
    p.add_argument("--country", default="XX", help="subject C (default XX)")
    p.add_argument("--key-type", choices=("ec", "rsa"), default="ec",
                   help="EC P-256 (ES256, default) or RSA 3072 (PS256)")
    p.add_argument("--out-csr", type=Path, required=True, help="where to write the PEM request")
