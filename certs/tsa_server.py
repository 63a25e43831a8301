"""The development TSA over HTTP (RFC 3161 section 3.4).

Routes:

* ``POST /`` -- body a DER ``TimeStampReq`` with ``Content-Type: application/timestamp-query``;
  answer 200 with a DER ``TimeStampResp`` and ``Content-Type: application/timestamp-reply``.
  Requests the TSA refuses are still answered 200, with a rejection response (RFC 3161 keeps
  protocol errors in the protocol).  Another content type is 415, a body over
  :data:`MAX_REQUEST_BYTES` is 413, another method is 405;
* ``GET /health`` -- 200 ``ok`` (for process supervisors and tests).

Each token gets the current time from the clock and a random 128-bit serial number, so that
serials are unique without shared state even across several TSA processes.  Failures are
logged here and answered with a ``systemFailure`` rejection, never a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from certs.keys import load_certificates, load_private_key
from certs.tsa import DEV_TSA_POLICY, TimeStampAuthority, rejection_response
from xchange.timestamp import QUERY_TYPE, REPLY_TYPE

__all__ = ["MAX_REQUEST_BYTES", "create_app", "new_serial", "serve"]

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 16 * 1024
"""A TimeStampReq is about 100 bytes; anything much larger is not one."""

_TSA_KEY = web.AppKey("tsa", TimeStampAuthority)
_CLOCK_KEY: web.AppKey[Callable[[], datetime]] = web.AppKey("tsa_clock")
_SERIAL_KEY: web.AppKey[Callable[[], int]] = web.AppKey("tsa_serial")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def new_serial() -> int:
    """A random positive serial number of up to 128 bits."""
    return secrets.randbits(128) or 1


def _reply(body: bytes) -> web.Response:
    return web.Response(body=body, content_type=REPLY_TYPE)


async def post_query(request: web.Request) -> web.Response:
    if request.content_type != QUERY_TYPE:
        raise web.HTTPUnsupportedMediaType(text=f"send {QUERY_TYPE}")
    body = await request.read()  # bounded by client_max_size: 413 beyond it
    app = request.app
    try:
        # Signing is quick but CPU-bound; keep it off the event loop all the same.
        reply = await asyncio.to_thread(
            app[_TSA_KEY].respond, body, app[_CLOCK_KEY](), app[_SERIAL_KEY]()
        )
    except Exception:
        log.exception("time-stamping failed")
        return _reply(rejection_response("system_failure", "internal error"))
    return _reply(reply)


async def get_health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_app(
    tsa: TimeStampAuthority,
    *,
    clock: Callable[[], datetime] = _utc_now,
    serials: Callable[[], int] = new_serial,
) -> web.Application:
    """The TSA app; tests pass a fixed ``clock`` or ``serials``."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[_TSA_KEY] = tsa
    app[_CLOCK_KEY] = clock
    app[_SERIAL_KEY] = serials
    app.router.add_post("/", post_query)
    app.router.add_get("/health", get_health)
    return app


def serve(
    key_path: Path,
    cert_path: Path,
    passphrase: bytes,
    *,
    host: str = "127.0.0.1",
    port: int = 3180,
    policy: str = DEV_TSA_POLICY,
    accuracy_seconds: int | None = 1,
) -> None:
    """Run the TSA until interrupted (the CLI's entry).  ``cert_path`` holds the TSA
    certificate first, then its CA certificates; ``key_path`` is encrypted under
    ``passphrase``."""
    tsa = TimeStampAuthority(
        load_private_key(key_path, passphrase),
        load_certificates(cert_path),
        policy_oid=policy,
        accuracy_seconds=accuracy_seconds,
    )
    url = f"http://{host}:{port}/"

    def announce(_message: str) -> None:
        print(f"xchange TSA listening on {url} (policy {tsa.policy})", flush=True)

    web.run_app(create_app(tsa), host=host, port=port, print=announce)
