"""The server proxy: where other security servers deliver requests for services hosted here.

Listens on mutual TLS.  Per request (docs/protocol.md, "Provider side"):

  1. global configuration must be in force;
  2. the peer's TLS certificate must hash to an auth certificate registered for some
     security server, and that server must host the request's client;
  3. the frame and header part must parse; the signature must verify and be the client's
     member's -- a request that fails here is logged as rejected, then refused;
  4. the OCSP responses stapled to the request must prove the signing certificate and the
     calling server's TLS certificate good and fresh; the provider must be hosted here and
     the service configured; the client must have access (deny by default); the signature
     must be fresh and its one-time value unused -- a signed request refused here is logged
     as rejected too, with the code it was given;
  5. log the request durably, call the provider system with the service's timeout,
     sign the response bound to the request hash, staple this server's own OCSP responses,
     log it durably, and return it.

Bodies stream (docs/protocol.md, "Frame"): the request frame is read to its end with its
body spooled and hashed as it arrives (security_server.body) -- nothing reaches the provider
system before the signature over that digest verified and the request is logged; the body
is then sent on from the spool, the provider system's response is spooled the same way, and
the response frame is written from it.

A SOAP request (its header part's type says so) takes the same steps; in step 4 its
envelope must also yield exactly its signed header part and its service must be a WSDL one,
and in step 5 the provider system gets the message as the IS sent it, with only
``Content-Type`` and ``SOAPAction``, and its answer must copy the X-Road header fields (a
fault passes untouched) and gets ``requestHash`` -- checked and stamped as it arrives, on
its way into the spool (xchange.soap.envelope.ResponseStream), so that the signature covers
exactly the bytes sent and a large answer is never held whole.

``GET /xchange/v1/ocsp`` answers, to registered peers, the OCSP response this server staples
for its own TLS certificate: a consumer asks before its first request (and whenever the
status it knows is stale), so it never sends a message to a server whose certificate was
revoked.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from functools import lru_cache

from cryptography import x509

from security_server.body import Body, Runner, SoapMessage, inline, soap_message, xml_lane
from security_server.directory import LocalService
from security_server.http import error_renderer
from security_server.httpclient import HttpClientError
from security_server.httpserver import HttpServer, ServerRequest, ServerResponse
from security_server.runtime import (
    Runtime,
    frame_payload,
    make_entry,
)
from xchange.errors import (
    BadRequestError,
    InvalidSignatureError,
    ServerProxyError,
    ServiceFailedError,
    UnknownServiceError,
    XRoadError,
)
from xchange.globalconf import GlobalConf, SecurityServerInfo
from xchange.messages import Request, request_from_header_part
from xchange.rest import (
    RestRequest,
    RestResponse,
    digest_payload,
    filter_headers,
    request_hash_of,
)
from xchange.signing import VerifiedSignature, verify_payload
from xchange.soap.envelope import (
    RequestEcho,
    ResponseStream,
    SoapRequest,
    check_request_body,
    stamp_response,
)
from xchange.transport import (
    FRAME_MEDIA_TYPE,
    OCSP_MEDIA_TYPE,
    PEER_OCSP_PATH,
    PEER_PATH,
    FrameHead,
    encode_frame_head,
)

__all__ = ["create_server_proxy"]

log = logging.getLogger(__name__)

_CODE_BAD = "server.serverproxy.bad_request"
_CODE_CERT = "server.serverproxy.cert_validation"


def create_server_proxy(runtime: Runtime) -> HttpServer:
    """The server proxy: its two endpoints on this project's own HTTP/1.1 server."""

    async def route(request: ServerRequest) -> ServerResponse:
        if request.path == PEER_PATH:
            _allow(request, "POST")
            return await handle_message(runtime, request)
        if request.path == PEER_OCSP_PATH:
            _allow(request, "GET")
            return await handle_ocsp(runtime, request)
        raise BadRequestError(f"no such endpoint: {request.path[:100]}", code=_CODE_BAD)

    return HttpServer(route, error_renderer("server.serverproxy.internal_error"),
                      bad_request_code=_CODE_BAD)


def _allow(request: ServerRequest, method: str) -> None:
    if request.method != method:
        raise XRoadError(f"{request.method[:20]} is not allowed on {request.path}",
                         code="client.unsupported_method")


async def handle_message(rt: Runtime, request: ServerRequest) -> ServerResponse:
    now = rt.clock()
    conf = rt.conf(now, side="server")                                          # 1.
    der = request.peer_certificate
    peer = _authenticate_peer(conf, der)                                        # 2.
    assert der is not None  # _authenticate_peer refuses a connection without one
    limit = rt.config.max_body_bytes
    too_large = XRoadError(f"the message body exceeds {limit} bytes",
                           code="client.payload_too_large")
    head, body = await rt.read_frame(request.body(), limit=limit,                # 3.
                                     code=_CODE_BAD, too_large=too_large)
    try:
        req = request_from_header_part(head.header_part)
        request.message_id = req.message_id
        answer, answer_body = await serve_request(rt, conf, peer, _certificate(der), req, head,
                                                  body, now)
    finally:
        body.close()
    headers = [("Content-Type", FRAME_MEDIA_TYPE)]
    if answer_body.data is not None:  # in memory: one write, as any answer
        try:
            return ServerResponse(200, headers, encode_frame_head(answer) + answer_body.data)
        finally:
            answer_body.close()
    try:
        size, frame = frame_payload(answer, answer_body)
    except BaseException:
        answer_body.close()
        raise
    return ServerResponse(200, headers, stream=(size, frame), close=answer_body.close)


async def handle_ocsp(rt: Runtime, request: ServerRequest) -> ServerResponse:
    """This server's latest fresh OCSP response for its own TLS certificate -- also when it
    says revoked: the peer must learn that, and it refuses to send."""
    now = rt.clock()
    conf = rt.conf(now, side="server")
    _authenticate_peer(conf, request.peer_certificate)
    status = rt.own_certs.current(rt.auth_certificate, at=now, max_age=rt.ocsp_max_age(conf),
                                  code=_CODE_CERT)
    return ServerResponse(200, [("Content-Type", OCSP_MEDIA_TYPE)], status.der)


@lru_cache(maxsize=256)
def _certificate(der: bytes) -> x509.Certificate:
    """The peer's TLS certificate (already accepted by the TLS layer and registered)."""
    return x509.load_der_x509_certificate(der)


async def serve_request(rt: Runtime, conf: GlobalConf, peer: SecurityServerInfo,
                        peer_cert: x509.Certificate, req: Request, head: FrameHead,
                        body: Body, now: datetime) -> tuple[FrameHead, Body]:
    """Steps 3-5 of the module docstring for a parsed request (its body complete and hashed);
    return the signed response and its body, which the caller closes once sent."""
    if not conf.is_hosted_on(req.client, peer.id):
        raise ServerProxyError(
            f"client {req.client} is not registered on the calling server {peer.id}",
            code="server.serverproxy.ssl_authentication_failed",
        )
    payload = digest_payload(head.header_part, body.digest)  # hashed as it arrived
    verified = await _verify_request(rt, conf, req, head, body, payload, now)
    # Of a SOAP message, its envelope is parsed (security_server.body.soap_message: a spooled
    # one piece by piece, its attachments unread); REST bodies stream.
    message = soap_message(body, req.content_type) if isinstance(req, SoapRequest) else None
    try:
        service, echo = _admit(rt, conf, req, head, message, verified, peer_cert, now)  # 4.
        if isinstance(req, SoapRequest) and message is not None and message.data is None:
            # a spooled envelope: checked piece by piece (a multipart message's SOAP part,
            # hashed as it passes), off the event loop
            echo = await message.run(check_request_body, req, message.pieces(),
                                     max_bytes=rt.config.max_body_bytes,
                                     request_hash=message.request_hash)
    except XRoadError as exc:
        # Evidence: a signed request that was refused is logged, with the reason.
        await rt.log_message(make_entry(req, "request", "incoming", head, body, now,
                                        error_code=exc.code),
                             side="server")
        raise
    assert verified.nonce is not None  # _admit refuses requests without one
    try:
        await rt.log_message(make_entry(req, "request", "incoming", head, body, now),
                             side="server")                                    # 5.
    except XRoadError:
        rt.replay.forget(str(req.client), verified.nonce)  # not passed on: may be retried
        raise
    identity = rt.identities.get(req.service.provider.member)
    if identity is None:
        raise ServerProxyError(f"no signing key for provider {req.service.provider.member}")
    staples = rt.own_staples(identity, conf, now, code=_CODE_CERT)
    if service.local_handler is not None:  # a metadata service: this server answers
        status, headers, data = await service.local_handler(req, message, conf)
        if echo is not None:  # its Header gets the requestHash, as any answer's
            headers = _soap_headers(headers)
            data = stamp_response(echo, data, dict(headers).get("content-type"),
                                  max_bytes=rt.config.max_body_bytes)
        answer = Body.of(data)
    else:
        # A SOAP answer is checked and stamped as it arrives (xchange.soap.envelope.
        # ResponseStream); what is signed, logged and sent is what that makes of it.
        status, headers, answer = await _call_provider(rt, service, req, body, echo)
    try:
        response = RestResponse(
            message_id=req.message_id, client=req.client, service=req.service,
            request_hash=request_hash_of(payload), status=status, headers=headers,
        )
        header_part = response.header_part()
        signed = await rt.sign_and_log(
            identity, digest_payload(header_part, answer.digest), header_part, staples,
            lambda head: make_entry(req, "response", "outgoing", head, answer, rt.clock()),
            side="server")
    except BaseException:
        answer.close()
        raise
    return signed, answer


def _authenticate_peer(conf: GlobalConf, der: bytes | None) -> SecurityServerInfo:
    peer = None if der is None else conf.server_by_auth_cert_hash(hashlib.sha256(der).hexdigest())
    if peer is None:
        raise ServerProxyError(
            "the TLS client certificate is not registered for any security server",
            code="server.serverproxy.ssl_authentication_failed",
        )
    return peer


async def _verify_request(rt: Runtime, conf: GlobalConf, req: Request,
                          head: FrameHead, body: Body, payload: bytes,
                          now: datetime) -> VerifiedSignature:
    try:
        return verify_payload(head.signature, payload, expected_signer=req.client,
                              anchors=conf.trust_anchors(), at=now,
                              code="server.serverproxy.invalid_signature")
    except InvalidSignatureError as exc:
        # Evidence first: the refused request is logged as rejected, then refused.
        await rt.log_message(make_entry(req, "request", "incoming", head, body, now,
                                        error_code=exc.code),
                             side="server")
        raise


def _admit(rt: Runtime, conf: GlobalConf, req: Request, msg: FrameHead,
           message: SoapMessage | None, verified: VerifiedSignature, peer_cert: x509.Certificate,
           now: datetime) -> tuple[LocalService, RequestEcho | None]:
    """Decide whether a verified request may pass: certificates good, hosted provider, known
    service, access right, fresh signature, first use of its one-time value.  Of a SOAP
    request in memory, also what its answer must echo."""
    rt.check_peer_signer(msg.ocsp_responses, verified.chain, conf, now, code=_CODE_CERT)
    rt.peer_auth_status(msg.ocsp_responses, peer_cert, conf, now,
                        code=_CODE_CERT).require_good(code=_CODE_CERT)
    service = _local_service(rt, conf, req)
    echo = None
    if isinstance(req, SoapRequest):
        assert message is not None
        if message.data is not None:  # else checked by the caller, off the event loop
            echo = check_request_body(req, message.data, max_bytes=rt.config.max_body_bytes)
    rt.directory.check_access(req.client, req.service, req.method, req.path,
                              conf.members_of_group, soap=isinstance(req, SoapRequest))
    if verified.signed_at is None or verified.nonce is None:
        raise ServerProxyError("request signature lacks iat or jti",
                               code="server.serverproxy.bad_request")
    rt.replay.check_fresh(verified.signed_at, now)
    rt.replay.accept(str(req.client), verified.nonce, now)
    return service, echo


def _local_service(rt: Runtime, conf: GlobalConf, req: Request) -> LocalService:
    provider = req.service.provider
    own = rt.config.server_id
    if not rt.is_local_client(provider) or not conf.is_hosted_on(provider, own):
        raise ServerProxyError(f"{provider} is not hosted on security server {own}",
                               code="server.serverproxy.unknown_member")
    service = rt.directory.service(req.service)
    if service is None:
        raise UnknownServiceError(f"service {req.service} is not provided here")
    if not service.enabled:
        raise ServerProxyError(f"service {req.service} is disabled",
                               code="server.serverproxy.service_disabled")
    if (service.kind == "WSDL") != isinstance(req, SoapRequest) and service.kind != "METADATA":
        wanted = "SOAP" if service.kind == "WSDL" else "REST"
        raise UnknownServiceError(f"service {req.service} is called with {wanted} only")
    return service


_PASS_TO_PROVIDER = ("X-Road-Client", "X-Road-Service", "X-Road-Id", "X-Road-UserId",
                     "X-Road-Issue")


def _rest_target(service: LocalService, req: RestRequest) -> tuple[str, list[tuple[str, str]]]:
    # The service's base URL, then the request's own path (if any) and query, as received.
    base_url = service.url
    url = (base_url.rstrip("/") + req.path if req.path else base_url) + (
        f"?{req.query}" if req.query else ""
    )
    headers = [(n, v) for n, v in req.headers]
    xroad = dict(zip(_PASS_TO_PROVIDER, (str(req.client), str(req.service), req.message_id,
                                         req.user_id, req.issue), strict=True))
    headers += [(n, v) for n, v in xroad.items() if v is not None]
    return url, headers


def _soap_target(service: LocalService, req: SoapRequest) -> tuple[str, list[tuple[str, str]]]:
    # The service's URL as it is; only Content-Type and SOAPAction cross (PR-MESS 2.2).
    headers = [("Content-Type", req.content_type)]
    if req.soap_action is not None:
        headers.append(("SOAPAction", req.soap_action))
    return service.url, headers


def _soap_headers(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Of a SOAP answer's HTTP headers, only Content-Type crosses (PR-MESS 2.2)."""
    return tuple((n, v) for n, v in headers if n == "content-type")


async def _call_provider(rt: Runtime, service: LocalService, req: Request, body: Body,
                         echo: RequestEcho | None
                         ) -> tuple[int, tuple[tuple[str, str], ...], Body]:
    """Call the provider system; its answer is spooled as it arrives -- a SOAP answer
    (``echo`` given) checked and stamped on the way (:func:`_stamped`)."""
    assert rt.provider_client is not None
    timeout = service.timeout
    url, headers = (_soap_target(service, req) if isinstance(req, SoapRequest)
                    else _rest_target(service, req))
    data: bytes | AsyncIterator[bytes] | None = body.data
    if data is None:  # spooled: sent on from the spool, with its length
        data = body.stream()
    elif not data and req.method in _NO_BODY:
        data = None  # no body, and no Content-Length: 0 either
    limit = rt.config.max_body_bytes
    pins: frozenset[str] = frozenset()
    if service.tls_verify and url[:8].lower() == "https://":
        # The provider system's certificates registered for its subsystem, if any, are
        # the trust (as the information systems' are the other way); else the system's.
        provider = rt.directory.snapshot().clients.get(req.service.provider)
        pins = provider.cert_hashes if provider is not None else pins
    try:
        pool, target = rt.provider_client.pool(
            url, unsafe_no_tls_verify=not service.tls_verify, pins=pins)
    except ValueError as exc:
        raise ServiceFailedError(f"provider system cannot be called at {url!r}") from exc
    try:
        async with await pool.request(req.method, target, headers, data,
                                      content_length=body.size, timeout=timeout) as resp:
            too_large = ServiceFailedError(f"provider system's response exceeds {limit} bytes")
            if resp.content_length is not None and resp.content_length > limit:
                raise too_large
            answer_headers = filter_headers(resp.headers)
            chunks: AsyncIterator[bytes] = resp.chunks()
            if echo is not None:
                answer_headers = _soap_headers(answer_headers)
                chunks = _stamped(chunks, dict(answer_headers).get("content-type"), echo,
                                  limit=limit, too_large=too_large,
                                  small=resp.content_length is not None
                                  and resp.content_length <= _INLINE)
            answer = await rt.spool(chunks, limit=limit, too_large=too_large)
            return resp.status, answer_headers, answer
    except TimeoutError as exc:
        raise ServiceFailedError(f"provider system did not answer within {timeout:g} s") from exc
    except HttpClientError as exc:
        raise ServiceFailedError(f"provider system failed: {type(exc).__name__}") from exc


_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""Methods sent without a body (and without ``Content-Length: 0``) when the request has
none, as aiohttp did."""


_INLINE = 256 * 1024
"""A SOAP answer up to this size is checked on the event loop; a larger one (or one of
unknown size) on an XML lane (security_server.body.xml_lane)."""


async def _stamped(chunks: AsyncIterator[bytes], content_type: str | None, echo: RequestEcho,
                   *, limit: int, too_large: XRoadError, small: bool) -> AsyncIterator[bytes]:
    """The provider system's SOAP answer as it arrives, checked and stamped
    (xchange.soap.envelope.ResponseStream): at most ``limit`` bytes of it are read."""
    run: Runner = inline if small else xml_lane()
    stream = await run(ResponseStream, content_type, max_bytes=limit, echo=echo)
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large
        if stream.passing:  # the attachments: as they come, unread
            yield chunk
            continue
        out = await run(stream.feed, chunk)
        if out:
            yield out
    out = await run(stream.close)
    if out:
        yield out
