"""The SQL backend through the adapter's HTTP layer, on real SQLite, PostgreSQL and MariaDB.

Each test gets a fresh database holding the same population register (tests/adapters/
sqlkit.py) and an adapter serving it on a real socket (aiohttp's test server)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from adapters.app import create_app
from adapters.config import AdapterConfig, parse_config
from adapters.sql import SqlBackend
from tests.adapters.sqlkit import (
    ANALYTICS,
    BENEFITS,
    DIALECTS,
    INJECTIONS,
    ROWS,
    adapter_toml,
    database,
    expected,
    row_count,
)
from xchange.errors import AdapterError


@pytest.fixture(params=DIALECTS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``(dialect, url)`` of a fresh register database."""
    with database(request.param, tmp_path) as url:
        yield request.param, url


@pytest.fixture
def config(db: tuple[str, str], tmp_path: Path) -> AdapterConfig:
    kind, url = db
    return parse_config(adapter_toml(url, kind), tmp_path / "adapter.toml", "toml")


@pytest.fixture
async def client(config: AdapterConfig) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(config))) as c:
        yield c


async def get(client: TestClient[Any, Any], path: str, consumer: str | None = BENEFITS
              ) -> tuple[int, Any, dict[str, str]]:
    headers = {"X-Road-Client": consumer} if consumer else {}
    async with client.get(path, headers=headers) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def test_one_record_by_key_with_its_data_subject(client: TestClient[Any, Any]) -> None:
    status, body, headers = await get(client, f"/register/persons/{ROWS[3]['code']}")
    assert status == 200
    assert body == expected(ROWS[3])
    assert headers["X-Xchange-Data-Subjects"] == ROWS[3]["code"]


async def test_integer_path_parameter(client: TestClient[Any, Any]) -> None:
    status, body, _ = await get(client, "/register/persons-by-id/7")
    assert (status, body) == (200, expected(ROWS[6]))


async def test_missing_record_is_404_with_a_clear_body(client: TestClient[Any, Any]) -> None:
    status, body, headers = await get(client, "/register/persons/00000000000")
    assert status == 404
    assert body["type"] == "adapter.not_found"
    assert "no record" in body["message"]
    assert "X-Xchange-Data-Subjects" not in headers


async def test_paged_list(client: TestClient[Any, Any]) -> None:
    tartu = sorted((r for r in ROWS if r["city"] == "Tartu"), key=lambda r: r["code"])
    status, page1, headers = await get(client, "/register/persons?city=Tartu&limit=3")
    assert status == 200
    assert page1 == {"items": [expected(r) for r in tartu[:3]], "offset": 0, "limit": 3,
                     "has_more": True}
    assert headers["X-Xchange-Data-Subjects"] == ",".join(r["code"] for r in tartu[:3])
    _, page3, _ = await get(client, "/register/persons?city=Tartu&limit=3&offset=6")
    assert page3["items"] == [expected(r) for r in tartu[6:9]]
    assert page3["has_more"] is False
    # without limit: the service's default page (4); above row_limit (10): capped
    _, default, _ = await get(client, "/register/persons?city=Tartu")
    assert (len(default["items"]), default["limit"]) == (4, 4)
    _, capped, _ = await get(client, "/by-income?min_income=0".replace("/", "/register/", 1)
                             + "&limit=1000")
    assert (len(capped["items"]), capped["limit"], capped["has_more"]) == (10, 10, True)


async def test_number_parameter(client: TestClient[Any, Any]) -> None:
    status, body, _ = await get(client, "/register/by-income?min_income=3150.5&limit=10")
    assert status == 200
    assert [r["code"] for r in body["items"]] == [r["code"] for r in ROWS
                                                  if r["income"] >= 3150.5]


@pytest.mark.parametrize(("path", "says"), [
    ("/register/persons-by-id/seven", "'id' must be an integer"),
    ("/register/persons-by-id/1.5", "'id' must be an integer"),
    ("/register/by-income?min_income=lots", "'min_income' must be a number"),
    ("/register/by-income?min_income=nan", "'min_income' must be a number"),
    ("/register/persons", "missing parameter 'city'"),
    ("/register/persons?city=Tartu&city=Tallinn", "given twice"),
    ("/register/persons?city=Tartu&sort=name", "unknown query parameter 'sort'"),
    ("/register/persons?city=Tartu&limit=0", "'limit' must be an integer of at least 1"),
    ("/register/persons?city=Tartu&offset=-1", "'offset' must be an integer"),
    ("/register/persons/1?debug=1", "unknown query parameter 'debug'"),
])
async def test_wrong_parameters_are_400(client: TestClient[Any, Any], path: str,
                                        says: str) -> None:
    status, body, _ = await get(client, path)
    assert status == 400
    assert body["type"] == "adapter.bad_request"
    assert says in body["message"]




async def test_injection_in_every_parameter_has_no_effect(
        client: TestClient[Any, Any], db: tuple[str, str]) -> None:
    before = row_count(db[1])
    for path in INJECTIONS:
        status, body, _ = await get(client, "/register" + path)
        if path.startswith("/persons?"):
            # a string matches nothing: an empty page, or 400 for a NUL character
            assert status in (200, 400), path
            assert status == 400 or body["items"] == [], path
        else:
            assert status in (400, 404), (path, status, body)
    assert row_count(db[1]) == before
    assert before[0] == len(ROWS)


async def test_statement_past_its_timeout_is_504(client: TestClient[Any, Any]) -> None:
    status, body, _ = await get(client, f"/register/slow/{ROWS[0]['code']}")
    assert status == 504
    assert body["type"] == "adapter.timeout"
    # the connection is usable again afterwards
    status, _, _ = await get(client, f"/register/persons/{ROWS[0]['code']}")
    assert status == 200


async def test_consumers_get_different_fields(client: TestClient[Any, Any]) -> None:
    path = f"/register/persons/{ROWS[5]['code']}"
    _, full, _ = await get(client, path, BENEFITS)
    _, minimal, _ = await get(client, path, ANALYTICS)
    assert full == expected(ROWS[5])
    assert minimal == expected(ROWS[5], ("code", "born", "city"))
    _, page, _ = await get(client, "/register/persons?city=Tallinn&limit=2", ANALYTICS)
    assert all(set(r) == {"code", "born", "city"} for r in page["items"])


@pytest.mark.parametrize("consumer", [None, "DEMO/GOV/70000003/other"])
async def test_consumer_without_a_grant_is_403(client: TestClient[Any, Any],
                                               consumer: str | None) -> None:
    status, body, _ = await get(client, f"/register/persons/{ROWS[0]['code']}", consumer)
    assert status == 403
    assert body["type"] == "adapter.access_denied"


async def test_openapi_document_has_the_column_types(client: TestClient[Any, Any]) -> None:
    status, doc, _ = await get(client, "/register/openapi.json")
    assert status == 200
    props = doc["paths"]["/persons/{code}"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]["properties"]
    assert {k: v.get("format", v["type"]) for k, v in props.items()} == {
        "id": "integer", "code": "string", "name": "string", "born": "date",
        "city": "string", "income": "number"}


async def test_read_only_even_for_a_writing_statement(config: AdapterConfig,
                                                      db: tuple[str, str]) -> None:
    backend = config.services[0].backend
    assert isinstance(backend, SqlBackend)
    await backend.start()
    try:
        def write() -> None:
            backend._in_transaction(  # a statement no configuration could hold
                lambda c: c.execute(sa.text("UPDATE persons SET name = 'changed'")), 5.0)

        with pytest.raises(AdapterError):
            await backend._call(write, None, 10.0)
    finally:
        await backend.close()
    assert row_count(db[1])[1][0][2] == ROWS[0]["name"]


async def test_health_and_metrics(client: TestClient[Any, Any]) -> None:
    await get(client, f"/register/persons/{ROWS[0]['code']}")
    await get(client, "/register/persons/none")
    status, health, _ = await get(client, "/health")
    assert (status, health) == (200, {"status": "ok", "services": {"register": "ok"}})
    async with client.get("/metrics") as resp:
        text = await resp.text()
    assert 'xchange_adapter_requests_total{service="register",operation="person",' \
           'status="200"} 1' in text
    assert 'status="404"} 1' in text
    assert 'xchange_adapter_request_seconds_count{service="register",operation="person"} 2' \
        in text
