"""Database fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL tests use the server named by ``XCHANGE_TEST_DATABASE_URL``, each in a schema of
its own that is dropped afterwards.  Without the variable they are skipped; with it but no
reachable server they fail, so CI cannot pass by silently skipping them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from security_server.app import loop_factory
from security_server.db import create_db_engine, create_tables
from tests.conftest import PG_URL_VARIABLE, postgres_schema

_BOTH_LOOPS = frozenset({"tests.security_server.test_batchsign",
                         "tests.security_server.test_httpclient",
                         "tests.security_server.test_listen",
                         "tests.security_server.test_logwriter",
                         "tests.security_server.test_httpserver",
                         "tests.security_server.test_runtime"})
"""Test modules that run on both event loops a security server can run on
(``[server] event_loop``): the hand-written HTTP client works on the loop's transports
directly, and uvloop's are not asyncio's (nor subclasses of them); the log's writer
commits on the loop's turns and hands results to the loop from its thread; the batch
signer's callers append their records in the signing turn, ahead of their wake-ups; the
listeners accept for the loop (uvloop's own take one connection per turn)."""


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item
                                  ) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories = {"asyncio": asyncio.new_event_loop}
    module = getattr(item, "module", None)
    if module is not None and module.__name__ in _BOTH_LOOPS:
        uvloop = loop_factory("auto")
        if uvloop is not asyncio.new_event_loop:
            factories["uvloop"] = uvloop
    return factories


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database of the parametrized kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'security_server.db'}"
        return
    base = os.environ.get(PG_URL_VARIABLE)
    if not base:
        pytest.skip(f"{PG_URL_VARIABLE} not set: PostgreSQL storage tests skipped")
    with postgres_schema(base) as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on :func:`db_url` with the security server's tables created."""
    engine = create_db_engine(db_url)
    create_tables(engine)
    yield engine
    engine.dispose()
