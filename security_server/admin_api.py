"""The security server's admin REST API: a separate aiohttp listener over the configuration
store, described by ``schemas/security-server-admin.openapi.json`` (OpenAPI 3.1).

Per request:

  1. the bearer token is verified (:mod:`xchange.adminauth`: this server's admin-token key,
     audience ``xchange-ss:<server id>``) -- else ``admin.unauthorized`` (401);
  2. the token's roles must grant the operation's permission (:data:`PERMISSIONS`) -- else
     ``admin.forbidden`` (403);
  3. a JSON body is validated against the operation's schema from the OpenAPI document --
     else ``admin.bad_request`` (400);
  4. the store makes the change in one transaction with its audit record (actor = the
     token's subject); the proxies' directory is invalidated, so the next request through
     the server proxy sees the change.

Identifiers in paths use X-Road's admin form ``INSTANCE:CLASS:CODE[:SUBSYSTEM]`` for
clients and ``...:SERVICECODE`` for services (``:`` never occurs inside a part).
Service descriptions are downloaded from their URL here (OpenAPI 3 or WSDL), or given
inline as ``document``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache, partial
from importlib import resources
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp
import jsonschema
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from security_server.backup import create_backup, decrypt_backup, restore_backup
from security_server.catalogue import CataloguePublisher, build_catalogue, publication_json
from security_server.directory import Directory
from security_server.http import error_middleware, hide_server_version
from security_server.registration import ClientUnregistration
from security_server.store import (
    AccessRightRow,
    AuditRow,
    ClientRow,
    DescriptionRow,
    ServerStore,
    ServiceRow,
    ServiceSpec,
    check_service_code,
)
from xchange.access import ALL_ENDPOINTS, EndpointPattern, LocalGroupId
from xchange.adminauth import AdminPublicKey, PermissionTable, Principal, require, verify_token
from xchange.catalogue import catalogue_json
from xchange.certificates import cert_sha256
from xchange.errors import AdminUnauthorizedError, BadRequestError, XRoadError
from xchange.identifiers import ClientId, SecurityServerId, ServiceId
from xchange.servicedesc import MAX_DESCRIPTION_BYTES, parse_openapi
from xchange.soap.wsdl import parse_wsdl

__all__ = ["ADMIN", "PERMISSIONS", "AdminContext", "audience_for", "authorize",
           "create_admin_app", "openapi_document"]

_R = TypeVar("_R")

READ, WRITE = "read", "write"
PERMISSIONS: Final = PermissionTable({
    "security-officer": frozenset({"clients.read", "clients.write", "services.read",
                                   "access.read", "audit.read"}),
    "service-administrator": frozenset({"clients.read", "services.read", "services.write",
                                        "access.read", "access.write"}),
    "system-administrator": frozenset({"clients.read", "services.read", "access.read",
                                       "backup"}),
    "observer": frozenset({"clients.read", "services.read", "access.read"}),
    "auditor": frozenset({"audit.read"}),
})
"""X-Road's security-server roles and what each may do here."""


def audience_for(server: str) -> str:
    return f"xchange-ss:{server}"


@dataclass
class AdminContext:
    store: ServerStore
    directory: Directory
    keys: tuple[AdminPublicKey, ...]
    audience: str
    clock: Callable[[], datetime]
    fetch_timeout: float = 30.0
    session: aiohttp.ClientSession | None = None
    server: str = ""
    """This server's identifier: a backup names it, a restore checks it."""
    internal_cert: Path | None = None
    """The client proxy's internal TLS certificate (PEM), shown to administrators."""
    catalogue: CataloguePublisher | None = None
    """Publishes clients' services to the registry; None: this server does not."""
    unregistration: ClientUnregistration | None = None
    """Asks the registry to forget a deleted client; None: this server does not."""


ADMIN = web.AppKey("xchange_admin", AdminContext)


@cache
def openapi_document() -> dict[str, Any]:
    text = resources.files("schemas").joinpath("security-server-admin.openapi.json").read_text(
        encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


@cache
def _validator(name: str) -> jsonschema.Validator:
    doc = openapi_document()
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    cls = jsonschema.validators.validator_for({"$schema":
                                               "https://json-schema.org/draft/2020-12/schema"})
    return cls(schema)


async def _body(request: web.Request, schema: str) -> dict[str, Any]:
    try:
        data = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError("the body is not JSON", code="admin.bad_request") from exc
    error = jsonschema.exceptions.best_match(_validator(schema).iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "body"
        raise BadRequestError(f"{where}: {error.message}", code="admin.bad_request")
    assert isinstance(data, dict)
    return data


def _principal(request: web.Request, permission: str) -> Principal:
    ctx = request.app[ADMIN]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AdminUnauthorizedError("an Authorization: Bearer token is required")
    principal = verify_token(token.strip(), keys=ctx.keys, audience=ctx.audience,
                             now=ctx.clock(), table=PERMISSIONS)
    require(principal, permission, PERMISSIONS)
    return principal


def authorize(request: web.Request, permission: str) -> Principal:
    """Steps 1 and 2 of the module docstring, for endpoints added by other modules
    (:mod:`security_server.audit_api`)."""
    return _principal(request, permission)


async def _run(request: web.Request, func: Callable[..., _R], *args: Any,
               change: bool = False, **kwargs: Any) -> _R:
    """Run a store call in a worker thread; after a change, drop the proxies' snapshot."""
    ctx = request.app[ADMIN]
    result = await asyncio.to_thread(partial(func, *args, **kwargs))
    if change:
        ctx.directory.invalidate()
        await asyncio.to_thread(ctx.directory.snapshot)  # rebuilt now: TLS learns new certs
    return result


async def _catalogue_changed(request: web.Request, client: ClientId | str) -> None:
    """After a change to ``client``'s services: publish them to the registry, later."""
    publisher = request.app[ADMIN].catalogue
    if publisher is not None:
        await publisher.changed(ClientId.parse(client) if isinstance(client, str) else client)


def _bad(message: str) -> BadRequestError:
    return BadRequestError(message, code="admin.bad_request")


def _client(request: web.Request) -> ClientId:
    try:
        return ClientId.parse(request.match_info["client"].replace(":", "/"))
    except BadRequestError as exc:
        raise _bad(exc.message) from exc


def _service(request: web.Request) -> ServiceId:
    parts = request.match_info["service"].split(":")
    try:
        if len(parts) != 5:
            raise _bad("a service is INSTANCE:CLASS:CODE:SUBSYSTEM:SERVICECODE")
        return ServiceId(ClientId(*parts[:4]), parts[4])
    except BadRequestError as exc:
        raise _bad(exc.message) from exc


def _endpoint(data: Mapping[str, Any]) -> EndpointPattern:
    if "method" not in data and "path" not in data:
        return ALL_ENDPOINTS
    try:
        return EndpointPattern(data.get("method", "*"), data.get("path", "/**"))
    except BadRequestError as exc:
        raise _bad(exc.message) from exc


# -- serialisation ------------------------------------------------------------------------------


def _client_json(row: ClientRow) -> dict[str, Any]:
    return {"id": row.id, "enabled": row.enabled, "is_connection": row.is_connection}


def _service_json(row: ServiceRow, endpoints: list[EndpointPattern]) -> dict[str, Any]:
    return {"id": f"{row.client_id}/{row.code}", "code": row.code, "url": row.url,
            "timeout": row.timeout, "tls_verify": row.tls_verify,
            "description_id": row.description_id,
            "endpoints": [{"method": e.method, "path": e.path} for e in endpoints]}


def _description_json(store: ServerStore, row: DescriptionRow) -> dict[str, Any]:
    client = ClientId.parse(row.client_id)
    services = [s for s in store.services(client) if s.description_id == row.id]
    return {"id": row.id, "client": row.client_id, "type": row.kind, "url": row.url,
            "enabled": row.enabled,
            "refreshed_at": row.refreshed_at.isoformat() if row.refreshed_at else None,
            "services": [_service_json(s, [EndpointPattern(e.method, e.path) for e in
                                           store.endpoints(ServiceId(client, s.code))])
                         for s in services]}


def _right_json(row: AccessRightRow) -> dict[str, Any]:
    return {"service": f"{row.client_id}/{row.service_code}", "subject": row.subject,
            "method": row.method, "path": row.path}


def _audit_json(row: AuditRow) -> dict[str, Any]:
    return {"id": row.id, "at": row.at.isoformat(), "actor": row.actor, "action": row.action,
            "data": json.loads(row.data)}


# -- handlers -----------------------------------------------------------------------------------


async def list_clients(request: web.Request) -> web.Response:
    _principal(request, "clients.read")
    rows = await _run(request, request.app[ADMIN].store.clients)
    return web.json_response([_client_json(r) for r in rows])


async def add_client(request: web.Request) -> web.Response:
    who = _principal(request, "clients.write")
    data = await _body(request, "NewClient")
    try:
        client = ClientId.parse(data["id"])
    except BadRequestError as exc:
        raise _bad(exc.message) from exc
    ctx = request.app[ADMIN]
    row = await _run(request, ctx.store.add_client, client, actor=who.subject, at=ctx.clock(),
                     is_connection=data.get("is_connection", "HTTPS_AUTH"), change=True)
    return web.json_response(_client_json(row), status=201)


async def get_client(request: web.Request) -> web.Response:
    _principal(request, "clients.read")
    row = await _run(request, request.app[ADMIN].store.client, _client(request))
    return web.json_response(_client_json(row))


async def update_client(request: web.Request) -> web.Response:
    who = _principal(request, "clients.write")
    data = await _body(request, "ClientUpdate")
    ctx = request.app[ADMIN]
    row = await _run(request, ctx.store.update_client, _client(request), actor=who.subject,
                     at=ctx.clock(), enabled=data.get("enabled"),
                     is_connection=data.get("is_connection"), change=True)
    return web.json_response(_client_json(row))


async def delete_client(request: web.Request) -> web.Response:
    """Remove a local client and everything of it.  First, if global configuration names it
    a client of this server, a ``client_delete`` request is sent to the registry (unless
    ``unregister=false``); if that fails, nothing is removed.  A subsystem's catalogue
    entries at the registry are withdrawn in the background (its list is now empty)."""
    who = _principal(request, "clients.write")
    ctx, client = request.app[ADMIN], _client(request)
    unregister = request.query.get("unregister", "true")
    if unregister not in ("true", "false"):
        raise _bad("unregister is true or false")
    if ctx.server and client == SecurityServerId.parse(ctx.server).owner:
        raise XRoadError(f"{client} owns this server and is always its client",
                         code="admin.conflict")
    await _run(request, ctx.store.client, client)  # admin.not_found before the registry hears
    sent = None
    if unregister == "true" and ctx.unregistration is not None:
        sent = await ctx.unregistration(client)
    await _run(request, ctx.store.delete_client, client, actor=who.subject, at=ctx.clock(),
               change=True)
    await _catalogue_changed(request, client)
    return web.json_response({"id": str(client), "unregistration": sent})


def _cert_json(sha256: str, pem: str) -> dict[str, Any]:
    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    return {"sha256": sha256, "subject": cert.subject.rfc4514_string(),
            "not_after": cert.not_valid_after_utc.isoformat(), "pem": pem}


async def list_client_certs(request: web.Request) -> web.Response:
    _principal(request, "clients.read")
    ctx, client = request.app[ADMIN], _client(request)
    await _run(request, ctx.store.client, client)
    rows = await _run(request, ctx.store.client_certs, client)
    return web.json_response([_cert_json(r.sha256, r.pem) for r in rows])


async def add_client_cert(request: web.Request) -> web.Response:
    """Register an information system's TLS certificate (PEM) for a client."""
    who = _principal(request, "clients.write")
    data = await _body(request, "NewCertificate")
    try:
        cert = x509.load_pem_x509_certificate(data["pem"].encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise _bad("pem is not a PEM X.509 certificate") from exc
    pem = cert.public_bytes(Encoding.PEM).decode("ascii")
    ctx = request.app[ADMIN]
    row = await _run(request, ctx.store.add_client_cert, _client(request),
                     cert_sha256(cert), pem, actor=who.subject, at=ctx.clock(), change=True)
    return web.json_response(_cert_json(row.sha256, row.pem), status=201)


async def delete_client_cert(request: web.Request) -> web.Response:
    who = _principal(request, "clients.write")
    ctx = request.app[ADMIN]
    await _run(request, ctx.store.delete_client_cert, _client(request),
               request.match_info["sha256"].lower(), actor=who.subject, at=ctx.clock(),
               change=True)
    return web.Response(status=204)


async def get_internal_cert(request: web.Request) -> web.Response:
    _principal(request, "clients.read")
    path = request.app[ADMIN].internal_cert
    if path is None or not path.exists():
        raise XRoadError("this server has no internal TLS certificate yet",
                         code="admin.not_found")
    pem = await asyncio.to_thread(path.read_text, encoding="ascii")
    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    return web.json_response(_cert_json(cert_sha256(cert), pem))


async def _document(ctx: AdminContext, data: Mapping[str, Any]) -> str:
    if "document" in data:
        doc: str = data["document"]
        return doc
    assert ctx.session is not None
    try:
        async with ctx.session.get(data["url"], allow_redirects=False,
                                   timeout=aiohttp.ClientTimeout(total=ctx.fetch_timeout)
                                   ) as resp:
            body = await resp.content.read(MAX_DESCRIPTION_BYTES + 1)
            if resp.status != 200:
                raise XRoadError(f"{data['url']} answered HTTP {resp.status}",
                                 code="admin.description_unreachable")
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise XRoadError(f"{data['url']} could not be downloaded: {type(exc).__name__}",
                         code="admin.description_unreachable") from exc
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise XRoadError("the description is not UTF-8",
                         code="admin.invalid_description") from exc


async def _specs(ctx: AdminContext, data: Mapping[str, Any]) -> tuple[str | None,
                                                                      list[ServiceSpec]]:
    """The document (if any) and the services a description defines."""
    kind, url = data["type"], data["url"]
    timeout, tls = data.get("timeout", 30.0), data.get("tls_verify", True)
    if kind == "REST":
        code = check_service_code(data.get("service_code") or "")
        return None, [ServiceSpec(code, url, (), timeout, tls)]
    document = await _document(ctx, data)
    if kind == "OPENAPI3":
        code = check_service_code(data.get("service_code") or "")
        endpoints = parse_openapi(document.encode("utf-8")).endpoints
        service_url = data.get("service_url") or url
        return document, [ServiceSpec(code, service_url, endpoints, timeout, tls)]
    operations = parse_wsdl(document.encode("utf-8"))
    return document, [ServiceSpec(op.name, data.get("service_url") or url, (), timeout, tls)
                      for op in operations]


async def add_description(request: web.Request) -> web.Response:
    who = _principal(request, "services.write")
    data = await _body(request, "NewDescription")
    ctx = request.app[ADMIN]
    document, specs = await _specs(ctx, data)
    row = await _run(request, ctx.store.add_description, _client(request), data["type"],
                     data["url"], document, specs, actor=who.subject, at=ctx.clock(),
                     change=True)
    await _catalogue_changed(request, row.client_id)
    return web.json_response(await _run(request, _description_json, ctx.store, row),
                             status=201)


async def list_descriptions(request: web.Request) -> web.Response:
    _principal(request, "services.read")
    ctx = request.app[ADMIN]
    rows = await _run(request, ctx.store.descriptions, _client(request))
    return web.json_response([await _run(request, _description_json, ctx.store, r)
                              for r in rows])


def _desc_id(request: web.Request) -> int:
    text = request.match_info["desc_id"]
    if not text.isdigit() or len(text) > 12:
        raise _bad("a service description id is a number")
    return int(text)


async def update_description(request: web.Request) -> web.Response:
    who = _principal(request, "services.write")
    data = await _body(request, "DescriptionUpdate")
    ctx = request.app[ADMIN]
    row = await _run(request, ctx.store.update_description, _desc_id(request),
                     enabled=data["enabled"], actor=who.subject, at=ctx.clock(), change=True)
    await _catalogue_changed(request, row.client_id)
    return web.json_response(await _run(request, _description_json, ctx.store, row))


async def refresh_description(request: web.Request) -> web.Response:
    """Download the description again; keep settings and surviving access rights."""
    who = _principal(request, "services.write")
    ctx = request.app[ADMIN]
    desc_id = _desc_id(request)
    old = await _run(request, ctx.store.description, desc_id)
    services = await _run(request, ctx.store.services, ClientId.parse(old.client_id))
    code = next((s.code for s in services if s.description_id == desc_id), None)
    data = {"type": old.kind, "url": old.url, "service_code": code}
    document, specs = await _specs(ctx, data)
    row = await _run(request, ctx.store.refresh_description, desc_id, document, specs,
                     actor=who.subject, at=ctx.clock(), change=True)
    await _catalogue_changed(request, row.client_id)
    return web.json_response(await _run(request, _description_json, ctx.store, row))


async def delete_description(request: web.Request) -> web.Response:
    who = _principal(request, "services.write")
    ctx = request.app[ADMIN]
    old = await _run(request, ctx.store.description, _desc_id(request))
    await _run(request, ctx.store.delete_description, _desc_id(request), actor=who.subject,
               at=ctx.clock(), change=True)
    await _catalogue_changed(request, old.client_id)
    return web.Response(status=204)


async def get_service(request: web.Request) -> web.Response:
    _principal(request, "services.read")
    ctx, sid = request.app[ADMIN], _service(request)
    row = await _run(request, ctx.store.service, sid)
    eps = await _run(request, ctx.store.endpoints, sid)
    return web.json_response(_service_json(row, [EndpointPattern(e.method, e.path)
                                                 for e in eps]))


async def update_service(request: web.Request) -> web.Response:
    who = _principal(request, "services.write")
    data = await _body(request, "ServiceUpdate")
    ctx, sid = request.app[ADMIN], _service(request)
    await _run(request, ctx.store.update_service, sid, actor=who.subject, at=ctx.clock(),
               url=data.get("url"), timeout=data.get("timeout"),
               tls_verify=data.get("tls_verify"), change=True)
    return await get_service(request)


async def add_endpoint(request: web.Request) -> web.Response:
    who = _principal(request, "services.write")
    data = await _body(request, "Endpoint")
    ctx = request.app[ADMIN]
    await _run(request, ctx.store.add_endpoint, _service(request), _endpoint(data),
               actor=who.subject, at=ctx.clock(), change=True)
    await _catalogue_changed(request, _service(request).provider)
    return web.json_response({"method": data["method"], "path": data["path"]}, status=201)


async def list_rights(request: web.Request) -> web.Response:
    _principal(request, "access.read")
    ctx, sid = request.app[ADMIN], _service(request)
    await _run(request, ctx.store.service, sid)  # 404 for an unknown service
    rows = await _run(request, ctx.store.access_rights, sid.provider)
    return web.json_response([_right_json(r) for r in rows if r.service_code == sid.code])


async def grant(request: web.Request) -> web.Response:
    who = _principal(request, "access.write")
    data = await _body(request, "AccessRight")
    ctx = request.app[ADMIN]
    row = await _run(request, ctx.store.grant, _service(request), data["subject"],
                     _endpoint(data), actor=who.subject, at=ctx.clock(), change=True)
    return web.json_response(_right_json(row), status=201)


async def revoke(request: web.Request) -> web.Response:
    who = _principal(request, "access.write")
    data = await _body(request, "AccessRight")
    ctx = request.app[ADMIN]
    await _run(request, ctx.store.revoke, _service(request), data["subject"], _endpoint(data),
               actor=who.subject, at=ctx.clock(), change=True)
    return web.Response(status=204)


async def add_local_group(request: web.Request) -> web.Response:
    who = _principal(request, "access.write")
    data = await _body(request, "NewLocalGroup")
    ctx = request.app[ADMIN]
    try:
        group = LocalGroupId(_client(request), data["code"])
    except BadRequestError as exc:
        raise _bad(exc.message) from exc
    await _run(request, ctx.store.add_local_group, group, data.get("description", ""),
               actor=who.subject, at=ctx.clock(), change=True)
    return web.json_response({"id": str(group), "members": []}, status=201)


async def set_group_member(request: web.Request) -> web.Response:
    who = _principal(request, "access.write")
    data = await _body(request, "GroupMember")
    ctx = request.app[ADMIN]
    try:
        group = LocalGroupId(_client(request), request.match_info["code"])
        member = ClientId.parse(data["member"])
    except BadRequestError as exc:
        raise _bad(exc.message) from exc
    await _run(request, ctx.store.set_group_member, group, member, data.get("present", True),
               actor=who.subject, at=ctx.clock(), change=True)
    return web.Response(status=204)


async def list_audit(request: web.Request) -> web.Response:
    _principal(request, "audit.read")
    try:
        after = int(request.query.get("after", "0"))
        limit = int(request.query.get("limit", "100"))
    except ValueError as exc:
        raise _bad("after and limit are integers") from exc
    if not (0 <= after < 2**62 and 1 <= limit <= 1000):
        raise _bad("after must be >= 0 and limit 1 to 1000")
    rows = await _run(request, request.app[ADMIN].store.audit, limit=limit, after_id=after)
    return web.json_response([_audit_json(r) for r in rows])


async def backup(request: web.Request) -> web.Response:
    """The configuration, encrypted with the operator's passphrase (base64 in JSON)."""
    who = _principal(request, "backup")
    data = await _body(request, "BackupRequest")
    ctx = request.app[ADMIN]
    blob = await _run(request, create_backup, ctx.store, ctx.server, data["passphrase"],
                      actor=who.subject, at=ctx.clock())
    return web.json_response({"backup": base64.b64encode(blob).decode("ascii")})


async def restore(request: web.Request) -> web.Response:
    """Verify a backup completely (MAC, schema, values, server), then replace the
    configuration in one transaction."""
    who = _principal(request, "backup")
    data = await _body(request, "RestoreRequest")
    ctx = request.app[ADMIN]
    try:
        blob = base64.b64decode(data["backup"], validate=True)
    except ValueError as exc:
        raise XRoadError("the backup is not base64", code="admin.invalid_backup") from exc
    doc = await _run(request, decrypt_backup, blob, data["passphrase"], ctx.server)
    before = {c.id for c in await _run(request, ctx.store.clients)}
    counts = await _run(request, restore_backup, ctx.store, doc, actor=who.subject,
                        at=ctx.clock(), change=True)
    # every client's list may have changed, and one the backup lacks has none now
    for client in sorted(before | {c.id for c in await _run(request, ctx.store.clients)}):
        await _catalogue_changed(request, client)
    return web.json_response({"restored": counts})


async def _catalogue_json(ctx: AdminContext, client: ClientId) -> dict[str, Any]:
    row = await asyncio.to_thread(ctx.store.publication, client)
    entries = await asyncio.to_thread(build_catalogue, ctx.store, client)
    return {**publication_json(row), "catalogue": catalogue_json(entries)}


async def get_catalogue(request: web.Request) -> web.Response:
    """What the registry's catalogue should say of a client, and how publishing it went."""
    _principal(request, "services.read")
    ctx, client = request.app[ADMIN], _client(request)
    await _run(request, ctx.store.client, client)  # 404 for an unknown client
    return web.json_response(await _catalogue_json(ctx, client))


async def publish_catalogue(request: web.Request) -> web.Response:
    """Publish a client's services to the registry now; the answer says how it went
    (a failure is retried in the background like any other)."""
    who = _principal(request, "services.write")
    ctx, client = request.app[ADMIN], _client(request)
    await _run(request, ctx.store.client, client)
    if ctx.catalogue is None:
        raise XRoadError("this server does not publish to a registry", code="admin.conflict")
    row = await ctx.catalogue.publish(client)
    await _run(request, ctx.store.record, who.subject, "publish_catalogue",
               {"client": str(client), "state": row.state, "error": row.last_error},
               ctx.clock())
    return web.json_response(await _catalogue_json(ctx, client))


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ROUTES: Final[tuple[tuple[str, str, Handler], ...]] = (
    ("GET", "/api/v1/openapi.json", get_openapi),
    ("GET", "/api/v1/clients", list_clients),
    ("POST", "/api/v1/clients", add_client),
    ("GET", "/api/v1/clients/{client}", get_client),
    ("PATCH", "/api/v1/clients/{client}", update_client),
    ("DELETE", "/api/v1/clients/{client}", delete_client),
    ("GET", "/api/v1/clients/{client}/tls-certificates", list_client_certs),
    ("POST", "/api/v1/clients/{client}/tls-certificates", add_client_cert),
    ("DELETE", "/api/v1/clients/{client}/tls-certificates/{sha256}", delete_client_cert),
    ("GET", "/api/v1/internal-tls-certificate", get_internal_cert),
    ("GET", "/api/v1/clients/{client}/service-descriptions", list_descriptions),
    ("POST", "/api/v1/clients/{client}/service-descriptions", add_description),
    ("GET", "/api/v1/clients/{client}/catalogue", get_catalogue),
    ("POST", "/api/v1/clients/{client}/catalogue/publish", publish_catalogue),
    ("POST", "/api/v1/clients/{client}/local-groups", add_local_group),
    ("POST", "/api/v1/clients/{client}/local-groups/{code}/members", set_group_member),
    ("PATCH", "/api/v1/service-descriptions/{desc_id}", update_description),
    ("DELETE", "/api/v1/service-descriptions/{desc_id}", delete_description),
    ("POST", "/api/v1/service-descriptions/{desc_id}/refresh", refresh_description),
    ("GET", "/api/v1/services/{service}", get_service),
    ("PATCH", "/api/v1/services/{service}", update_service),
    ("POST", "/api/v1/services/{service}/endpoints", add_endpoint),
    ("GET", "/api/v1/services/{service}/access-rights", list_rights),
    ("POST", "/api/v1/services/{service}/access-rights", grant),
    ("POST", "/api/v1/services/{service}/access-rights/delete", revoke),
    ("GET", "/api/v1/audit", list_audit),
    ("POST", "/api/v1/backup", backup),
    ("POST", "/api/v1/restore", restore),
)


def create_admin_app(ctx: AdminContext) -> web.Application:
    app = web.Application(middlewares=[error_middleware("server.serverproxy.internal_error")],
                          client_max_size=MAX_DESCRIPTION_BYTES + 64 * 1024)
    app[ADMIN] = ctx
    hide_server_version(app)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)

    async def session(app: web.Application) -> Any:
        ctx.session = aiohttp.ClientSession(auto_decompress=True)
        yield
        await ctx.session.close()

    app.cleanup_ctx.append(session)
    return app


