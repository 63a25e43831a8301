"""The one place where errors become wire responses.

REST errors follow PR-REST 4.6: status from the error's registry entry, ``X-Road-Error``
header with the code, JSON body ``{"type", "message", "detail"}``.  On a request a handler
marked as SOAP (:data:`SOAP`), the same error is a SOAP 1.1 fault (PR-MESS 2.5): HTTP 500,
``faultcode`` the same code, ``faultstring`` the message, ``detail/faultDetail`` an id that is
logged with it.  Unexpected exceptions are logged here with their stack trace and answered as
an internal error whose detail is an incident id that points into the server's log -- never a
stack trace to the client.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

from security_server.peerserver import PeerRequest, PeerResponse
from xchange.errors import BadRequestError, XRoadError
from xchange.soap.envelope import fault_envelope

__all__ = ["MESSAGE_ID", "SOAP", "error_fields", "error_middleware", "error_response",
           "hide_server_version", "peer_error", "received", "soap_fault_response",
           "stream_out", "unexpected"]

log = logging.getLogger(__name__)

MESSAGE_ID = web.RequestKey("xroad_message_id", str)
"""The X-Road-Id of the request being handled, once parsed; echoed on error responses."""
SOAP = web.RequestKey("xroad_soap", bool)
"""Set by a handler of SOAP requests: errors are answered as SOAP faults."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_fields(error: XRoadError, *, message_id: str | None = None
                 ) -> tuple[int, list[tuple[str, str]], bytes]:
    """``error`` as a REST answer (PR-REST 4.6): its status, header fields and JSON body."""
    headers = [("Content-Type", "application/json; charset=utf-8"),
               ("X-Road-Error", error.code)]
    if message_id:
        headers.append(("X-Road-Id", message_id))
    return error.status, headers, json.dumps(error.to_json(), ensure_ascii=False).encode()


def error_response(error: XRoadError, *, message_id: str | None = None) -> web.Response:
    status, headers, body = error_fields(error, message_id=message_id)
    return web.Response(status=status, body=body, headers=headers)


def unexpected(exc: BaseException, internal_code: str) -> XRoadError:
    """An exception no handler expected, logged with its stack trace under a new incident
    id: the internal error to answer instead, whose detail is that id."""
    incident = str(uuid.uuid4())
    log.error("internal error, incident %s", incident, exc_info=exc)
    return XRoadError("internal error", code=internal_code, detail=incident)


def peer_error(internal_code: str) -> Callable[[Exception, PeerRequest | None], PeerResponse]:
    """How the server proxy's server (security_server.peerserver) answers an exception: an
    X-Road error as such, anything else as an internal error with ``internal_code``."""

    def render(exc: Exception, request: PeerRequest | None) -> PeerResponse:
        if isinstance(exc, XRoadError):
            if request is not None:
                log.info("%s %s -> %s: %s", request.method, request.path, exc.code,
                         exc.message)
            error = exc
        else:
            error = unexpected(exc, internal_code)
        status, headers, body = error_fields(
            error, message_id=request.message_id if request is not None else None)
        return PeerResponse(status, headers, body)

    return render


def soap_fault_response(error: XRoadError, *, incident: str | None = None) -> web.Response:
    """``error`` as an X-Road SOAP fault; its ``faultDetail`` id is logged with it."""
    fault_id = incident or str(uuid.uuid4())
    message = error.message if not error.detail or incident else \
        f"{error.message} ({error.detail})"
    log.info("SOAP fault %s: %s %s", fault_id, error.code, error.message)
    return web.Response(status=500, body=fault_envelope(error.code, message, fault_id),
                        content_type="text/xml", charset="utf-8")


def error_middleware(internal_code: str) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except XRoadError as exc:
            log.info("%s %s -> %s: %s", request.method, request.path, exc.code, exc.message)
            if request.get(SOAP):
                return soap_fault_response(exc)
            return error_response(exc, message_id=request.get(MESSAGE_ID))
        except web.HTTPException as exc:
            if exc.status >= 400:
                code = {413: "client.payload_too_large", 405: "client.unsupported_method"}.get(
                    exc.status, "client.bad_request" if exc.status < 500 else internal_code)
                error = XRoadError(exc.reason, code=code)
                if request.get(SOAP):
                    return soap_fault_response(error)
                return error_response(error)
            raise
        except Exception as exc:
            error = unexpected(exc, internal_code)
            if request.get(SOAP):
                return soap_fault_response(error, incident=error.detail)
            return error_response(error)

    return middleware


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "xchange"


def hide_server_version(app: web.Application) -> None:
    """Answer ``Server: xchange`` instead of the Python and aiohttp versions."""
    app.on_response_prepare.append(_server_header)


async def received(request: web.Request, *, code: str) -> AsyncIterator[bytes]:
    """The request body as it arrives; a body cut short is the sender's fault (``code``)."""
    try:
        async for chunk in request.content.iter_any():
            yield chunk
    except (aiohttp.ClientPayloadError, ConnectionError) as exc:
        raise BadRequestError("the request body was cut short", code=code) from exc


async def stream_out(request: web.Request, out: web.StreamResponse, size: int,
                     chunks: AsyncIterator[bytes]) -> web.StreamResponse:
    """Send ``out`` with a body of ``size`` bytes written piece by piece.  A client that goes
    away meanwhile is the end of it, not an error: nothing can be answered any more."""
    out.content_length = size
    try:
        await out.prepare(request)
        async for chunk in chunks:
            await out.write(chunk)
        await out.write_eof()
    except ConnectionError as exc:
        log.info("%s %s: the client went away while the answer was sent (%s)",
                 request.method, request.path, exc)
    return out
