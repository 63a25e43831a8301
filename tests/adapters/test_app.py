"""The adapter's HTTP layer over an in-memory backend (a real implementation of the seam):
how failures of a silo, and requests the layer does not serve, are answered."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters.app import JsonLogFormatter, create_app
from adapters.base import Field, Operation, Parameter, Query, Result, Value
from adapters.config import AdapterConfig, ServiceConfig
from xchange.errors import AdapterError


class MemoryBackend:
    """Records in a list; ``fail`` makes every call raise it; ``stall`` makes runs hang."""

    def __init__(self) -> None:
        self.records: list[dict[str, Value]] = [
            {"id": i, "name": f"n{i}", "secret": "s"} for i in range(5)]
        self.fail: BaseException | None = None
        self.stall = False
        self.queries: list[Query] = []

    def operations(self) -> Sequence[Operation]:
        fields = (Field("id", "integer"), Field("name", "string"), Field("secret", "string"))
        return (Operation("things", "thing", "GET", "/things/{id}",
                          (Parameter("id", "path", "integer"),), fields, many=False),
                Operation("things", "all", "GET", "/things", (), fields, many=True))

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def check(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def run(self, query: Query) -> Result:
        self.queries.append(query)
        if self.fail is not None:
            raise self.fail
        if self.stall:
            await asyncio.sleep(3600)
        if query.operation.many:
            page = self.records[query.offset:query.offset + query.limit + 1]
            return Result(page[:query.limit], has_more=len(page) > query.limit)
        return Result([r for r in self.records if r["id"] == query.params["id"]])


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
async def client(backend: MemoryBackend) -> AsyncIterator[TestClient[Any, Any]]:
    service = ServiceConfig(code="things", kind="memory", backend=backend,
                            consumers={"*": frozenset({"id", "name"})}, row_limit=3,
                            default_limit=2, timeout=0.2)
    config = AdapterConfig(source=Path("/memory.toml"), services=(service,))
    async with TestClient(TestServer(create_app(config))) as c:
        yield c


async def test_pages_and_minimisation_over_the_seam(client: TestClient[Any, Any],
                                                    backend: MemoryBackend) -> None:
    async with client.get("/things/things?offset=1&limit=50") as resp:
        assert resp.status == 200
        assert await resp.json() == {"items": [{"id": i, "name": f"n{i}"} for i in (1, 2, 3)],
                                     "offset": 1, "limit": 3, "has_more": True}
        assert resp.headers["Server"] == "xchange-adapter"
    assert (backend.queries[-1].limit, backend.queries[-1].timeout) == (3, 0.2)


@pytest.mark.parametrize(("failure", "status", "code"), [
    (RuntimeError("boom at /secret/path"), 502, "adapter.backend_failed"),
    (AdapterError("silo down", code="adapter.unavailable"), 503, "adapter.unavailable"),
    (TimeoutError(), 504, "adapter.timeout"),
])
async def test_silo_failures_are_clear_errors_without_internals(
        client: TestClient[Any, Any], backend: MemoryBackend, failure: BaseException,
        status: int, code: str, caplog: pytest.LogCaptureFixture) -> None:
    backend.fail = failure
    async with client.get("/things/things/1") as resp:
        body = await resp.json()
    assert (resp.status, body["type"]) == (status, code)
    assert "boom" not in json.dumps(body) and "Traceback" not in json.dumps(body)
    async with client.get("/health") as resp:
        assert resp.status == 503
        assert (await resp.json())["status"] == "failing"
    async with client.get("/metrics") as resp:
        assert 'xchange_adapter_errors_total{service="things",operation="thing"} 1' in \
            await resp.text()


async def test_a_backend_that_hangs_is_abandoned(client: TestClient[Any, Any],
                                                 backend: MemoryBackend,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("adapters.app._OVERRUN_SECONDS", 0.1)
    backend.stall = True
    async with client.get("/things/things/1") as resp:
        assert resp.status == 504
        assert (await resp.json())["type"] == "adapter.timeout"


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("POST", "/things/things/1", 405, "client.unsupported_method"),
    ("GET", "/things/nothing", 404, "adapter.not_found"),
    ("GET", "/other/openapi.json", 404, "adapter.not_found"),
])
async def test_what_the_adapter_does_not_serve(client: TestClient[Any, Any], method: str,
                                               path: str, status: int, code: str) -> None:
    async with client.request(method, path) as resp:
        assert resp.status == status
        assert (await resp.json())["type"] == code
        if status == 405:
            assert resp.headers["Allow"] == "GET"


def test_json_log_lines() -> None:
    record = logging.LogRecord("xchange.adapter", logging.INFO, __file__, 1, "request", (),
                               None)
    record.fields = {"service": "things", "status": 200, "ms": 1.5}
    line = json.loads(JsonLogFormatter().format(record))
    assert line["message"] == "request"
    assert (line["service"], line["status"], line["level"]) == ("things", 200, "INFO")
    assert line["time"].endswith("Z")


async def test_only_allowed_networks_reach_the_services(backend: MemoryBackend) -> None:
    service = ServiceConfig(code="things", kind="memory", backend=backend,
                            consumers={"*": frozenset({"*"})})
    config = AdapterConfig(source=Path("/memory.toml"), services=(service,),
                           allowed_networks=(ipaddress.ip_network("10.1.2.0/24"),))
    assert config.allows("10.1.2.3") and config.allows("::ffff:10.1.2.3")
    assert not config.allows("127.0.0.1") and not config.allows(None)
    async with TestClient(TestServer(create_app(config))) as c:
        for path in ("/things/things/1", "/things/openapi.json"):
            async with c.get(path, headers={"X-Road-Client": "DEMO/GOV/1/x"}) as resp:
                assert resp.status == 403
                assert "127.0.0.1 is not an allowed address" in (await resp.json())["message"]
        async with c.get("/health") as resp:
            assert resp.status == 200
    assert backend.queries == []
