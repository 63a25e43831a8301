"""The shape of the ``xchange`` command line: every subcommand, its arguments and its help.

A subcommand names the function that runs it as ``"module:function"``; :mod:`xchange_cli.main`
imports that module only when the subcommand runs.  So building the parser (``--help``
included) costs no more than this module and the other declaring modules, which import the
standard library only: :mod:`xchange_cli.ss_admin`, :mod:`xchange_cli.ss_register`,
:mod:`xchange_cli.registry_admin` and :mod:`xchange_cli.bench` declare their own table-like
command families next to the little code that runs them.  The commands' real work, and the
heavy libraries under it (aiohttp, SQLAlchemy, lxml, jsonschema, cryptography), load with the
one subcommand that needs them.  ``tests/xchange_cli/test_commands.py`` holds both rules.

Defaults shown in help that the library also defines (revocation reasons, OCSP validity, the
development TSA policy) are written out here, and the same test checks them against the
library.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from xchange_cli import registry_admin, ss_admin, ss_register
from xchange_cli.bench import add_bench_command

__all__ = ["Command", "add_passphrase_options", "register"]

Command = Callable[[Sequence[str], str, str], argparse.ArgumentParser]
"""``command(path, handler, help)``: add the subcommand ``path`` (its words) to the parser,
run by ``handler`` (``"module:function"``, the function taking the parsed arguments and
returning the exit status); returns the subcommand's parser for its arguments."""

# certs.index.REVOCATION_REASONS, certs.ocsp.DEFAULT_VALIDITY, certs.ca.OCSP_RESPONDER_DAYS,
# certs.tsa.DEV_TSA_POLICY: written out to keep cryptography out of the parser.
_REVOCATION_REASONS = ("unspecified", "keyCompromise", "cACompromise", "affiliationChanged",
                      "superseded", "cessationOfOperation", "certificateHold",
                      "privilegeWithdrawn", "aACompromise")
_OCSP_VALIDITY_SECONDS = 86400
_OCSP_RESPONDER_DAYS = 30
_DEV_TSA_POLICY = "2.25.37812320523924485716550692077495309477"


def register(command: Command) -> None:
    """Add every subcommand through ``main``'s ``command`` helper, in the order help lists
    them."""
    p = command(["ss", "serve"], "xchange_cli.main:_ss_serve", "run a security server")
    p.set_defaults(serving=True)
    p.add_argument("--config", type=Path, required=True, help="security server TOML file")
    add_bench_command(command)
    p = command(["ss", "status"], "xchange_cli.main:_ss_status",
                "show a security server's certificates, their expiry and OCSP status")
    p.add_argument("--config", type=Path, required=True, help="security server TOML file")
    ss_admin.register(command)
    ss_register.register(command)
    registry_admin.register(command)
    p = command(["demo"], "xchange_cli.main:_demo",
                "build a throwaway federation, run cross-agency queries, explain them")
    p.add_argument("--serve", action="store_true",
                   help="keep the federation running until interrupted")
    p.add_argument("--dir", type=Path, default=None,
                   help="folder for the federation (default: a temporary folder)")
    _ca(command)
    _tsa(command)
    _audit(command)
    _keys(command)
    _logkeys(command)
    _adapter(command)


def add_passphrase_options(p: argparse.ArgumentParser, what: str) -> None:
    """``--passphrase-file`` / ``--passphrase-env``: where the passphrase of ``what`` is
    (read by :func:`xchange_cli.keys.passphrase_from`)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--passphrase-file", type=Path,
                       help=f"owner-only file holding the passphrase of {what}")
    group.add_argument("--passphrase-env", metavar="VAR",
                       help=f"environment variable holding the passphrase of {what}")


def _certificate_choice(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--serial", help="serial number, hexadecimal")
    which.add_argument("--cert", type=Path, help="the certificate's PEM file")


def _time(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _ca(command: Command) -> None:
    """``ca ...``: the development CA (:mod:`xchange_cli.ca`)."""
    p = command(["ca", "init"], "xchange_cli.ca:_init", "create a development CA in a directory")
    p.add_argument("dir", type=Path, help="CA directory (created; must not hold a CA)")
    p.add_argument("--instance", required=True, help="the xchange instance, e.g. DEMO")
    p.add_argument("--ocsp-url", help="OCSP responder URL for issued certificates' AIA")
    p.add_argument("--key-type", choices=["ec", "rsa"], default="ec")
    p.add_argument("--days", type=int, default=3650, help="root validity (default 3650)")

    p = command(["ca", "issue"], "xchange_cli.ca:_issue",
                "issue a certificate for a PKCS#10 request")
    p.add_argument("dir", type=Path, help="CA directory")
    add_passphrase_options(p, "the CA key (default: ca.passphrase in the directory)")
    p.add_argument("--csr", type=Path, required=True, help="PEM certificate signing request")
    p.add_argument("--profile", choices=["sign", "auth"], required=True)
    p.add_argument("--out", type=Path, help="write the PEM here (default: standard output)")
    p.add_argument("--days", type=int, default=730, help="validity (default 730)")
    p.add_argument("--dns", action="append", help="auth: DNS name (repeatable)")
    p.add_argument("--ip", action="append", help="auth: IP address (repeatable)")

    p = command(["ca", "revoke"], "xchange_cli.ca:_revoke", "revoke a certificate the CA issued")
    p.add_argument("dir", type=Path, help="CA directory")
    add_passphrase_options(p, "the CA key (default: ca.passphrase in the directory)")
    _certificate_choice(p)
    p.add_argument("--reason", choices=_REVOCATION_REASONS, default="unspecified")

    p = command(["ca", "status"], "xchange_cli.ca:_status",
                "show a certificate's revocation status")
    p.add_argument("dir", type=Path, help="CA directory")
    add_passphrase_options(p, "the CA key (default: ca.passphrase in the directory)")
    _certificate_choice(p)

    p = command(["ca", "list"], "xchange_cli.ca:_list", "list every certificate the CA issued")
    p.add_argument("dir", type=Path, help="CA directory")
    add_passphrase_options(p, "the CA key (default: ca.passphrase in the directory)")

    p = command(["ca", "ocsp-serve"], "xchange_cli.ca:_ocsp_serve",
                "run the CA's OCSP responder (RFC 6960)")
    p.set_defaults(serving=True)
    p.add_argument("dir", type=Path, help="CA directory")
    add_passphrase_options(p, "the CA key (default: ca.passphrase in the directory)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8888)
    p.add_argument("--validity-seconds", type=int, default=_OCSP_VALIDITY_SECONDS,
                   help="nextUpdate - thisUpdate of responses (default one day)")
    signer = p.add_mutually_exclusive_group()
    signer.add_argument("--delegated", action="store_true",
                        help="sign with a fresh delegated responder certificate")
    signer.add_argument("--responder-cert", type=Path,
                        help="delegated responder certificate (with --responder-key)")
    p.add_argument("--responder-key", type=Path,
                   help="the responder certificate's key (encrypted under the CA's passphrase)")
    p.add_argument("--responder-days", type=int, default=_OCSP_RESPONDER_DAYS,
                   help=f"--delegated: responder validity (default {_OCSP_RESPONDER_DAYS})")


def _tsa(command: Command) -> None:
    """``tsa serve``, ``ca issue-tsa`` (:mod:`xchange_cli.tsa`)."""
    p = command(["tsa", "serve"], "xchange_cli.tsa:_serve",
                "run the development time-stamping authority "
                "(RFC 3161 over HTTP)")
    p.set_defaults(serving=True)
    p.add_argument("--key", type=Path, required=True,
                   help="the TSA's private key (encrypted PKCS#8 PEM)")
    add_passphrase_options(p, "the TSA's key")
    p.add_argument("--cert", type=Path, required=True,
                   help="the TSA certificate, then its CA certificates (PEM)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=3180, help="port to listen on")
    p.add_argument("--policy", default=_DEV_TSA_POLICY, help="the TSA policy OID")
    p.add_argument("--accuracy", type=int, default=1,
                   help="accuracy claimed for the clock, in seconds (0: no claim)")
    p = command(["ca", "issue-tsa"], "xchange_cli.tsa:_issue",
                "issue a time-stamping authority's key and certificate from a CA directory")
    p.add_argument("dir", type=Path, help="the CA directory (ca.key, ca.pem)")
    add_passphrase_options(p, "the CA key (default: ca.passphrase in the directory); the TSA "
                           "key is written under the same passphrase")
    p.add_argument("--out-key", type=Path, required=True, help="where to write the key")
    p.add_argument("--out-cert", type=Path, required=True, help="where to write the chain")
    p.add_argument("--name", default="xchange development TSA",
                   help="the TSA certificate's common name")
    p.add_argument("--days", type=int, default=730, help="validity in days")


def _audit(command: Command) -> None:
    """``audit ...``, and ``ss verify-log`` (the same as ``audit verify --config``)
    (:mod:`xchange_cli.audit`)."""
    for path, text in ((["audit", "verify"], "verify message-log evidence offline: an archive "
                        "file or directory of them, a container, or a live log (--config)"),
                       (["ss", "verify-log"], "verify a security server's message log (the "
                        "same as xchange audit verify --config)")):
        p = command(path, "xchange_cli.audit:_verify", text)
        if path[0] == "audit":
            p.add_argument("path", type=Path, nargs="?", help="archive, directory or container")
        else:
            p.set_defaults(path=None)
        p.add_argument("--config", type=Path, required=path[0] == "ss",
                       help="security server TOML file: verify its live log")
        trust = p.add_argument_group("trust anchors (default for --config: the server's own)")
        trust.add_argument("--anchor", type=Path, help="configuration anchor (anchor.json)")
        trust.add_argument("--globalconf", type=Path,
                           help="a signed global configuration file (globalconf.json)")
        trust.add_argument("--ca", type=Path, action="append",
                           help="an approved CA certificate (PEM; repeatable)")
        trust.add_argument("--tsa", type=Path, action="append",
                           help="an approved TSA certificate (PEM; repeatable)")
        trust.add_argument("--ocsp-max-age", type=int, default=3600,
                           help="with --ca: the oldest OCSP response accepted, in seconds")
        p.add_argument("--key", type=Path, help="auditor's private key, for encrypted archives")
        add_passphrase_options(p, "the auditor's key (none: the key file is not encrypted)")
        p.add_argument("--previous", type=Path,
                       help="the previous archive file: check that PATH follows it")

    p = command(["audit", "search"], "xchange_cli.audit:_search", "find message-log records")
    p.add_argument("--config", type=Path, required=True, help="security server TOML file")
    for name in ("query-id", "client", "service", "user-id"):
        p.add_argument(f"--{name}")
    p.add_argument("--since", type=_time, help="ISO time (inclusive; UTC if no zone)")
    p.add_argument("--until", type=_time, help="ISO time (exclusive)")
    p.add_argument("--limit", type=int, default=1000)

    p = command(["audit", "export"], "xchange_cli.audit:_export",
                "export one query's request and response with their evidence (ASiC-E)")
    p.add_argument("--config", type=Path, required=True, help="security server TOML file")
    p.add_argument("--query-id", required=True)
    p.add_argument("--out", type=Path, required=True, help="the container file to write")

    p = command(["audit", "archive"], "xchange_cli.audit:_archive",
                "archive time-stamped records now and remove those past retention")
    p.add_argument("--config", type=Path, required=True, help="security server TOML file")


def _keys(command: Command) -> None:
    """``ss keys ...`` (:mod:`xchange_cli.keys`)."""
    p = command(["ss", "keys", "generate"], "xchange_cli.keys:_generate",
                "generate an encrypted key and a certificate signing request for it")
    p.add_argument("--kind", choices=("auth", "sign"), required=True,
                   help="auth: the server's TLS certificate; sign: a member's signing "
                        "certificate")
    p.add_argument("--id", required=True,
                   help="auth: the server, INSTANCE/CLASS/CODE/SERVER; sign: the member, "
                        "INSTANCE/CLASS/CODE")
    p.add_argument("--member-name", required=True, help="the (owner) member's name (subject O)")
    p.add_argument("--country", default="XX", help="subject C (default XX)")
    p.add_argument("--key-type", choices=("ec", "rsa"), default="ec")
    p.add_argument("--out-key", type=Path, required=True, help="where to write the key")
    p.add_argument("--out-csr", type=Path, required=True, help="where to write the request")
    add_passphrase_options(p, "the new key")

    p = command(["ss", "keys", "import-cert"], "xchange_cli.keys:_import_cert",
                "install the certificate a CA issued, after checking it matches the key")
    p.add_argument("--kind", choices=("auth", "sign"), required=True)
    p.add_argument("--key", type=Path, required=True, help="the key the request was made with")
    p.add_argument("--cert", type=Path, required=True,
                   help="the issued certificate (PEM), optionally followed by its CA chain")
    p.add_argument("--out", type=Path, required=True,
                   help="where the server's configuration expects the certificate")
    p.add_argument("--replace", action="store_true", help="replace an existing certificate")
    add_passphrase_options(p, "the key")

    p = command(["ss", "keys", "generate-pkcs11"], "xchange_cli.keys:_generate_pkcs11",
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


def _logkeys(command: Command) -> None:
    """``ss log-key ...`` (:mod:`xchange_cli.logkeys`)."""
    for name, handler, text in (
        ("new", "xchange_cli.logkeys:_new",
         "write a new message-log key file holding one fresh AES-256 key"),
        ("rotate", "xchange_cli.logkeys:_rotate",
         "add a fresh key to a message-log key file and make it current"),
    ):
        p = command(["ss", "log-key", name], handler, text)
        p.add_argument("--file", type=Path, required=True, help="the key file (TOML)")
        p.add_argument("--id", required=True, help="the new key's id, e.g. 2026-11")


def _adapter(command: Command) -> None:
    """``adapter ...`` (:mod:`xchange_cli.adapter`)."""
    p = command(["adapter", "serve"], "xchange_cli.adapter:_serve",
                "run an adapter: data silos as provider services (docs/adapters.md)")
    p.set_defaults(serving=True)
    p.add_argument("config", type=Path, help="the adapter's TOML or YAML file")
    p.add_argument("--port", type=int, default=None, help="listen on this port instead")
    p = command(["adapter", "check"], "xchange_cli.adapter:_check",
                "check an adapter configuration without starting anything")
    p.add_argument("config", type=Path, help="the adapter's TOML or YAML file")
