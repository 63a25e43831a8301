"""A registry folder for the registry tests: configuration, initialised database, data.

The data is loaded the way an operator would, with ``init`` and ``import`` of a data file,
using certificates of the session's development CA (instance ``TEST``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from certs.ca import DevCA, IssuedCredentials
from certs.keys import write_certificate
from registry.bootstrap import import_data, init_registry
from registry.config import RegistryConfig
from registry.db import create_db_engine, migrate
from registry.service import RegistryService
from tests.security_server.conftest import db_url  # noqa: F401 (a fixture, re-used)

SERVER = "TEST/GOV/1234/ss1"


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


@pytest.fixture
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
        values: dict[str, object] = {"database_url": "sqlite:///registry.db", **config}
        path = folder / "registry.toml"
        path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
        registry = RegistryConfig.from_file(path)
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


# -- the registry's database, on SQLite and PostgreSQL ----------------------------------------


@pytest.fixture
def reg_engine(db_url: str) -> Iterator[Engine]:  # noqa: F811
    """An engine on an empty database migrated to the newest registry schema."""
    engine = create_db_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()
