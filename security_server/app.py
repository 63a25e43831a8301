"""Assembles and runs a security server process: client proxy + server proxy + background
configuration and OCSP refresh, over one :class:`~security_server.runtime.Runtime`.

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

from certs.keys import load_certificates
from security_server.client_proxy import create_client_proxy_app
from security_server.confclient import GlobalConfClient, HttpConfFetcher
from security_server.config import SecurityServerConfig
from security_server.db import create_db_engine, create_tables
from security_server.logkeys import load_keyring
from security_server.logstamper import LogStamper
from security_server.messagelog import MessageLog
from security_server.ocsp import HttpOcspFetcher, OwnCertificates
from security_server.runtime import Runtime, load_identities, utc_now
from security_server.server_proxy import create_server_proxy_app
from security_server.timestamper import TsaClient
from security_server.tls import server_context
from xchange.errors import GlobalConfOutdatedError
from xchange.globalconf import ApprovedTSA, ConfigurationAnchor, FederationSettings, GlobalConf

__all__ = ["running_server", "serve"]

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def running_server(config: SecurityServerConfig) -> AsyncIterator[Runtime]:
    """Start both listeners and the refresh task; stop them all on exit."""
    anchor = ConfigurationAnchor.from_json(config.anchor.read_bytes())
    engine = create_db_engine(config.database_url)
    create_tables(engine)
    keyring = load_keyring(config.encryption_keys) if config.encryption_keys else None
    message_log = MessageLog(engine, keyring=keyring)
    conf_session = aiohttp.ClientSession()
    conf_client = GlobalConfClient(anchor, config.state_dir, HttpConfFetcher(conf_session),
                                   utc_now)
    conf_client.load_cached()
    await conf_client.refresh()
    identities = load_identities(config)
    own_certs = OwnCertificates(
        [("auth", load_certificates(config.auth_cert)[0])]
        + [(str(member), ident.chain[0]) for member, ident in identities.items()],
        config.state_dir, HttpOcspFetcher(conf_session), utc_now)

    def conf_now() -> GlobalConf | None:
        try:
            return conf_client.current(utc_now())
        except GlobalConfOutdatedError:
            return None  # nothing to check against until a configuration arrives

    def approved_tsas() -> tuple[ApprovedTSA, ...]:
        conf = conf_client.current(utc_now())  # outdated: stamping fails, and says why
        return conf.approved_tsas

    def stamp_interval() -> float:
        conf = conf_now()
        return float(conf.settings.timestamping_interval_seconds if conf
                     else FederationSettings().timestamping_interval_seconds)

    tsa_client = TsaClient(approved_tsas, session=conf_session)
    stamper = LogStamper(message_log, tsa_client, clock=utc_now,
                         max_failure_seconds=config.timestamping_max_failure_seconds)
    await stamper.load()
    runtime = Runtime(config, conf_client, message_log, identities, own_certs, stamper)
    runtime.provider_session = aiohttp.ClientSession(auto_decompress=False)

    conf = conf_now()
    if conf is not None:
        own_certs.load_cached(conf)
        await own_certs.refresh(conf)
    runtime.server_tls = server_context(config.auth_cert, config.auth_key,
                                        conf.trust_anchors() if conf else ())
    runners: list[web.AppRunner] = []
    refresher = asyncio.create_task(conf_client.run(config.conf_refresh_seconds))
    ocsp_refresher = asyncio.create_task(own_certs.run(
        conf_now, config.ocsp_refresh_seconds, config.ocsp_retry_seconds))
    stamping = asyncio.create_task(stamper.run(stamp_interval))
    try:
        for app, listen, ssl_ctx in (
            (create_client_proxy_app(runtime), config.client_proxy, None),
            (create_server_proxy_app(runtime), config.server_proxy, runtime.server_tls),
        ):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, listen.host, listen.port, ssl_context=ssl_ctx).start()
        yield runtime
    finally:
        for task in (refresher, ocsp_refresher, stamping):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
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
