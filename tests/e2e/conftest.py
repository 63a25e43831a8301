"""End-to-end fixtures: real processes (registry, two security servers, a provider system)
on real loopback sockets, with real TLS, keys and SQLite message logs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from security_server.db import create_db_engine
from security_server.logkeys import load_keyring
from security_server.messagelog import MessageLog
from xchange.messagelog import StoredRecord
from xchange_cli.federation import Federation, RunningFederation, ServerFiles, build_federation


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


async def read_records(server: ServerFiles, query_id: str | None = None, *,
                       database: Path | None = None) -> list[StoredRecord]:
    """The records of a server's SQLite log (or of a copy of it), decrypted with its keys."""
    engine = create_db_engine(f"sqlite:///{database or server.database}")
    keyring = load_keyring(server.log_keys) if server.log_keys else None
    log = MessageLog(engine, keyring=keyring)
    try:
        return await log.records(query_id=query_id)
    finally:
        log.close()
        engine.dispose()


def _start(root: Path, **settings: Any) -> Iterator[RunningFederation]:
    fed = build_federation(root, **settings)
    with RunningFederation(fed) as running:
        yield running


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFederation]:
    """A federation whose configuration is refreshed every second (expires after 30 s)."""
    yield from _start(
        tmp_path_factory.mktemp("federation"),
        conf_expiry_seconds=30,
        conf_refresh_seconds=1,
        registry_regenerate_seconds=0.5,
        ss_refresh_seconds=0.5,
        slow_service_timeout=1.5,
    )


@pytest.fixture
def fed(federation: RunningFederation) -> Federation:
    return federation.federation


async def log_records(server: ServerFiles, query_id: str) -> list[StoredRecord]:
    """The records of one exchange in a server's SQLite message log."""
    return await read_records(server, query_id)
