"""The one place where errors become wire responses.

REST errors follow PR-REST 4.6: status from the error's registry entry, ``X-Road-Error``
header with the code, JSON body ``{"type", "message", "detail"}``.  Unexpected exceptions are
logged here with their stack trace and answered as an internal error whose ``detail`` is an
incident id that points into the server's log -- never a stack trace to the client.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

from xchange.errors import BadRequestError, XRoadError

__all__ = ["MESSAGE_ID", "error_middleware", "error_response", "hide_server_version",
           "received", "stream_out"]

log = logging.getLogger(__name__)

MESSAGE_ID = web.RequestKey("xroad_message_id", str)
"""The X-Road-Id of the request being handled, once parsed; echoed on error responses."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: XRoadError, *, message_id: str | None = None) -> web.Response:
    headers = {"X-Road-Error": error.code}
    if message_id:
        headers["X-Road-Id"] = message_id
    body = json.dumps(error.to_json(), ensure_ascii=False).encode("utf-8")
    return web.Response(
        status=error.status,
        body=body,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )


def error_middleware(internal_code: str) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except XRoadError as exc:
            log.info("%s %s -> %s: %s", request.method, request.path, exc.code, exc.message)
            return error_response(exc, message_id=request.get(MESSAGE_ID))
        except web.HTTPException as exc:
            if exc.status >= 400:
                code = {413: "client.payload_too_large", 405: "client.unsupported_method"}.get(
                    exc.status, "client.bad_request" if exc.status < 500 else internal_code)
                return error_response(XRoadError(exc.reason, code=code))
            raise
        except Exception:
            incident = str(uuid.uuid4())
            log.exception("internal error, incident %s", incident)
            return error_response(XRoadError("internal error", code=internal_code,
                                             detail=incident))

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
