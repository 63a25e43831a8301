"""``xchange registry ...``: run and administer the registry.

Two kinds of commands:

* **Local** commands work on the registry's own files and database, for the operator of the
  registry machine: ``serve``, ``init``, ``migrate``, ``import`` and ``token`` (issue an
  admin token, signed with the registry's admin-token key; this is how the first officer
  gets in).  They take ``--config``.
* **API** commands talk to a running registry's admin API with a bearer token
  (``--url`` and ``--token``, or ``XCHANGE_REGISTRY_URL`` and ``XCHANGE_REGISTRY_TOKEN``),
  so they are audited under the token's subject and checked against its roles like any
  other API call.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xchange_cli.commands import Command

__all__ = ["api_call", "register"]


def _now() -> datetime:
    return datetime.now(UTC)


def _config(args: argparse.Namespace) -> Any:
    from registry.config import RegistryConfig

    return RegistryConfig.from_file(args.config).from_env()


def _print(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _serve(args: argparse.Namespace) -> int:
    from registry.app import serve

    serve(args.config)
    return 0


def _init(args: argparse.Namespace) -> int:
    from registry.bootstrap import init_registry
    from registry.db import opened_engine

    config = _config(args)
    with opened_engine(config.database_url) as engine:
        _print(init_registry(config, engine, args.instance, actor="cli:init", now=_now()))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from registry.db import current_revision, migrate, opened_engine

    with opened_engine(_config(args).database_url) as engine:
        migrate(engine)
        print(f"database at revision {current_revision(engine)}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from registry.bootstrap import import_data
    from registry.db import migrate, opened_engine
    from registry.service import RegistryService

    with opened_engine(_config(args).database_url) as engine, Session(engine) as session:
        migrate(engine)
        count = import_data(RegistryService(session, actor="cli:import", now=_now()),
                            args.file)
        session.commit()
    print(f"imported {count} members, servers and groups from {args.file}")
    return 0


def _token(args: argparse.Namespace) -> int:
    from registry.adminroles import issue_admin_token

    config = _config(args)
    hours = args.hours if args.hours is not None else config.admin_token_hours
    print(issue_admin_token(config, subject=args.subject, roles=args.role,
                            now=_now(), lifetime=timedelta(hours=hours)))
    return 0


# -- talking to the admin API -------------------------------------------------------------------


def api_call(url: str, token: str | None, method: str, path: str,
             body: object | None = None) -> Any:
    """One admin API call; a problem answer becomes an XRoadError with its code."""
    # urllib.request (http.client, email, ssl) only for a call: it would cost every command
    # its parser's import of this module.
    import urllib.error
    import urllib.request

    from xchange.errors import ERROR_CODES, XRoadError

    if not url.startswith(("http://", "https://")):
        raise ValueError(f"registry URL must be http(s): {url!r}")
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url.rstrip("/") + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (admin URL)
            text = response.read()
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read())
            code, detail = problem["code"], problem.get("detail") or problem["title"]
        except (ValueError, KeyError, TypeError):
            raise XRoadError(f"{method} {path}: HTTP {exc.code}") from exc
        raise XRoadError(str(detail), code=code if code in ERROR_CODES else None) from exc
    return json.loads(text) if text else None


def _api(args: argparse.Namespace) -> tuple[str, str]:
    url = args.url or os.environ.get("XCHANGE_REGISTRY_URL")
    token = args.token or os.environ.get("XCHANGE_REGISTRY_TOKEN")
    if not url or not token:
        raise ValueError("give --url and --token (or XCHANGE_REGISTRY_URL and "
                         "XCHANGE_REGISTRY_TOKEN); `xchange registry token` issues one")
    return url, token


def _id_path(text: str, parts: int) -> str:
    """``INSTANCE/A/B[/C]`` -> ``/A/B[/C]`` (the instance is the registry's own)."""
    pieces = text.split("/")
    if len(pieces) != parts + 1 or not all(pieces):
        raise ValueError(f"{text!r}: expected INSTANCE and {parts} more parts, '/'-separated")
    return "".join("/" + urllib.parse.quote(p, safe="") for p in pieces[1:])


def _read_text(path: Path | None) -> str | None:
    return None if path is None else path.read_text(encoding="utf-8")


def _decision(verb: str) -> tuple[list[str], str, list[tuple[tuple[str, ...], dict[str, Any]]],
                                  Callable[[argparse.Namespace], Request]]:
    return (["requests", verb], f"{verb} a pending management request",
            [(("id",), {"type": int}), (("--comment",), {"default": ""})],
            lambda a: ("POST", f"/api/v1/management-requests/{a.id}/{verb}",
                       {"comment": a.comment}))


# Each API command: (words, help, arguments, request builder).  The builder gets the parsed
# arguments and returns (method, path, body).
Request = tuple[str, str, object | None]
_API_COMMANDS: list[tuple[list[str], str, list[tuple[tuple[str, ...], dict[str, Any]]],
                          Callable[[argparse.Namespace], Request]]] = [
    (["me"], "who the token is for", [], lambda a: ("GET", "/api/v1/me", None)),
    (["settings", "show"], "federation settings", [],
     lambda a: ("GET", "/api/v1/settings", None)),
    (["settings", "set"], "change settings (NAME=VALUE ...)",
     [(("assignments",), {"nargs": "+", "help": "e.g. auto_approve_clients=true"})],
     lambda a: ("PATCH", "/api/v1/settings",
                {k: json.loads(v) for k, _, v in (x.partition("=") for x in a.assignments)})),
    (["member-class", "add"], "add a member class",
     [(("code",), {}), (("--description",), {"default": ""})],
     lambda a: ("POST", "/api/v1/member-classes",
                {"code": a.code, "description": a.description})),
    (["member", "add"], "register a member",
     [(("id",), {"help": "INSTANCE/CLASS/CODE"}), (("--name",), {"required": True})],
     lambda a: ("POST", "/api/v1/members", dict(zip(
         ("member_class", "member_code"), a.id.split("/")[1:], strict=True), name=a.name))),
    (["member", "list"], "list members",
     [(("--q",), {"default": None}), (("--limit",), {"type": int, "default": 100})],
     lambda a: ("GET", "/api/v1/members?" + urllib.parse.urlencode(
         {k: v for k, v in (("q", a.q), ("limit", a.limit)) if v is not None}), None)),
    (["subsystem", "add"], "add a subsystem to a member",
     [(("id",), {"help": "INSTANCE/CLASS/CODE/SUBSYSTEM"})],
     lambda a: ("POST", f"/api/v1/members{_id_path(a.id.rsplit('/', 1)[0], 2)}/subsystems",
                {"code": a.id.rsplit("/", 1)[1]})),
    (["server", "list"], "list security servers", [],
     lambda a: ("GET", "/api/v1/security-servers", None)),
    (["server", "show"], "one security server", [(("id",), {})],
     lambda a: ("GET", f"/api/v1/security-servers{_id_path(a.id, 3)}", None)),
    (["client", "add"], "register a subsystem as a client of a server",
     [(("server",), {}), (("client",), {})],
     lambda a: ("POST", f"/api/v1/security-servers{_id_path(a.server, 3)}/clients",
                {"client": a.client})),
    (["group", "add"], "add a global group", [(("code",), {}),
                                               (("--description",), {"default": ""})],
     lambda a: ("POST", "/api/v1/global-groups", {"code": a.code,
                                                   "description": a.description})),
    (["group", "add-member"], "add a member or subsystem to a global group",
     [(("code",), {}), (("client",), {})],
     lambda a: ("POST", f"/api/v1/global-groups/{urllib.parse.quote(a.code, safe='')}"
                        "/members", {"client": a.client})),
    (["service", "add"], "publish a service in the catalogue",
     [(("provider",), {"help": "INSTANCE/CLASS/CODE/SUBSYSTEM"}), (("code",), {}),
      (("--kind",), {"choices": ["REST", "SOAP"], "default": "REST"}),
      (("--description",), {"default": ""}),
      (("--document",), {"type": Path, "default": None,
                         "help": "OpenAPI or WSDL file describing it"})],
     lambda a: ("POST", "/api/v1/services", {
         "provider": a.provider, "code": a.code, "kind": a.kind, "description": a.description,
         "description_document": _read_text(a.document)})),
    (["service", "list"], "the service catalogue", [(("--provider",), {"default": None})],
     lambda a: ("GET", "/api/v1/services" + (
         "?" + urllib.parse.urlencode({"provider": a.provider}) if a.provider else ""), None)),
    (["ca", "add"], "approve a certification authority",
     [(("name",), {}), (("certificate",), {"type": Path, "help": "PEM file"}),
      (("--ocsp-url",), {"action": "append", "default": []})],
     lambda a: ("POST", "/api/v1/approved-cas", {
         "name": a.name, "certificate": a.certificate.read_text(encoding="ascii"),
         "ocsp_urls": a.ocsp_url})),
    (["tsa", "add"], "approve a time-stamping authority",
     [(("name",), {}), (("url",), {}), (("certificate",), {"type": Path})],
     lambda a: ("POST", "/api/v1/approved-tsas", {
         "name": a.name, "url": a.url, "certificate": a.certificate.read_text("ascii")})),
    (["requests", "list"], "management requests",
     [(("--state",), {"choices": ["pending", "approved", "rejected", "revoked"]})],
     lambda a: ("GET", "/api/v1/management-requests" + (
         f"?state={a.state}" if a.state else ""), None)),
    _decision("approve"), _decision("reject"), _decision("revoke"),
    (["keys", "list"], "configuration-signing keys", [],
     lambda a: ("GET", "/api/v1/conf-signing-keys", None)),
    (["keys", "add"], "generate a new configuration-signing key (announced)", [],
     lambda a: ("POST", "/api/v1/conf-signing-keys", None)),
    (["keys", "activate"], "an announced key starts signing", [(("key_id",), {})],
     lambda a: ("POST", f"/api/v1/conf-signing-keys/{a.key_id}/activate", None)),
    (["keys", "retire"], "a key stops signing and is no longer trusted", [(("key_id",), {})],
     lambda a: ("POST", f"/api/v1/conf-signing-keys/{a.key_id}/retire", None)),
    (["audit"], "the audit log, newest first",
     [(("--actor",), {"default": None}), (("--limit",), {"type": int, "default": 50})],
     lambda a: ("GET", "/api/v1/audit-log?" + urllib.parse.urlencode(
         {k: v for k, v in (("actor", a.actor), ("limit", a.limit)) if v is not None}), None)),
]


def _api_command(args: argparse.Namespace) -> int:
    """Run an ``_API_COMMANDS`` command: its request builder is ``args.api_request``."""
    url, token = _api(args)
    method, path, body = args.api_request(args)
    if method != "GET" and body is None:
        body = {} if path.endswith("/conf-signing-keys") else None
    _print(api_call(url, token, method, path, body))
    return 0


def _anchor(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("XCHANGE_REGISTRY_URL")
    if not url:
        raise ValueError("give --url (or XCHANGE_REGISTRY_URL)")
    import urllib.request

    with urllib.request.urlopen(url.rstrip("/") + "/anchor", timeout=30) as response:  # noqa: S310
        data = response.read()
    from xchange.globalconf import ConfigurationAnchor

    anchor = ConfigurationAnchor.from_json(data)  # refuse to write something unusable
    args.out.write_bytes(data)
    print(f"configuration anchor of {anchor.instance} written to {args.out}; compare its "
          "key fingerprints with the registry's operator before trusting it")
    return 0


def register(command: Command) -> None:
    """Add the ``registry`` subcommands through ``main``'s ``command`` helper."""
    p = command(["registry", "serve"], "xchange_cli.registry_admin:_serve", "run the registry")
    p.set_defaults(serving=True)
    p.add_argument("--config", type=Path, required=True, help="registry TOML file")
    p = command(["registry", "init"], "xchange_cli.registry_admin:_init",
                "prepare a new registry: database, instance, first signing and admin keys")
    p.add_argument("--config", type=Path, required=True, help="registry TOML file")
    p.add_argument("--instance", required=True, help="the federation's instance code")
    p = command(["registry", "migrate"], "xchange_cli.registry_admin:_migrate",
                "bring the registry's database to the newest schema")
    p.add_argument("--config", type=Path, required=True, help="registry TOML file")
    p = command(["registry", "import"], "xchange_cli.registry_admin:_import",
                "load an old registry data file (registry-data.schema.json) into the database")
    p.add_argument("--config", type=Path, required=True, help="registry TOML file")
    p.add_argument("file", type=Path, help="registry data file (JSON)")
    p = command(["registry", "token"], "xchange_cli.registry_admin:_token",
                "issue an admin API token with the registry's admin-token key (local)")
    p.add_argument("--config", type=Path, required=True, help="registry TOML file")
    p.add_argument("--subject", required=True, help="who the token is for (the audit name)")
    p.add_argument("--role", action="append", required=True,
                   help="a role: registration_officer, security_officer, "
                        "system_administrator or observer (repeatable)")
    p.add_argument("--hours", type=float, default=None, help="lifetime (default from config)")
    p = command(["registry", "anchor"], "xchange_cli.registry_admin:_anchor",
                "download the configuration anchor a new security server is installed with")
    p.add_argument("--url", default=None, help="registry base URL")
    p.add_argument("--out", type=Path, required=True, help="where to write anchor.json")
    for words, help_text, arguments, build in _API_COMMANDS:
        p = command(["registry", *words], "xchange_cli.registry_admin:_api_command", help_text)
        p.set_defaults(api_request=build)
        p.add_argument("--url", default=None, help="registry base URL (XCHANGE_REGISTRY_URL)")
        p.add_argument("--token", default=None, help="admin token (XCHANGE_REGISTRY_TOKEN)")
        for names, options in arguments:
            p.add_argument(*names, **options)
