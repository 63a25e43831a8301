"""The SQL backend (kind ``sql``): named, read-only, parameterised queries on any database
SQLAlchemy reaches -- SQLite, PostgreSQL (psycopg), MariaDB/MySQL (PyMySQL).

What it guarantees:

* **No SQL from request text.**  Every statement is written in the configuration; a request
  only supplies values for its ``:name`` placeholders, bound by the driver.  Paging appends
  fixed text (``LIMIT :xchange_limit OFFSET :xchange_offset``), also bound.
* **Read-only**, twice over: SQLite is opened ``mode=ro`` with ``PRAGMA query_only``;
  PostgreSQL runs each query in ``SET TRANSACTION READ ONLY``; MariaDB/MySQL in
  ``START TRANSACTION READ ONLY``.  Every transaction is rolled back.  (Give the adapter a
  database account that can only read, too.)
* **Statement timeouts** enforced by the database: PostgreSQL ``statement_timeout``,
  MariaDB ``max_statement_time`` (MySQL ``max_execution_time``), SQLite a progress handler
  that interrupts the statement; all surface as :class:`TimeoutError`.
* Blocking driver calls run in a thread pool of ``pool_size`` threads (one connection each).

Record fields come from the query's ``fields`` list or, without one, from the column types
the database reports for the result (PostgreSQL, MariaDB/MySQL; SQLite reports none).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
import sqlite3
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal, cast

import sqlalchemy as sa

from adapters.base import (
    ConfigValueError,
    Field,
    FieldType,
    Operation,
    Parameter,
    Query,
    Result,
    Value,
)
from certs.keys import ProtectedKeyError, read_secret_file
from xchange.errors import AdapterError

__all__ = ["SqlBackend", "SqlQuery", "from_config"]

_PATH_PARAM: Final = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)\}")
_PAGING: Final = " LIMIT :xchange_limit OFFSET :xchange_offset"
_RESERVED: Final = frozenset({"offset", "limit", "xchange_limit", "xchange_offset"})
_DIALECTS: Final = ("sqlite", "postgresql", "mysql", "mariadb")
_DRIVERS: Final = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql",
                    "mariadb": "mariadb+pymysql"}
_GRACE_SECONDS: Final = 2.0
"""How long past its timeout a statement may run before the adapter stops waiting for it
(the database should have cancelled it by then)."""

# Column type codes the drivers report, to JSON field types (anything else is a string).
_PG_TYPES: Final[Mapping[int, FieldType]] = {
    16: "boolean", 20: "integer", 21: "integer", 23: "integer", 700: "number", 701: "number",
    1700: "number", 1082: "date", 1114: "datetime", 1184: "datetime",
}
_MYSQL_TYPES: Final[Mapping[int, FieldType]] = {
    0: "number", 246: "number", 4: "number", 5: "number", 1: "integer", 2: "integer",
    3: "integer", 8: "integer", 9: "integer", 13: "integer", 10: "date", 14: "date",
    7: "datetime", 12: "datetime",
}


@dataclass(frozen=True, slots=True)
class SqlQuery:
    """One configured query and the operation it serves (fields empty until known)."""

    operation: Operation
    sql: str


def from_config(code: str, section: Mapping[str, Any], base_dir: Path) -> SqlBackend:
    """Build the backend of service ``code`` from its ``[services.sql]`` table."""
    url = _url(section, base_dir)
    dialect = url.get_backend_name()
    if dialect not in _DIALECTS:
        raise ConfigValueError(f"database {dialect!r} is not supported; use one of "
                               f"{', '.join(_DIALECTS)}", ("url",))
    queries = tuple(_query(code, q, i, dialect) for i, q in enumerate(section["queries"]))
    names = [q.operation.name for q in queries]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigValueError(f"query name {name!r} used twice", ("queries", i, "name"))
    return SqlBackend(url, queries, pool_size=section.get("pool_size", 4))


def _url(section: Mapping[str, Any], base_dir: Path) -> sa.URL:
    try:
        url = sa.make_url(section["url"])
    except sa.exc.ArgumentError as exc:
        raise ConfigValueError(f"not a database URL: {exc}", ("url",)) from exc
    # The drivers xchange installs, where the URL names none (SQLAlchemy's defaults are not).
    url = url.set(drivername=_DRIVERS.get(url.drivername, url.drivername))
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ConfigValueError("an SQLite URL must name a database file", ("url",))
        url = url.set(database=str(base_dir / url.database))
    if "password_file" in section:
        try:
            secret = read_secret_file(base_dir / section["password_file"])
        except ProtectedKeyError as exc:
            raise ConfigValueError(str(exc), ("password_file",)) from exc
        url = url.set(password=secret.decode("utf-8"))
    return url


def _query(code: str, doc: Mapping[str, Any], i: int, dialect: str) -> SqlQuery:
    at: tuple[str | int, ...] = ("queries", i)
    declared = {p["name"]: p for p in doc.get("parameters", [])}
    in_path = _PATH_PARAM.findall(doc["path"])
    params = []
    for name in in_path:
        if name not in declared:
            raise ConfigValueError(f"path parameter {{{name}}} is not declared in parameters",
                                   (*at, "path"))
    many = bool(doc.get("many", False))
    for j, (name, p) in enumerate(declared.items()):
        where: Literal["path", "query"] = "path" if name in in_path else "query"
        if where == "query" and many and name in _RESERVED:
            raise ConfigValueError(f"parameter name {name!r} is reserved for paging",
                                   (*at, "parameters", j, "name"))
        params.append(Parameter(name, where, p["type"],
                                required=True if where == "path" else p.get("required", True),
                                description=p.get("description", "")))
    try:
        placeholders = set(sa.text(doc["sql"]).compile().params)
    except sa.exc.SQLAlchemyError as exc:
        raise ConfigValueError(f"cannot read the SQL: {exc}", (*at, "sql")) from exc
    if placeholders != set(declared):
        raise ConfigValueError(
            "the SQL's placeholders (" + ", ".join(sorted(f":{n}" for n in placeholders))
            + ") must be exactly the declared parameters ("
            + ", ".join(sorted(declared)) + ")", (*at, "sql"))
    fields = tuple(Field(f["name"], f["type"], f.get("nullable", True), f.get("description", ""))
                   for f in doc.get("fields", []))
    if not fields and dialect == "sqlite":
        raise ConfigValueError("SQLite reports no column types: declare the query's fields",
                               at)
    op = Operation(service=code, name=doc["name"], method="GET", path=doc["path"],
                   parameters=tuple(params), fields=fields, many=many,
                   summary=doc.get("summary", ""))
    return SqlQuery(op, doc["sql"].strip().rstrip(";"))


class SqlBackend:
    """A database behind an adapter service (see the module docstring)."""

    def __init__(self, url: sa.URL, queries: Sequence[SqlQuery], *, pool_size: int = 4) -> None:
        self.url = url
        self.dialect = url.get_backend_name()
        self._queries = {q.operation.name: q for q in queries}
        self._pool_size = pool_size
        self._engine: sa.Engine | None = None
        self._executor: ThreadPoolExecutor | None = None

    def operations(self) -> Sequence[Operation]:
        return tuple(q.operation for q in self._queries.values())

    async def start(self) -> None:
        """Open the pool and ask the database for each query's columns: their types become
        the fields of a query that declares none; a declared list must match them."""
        self._executor = ThreadPoolExecutor(self._pool_size, thread_name_prefix="adapter-sql")
        self._engine = self._create_engine()
        for name, q in list(self._queries.items()):
            found: tuple[Field, ...] = await self._call(self._describe, q, 30.0)
            declared = q.operation.fields
            if not declared:
                self._queries[name] = replace(q, operation=replace(q.operation, fields=found))
            elif len(declared) != len(found):
                raise AdapterError(f"query {name!r} returns {len(found)} columns "
                                   f"({', '.join(f.name for f in found)}) but declares "
                                   f"{len(declared)} fields", code="adapter.unavailable")
        await self.check()

    async def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def check(self) -> None:
        await self._call(lambda: self._in_transaction(lambda c: c.execute(sa.text("SELECT 1")),
                                                      5.0), None, 7.0)

    async def run(self, query: Query) -> Result:
        q = self._queries[query.operation.name]
        result = await self._call(self._run, (q, query), query.timeout + _GRACE_SECONDS)
        return cast(Result, result)

    # -- in the pool's threads ---------------------------------------------------------------

    async def _call(self, func: Any, arg: Any, wait: float) -> Any:
        if self._executor is None:
            raise AdapterError("the SQL backend was not started", code="adapter.unavailable")
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._executor, func) if arg is None else \
            loop.run_in_executor(self._executor, func, arg)
        try:
            return await asyncio.wait_for(job, wait)
        except sa.exc.DBAPIError as exc:
            if self._is_timeout(exc):
                raise TimeoutError("the database cancelled the statement at its timeout") \
                    from exc
            if exc.connection_invalidated or isinstance(exc, sa.exc.OperationalError):
                raise AdapterError(f"database unavailable: {type(exc.orig).__name__}",
                                   code="adapter.unavailable") from exc
            raise AdapterError(f"database error: {type(exc.orig).__name__}") from exc
        except sa.exc.SQLAlchemyError as exc:
            raise AdapterError(f"database error: {type(exc).__name__}") from exc

    def _create_engine(self) -> sa.Engine:
        if self.dialect == "sqlite":
            path = Path(self.url.database or "")

            def connect() -> sqlite3.Connection:
                # mode=ro: the file is opened read-only; query_only: no statement writes.
                conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                       check_same_thread=False)
                conn.execute("PRAGMA query_only = ON")
                return conn

            return sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.QueuePool,
                                    pool_size=self._pool_size)
        return sa.create_engine(self.url, pool_size=self._pool_size, pool_pre_ping=True)

    def _in_transaction(self, work: Any, timeout: float) -> Any:
        """Run ``work(connection)`` in a read-only transaction under a statement timeout,
        then roll back."""
        assert self._engine is not None
        with self._engine.connect() as conn:
            try:
                self._begin_read_only(conn, timeout)
                return work(conn)
            finally:
                conn.rollback()
                if self.dialect == "sqlite":
                    conn.connection.driver_connection.set_progress_handler(None, 0)  # type: ignore[union-attr]

    def _begin_read_only(self, conn: sa.Connection, timeout: float) -> None:
        if self.dialect == "postgresql":
            conn.execute(sa.text("SET TRANSACTION READ ONLY"))
            conn.execute(sa.text("SELECT set_config('statement_timeout', :ms, true)"),
                         {"ms": str(max(1, int(timeout * 1000)))})
        elif self.dialect in ("mysql", "mariadb"):
            if getattr(conn.dialect, "is_mariadb", False):
                conn.execute(sa.text("SET SESSION max_statement_time = :s"), {"s": timeout})
            else:
                conn.execute(sa.text("SET SESSION max_execution_time = :ms"),
                             {"ms": max(1, int(timeout * 1000))})
            conn.exec_driver_sql("START TRANSACTION READ ONLY")
        else:
            deadline = time.monotonic() + timeout
            raw = conn.connection.driver_connection
            assert isinstance(raw, sqlite3.Connection)
            raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)

    def _describe(self, q: SqlQuery) -> tuple[Field, ...]:
        """The fields of ``q``'s result, from the column types the database reports."""
        codes = {"postgresql": _PG_TYPES, "sqlite": {}}.get(self.dialect, _MYSQL_TYPES)
        nulls = dict.fromkeys(p.name for p in q.operation.parameters)
        sql = f"SELECT * FROM ({q.sql}) AS xchange_q LIMIT 0"  # noqa: S608 (configured)

        def describe(conn: sa.Connection) -> tuple[Field, ...]:
            result = conn.execute(sa.text(sql), nulls)
            return tuple(Field(str(d[0]), codes.get(cast(int, d[1]), "string"))
                         for d in result.cursor.description)

        fields: tuple[Field, ...] = self._in_transaction(describe, 30.0)
        return fields

    def _run(self, job: tuple[SqlQuery, Query]) -> Result:
        q, query = job
        op = q.operation
        params: dict[str, Any] = {p.name: self._bind(p, query.params.get(p.name))
                                  for p in op.parameters}
        sql = q.sql
        if op.many:
            sql += _PAGING
            params |= {"xchange_limit": query.limit + 1, "xchange_offset": query.offset}

        def fetch(conn: sa.Connection) -> list[Sequence[Any]]:
            rows = conn.execute(sa.text(sql), params).fetchmany(query.limit + 1)
            return [tuple(r) for r in rows]

        rows = self._in_transaction(fetch, query.timeout)
        names = [f.name for f in op.fields]
        records = []
        for row in rows[: query.limit]:
            if len(row) != len(names):
                raise AdapterError(f"query {op.name!r} returned {len(row)} columns, "
                                   f"{len(names)} fields are declared")
            records.append({f.name: _value(f, v) for f, v in zip(op.fields, row, strict=True)})
        return Result(records, has_more=len(rows) > query.limit)

    def _bind(self, p: Parameter, value: Value) -> Any:
        if value is None or self.dialect == "sqlite" or not isinstance(value, str):
            return value  # SQLite compares ISO 8601 text
        if p.type == "date":
            return dt.date.fromisoformat(value)
        if p.type == "datetime":
            return dt.datetime.fromisoformat(value)
        return value

    @staticmethod
    def _is_timeout(exc: sa.exc.DBAPIError) -> bool:
        orig = exc.orig
        if getattr(orig, "sqlstate", None) == "57014":  # PostgreSQL query_canceled
            return True
        args = getattr(orig, "args", ())
        if args and args[0] in (1969, 3024):  # MariaDB / MySQL statement time exceeded
            return True
        return isinstance(orig, sqlite3.OperationalError) and str(orig) == "interrupted"


def _value(field: Field, value: Any) -> Value:
    """A database value as the JSON value of its field's type."""
    if value is None:
        return None
    try:
        match field.type:
            case "integer":
                return int(value)
            case "number":
                return float(value) if not isinstance(value, int) else value
            case "boolean":
                return bool(value)
            case "date" | "datetime" if isinstance(value, dt.date):
                return value.isoformat()
    except (TypeError, ValueError) as exc:
        raise AdapterError(f"field {field.name!r}: the database value is not a "
                           f"{field.type}") from exc
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Decimal | dt.date | dt.time | dt.timedelta):
        return str(value)
    return value if isinstance(value, str | int | float | bool) else str(value)
