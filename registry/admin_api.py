"""The registry's admin REST API (``/api/v1/...``), as ``schemas/registry-admin.openapi.json``
describes it.

The OpenAPI document is the source of truth at run time, not only documentation: one
middleware finds the operation of each request in it and, before any handler runs,

1. authenticates the bearer token (:func:`xchange.adminauth.verify_token`, audience
   ``xchange-registry:<INSTANCE>``, the registry's admin-token key);
2. checks the operation's ``x-permission`` against the token's roles
   (:data:`registry.adminroles.PERMISSIONS`);
3. parses the JSON body and validates it against the operation's request schema.

Handlers are then a few lines: read the path, call :class:`~registry.service.RegistryService`
in a worker thread inside one transaction (the change and its audit record commit
together, under the token's subject), answer JSON.  Every error becomes an RFC 9457 problem
(``application/problem+json``) whose ``code`` is the X-Road-style code; an unexpected
exception is logged with an incident id and never shown.

Also here, outside the OpenAPI document and without a token, the two routes security
servers use for management requests: ``POST /management/requests`` (a signed request,
:mod:`registry.management`) and ``GET /management/requests/{request_id}`` (its state).

Not here: the configuration routes (``registry/app.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Final, TypeVar

import jsonschema
import jsonschema.exceptions
from aiohttp import web
from sqlalchemy.engine import Engine
from sqlmodel import Session

from registry import management
from registry.adminroles import PERMISSIONS, audience
from registry.keys import KeyStore
from registry.service import RegistryService, load_certificate_text
from schemas import load_json_schema
from xchange.adminauth import AdminPublicKey, Principal, require, verify_token
from xchange.errors import (
    ERROR_CODES,
    AdminError,
    AdminUnauthorizedError,
    BadRequestError,
    XRoadError,
)
from xchange.identifiers import ClientId, SecurityServerId

__all__ = ["ADMIN_KEY", "OPENAPI_DOCUMENT", "AdminContext", "add_routes", "problem_middleware"]

log = logging.getLogger(__name__)

OPENAPI_DOCUMENT: Final = "registry-admin.openapi.json"
_MAX_BODY: Final = 2 * 1024 * 1024
_PREFIX: Final = "/api/v1"
_T = TypeVar("_T")


@dataclass
class AdminContext:
    """What the admin API needs from the app; ``instance`` is set once the database is
    migrated and read (at startup)."""

    engine: Engine
    keys: list[AdminPublicKey]
    clock: Callable[[], datetime]
    key_store: KeyStore
    instance: str | None = None


ADMIN_KEY: Final = web.AppKey("registry_admin", AdminContext)
_PRINCIPAL = web.RequestKey("admin_principal", Principal)
_BODY: web.RequestKey[Any] = web.RequestKey("admin_body")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- problems --------------------------------------------------------------------------------


def problem(error: XRoadError, *, status: int | None = None) -> web.Response:
    """RFC 9457 problem details for ``error``."""
    status = status or error.status
    body = {"type": f"urn:xchange:error:{error.code}", "title": ERROR_CODES[error.code].description,
            "status": status, "detail": error.message, "code": error.code}
    headers = {"WWW-Authenticate": 'Bearer realm="xchange-registry"'} if status == 401 else {}
    return web.Response(status=status, body=json.dumps(body, ensure_ascii=False).encode(),
                        content_type="application/problem+json", charset="utf-8",
                        headers=headers)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors of the admin API (and of the registry's other routes) as problems."""
    try:
        return await handler(request)
    except XRoadError as exc:
        log.info("%s %s -> %s: %s", request.method, request.path, exc.code, exc.message)
        return problem(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = "admin.not_found" if exc.status == 404 else "admin.bad_request"
        response = problem(AdminError(exc.reason, code=code), status=exc.status)
        if "Allow" in exc.headers:  # a 405 says what is allowed (RFC 9110 15.5.6)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        incident = str(uuid.uuid4())
        log.exception("internal error, incident %s", incident)
        return problem(XRoadError(f"internal error, incident {incident}"), status=500)


# -- the OpenAPI document as the gatekeeper ---------------------------------------------------


@dataclass(frozen=True)
class _Parameter:
    name: str
    where: str  # "path" or "query"
    required: bool
    integer: bool
    validator: jsonschema.Validator


@dataclass(frozen=True)
class _Operation:
    permission: str
    body: jsonschema.Validator | None
    parameters: tuple[_Parameter, ...]


@cache
def _operations() -> dict[tuple[str, str], _Operation]:
    doc = load_json_schema(OPENAPI_DOCUMENT)
    components = doc["components"]
    table: dict[tuple[str, str], _Operation] = {}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            def compile_(schema: dict[str, Any]) -> jsonschema.Validator:
                # Refs point at #/components/...: give the schema the document's components.
                return jsonschema.Draft202012Validator({**schema, "components": components})

            body = operation.get("requestBody", {}).get("content", {}).get(
                "application/json", {}).get("schema")
            parameters = tuple(
                _Parameter(p["name"], p["in"], p.get("required", False),
                           p["schema"].get("type") == "integer", compile_(p["schema"]))
                for p in operation.get("parameters", ()))
            table[(method.upper(), path)] = _Operation(
                operation["x-permission"], None if body is None else compile_(body), parameters)
    return table


def _check_parameters(request: web.Request, operation: _Operation) -> None:
    """Path and query parameters against their schemas (integers given as decimal text);
    a query parameter the operation does not have is refused rather than ignored."""
    known = {p.name for p in operation.parameters if p.where == "query"}
    unknown = sorted(set(request.query) - known)
    if unknown:
        raise AdminError(f"unknown query parameter(s): {', '.join(unknown)[:200]}",
                         code="admin.bad_request")
    for p in operation.parameters:
        source = request.match_info if p.where == "path" else request.query
        text = source.get(p.name)
        if text is None:
            if p.required:
                raise AdminError(f"parameter {p.name} is required", code="admin.bad_request")
            continue
        value: Any = text
        if p.integer:
            if not re.fullmatch(r"-?[0-9]{1,12}", text):
                raise AdminError(f"parameter {p.name} must be an integer",
                                 code="admin.bad_request")
            value = int(text)
        error = jsonschema.exceptions.best_match(p.validator.iter_errors(value))
        if error is not None:
            raise AdminError(f"parameter {p.name}: {error.message[:200]}",
                             code="admin.bad_request")


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AdminUnauthorizedError("an admin bearer token is required (Authorization: Bearer)")
    return token.strip()


async def _json_body(request: web.Request, validator: jsonschema.Validator) -> Any:
    if request.content_length is not None and request.content_length > _MAX_BODY:
        raise AdminError("request body too large", code="admin.bad_request")
    raw = await request.content.read(_MAX_BODY + 1)
    if len(raw) > _MAX_BODY:
        raise AdminError("request body too large", code="admin.bad_request")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AdminError("request body is not JSON", code="admin.bad_request") from exc
    error = jsonschema.exceptions.best_match(validator.iter_errors(body))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(body)"
        message = error.message if len(error.message) <= 300 else error.message[:300] + "..."
        raise AdminError(f"at {where}: {message}", code="admin.bad_request")
    return body


@web.middleware
async def gate_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Steps 1-3 of the module docstring, for every route under ``/api/v1``."""
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else ""
    operation = _operations().get((request.method, path))
    if operation is None:
        return await handler(request)  # not an admin route (or the router's own 404/405)
    ctx = request.app[ADMIN_KEY]
    if ctx.instance is None:
        raise AdminError("registry not ready", code="admin.conflict")
    principal = verify_token(_bearer(request), keys=ctx.keys, audience=audience(ctx.instance),
                             now=ctx.clock(), table=PERMISSIONS)
    require(principal, operation.permission, PERMISSIONS)
    request[_PRINCIPAL] = principal
    _check_parameters(request, operation)
    if operation.body is not None:
        request[_BODY] = await _json_body(request, operation.body)
    return await handler(request)


# -- running service calls -------------------------------------------------------------------


async def _call(request: web.Request, fn: Callable[[RegistryService], _T], *,
                change: bool) -> _T:
    ctx = request.app[ADMIN_KEY]
    principal = request[_PRINCIPAL]

    def work() -> _T:
        with Session(ctx.engine) as session:
            result = fn(RegistryService(session, actor=principal.subject, now=ctx.clock()))
            if change:
                session.commit()
            return result

    return await asyncio.to_thread(work)


def _json(value: object, status: int = 200) -> web.Response:
    return web.json_response(value, status=status)


async def _read(request: web.Request, fn: Callable[[RegistryService], object]) -> web.Response:
    return _json(await _call(request, fn, change=False))


async def _write(request: web.Request, fn: Callable[[RegistryService], object],
                 status: int = 200) -> web.Response:
    result = await _call(request, fn, change=True)
    if status == 204:
        return web.Response(status=204)
    return _json(result, status)


def _page_args(request: web.Request) -> dict[str, int]:
    # The gate has checked both against the document's bounds.
    return {"limit": int(request.query.get("limit", 100)),
            "offset": int(request.query.get("offset", 0))}


def _id(build: Callable[[], _T]) -> _T:
    try:
        return build()
    except BadRequestError as exc:
        raise AdminError(exc.message, code="admin.bad_request") from exc


def _member(request: web.Request, svc: RegistryService) -> ClientId:
    m = request.match_info
    return _id(lambda: ClientId(svc.instance, m["member_class"], m["member_code"]))


def _server(request: web.Request, svc: RegistryService) -> SecurityServerId:
    return _id(lambda: SecurityServerId(_member(request, svc), request.match_info["server_code"]))


def _client_text(text: str) -> ClientId:
    return _id(lambda: ClientId.parse(text))


def _path_client(request: web.Request, svc: RegistryService) -> ClientId:
    m = request.match_info
    return _id(lambda: ClientId(svc.instance, m["client_class"], m["client_code"],
                                m["client_subsystem"]))


def _provider(request: web.Request, svc: RegistryService) -> ClientId:
    return _member(request, svc).subsystem_of(request.match_info["subsystem"])


# -- handlers ---------------------------------------------------------------------------------


async def who_am_i(request: web.Request) -> web.Response:
    p = request[_PRINCIPAL]
    return _json({"subject": p.subject, "roles": sorted(p.roles),
                  "permissions": sorted(PERMISSIONS.permissions_of(p))})


async def get_settings(request: web.Request) -> web.Response:
    return await _read(request, lambda s: s.get_settings())


async def update_settings(request: web.Request) -> web.Response:
    return await _write(request, lambda s: s.update_settings(request[_BODY]))


async def list_member_classes(request: web.Request) -> web.Response:
    return await _read(request, lambda s: s.list_member_classes())


async def create_member_class(request: web.Request) -> web.Response:
    b = request[_BODY]
    return await _write(request, lambda s: s.create_member_class(b["code"],
                                                                 b.get("description", "")), 201)


async def delete_member_class(request: web.Request) -> web.Response:
    return await _write(request, lambda s: s.delete_member_class(request.match_info["code"]), 204)


async def list_members(request: web.Request) -> web.Response:
    q, mc = request.query.get("q"), request.query.get("member_class")
    page = _page_args(request)
    return await _read(request, lambda s: s.list_members(q=q, member_class=mc, **page).to_json())


async def create_member(request: web.Request) -> web.Response:
    b = request[_BODY]
    return await _write(request, lambda s: s.create_member(b["member_class"], b["member_code"],
                                                           b["name"]), 201)


async def get_member(request: web.Request) -> web.Response:
    return await _read(request, lambda s: s.get_member(_member(request, s)))


async def update_member(request: web.Request) -> web.Response:
    return await _write(request, lambda s: s.rename_member(_member(request, s),
                                                           request[_BODY]["name"]))


async def delete_member(request: web.Request) -> web.Response:
    return await _write(request, lambda s: s.delete_member(_member(request, s)), 204)


async def create_subsystem(request: web.Request) -> web.Response:
    code = request[_BODY]["code"]
    return await _write(request, lambda s: s.create_subsystem(_member(request, s), code), 201)


async def delete_subsystem(request: web.Request) -> web.Response:
    return await _write(request, lambda s: s.delete_subsystem(
        _member(request, s).subsystem_of(request.match_info["subsystem"])), 204)


async def list_servers(request: web.Request) -> web.Response:
    q, page = request.query.get("q"), _page_args(request)
    return await _read(request, lambda s: s.list_servers(q=q, **page).to_json())


async def create_server(request: web.Request) -> web.Response:
    b = request[_BODY]

    def create(s: RegistryService) -> dict[str, Any]:
        owner = _id(lambda: ClientId(s.instance, b["owner_class"], b["owner_code"]))
        return s.create_server(_id(lambda: SecurityServerId(owner, b["server_code"])),
                               b["address"])

    return await _write(request, create, 201)


async def get_server(request: web.Request) -> web.Response:
    return await _read(request, lambda s: s.get_server(_server(request, s)))


async def update_server(request: web.Request) -> web.Response:
    return await _write(request, lambda s: s.change_address(_server(request, s),
                                                            request[_BODY]["address"]))


async def delete_server(request: web.Request) -> web.Response:
    return await _write(request, lambda s: s.delete_server(_server(request, s)), 204)


async def add_auth_cert(request: web.Request) -> web.Response:
    cert = load_certificate_text(request[_BODY]["certificate"])
    return await _write(request, lambda s: s.add_auth_cert(_server(request, s), cert), 201)


async def delete_auth_cert(request: web.Request) -> web.Response:
    return await _write(request, lambda s: s.delete_auth_cert(
        _server(request, s), request.match_info["cert_hash"]))


async def add_client(request: web.Request) -> web.Response:
    client = _client_text(request[_BODY]["client"])
    return await _write(request, lambda s: s.add_client(_server(request, s), client), 201)


async def update_client(request: web.Request) -> web.Response:
    enabled = request[_BODY]["enabled"]
    return await _write(request, lambda s: s.set_client_enabled(
        _server(request, s), _path_client(request, s), enabled))


async def remove_client(request: web.Request) -> web.Response:
    return await _write(request, lambda s: s.remove_client(_server(request, s),
                                                           _path_client(request, s)))


async def list_groups(request: web.Request) -> web.Response:
    page = _page_args(request)
    return await _read(request, lambda s: s.list_groups(**page).to_json())


async def create_group(request: web.Request) -> web.Response:
    b = request[_BODY]
    return await _write(request, lambda s: s.create_group(b["code"], b.get("description", "")),
                        201)


async def get_group(request: web.Request) -> web.Response:
    return await _read(request, lambda s: s.get_group(request.match_info["code"]))


async def delete_group(request: web.Request) -> web.Response:
    return await _write(request, lambda s: s.delete_group(request.match_info["code"]), 204)


async def add_group_member(request: web.Request) -> web.Response:
    client = _client_text(request[_BODY]["client"])
    return await _write(request, lambda s: s.add_group_member(request.match_info["code"],
                                                              client), 201)


async def remove_group_member(request: web.Request) -> web.Response:
    text = request.query.get("client")
    if text is None:
        raise AdminError("query parameter client is required", code="admin.bad_request")
    client = _client_text(text)
    return await _write(request, lambda s: s.remove_group_member(request.match_info["code"],
                                                                 client))


async def list_services(request: web.Request) -> web.Response:
    text, kind = request.query.get("provider"), request.query.get("kind")
    provider = None if text is None else _client_text(text)
    if kind is not None and kind not in ("REST", "SOAP"):
        raise AdminError("kind must be REST or SOAP", code="admin.bad_request")
    page = _page_args(request)
    return await _read(request, lambda s: s.list_services(provider=provider, kind=kind,
                                                          **page).to_json())


async def create_service(request: web.Request) -> web.Response:
    b = request[_BODY]
    provider = _client_text(b["provider"])
    return await _write(request, lambda s: s.create_service(
        provider, b["code"], b["kind"], b.get("description", ""),
        b.get("description_document")), 201)


async def get_service(request: web.Request) -> web.Response:
    return await _read(request, lambda s: s.get_service(_provider(request, s),
                                                        request.match_info["service_code"]))


async def update_service(request: web.Request) -> web.Response:
    return await _write(request, lambda s: s.update_service(
        _provider(request, s), request.match_info["service_code"], request[_BODY]))


async def delete_service(request: web.Request) -> web.Response:
    return await _write(request, lambda s: s.delete_service(
        _provider(request, s), request.match_info["service_code"]), 204)


async def list_cas(request: web.Request) -> web.Response:
    return await _read(request, lambda s: s.list_cas())


async def add_ca(request: web.Request) -> web.Response:
    b = request[_BODY]
    cert = load_certificate_text(b["certificate"])
    return await _write(request, lambda s: s.add_ca(b["name"], cert, b.get("ocsp_urls", [])),
                        201)


def _int_path(request: web.Request, name: str) -> int:
    return int(request.match_info[name])  # checked by the gate


async def delete_ca(request: web.Request) -> web.Response:
    ca_id = _int_path(request, "ca_id")
    return await _write(request, lambda s: s.delete_ca(ca_id), 204)


async def list_tsas(request: web.Request) -> web.Response:
    return await _read(request, lambda s: s.list_tsas())


async def add_tsa(request: web.Request) -> web.Response:
    b = request[_BODY]
    cert = load_certificate_text(b["certificate"])
    return await _write(request, lambda s: s.add_tsa(b["name"], b["url"], cert), 201)


async def delete_tsa(request: web.Request) -> web.Response:
    tsa_id = _int_path(request, "tsa_id")
    return await _write(request, lambda s: s.delete_tsa(tsa_id), 204)


async def list_conf_keys(request: web.Request) -> web.Response:
    return await _read(request, lambda s: s.list_conf_keys())


async def add_conf_key(request: web.Request) -> web.Response:
    ctx = request.app[ADMIN_KEY]

    def add(s: RegistryService) -> dict[str, Any]:
        return s.add_conf_key(ctx.key_store.new_conf_key(s.instance, s.now))

    return await _write(request, add, 201)


async def activate_conf_key(request: web.Request) -> web.Response:
    return await _write(request, lambda s: s.activate_conf_key(request.match_info["key_id"]))


async def retire_conf_key(request: web.Request) -> web.Response:
    return await _write(request, lambda s: s.retire_conf_key(request.match_info["key_id"]))


async def list_audit(request: web.Request) -> web.Response:
    actor, action, page = request.query.get("actor"), request.query.get("action"), \
        _page_args(request)
    return await _read(request, lambda s: s.list_audit(actor=actor, action=action,
                                                       **page).to_json())


async def list_requests(request: web.Request) -> web.Response:
    state, page = request.query.get("state"), _page_args(request)
    return await _read(request, lambda s: management.list_requests(s, state=state,
                                                                   **page).to_json())


async def get_request(request: web.Request) -> web.Response:
    request_id = _int_path(request, "request_id")
    return await _read(request, lambda s: management.get_request(s, request_id))


def _decision(verb: str) -> Handler:
    async def decide(request: web.Request) -> web.Response:
        request_id, comment = _int_path(request, "request_id"), request[_BODY].get("comment", "")
        return await _write(request, lambda s: management.decide(s, request_id, verb, comment))

    return decide


# -- the security servers' side (no token: the request's signatures are the authentication)


_MAX_REQUEST: Final = 1024 * 1024
"""A service catalogue update lists every service and endpoint of a subsystem."""


async def submit_request(request: web.Request) -> web.Response:
    ctx = request.app[ADMIN_KEY]
    data = await request.content.read(_MAX_REQUEST + 1)
    if len(data) > _MAX_REQUEST:
        raise AdminError("management request too large", code="admin.bad_request")

    def work() -> dict[str, Any]:
        with Session(ctx.engine) as session:
            svc = RegistryService(session, actor="security-server", now=ctx.clock())
            result = management.submit(svc, data)
            session.commit()
            return result

    return _json(await asyncio.to_thread(work), 202)


async def request_state(request: web.Request) -> web.Response:
    ctx = request.app[ADMIN_KEY]
    request_id = request.match_info["request_id"]

    def work() -> dict[str, Any]:
        with Session(ctx.engine) as session:
            svc = RegistryService(session, actor="security-server", now=ctx.clock())
            return management.request_state(svc, request_id)

    return _json(await asyncio.to_thread(work))


_ROUTES: Final[tuple[tuple[str, str, Handler], ...]] = (
    ("GET", "/me", who_am_i),
    ("GET", "/settings", get_settings),
    ("PATCH", "/settings", update_settings),
    ("GET", "/member-classes", list_member_classes),
    ("POST", "/member-classes", create_member_class),
    ("DELETE", "/member-classes/{code}", delete_member_class),
    ("GET", "/members", list_members),
    ("POST", "/members", create_member),
    ("GET", "/members/{member_class}/{member_code}", get_member),
    ("PATCH", "/members/{member_class}/{member_code}", update_member),
    ("DELETE", "/members/{member_class}/{member_code}", delete_member),
    ("POST", "/members/{member_class}/{member_code}/subsystems", create_subsystem),
    ("DELETE", "/members/{member_class}/{member_code}/subsystems/{subsystem}", delete_subsystem),
    ("GET", "/security-servers", list_servers),
    ("POST", "/security-servers", create_server),
    ("GET", "/security-servers/{member_class}/{member_code}/{server_code}", get_server),
    ("PATCH", "/security-servers/{member_class}/{member_code}/{server_code}", update_server),
    ("DELETE", "/security-servers/{member_class}/{member_code}/{server_code}", delete_server),
    ("POST", "/security-servers/{member_class}/{member_code}/{server_code}/auth-certs",
     add_auth_cert),
    ("DELETE",
     "/security-servers/{member_class}/{member_code}/{server_code}/auth-certs/{cert_hash}",
     delete_auth_cert),
    ("POST", "/security-servers/{member_class}/{member_code}/{server_code}/clients", add_client),
    ("PATCH", "/security-servers/{member_class}/{member_code}/{server_code}/clients/"
     "{client_class}/{client_code}/{client_subsystem}", update_client),
    ("DELETE", "/security-servers/{member_class}/{member_code}/{server_code}/clients/"
     "{client_class}/{client_code}/{client_subsystem}", remove_client),
    ("GET", "/global-groups", list_groups),
    ("POST", "/global-groups", create_group),
    ("GET", "/global-groups/{code}", get_group),
    ("DELETE", "/global-groups/{code}", delete_group),
    ("POST", "/global-groups/{code}/members", add_group_member),
    ("DELETE", "/global-groups/{code}/members", remove_group_member),
    ("GET", "/services", list_services),
    ("POST", "/services", create_service),
    ("GET", "/services/{member_class}/{member_code}/{subsystem}/{service_code}", get_service),
    ("PATCH", "/services/{member_class}/{member_code}/{subsystem}/{service_code}",
     update_service),
    ("DELETE", "/services/{member_class}/{member_code}/{subsystem}/{service_code}",
     delete_service),
    ("GET", "/approved-cas", list_cas),
    ("POST", "/approved-cas", add_ca),
    ("DELETE", "/approved-cas/{ca_id}", delete_ca),
    ("GET", "/approved-tsas", list_tsas),
    ("POST", "/approved-tsas", add_tsa),
    ("DELETE", "/approved-tsas/{tsa_id}", delete_tsa),
    ("GET", "/conf-signing-keys", list_conf_keys),
    ("POST", "/conf-signing-keys", add_conf_key),
    ("POST", "/conf-signing-keys/{key_id}/activate", activate_conf_key),
    ("POST", "/conf-signing-keys/{key_id}/retire", retire_conf_key),
    ("GET", "/audit-log", list_audit),
    ("GET", "/management-requests", list_requests),
    ("GET", "/management-requests/{request_id}", get_request),
    ("POST", "/management-requests/{request_id}/approve", _decision("approve")),
    ("POST", "/management-requests/{request_id}/reject", _decision("reject")),
    ("POST", "/management-requests/{request_id}/revoke", _decision("revoke")),
)


def add_routes(app: web.Application, extra: tuple[tuple[str, str, Handler], ...] = ()) -> None:
    """Register the admin routes (and ``extra`` ones, same form) under ``/api/v1``, and the
    gate.  Every route must be an operation of the OpenAPI document."""
    for method, path, handler in (*_ROUTES, *extra):
        if (method, _PREFIX + path) not in _operations():
            raise RuntimeError(f"{method} {path} is not in {OPENAPI_DOCUMENT}")
        app.router.add_route(method, _PREFIX + path, handler)
    app.router.add_post("/management/requests", submit_request)
    app.router.add_get("/management/requests/{request_id}", request_state)
    app.middlewares.append(gate_middleware)
