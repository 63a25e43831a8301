"""The one place where errors become wire responses.

REST errors follow PR-REST 4.6: status from the error's registry entry, ``X-Road-Error``
header with the code, JSON body ``{"type", "message", "detail"}``.  On a SOAP request (the
client proxy's :func:`soap_fault`), the same error is a SOAP 1.1 fault (PR-MESS 2.5): HTTP
500, ``faultcode`` the same code, ``faultstring`` the message, ``detail/faultDetail`` an id
that is logged with it.  Unexpected exceptions are logged here with their stack trace and
answered as an internal error whose detail is an incident id that points into the server's
log -- never a stack trace to the client.

The proxies' own server (:mod:`security_server.httpserver`) renders errors with
:func:`error_renderer`; the aiohttp applications (the admin API) with
:func:`error_middleware`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from security_server.httpserver import ServerRequest, ServerResponse
from xchange.errors import XRoadError
from xchange.soap.envelope import fault_envelope

__all__ = ["error_fields", "error_middleware", "error_renderer", "hide_server_version",
           "soap_fault", "unexpected"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_fields(error: XRoadError, *, message_id: str | None = None
                 ) -> tuple[int, list[tuple[str, str]], bytes]:
    """``error`` as a REST answer (PR-REST 4.6): its status, header fields and JSON body."""
    headers = [("Content-Type", "application/json; charset=utf-8"),
               ("X-Road-Error", error.code)]
    if message_id:
        headers.append(("X-Road-Id", message_id))
    return error.status, headers, json.dumps(error.to_json(), ensure_ascii=False).encode()


def error_response(error: XRoadError) -> web.Response:
    status, headers, body = error_fields(error)
    return web.Response(status=status, body=body, headers=headers)


def unexpected(exc: BaseException, internal_code: str) -> XRoadError:
    """An exception no handler expected, logged with its stack trace under a new incident
    id: the internal error to answer instead, whose detail is that id."""
    incident = str(uuid.uuid4())
    log.error("internal error, incident %s", incident, exc_info=exc)
    return XRoadError("internal error", code=internal_code, detail=incident)


def error_renderer(internal_code: str
                   ) -> Callable[[Exception, ServerRequest | None], ServerResponse]:
    """How the proxies' server (security_server.httpserver) answers an exception: an X-Road
    error as such, anything else as an internal error with ``internal_code``."""

    def render(exc: Exception, request: ServerRequest | None) -> ServerResponse:
        if isinstance(exc, XRoadError):
            if request is not None:
                log.info("%s %s -> %s: %s", request.method, request.path[:200], exc.code,
                         exc.message)
            error = exc
        else:
            error = unexpected(exc, internal_code)
        status, headers, body = error_fields(
            error, message_id=request.message_id if request is not None else None)
        return ServerResponse(status, headers, body)

    return render


def soap_fault(error: XRoadError, *, incident: str | None = None) -> ServerResponse:
    """``error`` as an X-Road SOAP fault (HTTP 500); its ``faultDetail`` id is logged with
    it.  ``incident``: the id an unexpected error was logged under (:func:`unexpected`),
    which is then the fault's only detail."""
    fault_id = incident or str(uuid.uuid4())
    message = error.message if not error.detail or incident else \
        f"{error.message} ({error.detail})"
    log.info("SOAP fault %s: %s %s", fault_id, error.code, error.message)
    return ServerResponse(500, [("Content-Type", "text/xml; charset=utf-8")],
                          fault_envelope(error.code, message, fault_id))


def error_middleware(internal_code: str) -> Middleware:
    """The same rendering for an aiohttp application (the admin API)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except XRoadError as exc:
            log.info("%s %s -> %s: %s", request.method, request.path, exc.code, exc.message)
            return error_response(exc)
        except web.HTTPException as exc:
            if exc.status >= 400:
                code = {413: "client.payload_too_large", 405: "client.unsupported_method"}.get(
                    exc.status, "client.bad_request" if exc.status < 500 else internal_code)
                return error_response(XRoadError(exc.reason, code=code))
            raise
        except Exception as exc:
            return error_response(unexpected(exc, internal_code))

    return middleware


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "xchange"


def hide_server_version(app: web.Application) -> None:
    """Answer ``Server: xchange`` instead of the Python and aiohttp versions."""
    app.on_response_prepare.append(_server_header)
