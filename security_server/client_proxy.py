"""The client proxy: where the agency's own information systems call the federation.

Speaks the X-Road Message Protocol for REST (``/r1/...``) and the X-Road Message Protocol 4.0
(SOAP, a POST on any other path, also in absolute form) to the IS, and xchange's
security-server protocol (docs/protocol.md) to provider security servers.  Per request:

  1. parse the request line and headers (identifiers, X-Road headers) -- bad input is
     ``client.*``; nothing of the body is read yet.  For SOAP the X-Road headers are in the
     envelope: the message (at most ``max_body_bytes``) is spooled and its envelope read
     and checked first (security_server.body.soap_message, xchange.soap.envelope: a spooled
     one piece by piece, of a multipart message only the SOAP part), and errors are
     answered as SOAP faults;
  2. global configuration must be in force (else ``global_conf_outdated``);
  3. the client must be registered on this server (else ``unknown_member``), and the
     provider known (else ``unknown_service``);
  4. this server's own certificates must have good, fresh OCSP responses to staple (else
     ``cert_validation``); read the body as it arrives, hashing it, into memory or (over
     1 MiB) a spool file (security_server.body); build the header part and sign it with the
     body's digest; log the signed request durably (else ``logging_failed``);
  5. send it over mutual TLS to a server hosting the provider, pinned to its registered
     auth certificate, but only once that certificate is known to be good: the status last
     stapled by that server, if still fresh, or else its current OCSP response fetched over
     the pinned connection first (``GET /xchange/v1/ocsp``);
  6. read the response frame to its end, spooling its body; verify the response's
     signature, the OCSP responses stapled to it (the provider member's signing
     certificate and the TLS certificate the connection presented) and its binding to the
     request, log it, then answer the IS with the provider's status, headers and body plus
     the X-Road response headers.  A SOAP answer that is not a fault must carry the
     ``requestHash`` of the SOAP part sent and the request's X-Road header fields.

Bodies stream: the request body is sent on from its spool and the response body is passed
to the IS from its own, so no body is ever held whole in memory once it is over 1 MiB.  A
SOAP request's envelope is parsed piece by piece from its spool (of a multipart message only
the SOAP part is read; what is kept until the answer is checked is its requestHash), a SOAP
answer is checked piece by piece from its spool (xchange.soap.envelope.check_response).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from security_server.body import Body, SoapMessage, inline, soap_message, xml_lane
from security_server.http import error_renderer, soap_fault, unexpected
from security_server.httpclient import (
    ConnectError,
    HttpClientError,
    PinMismatchError,
    Pool,
    Response,
    TlsError,
)
from security_server.httpserver import HttpServer, ServerRequest, ServerResponse
from security_server.is_tls import check_is_connection
from security_server.metadata import list_clients
from security_server.runtime import (
    ProviderStatus,
    Runtime,
    certificate_of,
    frame_payload,
    make_entry,
)
from xchange.certificates import cert_sha256
from xchange.errors import (
    BadRequestError,
    CertificateValidationError,
    ClientProxyError,
    InvalidSignatureError,
    UnknownMemberError,
    XRoadError,
    error_for_code,
)
from xchange.globalconf import GlobalConf, SecurityServerInfo
from xchange.messages import Request
from xchange.rest import (
    RestRequest,
    RestResponse,
    digest_payload,
    filter_headers,
    request_hash_of,
)
from xchange.signing import verify_message
from xchange.soap.envelope import (
    SoapRequest,
    check_response,
    parse_hashed_request,
    parse_request,
)
from xchange.transport import (
    FRAME_MEDIA_TYPE,
    OCSP_MEDIA_TYPE,
    PEER_OCSP_PATH,
    PEER_PATH,
    FrameHead,
    encode_frame_head,
)

__all__ = ["create_client_proxy"]

log = logging.getLogger(__name__)

_ONE_WRITE = 1024 * 1024
"""A frame up to this size (its body in memory) is sent as one piece of bytes."""
_MAX_ERROR = 1024 * 1024
"""The most an error answer of the provider server may take."""
_MAX_OCSP = 64 * 1024
_CODE_BAD = "client.bad_request"
_CODE_CERT = "server.clientproxy.cert_validation"
_CODE_INTERNAL = "server.clientproxy.internal_error"
_JSON = "application/json; charset=utf-8"


def create_client_proxy(runtime: Runtime) -> HttpServer:
    """The client proxy on this project's own HTTP/1.1 server (security_server.httpserver),
    for the plain HTTP port and the HTTPS port alike (a request knows which it came over).

    Routes: any method on ``/r1/...`` is a REST message; ``GET /health`` and
    ``GET /listClients`` are answered here; a POST on any other path is a SOAP message;
    anything else is ``client.unsupported_method`` (405)."""

    async def route(request: ServerRequest) -> ServerResponse:
        path, method = request.path, request.method
        if path.startswith("/r1/"):
            return await handle_rest(runtime, request)
        if method == "POST":
            return await handle_soap(runtime, request)
        if method in ("GET", "HEAD"):
            if path == "/health":
                return health(runtime)
            if path == "/listClients":
                return list_clients(runtime.conf(runtime.clock(), side="client"), request)
        raise XRoadError(f"{method[:20]} is not allowed on {path[:200]}",
                         code="client.unsupported_method")

    return HttpServer(route, error_renderer(_CODE_INTERNAL), bad_request_code=_CODE_BAD)


def health(rt: Runtime) -> ServerResponse:
    """For load balancers and operators: 200 while a global configuration is in force."""
    try:
        conf = rt.conf(rt.clock(), side="client")
    except XRoadError as exc:
        return ServerResponse(503, [("Content-Type", _JSON)], json.dumps(
            {"status": "unavailable", "reason": exc.code,
             "last_error": rt.conf_client.last_error}).encode())
    return ServerResponse(200, [("Content-Type", _JSON)], json.dumps(
        {"status": "ok", "server": str(rt.config.server_id),
         "globalconf_version": conf.version,
         "globalconf_expires_at": conf.expires_at.isoformat()}).encode())


async def handle_rest(rt: Runtime, request: ServerRequest) -> ServerResponse:
    req = RestRequest.from_is(request.method, request.target, request.headers)
    request.message_id = req.message_id
    check_is_connection(rt.directory, req.client, tls=request.tls,
                        peer_certificate=request.peer_certificate)
    limit = rt.config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)  # refused before a byte of it is read

    async def read_body() -> Body:
        return await rt.spool(request.body(), limit=limit, too_large=_too_large(limit))

    response, body, rhash = await send_request(rt, req, read_body)
    # The provider's fields, but never its framing or X-Road fields (ours follow).
    headers = [*filter_headers(response.headers), ("X-Road-Id", req.message_id),
               ("X-Road-Client", str(req.client)), ("X-Road-Service", str(req.service)),
               ("X-Road-Request-Hash", rhash)]
    return _answer(response.status, headers, body)


def _answer(status: int, headers: list[tuple[str, str]], body: Body) -> ServerResponse:
    """An answer with ``body``: in memory in one write, spooled streamed from the spool;
    closed once sent."""
    if body.data is not None:
        return ServerResponse(status, headers, body.data, close=body.close)
    return ServerResponse(status, headers, stream=(body.size, body.stream()),
                          close=body.close)


def _too_large(limit: int) -> XRoadError:
    return XRoadError(f"the message body exceeds {limit} bytes",
                      code="client.payload_too_large")


async def handle_soap(rt: Runtime, request: ServerRequest) -> ServerResponse:
    """An X-Road SOAP request (PR-MESS), on any path: answered with the provider's SOAP
    message, or a SOAP fault -- whatever went wrong, never a REST error."""
    try:
        return await _soap(rt, request)
    except XRoadError as exc:
        log.info("%s %s -> %s: %s", request.method, request.path[:200], exc.code, exc.message)
        return soap_fault(exc)
    except Exception as exc:
        error = unexpected(exc, _CODE_INTERNAL)
        return soap_fault(error, incident=error.detail)


async def _soap(rt: Runtime, request: ServerRequest) -> ServerResponse:
    limit = rt.config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    ctype = request.header("Content-Type")
    # Spooled as it arrives; of a multipart message only the SOAP part is read.
    body = await rt.spool(request.body(), limit=limit, too_large=_too_large(limit))
    try:
        req, message = await read_soap_request(body, ctype, request.header("SOAPAction"),
                                               max_bytes=limit)
        request.message_id = req.message_id
        check_is_connection(rt.directory, req.client, tls=request.tls,
                            peer_certificate=request.peer_certificate)

        async def read_body() -> Body:
            return body

        response, answer, _ = await send_request(rt, req, read_body, message)
    finally:
        body.close()
    ctype = dict(response.headers).get("content-type", "text/xml; charset=UTF-8")
    return _answer(response.status, [("Content-Type", ctype)], answer)


async def read_soap_request(body: Body, content_type: str | None, soap_action: str | None,
                            *, max_bytes: int) -> tuple[SoapRequest, SoapMessage]:
    """Parse and check an IS's SOAP message (step 1), and keep what its answer is checked
    against: the message in memory, or the requestHash of a spooled one -- a ``text/xml``
    message's taken as it arrived, a multipart message's SOAP part's taken in the same pass
    that parses it (read once from the spool; the attachments not at all)."""
    message = soap_message(body, content_type)
    if message.data is None and message.request_hash is None:
        req, rhash = await message.run(parse_hashed_request, message.pieces(), content_type,
                                       soap_action, max_bytes=max_bytes)
        return req, dataclasses.replace(message, request_hash=rhash)
    req = await message.run(parse_request, message.pieces(), content_type, soap_action,
                            max_bytes=max_bytes)
    return req, message


async def send_request(rt: Runtime, req: Request, read_body: Callable[[], Awaitable[Body]],
                       soap: SoapMessage | None = None) -> tuple[RestResponse, Body, str]:
    """Steps 2-6 of the module docstring: return the verified response, its body and the
    request hash it is bound to.  The body is read only once the request is admitted; the
    caller closes the response body (:meth:`Body.close`) once it has passed it on.  A SOAP
    request comes with what was read of its message (``soap``: the message in memory, or
    the requestHash of a spooled one), which the answer is checked against."""
    now = rt.clock()
    conf = rt.conf(now, side="client")
    _check_local_client(rt, conf, req)
    identity = rt.identities.get(req.client.member)
    if identity is None:
        raise UnknownMemberError(
            f"this security server holds no signing key for {req.client.member}"
        )
    targets = _provider_servers(conf, req)
    staples = rt.own_staples(identity, conf, now, code=_CODE_CERT)

    body = await read_body()
    try:
        header_part = req.header_part()
        payload = digest_payload(header_part, body.digest)  # hashed as it arrived
        head = await rt.sign_and_log(
            identity, payload, header_part, staples,
            lambda head: make_entry(req, "request", "outgoing", head, body, now),
            side="client", signed_at=now, nonce=secrets.token_hex(16))
        answer = await _exchange(rt, conf, targets, head, body)
    finally:
        body.close()
    try:
        rhash = request_hash_of(payload)
        verify_at = rt.clock()
        try:
            response = await _verified_response(rt, conf, req, soap, answer, rhash,
                                                verify_at)
        except XRoadError as exc:
            # A response that fails verification is kept as evidence, then refused.
            await rt.log_message(make_entry(req, "response", "incoming", answer.head,
                                            answer.body, verify_at, error_code=exc.code),
                                 side="client")
            raise
        await rt.log_message(make_entry(req, "response", "incoming", answer.head, answer.body,
                                        verify_at), side="client")
    except BaseException:
        answer.body.close()
        raise
    return response, answer.body, rhash


@dataclass(frozen=True, slots=True)
class _Answer:
    server: SecurityServerInfo
    peer_cert: x509.Certificate
    """The TLS certificate the provider server presented (on its latest connection)."""
    head: FrameHead
    body: Body


async def _verified_response(rt: Runtime, conf: GlobalConf, req: Request,
                             body: SoapMessage | None,
                             answer: _Answer, rhash: str, at: datetime) -> RestResponse:
    """The provider's response, signed by the provider's member with certificates proven
    good, and bound to ``req`` (whose body was ``body``, kept for a SOAP request)."""
    code = "server.clientproxy.invalid_signature"
    msg = answer.head
    try:
        response = RestResponse.from_header_part(msg.header_part)
    except BadRequestError as exc:
        raise InvalidSignatureError(f"malformed response: {exc.message}", code=code) from exc
    verified = verify_message(msg.signature, msg.header_part, answer.body.digest,
                              expected_signer=req.service.provider,
                              anchors=conf.trust_anchors(), at=at, code=code)
    _learn_provider_status(rt, conf, answer.server, answer.peer_cert, msg.ocsp_responses, at)
    rt.check_peer_signer(msg.ocsp_responses, verified.chain, conf, at, code=_CODE_CERT)
    response.check_binding(req, rhash)
    if isinstance(req, SoapRequest):
        assert body is not None
        # Read piece by piece from the spool (off the event loop if it is there), never
        # whole: only its Header and the name of its Body's element are kept.
        data = answer.body.data
        await (inline if data is not None else xml_lane())(
            check_response, req, body.data, data if data is not None else answer.body.chunks(),
            dict(response.headers).get("content-type"), max_bytes=rt.config.max_body_bytes,
            request_hash=body.request_hash)
    return response


def _learn_provider_status(rt: Runtime, conf: GlobalConf, server: SecurityServerInfo,
                           cert: x509.Certificate, staples: Sequence[bytes], at: datetime, *,
                           asked: bool = False) -> None:
    """Remember the status of the provider server's TLS certificate from what it stapled (or
    answered, if ``asked``), and require it good.

    The time of the check is renewed when we asked, or when the staple is newer than what we
    knew: a server that keeps stapling an old response is asked again after one OCSP refresh
    interval, so a revocation is noticed within one refresh even if that server hides it.
    """
    status = rt.peer_auth_status(tuple(staples), cert, conf, at, code=_CODE_CERT)
    known = rt.provider_auth.get(server.id)
    cert_hash = cert_sha256(cert)
    if (asked or known is None or known.cert_hash != cert_hash
            or status.this_update > known.status.this_update):
        rt.provider_auth[server.id] = ProviderStatus(cert_hash, status, checked_at=at)
    status.require_good(code=_CODE_CERT)


def _known_good(rt: Runtime, conf: GlobalConf, server: SecurityServerInfo,
                at: datetime) -> bool:
    """Is the server's (still registered) certificate known good by a check no older than
    one OCSP refresh interval and a status still fresh?  A known revoked or unknown status
    refuses the server outright, without contacting it."""
    known = rt.provider_auth.get(server.id)
    presented = rt.presented_certificate(server.id)
    if (known is None or presented is None or known.cert_hash != cert_sha256(presented)
            or known.cert_hash not in server.auth_cert_hashes
            or (at - known.checked_at).total_seconds() > rt.config.ocsp_refresh_seconds):
        return False
    try:
        known.status.check_fresh(at=at, max_age=rt.ocsp_max_age(conf), code=_CODE_CERT)
    except CertificateValidationError:
        return False
    known.status.require_good(code=_CODE_CERT)
    return True


def _check_local_client(rt: Runtime, conf: GlobalConf, req: Request) -> None:
    own = rt.config.server_id
    if not rt.is_local_client(req.client):
        raise UnknownMemberError(f"client {req.client} is not a client of this security server")
    if not conf.is_registered(req.client):
        raise UnknownMemberError(f"client {req.client} is not registered in the federation")
    if not conf.is_hosted_on(req.client, own):
        raise UnknownMemberError(
            f"client {req.client} is not registered on security server {own}"
        )


def _provider_servers(conf: GlobalConf, req: Request) -> Sequence[SecurityServerInfo]:
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


async def _exchange(rt: Runtime, conf: GlobalConf, targets: Sequence[SecurityServerInfo],
                    head: FrameHead, body: Body) -> _Answer:
    """Send the frame to the first provider server that accepts a (pinned) TLS connection and
    whose certificate is known good.

    Another server is tried only when nothing was sent to the previous one (connection or
    TLS refused, certificate not the registered one or not good, connect timeout): once a
    request may have been delivered it is never sent twice.
    """
    timeout = rt.config.peer_timeout
    last: XRoadError | None = None
    for server in targets:
        pool = rt.peer_pool(server)
        try:
            if not _known_good(rt, conf, server, rt.clock()):
                await _fetch_provider_status(rt, conf, server, pool, timeout)
        except CertificateValidationError as exc:
            last = exc
            continue
        except (HttpClientError, TimeoutError) as exc:  # only a status query was sent
            last = _not_delivered(server, exc)
            continue
        data: bytes | AsyncIterator[bytes]
        size, data = frame_payload(head, body)  # a new stream for each server tried
        if body.data is not None and size <= _ONE_WRITE:  # small: one write
            data = encode_frame_head(head) + body.data
        try:
            async with await pool.request("POST", PEER_PATH, _FRAME_HEADERS, data,
                                          content_length=size, timeout=timeout) as resp:
                return await _read_answer(rt, server, resp)
        except ConnectError as exc:  # nothing was sent
            last = _not_delivered(server, exc)
            continue
        except (HttpClientError, TimeoutError) as exc:
            raise ClientProxyError(
                f"exchange with security server {server.id} failed after the request was "
                f"sent: {type(exc).__name__}", code="server.clientproxy.network_error") from exc
    assert last is not None
    raise last


_FRAME_HEADERS = (("Content-Type", FRAME_MEDIA_TYPE),)


async def _read_answer(rt: Runtime, server: SecurityServerInfo, resp: Response) -> _Answer:
    """The provider server's answer: a signed response frame, read to its end with the body
    spooled, or the error it reported."""
    ctype, status = resp.content_type, resp.status
    error_code = resp.header("X-Road-Error")
    over_long = ClientProxyError(f"security server {server.id} sent an over-long response",
                                 code="server.clientproxy.network_error")
    if error_code is not None or ctype == "application/json":
        data = await resp.read(_MAX_ERROR)
        if data is None:
            raise over_long
        raise _peer_error(status, data, error_code)
    der = resp.peer_certificate  # of the connection that carried this answer
    peer_cert = None if der is None else certificate_of(der)
    if status != 200 or ctype != FRAME_MEDIA_TYPE or peer_cert is None:
        raise ClientProxyError(
            f"security server {server.id} answered HTTP {status} {ctype}",
            code="server.clientproxy.network_error")
    head, body = await rt.read_frame(resp.chunks(), limit=rt.config.max_body_bytes,
                                     code="server.clientproxy.invalid_signature",
                                     too_large=over_long)
    return _Answer(server, peer_cert, head, body)


def _not_delivered(server: SecurityServerInfo, exc: BaseException) -> XRoadError:
    """A failure before the request was sent: another server may be tried."""
    if isinstance(exc, PinMismatchError):
        log.warning("%s presented an unregistered certificate: %s", server.id, exc)
        return ClientProxyError(
            f"security server {server.id} presented a certificate that is not registered",
            code="server.clientproxy.ssl_authentication_failed")
    if isinstance(exc, TlsError):
        return ClientProxyError(f"TLS with security server {server.id} failed: {exc}",
                                code="server.clientproxy.ssl_authentication_failed")
    return ClientProxyError(
        f"security server {server.id} could not be reached: {type(exc).__name__}",
        code="server.clientproxy.network_error")


async def _fetch_provider_status(rt: Runtime, conf: GlobalConf, server: SecurityServerInfo,
                                 pool: Pool, timeout: float) -> None:
    """Ask the provider server for its TLS certificate's OCSP response over the pinned
    connection, verify it against the certificate that connection presented, and require
    it good.  Nothing of the message has been sent."""
    async with await pool.request("GET", PEER_OCSP_PATH, timeout=timeout) as resp:
        data = await resp.read(_MAX_OCSP)
        ctype, status = resp.content_type, resp.status
        error_code = resp.header("X-Road-Error")
        der = resp.peer_certificate  # the certificate the status must be of
    peer_cert = None if der is None else certificate_of(der)
    if data is None or peer_cert is None:
        raise CertificateValidationError(
            f"security server {server.id} sent no usable OCSP response", code=_CODE_CERT)
    if error_code is not None or ctype == "application/json":
        raise _peer_error(status, data, error_code)  # e.g. it does not know us
    if status != 200 or ctype != OCSP_MEDIA_TYPE:
        raise CertificateValidationError(
            f"security server {server.id} answered its OCSP status query with HTTP {status} "
            f"{ctype}", code=_CODE_CERT)
    _learn_provider_status(rt, conf, server, peer_cert, (data,), rt.clock(), asked=True)


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

