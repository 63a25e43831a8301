"""Assembles and runs a security server process: client proxy + server proxy + background
configuration refresh, over one :class:`~security_server.runtime.Runtime`.

``serve(path)`` is what ``xchange ss serve --config FILE`` calls.  It prints one line,
``xchange security server <id> ready ...``, once both listeners accept connections, and stops
cleanly on SIGINT/SIGTERM (in-flight requests finish, the message log is closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from security_server.admin_api import AdminContext, audience_for, create_admin_app
from security_server.admin_keys import admin_public_key
from security_server.client_proxy import create_client_proxy_app
from security_server.confclient import GlobalConfClient, HttpConfFetcher
from security_server.config import SecurityServerConfig
from security_server.db import create_db_engine, create_tables
from security_server.directory import Directory, StoreDirectory, seed_from_config
from security_server.is_tls import IsTls, ensure_internal_certificate
from security_server.messagelog import MessageLog
from security_server.metadata import metadata_service
from security_server.migrate import upgrade
from security_server.runtime import Runtime, load_identities, utc_now
from security_server.server_proxy import create_server_proxy_app
from security_server.store import ServerStore
from security_server.tls import server_context
from xchange.errors import GlobalConfOutdatedError
from xchange.globalconf import ConfigurationAnchor

__all__ = ["running_server", "serve"]

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def running_server(config: SecurityServerConfig) -> AsyncIterator[Runtime]:
    """Start both listeners and the refresh task; stop them all on exit."""
    anchor = ConfigurationAnchor.from_json(config.anchor.read_bytes())
    engine = create_db_engine(config.database_url)
    create_tables(engine)
    upgrade(engine)
    store = ServerStore(engine)
    seed_from_config(store, config, utc_now())
    message_log = MessageLog(engine)
    conf_session = aiohttp.ClientSession()
    conf_client = GlobalConfClient(anchor, config.state_dir, HttpConfFetcher(conf_session),
                                   utc_now)
    conf_client.load_cached()
    await conf_client.refresh()
    runtime = Runtime(config, conf_client, message_log, load_identities(config))
    store_directory = StoreDirectory(store)
    runtime.directory = Directory(store_directory, metadata_service)
    runtime.provider_session = aiohttp.ClientSession(auto_decompress=False)
    try:
        anchors = conf_client.current(utc_now()).trust_anchors()
    except GlobalConfOutdatedError:
        anchors = ()  # learnt when a configuration arrives
    runtime.server_tls = server_context(config.auth_cert, config.auth_key, anchors)
    runners: list[web.AppRunner] = []
    refresher = asyncio.create_task(conf_client.run(config.conf_refresh_seconds))
    listeners = [
        (create_client_proxy_app(runtime), config.client_proxy, None),
        (create_server_proxy_app(runtime), config.server_proxy, runtime.server_tls),
    ]
    if config.client_proxy_tls is not None:
        assert config.internal_tls_cert is not None and config.internal_tls_key is not None
        ensure_internal_certificate(config.internal_tls_cert, config.internal_tls_key,
                                    str(config.server_id), config.client_proxy_tls.host,
                                    utc_now())
        is_tls = IsTls(config.internal_tls_cert, config.internal_tls_key)
        store_directory.on_rebuild.append(is_tls.learn)
        is_tls.learn(runtime.directory.snapshot())
        listeners.append((create_client_proxy_app(runtime), config.client_proxy_tls,
                          is_tls.context))
    if config.admin_api is not None and config.admin_key is not None:
        admin = AdminContext(store, runtime.directory, (admin_public_key(config.admin_key),),
                             audience_for(str(config.server_id)), utc_now,
                             server=str(config.server_id), internal_cert=config.internal_tls_cert
                             if config.client_proxy_tls is not None else None)
        listeners.append((create_admin_app(admin), config.admin_api, None))
    try:
        for app, listen, ssl_ctx in listeners:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, listen.host, listen.port, ssl_context=ssl_ctx).start()
        yield runtime
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        for runner in reversed(runners):
            await runner.cleanup()
        await runtime.close()
        await conf_session.close()
        message_log.close()
        engine.dispose()


async def _serve(config: SecurityServerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_server(config):
        print(
            f"xchange security server {config.server_id} ready: client proxy "
            f"http://{config.client_proxy.host}:{config.client_proxy.port}, server proxy "
            f"https://{config.server_proxy.host}:{config.server_proxy.port}",
            flush=True,
        )
        await stop.wait()


def serve(config_path: Path) -> None:
    config = SecurityServerConfig.from_file(config_path).from_env()
    asyncio.run(_serve(config))
