"""A population register in a real database (SQLite, PostgreSQL or MariaDB) and the adapter
configuration that publishes it; shared by the adapter unit tests and the end-to-end tests.

PostgreSQL: ``XCHANGE_TEST_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/
test``), a schema per use.  MariaDB: ``XCHANGE_TEST_MARIADB_URL`` (default ``mysql://root@
127.0.0.1:3306/test``, as the machine's MariaDB is set up), a database per use.  When a
server cannot be reached the test is skipped saying why -- except under CI (``CI`` set),
where it fails, so that CI cannot pass by not running them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import PG_URL_VARIABLE, postgres_schema

__all__ = [
    "ANALYTICS",
    "BENEFITS",
    "DIALECTS",
    "INJECTIONS",
    "MARIADB_URL_VARIABLE",
    "ROWS",
    "adapter_toml",
    "database",
    "expected",
    "row_count",
    "service_toml",
]

MARIADB_URL_VARIABLE = "XCHANGE_TEST_MARIADB_URL"
DIALECTS = ("sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "mariadb")
BENEFITS = "DEMO/GOV/70000002/benefits"
ANALYTICS = "DEMO/GOV/70000002/analytics"
_CITIES = ("Tallinn", "Tartu", "Pärnu")

ROWS: list[dict[str, Any]] = [
    {"id": i + 1, "code": str(38001010000 + i), "name": f"Person {i}",
     "born": dt.date(1970 + i % 30, 1 + i % 12, 1 + i % 28), "city": _CITIES[i % 3],
     "income": Decimal(1000 + 100 * i)}
    for i in range(25)
]


def _unreachable(what: str, exc: Exception) -> None:
    message = f"{what} cannot be reached: {type(exc).__name__}: {exc}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must run these tests)")
    pytest.skip(message)


def _setup_engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    driver = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql",
              "mariadb": "mariadb+pymysql"}.get(parsed.drivername, parsed.drivername)
    return sa.create_engine(parsed.set(drivername=driver))


_METADATA = sa.MetaData()
_PERSONS = sa.Table(
    "persons", _METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("code", sa.String(11), unique=True, nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("born", sa.Date, nullable=False),
    sa.Column("city", sa.String(50), nullable=False),
    sa.Column("income", sa.Numeric(10, 2), nullable=False),
)


def _fill(url: str) -> None:
    engine = _setup_engine(url)
    try:
        _METADATA.create_all(engine)
        with engine.begin() as conn:
            conn.execute(_PERSONS.insert(), ROWS)
    finally:
        engine.dispose()


@contextlib.contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh database of ``kind`` holding :data:`ROWS` in table ``persons``."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'register.db'}"
        _fill(url)
        yield url
    elif kind == "postgresql":
        base = os.environ.get(PG_URL_VARIABLE, "postgresql://postgres@127.0.0.1:5432/test")
        probe = _setup_engine(base)
        try:
            probe.connect().close()
        except sa.exc.SQLAlchemyError as exc:
            _unreachable("PostgreSQL", exc)
        finally:
            probe.dispose()
        with postgres_schema(base) as url:
            _fill(url)
            yield url
    else:
        server = sa.make_url(os.environ.get(MARIADB_URL_VARIABLE,
                                            "mysql://root@127.0.0.1:3306/test"))
        name = f"t_{secrets.token_hex(6)}"
        admin = _setup_engine(server.render_as_string(hide_password=False))
        try:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
        except sa.exc.SQLAlchemyError as exc:
            admin.dispose()
            _unreachable("MariaDB", exc)
        try:
            url = server.set(database=name).render_as_string(hide_password=False)
            _fill(url)
            yield url
        finally:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"DROP DATABASE {name}")
            admin.dispose()


def row_count(url: str) -> tuple[int, list[tuple[Any, ...]]]:
    """How many persons there are, and all their rows (to show nothing changed)."""
    engine = _setup_engine(url)
    try:
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(sa.select(_PERSONS).order_by(_PERSONS.c.id))]
        return len(rows), rows
    finally:
        engine.dispose()


_SLOW = {
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
              "WHERE x < 2000000000) SELECT :code AS code, count(*) AS n FROM c",
    "postgresql": "SELECT code, pg_sleep(5)::text AS n FROM persons WHERE code = :code",
    "mariadb": "SELECT code, SLEEP(5) AS n FROM persons WHERE code = :code",
}


def _fields(kind: str, *names_types: tuple[str, str]) -> str:
    if kind != "sqlite":
        return ""  # PostgreSQL and MariaDB report the column types themselves
    return "fields = [" + ", ".join(f'{{ name = "{n}", type = "{t}" }}'
                                   for n, t in names_types) + "]\n"


_PERSON = (("id", "integer"), ("code", "string"), ("name", "string"), ("born", "date"),
           ("city", "string"), ("income", "number"))


def adapter_toml(url: str, kind: str, *, port: int | None = None, timeout: float = 1.0,
                 code: str = "register") -> str:
    """An adapter configuration publishing the database at ``url`` as service ``code``
    (:func:`service_toml`), listening on ``port``."""
    adapter = f"[adapter]\nport = {port}\n\n" if port else ""
    return adapter + service_toml(url, kind, code=code, timeout=timeout)


def service_toml(url: str, kind: str, *, code: str, timeout: float = 1.0) -> str:
    """One ``[[services]]`` entry publishing the database at ``url`` as service ``code``.

    Operations: ``/persons/{code}``, ``/persons-by-id/{id}`` (integer), ``/persons?city=``
    (paged), ``/by-income?min_income=`` (number, paged), ``/slow/{code}`` (runs past the
    service's ``timeout``).  ``benefits`` may see every field, ``analytics`` only code, born
    and city."""
    cols = "id, code, name, born, city, income"
    return f'''[[services]]
code = "{code}"
kind = "sql"
title = "Population register"
row_limit = 10
default_limit = 4
timeout_seconds = {timeout}
data_subject_field = "code"

[services.consumers]
"{BENEFITS}" = ["*"]
"{ANALYTICS}" = ["code", "born", "city"]

[services.sql]
url = "{url}"

[[services.sql.queries]]
name = "person"
path = "/persons/{{code}}"
summary = "One person by personal code"
sql = """
SELECT {cols}
FROM persons
WHERE code = :code
"""
parameters = [{{ name = "code", type = "string" }}]
{_fields(kind, *_PERSON)}
''' + "".join([
        _query("person_by_id", "/persons-by-id/{id}",
               f"SELECT {cols} FROM persons WHERE id = :id", "id", "integer", kind),
        _query("by_city", "/persons",
               f"SELECT {cols} FROM persons WHERE city = :city ORDER BY code", "city",
               "string", kind, many=True),
        _query("by_income", "/by-income",
               f"SELECT {cols} FROM persons WHERE income >= :min_income ORDER BY code",
               "min_income", "number", kind, many=True),
        _query("slow", "/slow/{code}", _SLOW[kind], "code", "string", kind,
               fields=(("code", "string"), ("n", "string"))),
    ])


def _query(name: str, path: str, sql: str, param: str, param_type: str, kind: str, *,
           many: bool = False, fields: tuple[tuple[str, str], ...] = _PERSON) -> str:
    return (f'[[services.sql.queries]]\nname = "{name}"\npath = "{path}"\n'
            f'many = {"true" if many else "false"}\nsql = "{sql}"\n'
            f'parameters = [{{ name = "{param}", type = "{param_type}" }}]\n'
            f"{_fields(kind, *fields)}\n")



def expected(row: dict[str, Any], fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A row as the adapter answers it (all fields, or only ``fields``)."""
    out = {"id": row["id"], "code": row["code"], "name": row["name"],
           "born": row["born"].isoformat(), "city": row["city"],
           "income": float(row["income"])}
    return {k: v for k, v in out.items() if fields is None or k in fields}


INJECTIONS = [
    "/persons/38001010001' OR '1'='1",
    "/persons/x'; DROP TABLE persons; --",
    "/persons/38001010001%27%3B%20DELETE%20FROM%20persons%3B%20--",
    "/persons-by-id/1 OR 1=1",
    "/persons-by-id/1;DELETE FROM persons",
    "/persons?city=Tartu' OR '1'='1",
    "/persons?city=Tartu'; UPDATE persons SET name='x'; --",
    "/persons?city=Tartu%00",
    "/by-income?min_income=0 OR 1=1",
    "/by-income?min_income=0);DELETE FROM persons;--",
]
"""An injection attempt in every parameter of the register's operations (paths relative to
the service)."""
