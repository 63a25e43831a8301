"""Database fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL tests use the server named by ``XCHANGE_TEST_DATABASE_URL``, each in a schema of
its own that is dropped afterwards.  Without the variable they are skipped; with it but no
reachable server they fail, so CI cannot pass by silently skipping them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from security_server.db import create_db_engine, create_tables

PG_URL_VARIABLE = "XCHANGE_TEST_DATABASE_URL"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database of the parametrized kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'security_server.db'}"
        return
    base = os.environ.get(PG_URL_VARIABLE)
    if not base:
        pytest.skip(f"{PG_URL_VARIABLE} not set: PostgreSQL storage tests skipped")
    schema = f"t_{secrets.token_hex(8)}"
    admin = create_db_engine(base)
    try:
        with admin.begin() as connection:
            connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except sa.exc.SQLAlchemyError as exc:
        admin.dispose()
        pytest.fail(f"{PG_URL_VARIABLE} is set but PostgreSQL cannot be used: {exc}")
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on :func:`db_url` with the security server's tables created."""
    engine = create_db_engine(db_url)
    create_tables(engine)
    yield engine
    engine.dispose()
