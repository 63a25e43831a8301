"""The client proxy: where the agency's own information systems call the federation.

Speaks the X-Road Message Protocol for REST (``/r1/...``) to the IS and xchange's
security-server protocol (docs/protocol.md) to provider security servers.  Per request:

  1. parse the request line and headers (identifiers, X-Road headers) -- bad input is
     ``client.*``; nothing of the body is read yet;
  2. global configuration must be in force (else ``global_conf_outdated``);
  3. the client must be registered on this server (else ``unknown_member``), and the
     provider known (else ``unknown_service``);
  4. read the body; build and sign the header part; log the signed request durably (else
     ``logging_failed``);
  5. send it over mutual TLS to a server hosting the provider, pinned to its registered
     auth certificate;
  6. verify the response's signature and its binding to the request, log it, then answer
     the IS with the provider's status, headers and body plus the X-Road response headers.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import aiohttp
from aiohttp import web

from security_server.http import MESSAGE_ID, error_middleware, hide_server_version
from security_server.is_tls import check_is_connection
from security_server.metadata import register_list_clients
from security_server.runtime import RUNTIME, Runtime, make_entry, read_limited
from xchange.errors import (
    BadRequestError,
    ClientProxyError,
    InvalidSignatureError,
    UnknownMemberError,
    XRoadError,
    error_for_code,
)
from xchange.globalconf import GlobalConf, SecurityServerInfo
from xchange.rest import RestRequest, RestResponse, digest_payload, request_hash_of
from xchange.signing import sign_payload, verify_message
from xchange.transport import (
    FRAME_MEDIA_TYPE,
    PEER_PATH,
    SignedMessage,
    decode_frame,
    encode_frame,
)

__all__ = ["create_client_proxy_app"]

log = logging.getLogger(__name__)

_FRAME_OVERHEAD = 2 * 1024 * 1024
"""Room for the header part, signature and OCSP sections around a body of the maximum size."""



def create_client_proxy_app(runtime: Runtime) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware("server.clientproxy.internal_error")],
        client_max_size=runtime.config.max_body_bytes,
    )
    app[RUNTIME] = runtime
    hide_server_version(app)
    app.router.add_route("*", "/r1/{tail:.*}", handle_rest)
    app.router.add_get("/health", handle_health)
    register_list_clients(app)
    return app


async def handle_health(request: web.Request) -> web.Response:
    """For load balancers and operators: 200 while a global configuration is in force."""
    rt = request.app[RUNTIME]
    try:
        conf = rt.conf(rt.clock(), side="client")
    except XRoadError as exc:
        return web.json_response({"status": "unavailable", "reason": exc.code,
                                  "last_error": rt.conf_client.last_error}, status=503)
    return web.json_response({"status": "ok", "server": str(rt.config.server_id),
                              "globalconf_version": conf.version,
                              "globalconf_expires_at": conf.expires_at.isoformat()})


async def handle_rest(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    req = RestRequest.from_is(
        request.method, request.raw_path, request.headers, request.headers.items()
    )
    request[MESSAGE_ID] = req.message_id
    check_is_connection(rt.directory, req.client, request.transport)
    response, body, rhash = await send_request(rt, req, request.read)
    out = web.Response(status=response.status, body=body)
    for name, value in response.headers:
        out.headers.add(name, value)
    out.headers["X-Road-Id"] = req.message_id
    out.headers["X-Road-Client"] = str(req.client)
    out.headers["X-Road-Service"] = str(req.service)
    out.headers["X-Road-Request-Hash"] = rhash
    return out


async def send_request(rt: Runtime, req: RestRequest,
                       read_body: Callable[[], Awaitable[bytes]]) -> tuple[RestResponse, bytes,
                                                                            str]:
    """Steps 2-6 of the module docstring: return the verified response, its body and the
    request hash it is bound to.  The body is read only once the request is admitted."""
    now = rt.clock()
    conf = rt.conf(now, side="client")
    _check_local_client(rt, conf, req)
    identity = rt.identities.get(req.client.member)
    if identity is None:
        raise UnknownMemberError(
            f"this security server holds no signing key for {req.client.member}"
        )
    targets = _provider_servers(conf, req)

    body = await read_body()
    header_part = req.header_part()
    payload = digest_payload(header_part, body)  # the body is hashed once, here
    signature = sign_payload(identity, payload, signed_at=now, nonce=uuid.uuid4().hex)
    await rt.log_message(make_entry(req, "request", "outgoing", header_part, body, signature,
                                    now), side="client")
    answer = await _exchange(rt, targets, encode_frame(SignedMessage(header_part, signature,
                                                                     body)))
    rhash = request_hash_of(payload)
    verify_at = rt.clock()
    try:
        response = _verified_response(conf, req, answer, rhash, verify_at)
    except XRoadError as exc:
        # A response that fails verification is kept as evidence, then refused.
        await rt.log_message(make_entry(req, "response", "incoming", answer.header_part,
                                        answer.body, answer.signature, verify_at,
                                        error_code=exc.code), side="client")
        raise
    await rt.log_message(make_entry(req, "response", "incoming", answer.header_part,
                                    answer.body, answer.signature, verify_at), side="client")
    return response, answer.body, rhash


def _verified_response(conf: GlobalConf, req: RestRequest, answer: SignedMessage, rhash: str,
                       at: datetime) -> RestResponse:
    """The provider's response, signed by the provider's member and bound to ``req``."""
    code = "server.clientproxy.invalid_signature"
    try:
        response = RestResponse.from_header_part(answer.header_part)
    except BadRequestError as exc:
        raise InvalidSignatureError(f"malformed response: {exc.message}", code=code) from exc
    verify_message(answer.signature, answer.header_part, answer.body,
                   expected_signer=req.service.provider, anchors=conf.trust_anchors(), at=at,
                   code=code)
    response.check_binding(req, rhash)
    return response


def _check_local_client(rt: Runtime, conf: GlobalConf, req: RestRequest) -> None:
    own = rt.config.server_id
    if not rt.is_local_client(req.client):
        raise UnknownMemberError(f"client {req.client} is not a client of this security server")
    if not conf.is_registered(req.client):
        raise UnknownMemberError(f"client {req.client} is not registered in the federation")
    if not conf.is_hosted_on(req.client, own):
        raise UnknownMemberError(
            f"client {req.client} is not registered on security server {own}"
        )


def _provider_servers(conf: GlobalConf, req: RestRequest) -> Sequence[SecurityServerInfo]:
    provider = req.service.provider
    if not conf.is_registered(provider):
        raise ClientProxyError(f"service provider {provider} is not registered",
                               code="server.clientproxy.unknown_service")
    servers = list(conf.servers_hosting(provider))
    if req.security_server is not None:
        servers = [s for s in servers if s.id == req.security_server]
    if not servers:
        raise ClientProxyError(f"no security server hosts {provider}",
                               code="server.clientproxy.unknown_service")
    return servers


async def _exchange(rt: Runtime, targets: Sequence[SecurityServerInfo],
                    frame: bytes) -> SignedMessage:
    """Send the frame to the first provider server that accepts a (pinned) TLS connection.

    Another server is tried only when nothing was sent to the previous one (connection or
    TLS refused, certificate not the registered one, connect timeout): once a request may
    have been delivered it is never sent twice.
    """
    timeout = aiohttp.ClientTimeout(total=rt.config.peer_timeout, sock_connect=5)
    last: XRoadError | None = None
    for server in targets:
        session = rt.peer_session(server)
        url = f"https://{server.address}{PEER_PATH}"
        try:
            async with session.post(url, data=frame, ssl=rt.client_tls, timeout=timeout,
                                    headers={"Content-Type": FRAME_MEDIA_TYPE}) as resp:
                data = await read_limited(resp, rt.config.max_body_bytes + _FRAME_OVERHEAD)
                ctype, status = resp.content_type, resp.status
                error_code = resp.headers.get("X-Road-Error")
        except aiohttp.ServerFingerprintMismatch as exc:
            log.warning("%s presented an unregistered certificate: %s", server.id, exc)
            last = ClientProxyError(
                f"security server {server.id} presented a certificate that is not registered",
                code="server.clientproxy.ssl_authentication_failed")
            continue
        except (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError) as exc:
            last = ClientProxyError(f"TLS with security server {server.id} failed: {exc}",
                                    code="server.clientproxy.ssl_authentication_failed")
            continue
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            last = ClientProxyError(
                f"security server {server.id} could not be reached: {type(exc).__name__}",
                code="server.clientproxy.network_error")
            continue
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ClientProxyError(
                f"exchange with security server {server.id} failed after the request was "
                f"sent: {type(exc).__name__}", code="server.clientproxy.network_error") from exc
        if data is None:
            raise ClientProxyError(f"security server {server.id} sent an over-long response",
                                   code="server.clientproxy.network_error")
        if error_code is not None or ctype == "application/json":
            raise _peer_error(status, data, error_code)
        if status != 200 or ctype != FRAME_MEDIA_TYPE:
            raise ClientProxyError(
                f"security server {server.id} answered HTTP {status} {ctype}",
                code="server.clientproxy.network_error")
        return decode_frame(data, code="server.clientproxy.invalid_signature")
    assert last is not None
    raise last


def _peer_error(status: int, data: bytes, header_code: str | None) -> XRoadError:
    """An error the provider security server reported; passed on to the IS as it is."""
    try:
        doc = json.loads(data)
        code, message, detail = doc["type"], str(doc["message"]), doc.get("detail")
        if not isinstance(code, str):
            raise TypeError(code)
    except (ValueError, KeyError, TypeError):
        code = header_code or "server.serverproxy.internal_error"
        message, detail = f"provider security server answered HTTP {status}", None
    return error_for_code(code, message, None if detail is None else str(detail))

