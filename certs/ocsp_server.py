"""OCSP over HTTP (RFC 6960 Appendix A): a thin aiohttp app around :class:`OcspResponder`.

Routes, under ``path`` (the path of the CA's OCSP URL, ``/`` by default):

* ``POST {path}`` with ``Content-Type: application/ocsp-request`` and the DER request;
* ``GET {path}{request}`` where ``request`` is the URL-encoded base64 of the DER request
  (base64url is accepted too).

Answers are ``application/ocsp-response``: HTTP 200 with any OCSPResponse (``malformedRequest``
for bytes that are not a request), 500 with ``internalError`` when answering failed.  HTTP-level
mistakes get a plain-text 4xx: a wrong content type (415), a body over
:data:`MAX_REQUEST_BYTES` (413).  No stack trace ever reaches a client.  Responses carry
``Cache-Control: no-cache``: a revocation must be seen at once, not after a proxy's max-age.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import unquote

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from certs.ocsp import OcspResponder

__all__ = ["MAX_REQUEST_BYTES", "OCSP_REQUEST_TYPE", "OCSP_RESPONSE_TYPE", "create_app", "serve"]

log = logging.getLogger(__name__)

OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"
MAX_REQUEST_BYTES = 16 * 1024
"""A one-certificate request is a few hundred bytes; even a signed one stays far below this."""

_RESPONDER = web.AppKey("ocsp_responder", OcspResponder)
_PREFIX = web.AppKey("ocsp_path", str)
_CLOCK_KEY: web.AppKey[Callable[[], datetime]] = web.AppKey("ocsp_clock")
_HEADERS = {"Cache-Control": "no-cache"}


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _ocsp_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=OCSP_RESPONSE_TYPE,
                        headers=_HEADERS)


async def _answer(request: web.Request, der: bytes) -> web.Response:
    responder, clock = request.app[_RESPONDER], request.app[_CLOCK_KEY]
    try:
        # Signing and the index lookup block; keep them off the event loop.
        body = await asyncio.to_thread(responder.respond, der, clock())
    except Exception:
        log.exception("answering an OCSP request failed")
        failure = ocsp.OCSPResponseBuilder.build_unsuccessful(
            ocsp.OCSPResponseStatus.INTERNAL_ERROR
        )
        return _ocsp_response(failure.public_bytes(serialization.Encoding.DER), status=500)
    return _ocsp_response(body)


async def post_request(request: web.Request) -> web.Response:
    if request.content_type != OCSP_REQUEST_TYPE:
        raise web.HTTPUnsupportedMediaType(text=f"Content-Type must be {OCSP_REQUEST_TYPE}\n")
    # Over client_max_size, read() raises HTTPRequestEntityTooLarge (413).
    return await _answer(request, await request.read())


async def get_request(request: web.Request) -> web.Response:
    encoded = unquote(request.rel_url.raw_path[len(request.app[_PREFIX]):])
    try:
        # Standard base64 as RFC 6960 A.1 says; '-' and '_' are base64url's spellings of it.
        text = encoded.replace("-", "+").replace("_", "/")
        der = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        der = b""  # answered malformedRequest like any other bytes that are not a request
    return await _answer(request, der)


def create_app(
    responder: OcspResponder, *, path: str = "/", clock: Callable[[], datetime] = _utc_now
) -> web.Application:
    """The OCSP app, answering under ``path``; ``clock`` returns the current aware time."""
    prefix = path if path.endswith("/") else path + "/"
    if not prefix.startswith("/"):
        raise ValueError(f"OCSP path {path!r} must start with '/'")
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[_RESPONDER] = responder
    app[_PREFIX] = prefix
    app[_CLOCK_KEY] = clock
    app.router.add_post(prefix, post_request)
    if prefix != "/":
        app.router.add_post(prefix.rstrip("/"), post_request)
    app.router.add_get(prefix + "{request:.+}", get_request)
    return app


def serve(responder: OcspResponder, *, host: str, port: int, path: str = "/") -> None:
    """Run the responder until interrupted (the CLI's entry)."""
    app = create_app(responder, path=path)
    url = f"http://{host}:{port}{path}"

    def announce(_message: str) -> None:
        subject = responder.signer.certificate.subject.rfc4514_string()
        print(f"xchange OCSP responder listening on {url}, signing as {subject}", flush=True)

    web.run_app(app, host=host, port=port, print=announce)
