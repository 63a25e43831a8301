"""The registry's HTTP server: publishes the signed global configuration.

Routes:

* ``GET /globalconf`` -- the signed envelope (``application/json``, ``Cache-Control: no-cache``);
* ``GET /anchor``     -- the configuration anchor security servers are installed with;
* ``GET /health``     -- 200 while the published configuration is unexpired, else 503.

The configuration is published once before the server accepts requests (a registry that
cannot sign does not start), then re-published by a background task whenever the data file
changes or the regeneration interval passes; a failed run is logged and the last good
publication stays in service.  The same bytes are also written to ``publish_dir`` so that a
plain HTTP server or CDN can serve them instead.

Not here (yet): the officer-facing admin API and management requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from registry.config import RegistryConfig
from registry.publisher import Publisher

__all__ = ["CONFIG_KEY", "PUBLISHER_KEY", "create_app", "serve"]

log = logging.getLogger(__name__)

CONFIG_KEY = web.AppKey("registry_config", RegistryConfig)
PUBLISHER_KEY = web.AppKey("registry_publisher", Publisher)
_CLOCK_KEY: web.AppKey[Callable[[], datetime]] = web.AppKey("registry_clock")

_NO_CACHE = {"Cache-Control": "no-cache"}
_POLL_SECONDS = 1.0  # how often the data file's mtime is looked at


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _published(request: web.Request) -> tuple[bytes, bytes]:
    latest = request.app[PUBLISHER_KEY].latest
    if latest is None:  # only between startup steps; the app publishes before it serves
        raise web.HTTPServiceUnavailable(text="global configuration not yet published")
    return latest.signed, latest.anchor


async def get_globalconf(request: web.Request) -> web.Response:
    signed, _ = _published(request)
    return web.Response(body=signed, content_type="application/json", headers=_NO_CACHE)


async def get_anchor(request: web.Request) -> web.Response:
    _, anchor = _published(request)
    return web.Response(body=anchor, content_type="application/json", headers=_NO_CACHE)


async def get_health(request: web.Request) -> web.Response:
    latest = request.app[PUBLISHER_KEY].latest
    now = request.app[_CLOCK_KEY]()
    if latest is None or latest.conf.is_expired(now):
        return web.json_response({"status": "expired"}, status=503, headers=_NO_CACHE)
    body = {
        "status": "ok",
        "instance": latest.conf.instance,
        "version": latest.conf.version,
        "expires_at": latest.conf.to_payload()["expires_at"],
    }
    return web.json_response(body, headers=_NO_CACHE)


async def _regenerate_forever(app: web.Application) -> None:
    publisher, clock = app[PUBLISHER_KEY], app[_CLOCK_KEY]
    while True:
        await asyncio.sleep(min(_POLL_SECONDS, publisher.interval_seconds))
        try:
            # Signing and fsync block; keep them off the event loop.
            await asyncio.to_thread(publisher.tick, clock())
        except Exception:
            # Keep serving the last good publication; the next tick tries again.
            latest = publisher.latest
            log.exception(
                "publishing global configuration failed; still serving version %s",
                None if latest is None else latest.conf.version,
            )


async def _publishing(app: web.Application) -> AsyncIterator[None]:
    publisher = app[PUBLISHER_KEY]
    await asyncio.to_thread(publisher.publish, app[_CLOCK_KEY]())
    task = asyncio.create_task(_regenerate_forever(app))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(
    config: RegistryConfig, *, clock: Callable[[], datetime] = _utc_now
) -> web.Application:
    """Build the registry app.  Loads the signing key now, so a bad key fails here.

    ``clock`` returns the current aware time; tests pass a fake one.
    """
    app = web.Application()
    app[CONFIG_KEY] = config
    app[PUBLISHER_KEY] = Publisher(config)
    app[_CLOCK_KEY] = clock
    app.cleanup_ctx.append(_publishing)
    app.router.add_get("/globalconf", get_globalconf)
    app.router.add_get("/anchor", get_anchor)
    app.router.add_get("/health", get_health)
    return app


def serve(config_path: Path) -> None:
    """Run the registry from its TOML configuration until interrupted (the CLI's entry)."""
    config = RegistryConfig.from_file(config_path).from_env()
    app = create_app(config)
    url = f"http://{config.listen_host}:{config.listen_port}"

    def announce(_message: str) -> None:
        print(f"xchange registry listening on {url}, publishing to {config.publish_dir}",
              flush=True)

    web.run_app(app, host=config.listen_host, port=config.listen_port, print=announce)
