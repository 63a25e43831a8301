"""``xchange ss ...`` administration commands: thin clients of a security server's admin API.

Every command but ``admin-token`` calls the running server's admin API (``--url``, default
``http://127.0.0.1:4000``) with a bearer token (``--token TOKEN`` or ``--token @FILE``), so
that changes go through the same checks, audit log and cache invalidation as any other
client.  Identifiers are written in REST form (``DEMO/GOV/70000001/population-register``);
the command turns them into the API's ``:`` form.  Answers are printed as JSON.

``admin-token`` is local: it reads the server's admin-token key from its configuration
file and prints a token for the given subject and roles.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from xchange.errors import error_for_code

if TYPE_CHECKING:
    from xchange_cli.commands import Command

__all__ = ["register"]


def _colon(identifier: str) -> str:
    return quote(identifier.strip("/").replace("/", ":"), safe=":")


def _token(args: argparse.Namespace) -> str:
    token: str = args.token or ""
    if token.startswith("@"):
        token = Path(token[1:]).read_text(encoding="utf-8")
    if not token.strip():
        raise ValueError("a token is needed: --token TOKEN or --token @FILE "
                         "(see xchange ss admin-token)")
    return token.strip()


def call(args: argparse.Namespace, method: str, path: str,
         body: dict[str, Any] | None = None) -> Any:
    """One admin API call; an error answer becomes the XRoadError it names."""
    # urllib.request (http.client, email, ssl) only for a call: the parser imports this
    # module for every command.
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(  # noqa: S310 (the operator's own admin URL)
        args.url.rstrip("/") + path, data=data, method=method,
        headers={"Authorization": f"Bearer {_token(args)}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as resp:  # noqa: S310
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        try:
            doc = json.loads(exc.read())
            raise error_for_code(doc["type"], doc["message"], doc.get("detail")) from exc
        except (ValueError, KeyError, TypeError):
            raise OSError(f"admin API answered HTTP {exc.code}") from exc
    return json.loads(raw) if raw else None


def _print(result: Any) -> int:
    if result is not None:
        json.dump(result, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    return 0


def _api_command(args: argparse.Namespace) -> int:
    """Run an admin API command: ``args.api_call`` makes the call (see ``register``)."""
    return _print(args.api_call(args))


def _admin_token(args: argparse.Namespace) -> int:
    from security_server.admin_api import PERMISSIONS, audience_for
    from security_server.admin_keys import admin_private_key
    from security_server.config import ConfigError, SecurityServerConfig
    from security_server.runtime import utc_now
    from xchange.adminauth import issue_token

    config = SecurityServerConfig.from_file(args.config).from_env()
    if config.admin_key is None:
        raise ConfigError(f"{args.config}: no [admin_api] token_key")
    unknown = sorted(set(args.role) - PERMISSIONS.roles)
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(unknown)}; roles: "
                         f"{', '.join(sorted(PERMISSIONS.roles))}")
    print(issue_token(admin_private_key(config), subject=args.subject,
                      roles=args.role, audience=audience_for(str(config.server_id)),
                      issued_at=utc_now(), lifetime=timedelta(hours=args.hours)))
    return 0


def _description_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"type": args.type, "url": args.url_of_description}
    if args.file is not None:
        body["document"] = Path(args.file).read_text(encoding="utf-8")
    for key in ("service_code", "service_url", "timeout"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    if args.unsafe_no_tls_verify:
        body["tls_verify"] = False
    return body


def _endpoint_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"subject": args.subject}
    if args.method is not None or args.path is not None:
        body["method"] = args.method or "*"
        body["path"] = args.path or "/**"
    return body


def _passphrase(args: argparse.Namespace) -> str:
    return str(args.passphrase_file.read_text(encoding="utf-8").rstrip("\n"))


def _backup(args: argparse.Namespace) -> Any:
    answer = call(args, "POST", "/api/v1/backup", {"passphrase": _passphrase(args)})
    args.out.write_bytes(base64.b64decode(answer["backup"]))
    return {"written": str(args.out)}


def _set_description(args: argparse.Namespace, *, enabled: bool) -> Any:
    return call(args, "PATCH", f"/api/v1/service-descriptions/{args.id}", {"enabled": enabled})


def _access(args: argparse.Namespace, *, suffix: str) -> Any:
    return call(args, "POST", f"/api/v1/services/{_colon(args.service)}/access-rights{suffix}",
                _endpoint_body(args))


def register(command: Command) -> None:
    """Add the ``ss`` administration subcommands to the ``xchange`` parser."""

    def api(path: Sequence[str], func: Callable[[argparse.Namespace], Any],
            help_text: str) -> argparse.ArgumentParser:
        p = command(path, "xchange_cli.ss_admin:_api_command", help_text)
        p.set_defaults(api_call=func)
        p.add_argument("--url", default="http://127.0.0.1:4000", help="admin API base URL")
        p.add_argument("--token", help="bearer token, or @FILE to read it from a file")
        p.add_argument("--timeout", type=float, default=60.0, help="seconds")
        return p

    p = command(["ss", "admin-token"], "xchange_cli.ss_admin:_admin_token",
                "issue an admin API token with this server's admin-token key")
    p.add_argument("--config", type=Path, required=True, help="security server TOML file")
    p.add_argument("--subject", required=True, help="who the token is for (audit log name)")
    p.add_argument("--role", action="append", required=True, help="a role (repeatable)")
    p.add_argument("--hours", type=float, default=8.0, help="lifetime in hours")

    api(["ss", "client", "list"], lambda a: call(a, "GET", "/api/v1/clients"),
        "list local clients")
    p = api(["ss", "client", "add"], lambda a: call(
        a, "POST", "/api/v1/clients",
        {"id": a.client, **({"is_connection": a.connection} if a.connection else {})}),
        "add a local client")
    p.add_argument("client")
    p.add_argument("--connection", choices=["HTTP", "HTTPS", "HTTPS_AUTH"])
    p = api(["ss", "client", "update"], lambda a: call(
        a, "PATCH", f"/api/v1/clients/{_colon(a.client)}",
        {k: v for k, v in (("enabled", a.enabled), ("is_connection", a.connection))
         if v is not None}), "enable or disable a client, or change its connection type")
    p.add_argument("client")
    p.add_argument("--enable", dest="enabled", action="store_true", default=None)
    p.add_argument("--disable", dest="enabled", action="store_false")
    p.add_argument("--connection", choices=["HTTP", "HTTPS", "HTTPS_AUTH"])

    p = api(["ss", "client", "delete"], lambda a: call(
        a, "DELETE", f"/api/v1/clients/{_colon(a.client)}"
        + ("?unregister=false" if a.keep_registration else "")),
        "remove a local client and everything of it, first sending the registry its deletion "
        "request if it is registered on this server (a subsystem's catalogue entries at the "
        "registry are withdrawn)")
    p.add_argument("client")
    p.add_argument("--keep-registration", action="store_true",
                   help="send the registry nothing (xchange ss register client-delete later)")
    p = api(["ss", "client", "cert-add"], lambda a: call(
        a, "POST", f"/api/v1/clients/{_colon(a.client)}/tls-certificates",
        {"pem": Path(a.file).read_text(encoding="ascii")}),
        "register an information system's TLS certificate (PEM file) for a client")
    p.add_argument("client")
    p.add_argument("file")
    p = api(["ss", "client", "cert-list"], lambda a: call(
        a, "GET", f"/api/v1/clients/{_colon(a.client)}/tls-certificates"),
        "list the TLS certificates registered for a client")
    p.add_argument("client")
    p = api(["ss", "client", "cert-delete"], lambda a: call(
        a, "DELETE", f"/api/v1/clients/{_colon(a.client)}/tls-certificates/{a.sha256}"),
        "remove a registered TLS certificate")
    p.add_argument("client")
    p.add_argument("sha256")
    api(["ss", "internal-cert"], lambda a: call(a, "GET", "/api/v1/internal-tls-certificate"),
        "show the client proxy's internal TLS certificate (for information systems to trust)")

    p = api(["ss", "description", "add"], lambda a: call(
        a, "POST", f"/api/v1/clients/{_colon(a.client)}/service-descriptions",
        _description_body(a)), "add an OpenAPI 3, REST or WSDL service description")
    p.add_argument("client")
    p.add_argument("--type", required=True, choices=["OPENAPI3", "REST", "WSDL"])
    p.add_argument("--description-url", dest="url_of_description", required=True,
                   help="where the description is (REST: the provider system's base URL)")
    p.add_argument("--file", help="read the description from this file instead of its URL")
    p.add_argument("--service-code", dest="service_code")
    p.add_argument("--service-url", dest="service_url",
                   help="the provider system's base URL, if not the description's URL")
    p.add_argument("--timeout-seconds", dest="timeout", type=float)
    p.add_argument("--unsafe-no-tls-verify", action="store_true",
                   help="do not verify the provider system's TLS certificate (unsafe)")
    p = api(["ss", "description", "list"], lambda a: call(
        a, "GET", f"/api/v1/clients/{_colon(a.client)}/service-descriptions"),
        "list a client's service descriptions")
    p.add_argument("client")
    for name, enabled in (("enable", True), ("disable", False)):
        p = api(["ss", "description", name], partial(_set_description, enabled=enabled),
                f"{name} a description")
        p.add_argument("id", type=int)
    p = api(["ss", "description", "refresh"], lambda a: call(
        a, "POST", f"/api/v1/service-descriptions/{a.id}/refresh"),
        "download a description again")
    p.add_argument("id", type=int)
    p = api(["ss", "description", "delete"], lambda a: call(
        a, "DELETE", f"/api/v1/service-descriptions/{a.id}"), "remove a description")
    p.add_argument("id", type=int)

    p = api(["ss", "catalogue", "show"], lambda a: call(
        a, "GET", f"/api/v1/clients/{_colon(a.client)}/catalogue"),
        "what the registry's service catalogue should list for a client, and how its "
        "publication went")
    p.add_argument("client")
    p = api(["ss", "catalogue", "publish"], lambda a: call(
        a, "POST", f"/api/v1/clients/{_colon(a.client)}/catalogue/publish"),
        "publish a client's services to the registry's service catalogue now")
    p.add_argument("client")

    p = api(["ss", "service", "show"], lambda a: call(
        a, "GET", f"/api/v1/services/{_colon(a.service)}"), "show a service")
    p.add_argument("service")
    p = api(["ss", "service", "update"], lambda a: call(
        a, "PATCH", f"/api/v1/services/{_colon(a.service)}",
        {k: v for k, v in (("url", a.service_url), ("timeout", a.timeout),
                           ("tls_verify", a.tls_verify)) if v is not None}),
        "change a service's provider URL, timeout or TLS verification")
    p.add_argument("service")
    p.add_argument("--service-url", dest="service_url")
    p.add_argument("--timeout-seconds", dest="timeout", type=float)
    p.add_argument("--tls-verify", dest="tls_verify", action="store_true", default=None)
    p.add_argument("--unsafe-no-tls-verify", dest="tls_verify", action="store_false",
                   help="stop verifying the provider system's TLS certificate (unsafe)")
    p = api(["ss", "endpoint", "add"], lambda a: call(
        a, "POST", f"/api/v1/services/{_colon(a.service)}/endpoints",
        {"method": a.method, "path": a.path}), "add an endpoint to a service")
    p.add_argument("service")
    p.add_argument("method")
    p.add_argument("path")

    p = api(["ss", "access", "list"], lambda a: call(
        a, "GET", f"/api/v1/services/{_colon(a.service)}/access-rights"),
        "list who may call a service")
    p.add_argument("service")
    for name, suffix in (("grant", ""), ("revoke", "/delete")):
        p = api(["ss", "access", name], partial(_access, suffix=suffix),
                f"{name} a subject the service or one endpoint")
        p.add_argument("service")
        p.add_argument("subject", help="INSTANCE/CLASS/CODE[/SUB], INSTANCE/GROUP or "
                                       "local:OWNER:CODE")
        p.add_argument("--method")
        p.add_argument("--path")

    p = api(["ss", "group", "add"], lambda a: call(
        a, "POST", f"/api/v1/clients/{_colon(a.client)}/local-groups",
        {"code": a.code, "description": a.description}), "define a local group")
    p.add_argument("client")
    p.add_argument("code")
    p.add_argument("--description", default="")
    p = api(["ss", "group", "member"], lambda a: call(
        a, "POST", f"/api/v1/clients/{_colon(a.client)}/local-groups/{a.code}/members",
        {"member": a.member, "present": not a.remove}), "add or remove a local group member")
    p.add_argument("client")
    p.add_argument("code")
    p.add_argument("member")
    p.add_argument("--remove", action="store_true")

    p = api(["ss", "backup"], _backup,
            "back up the configuration, encrypted with a passphrase (system administrator)")
    p.add_argument("--out", type=Path, required=True, help="file to write the backup to")
    p.add_argument("--passphrase-file", type=Path, required=True)
    p = api(["ss", "restore"], lambda a: call(a, "POST", "/api/v1/restore", {
        "backup": base64.b64encode(a.file.read_bytes()).decode("ascii"),
        "passphrase": _passphrase(a)}),
        "verify a backup, then replace the configuration with it")
    p.add_argument("file", type=Path)
    p.add_argument("--passphrase-file", type=Path, required=True)

    p = api(["ss", "audit"], lambda a: call(a, "GET", f"/api/v1/audit?after={a.after}"),
            "show the admin audit log")
    p.add_argument("--after", type=int, default=0)
