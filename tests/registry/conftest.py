"""A registry folder for the registry tests: configuration, initialised database, data.

The data is loaded the way an operator would, with ``init`` and ``import`` of a data file,
using certificates of the session's development CA (instance ``TEST``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy.engine import Engine
from sqlmodel import Session

from certs.ca import DevCA, IssuedCredentials
from certs.keys import write_certificate, write_secret_file
from registry.adminroles import issue_admin_token
from registry.app import create_app
from registry.bootstrap import import_data, init_registry
from registry.config import RegistryConfig
from registry.db import create_db_engine, migrate
from registry.service import RegistryService
from tests.security_server.conftest import db_url  # noqa: F401 (a fixture, re-used)

SERVER = "TEST/GOV/1234/ss1"
PASSPHRASE = b"registry test passphrase"


def registry_data() -> dict[str, Any]:
    return {
        "instance": "TEST",
        "members": [
            {"id": "TEST/GOV/1234", "name": "Ministry of Tests", "subsystems": ["REGISTRY"]},
            {"id": "TEST/COM/5678", "name": "Test Company"},
        ],
        "security_servers": [
            {"id": SERVER, "address": "127.0.0.1:5500", "auth_certs": ["certs/ss1-auth.pem"],
             "clients": ["TEST/GOV/1234/REGISTRY"]}
        ],
        "global_groups": [{"id": "TEST/owners", "members": ["TEST/GOV/1234"]}],
        "approved_cas": [{"name": "TEST CA", "certificate": "certs/ca.pem"}],
        "approved_tsas": [
            {"name": "TEST TSA", "url": "http://127.0.0.1:3180", "certificate": "certs/ca.pem"}
        ],
        "settings": {"conf_expiry_seconds": 600},
    }


MakeRegistry = Callable[..., Path]


def load_config(path: Path) -> RegistryConfig:
    """The registry's configuration as ``xchange registry ...`` reads it (passphrase read)."""
    return RegistryConfig.from_file(path).from_env({})


@pytest.fixture(scope="session")
def make_registry(
    dev_ca: DevCA, issue_server_auth: Callable[..., IssuedCredentials], pki_now: datetime
) -> MakeRegistry:
    """``make_registry(folder, **config)``: lay out and initialise a registry folder; return
    the path of its TOML configuration."""
    auth = issue_server_auth(SERVER)

    def make(folder: Path, **config: object) -> Path:
        data = folder / "data"
        write_certificate(data / "certs" / "ca.pem", dev_ca.certificate)
        write_certificate(data / "certs" / "ss1-auth.pem", auth.certificate)
        (data / "registry.json").write_text(json.dumps(registry_data()))
        write_secret_file(folder / "passphrase", PASSPHRASE)
        values: dict[str, object] = {"database_url": "sqlite:///registry.db",
                                     "passphrase_file": "passphrase", **config}
        path = folder / "registry.toml"
        path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
        registry = load_config(path)
        engine = create_db_engine(registry.database_url)
        try:
            init_registry(registry, engine, "TEST", actor="test", now=pki_now)
            with Session(engine) as session:
                import_data(RegistryService(session, actor="test", now=pki_now),
                            data / "registry.json")
                session.commit()
        finally:
            engine.dispose()
        return path

    return make


# -- a registry serving on a real socket, in a thread of its own -----------------------------


@dataclass
class LiveRegistry:
    config: RegistryConfig
    url: str

    def token(self, *roles: str, subject: str = "tester", hours: float = 1.0) -> str:
        return issue_admin_token(self.config, subject=subject, roles=roles or ALL_ROLES,
                                 now=datetime.now(UTC), lifetime=timedelta(hours=hours))


ALL_ROLES = ("observer", "registration_officer", "security_officer", "system_administrator")


@contextlib.contextmanager
def serve_in_thread(app: web.Application) -> Iterator[str]:
    """Run ``app`` on a free loopback port in a thread with its own event loop."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


@pytest.fixture(scope="module")
def live_registry(tmp_path_factory: pytest.TempPathFactory,
                  make_registry: MakeRegistry) -> Iterator[LiveRegistry]:
    config = load_config(make_registry(tmp_path_factory.mktemp("live")))
    with serve_in_thread(create_app(config)) as url:
        yield LiveRegistry(config, url)


# -- the registry's database, on SQLite and PostgreSQL ----------------------------------------


@pytest.fixture
def reg_engine(db_url: str) -> Iterator[Engine]:  # noqa: F811
    """An engine on an empty database migrated to the newest registry schema."""
    engine = create_db_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()
