"""Assembles and runs a security server process: client proxy + server proxy + background
configuration and OCSP refresh, log time-stamping and archiving, over one
:class:`~security_server.runtime.Runtime`.

``serve(path)`` is what ``xchange ss serve --config FILE`` calls.  It prints one line,
``xchange security server <id> ready ...``, once both listeners accept connections, and stops
cleanly on SIGINT/SIGTERM (in-flight requests finish, the message log is closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import resource
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final, cast

import aiohttp
from aiohttp import web

from certs.keys import load_certificates
from security_server.admin_api import AdminContext, audience_for, create_admin_app
from security_server.admin_keys import admin_public_key
from security_server.archiver import Archiver, DirectoryTarget, load_recipients
from security_server.audit_api import AuditContext, add_audit_routes
from security_server.body import limit_malloc_arenas
from security_server.catalogue import CataloguePublisher, registry_url
from security_server.client_proxy import create_client_proxy
from security_server.confclient import GlobalConfClient, HttpConfFetcher
from security_server.config import ConfigError, ListenConfig, SecurityServerConfig
from security_server.db import create_db_engine, create_tables
from security_server.directory import Directory, StoreDirectory, seed_from_config
from security_server.httpclient import Client
from security_server.is_tls import IsTls, ensure_internal_certificate
from security_server.keys import ServerKeys, load_keys
from security_server.listen import AcceptingSite, Listener
from security_server.logaudit import server_trust
from security_server.logkeys import load_keyring
from security_server.logstamper import LogStamper
from security_server.messagelog import MessageLog
from security_server.metadata import metadata_service
from security_server.migrate import upgrade
from security_server.ocsp import HttpOcspFetcher, OwnCertificates
from security_server.registration import ClientUnregistration
from security_server.runtime import Runtime, utc_now
from security_server.server_proxy import create_server_proxy
from security_server.store import ServerStore
from security_server.timestamper import TsaClient
from security_server.tls import server_context
from xchange.errors import GlobalConfOutdatedError
from xchange.globalconf import ApprovedTSA, ConfigurationAnchor, FederationSettings, GlobalConf

__all__ = ["LISTEN_BACKLOG", "raise_open_file_limit", "running_server", "serve"]

log = logging.getLogger(__name__)

LISTEN_BACKLOG: Final = 1024
"""Connections the kernel queues for each listener before they are accepted (aiohttp's
default is 128: a burst of a thousand clients overflowed it, and the overflow waited for
SYN retransmits, a second or more).  The kernel caps it at ``net.core.somaxconn``."""

SHUTDOWN_GRACE_SECONDS: Final = 60.0
"""On stopping, how long the requests in flight get to be answered (aiohttp's default for
the other listeners)."""

OPEN_FILES_WANTED: Final = 65536
"""The soft open-file limit asked for when the hard limit is unlimited."""


@contextlib.asynccontextmanager
async def running_server(config: SecurityServerConfig) -> AsyncIterator[Runtime]:
    """Start both listeners and the refresh task; stop them all on exit."""
    keys = load_keys(config)  # first: a key problem stops the start before anything opens
    try:
        async with _running(config, keys) as runtime:
            yield runtime
    finally:
        keys.close()


@contextlib.asynccontextmanager
async def _running(config: SecurityServerConfig, keys: ServerKeys) -> AsyncIterator[Runtime]:
    anchor = ConfigurationAnchor.from_json(config.anchor.read_bytes())
    engine = create_db_engine(config.database_url)
    create_tables(engine)
    upgrade(engine)
    store = ServerStore(engine)
    seed_from_config(store, config, utc_now())
    keyring = load_keyring(config.encryption_keys) if config.encryption_keys else None
    message_log = MessageLog(engine, keyring=keyring)
    conf_session = aiohttp.ClientSession()
    conf_client = GlobalConfClient(anchor, config.state_dir, HttpConfFetcher(conf_session),
                                   utc_now)
    conf_client.load_cached()
    await conf_client.refresh()
    own_certs = OwnCertificates(
        [("auth", load_certificates(config.auth_cert)[0])]
        + [(str(member), ident.chain[0]) for member, ident in keys.identities.items()],
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
    runtime = Runtime(config, conf_client, message_log, keys.identities, own_certs, stamper,
                      in_token=keys.in_token)
    runtime.spool_dir.mkdir(parents=True, exist_ok=True)
    store_directory = StoreDirectory(store)
    runtime.directory = Directory(store_directory, metadata_service)
    # The internal TLS certificate: served on the client proxy's HTTPS port, and presented
    # to provider systems over HTTPS (which may require it, as they may of an X-Road server).
    internal = None
    if config.internal_tls_cert is not None and config.internal_tls_key is not None:
        host = (config.client_proxy_tls or config.client_proxy).host
        ensure_internal_certificate(config.internal_tls_cert, config.internal_tls_key,
                                    str(config.server_id), host, utc_now(),
                                    config.key_passphrase)
        internal = (config.internal_tls_cert, config.internal_tls_key, config.key_passphrase)
    # No cookies (a provider system's cookie must not reach the next client's request), no
    # decompression: security_server.httpclient passes answers on as they come.
    runtime.provider_client = Client(certificate=internal)

    conf = conf_now()
    if conf is not None:
        own_certs.load_cached(conf)
        await own_certs.refresh(conf)
    runtime.server_tls = server_context(config.auth_cert, config.auth_key,
                                        conf.trust_anchors() if conf else (),
                                        passphrase=config.key_passphrase)
    runners: list[web.AppRunner] = []
    # Both proxies on the message path's own server (security_server.httpserver); the
    # client proxy's plain and HTTPS ports share one.
    server_proxy, client_proxy = create_server_proxy(runtime), create_client_proxy(runtime)
    proxy_listeners = [
        Listener(server_proxy, config.server_proxy.host, config.server_proxy.port,
                 ssl_context=runtime.server_tls, backlog=LISTEN_BACKLOG),
        Listener(client_proxy, config.client_proxy.host, config.client_proxy.port,
                 backlog=LISTEN_BACKLOG)]
    if config.client_proxy_tls is not None:
        assert config.internal_tls_cert is not None and config.internal_tls_key is not None
        is_tls = IsTls(config.internal_tls_cert, config.internal_tls_key, config.key_passphrase)
        store_directory.on_rebuild.append(is_tls.learn)
        is_tls.learn(runtime.directory.snapshot())
        proxy_listeners.append(Listener(client_proxy, config.client_proxy_tls.host,
                                        config.client_proxy_tls.port,
                                        ssl_context=is_tls.context, backlog=LISTEN_BACKLOG))
    listeners: list[tuple[web.Application, ListenConfig]] = []
    registry = registry_url(config)
    catalogue = CataloguePublisher(store, config.server_id, keys.identities, lambda: registry,
                                   clock=utc_now, retry_seconds=config.catalogue_retry_seconds,
                                   sign=functools.partial(runtime.sign, side="client"))
    if config.admin_api is not None and config.admin_key is not None:
        admin = AdminContext(store, runtime.directory, (admin_public_key(config),),
                             audience_for(str(config.server_id)), utc_now,
                             server=str(config.server_id), internal_cert=config.internal_tls_cert,
                             catalogue=catalogue, unregistration=ClientUnregistration(
                                 catalogue.sender, conf_now, utc_now))
        admin_app = create_admin_app(admin)
        add_audit_routes(admin_app, AuditContext(
            message_log, engine, functools.partial(server_trust, config),
            subject=f"live message log of {config.server_id}"))
        listeners.append((admin_app, config.admin_api))
    refresher = asyncio.create_task(conf_client.run(config.conf_refresh_seconds))
    ocsp_refresher = asyncio.create_task(own_certs.run(
        conf_now, config.ocsp_refresh_seconds, config.ocsp_retry_seconds))
    stamping = asyncio.create_task(stamper.run(stamp_interval))
    tasks = [refresher, ocsp_refresher, stamping, asyncio.create_task(catalogue.run()),
             asyncio.create_task(message_log.run_orphan_sweep(utc_now))]
    if config.archive is not None:
        archiver = Archiver(message_log, engine, DirectoryTarget(config.archive.directory),
                            server_id=str(config.server_id), config=config.archive,
                            recipients=load_recipients(config.archive.recipients))
        tasks.append(asyncio.create_task(archiver.run(utc_now)))
    try:
        for listener in proxy_listeners:
            await listener.start()
        for app, listen in listeners:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            await AcceptingSite(runner, listen.host, listen.port,
                                backlog=LISTEN_BACKLOG).start()
        yield runtime
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for listener in proxy_listeners:
            listener.close()
        await asyncio.gather(server_proxy.shutdown(SHUTDOWN_GRACE_SECONDS),
                             client_proxy.shutdown(SHUTDOWN_GRACE_SECONDS))
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
        settle_heap()
        print(
            f"xchange security server {config.server_id} ready: client proxy "
            f"http://{config.client_proxy.host}:{config.client_proxy.port}, server proxy "
            f"https://{config.server_proxy.host}:{config.server_proxy.port}",
            flush=True,
        )
        await stop.wait()


def settle_heap() -> None:
    """Once started: collect, then move every object alive now -- modules, configuration,
    keys, the applications -- out of the cyclic collector's sight (:func:`gc.freeze`).

    Those objects live as long as the process, yet every full collection walked all of
    them: in a running server under load one took up to 0.4 s, during which no message
    moved (docs/decisions.md).  Objects made after this point are collected as before; a
    start-up object that later ends up in an unreachable cycle is not reclaimed."""
    gc.collect()
    gc.freeze()


def raise_open_file_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit, and return it.

    Every client connection, peer connection and provider connection is a file descriptor,
    and the usual soft limit (1024) would refuse the 1001st client with EMFILE long before
    the hard limit (often 65536 or more) is reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else hard
        if soft == resource.RLIM_INFINITY or soft < wanted:
            with contextlib.suppress(ValueError, OSError):  # not allowed: keep what we have
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop for ``[server] event_loop``: uvloop (``auto`` when it is installed,
    or ``uvloop``: a ConfigError when it is not) or asyncio's own."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ConfigError("server.event_loop is \"uvloop\", which is not installed "
                                  "(pip install uvloop)") from None
        else:
            return cast(Callable[[], asyncio.AbstractEventLoop], uvloop.new_event_loop)
    return asyncio.new_event_loop


def serve(config_path: Path) -> None:
    config = SecurityServerConfig.from_file(config_path).from_env()
    new_loop = loop_factory(config.event_loop)
    raise_open_file_limit()
    limit_malloc_arenas()  # before any thread: bodies stream through 1 MiB buffers
    with asyncio.Runner(loop_factory=new_loop) as runner:
        log.info("event loop: %s", type(runner.get_loop()).__module__.split(".")[0])
        runner.run(_serve(config))
