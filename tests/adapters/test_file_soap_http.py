"""The file and soap kinds through the adapter's configuration loader and HTTP layer, on a
real socket: typed answers, 404, paging, minimisation, data subjects, OpenAPI, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters.app import create_app
from adapters.config import AdapterConfigError, parse_config
from xchange.servicedesc import parse_openapi

BENEFITS = "DEMO/GOV/70000002/benefits"
STATISTICS = "DEMO/GOV/70000002/statistics"
PERSONS_CSV = (
    "ISIKUKOOD;NIMI;SYNNIAEG;LAPSI\r\n"
    "38001010001;Žaneta Šimková;01.01.1980;2\r\n"
    "49002020002;Ölo Õunapuu;02.02.1990;\r\n"
    "37003030003;Õie Ämarik;03.03.1970;0\r\n"
)


def config_toml(wsdl: Path) -> str:
    return f'''
[[services]]
code = "persons"
kind = "file"
row_limit = 2
data_subject_field = "code"

[services.consumers]
"{BENEFITS}" = ["*"]
"{STATISTICS}" = ["code", "born"]

[services.file]
path = "persons.csv"
encoding = "cp1252"
key = "code"
route = "/persons"
list = true
filters = ["born"]
csv = {{ delimiter = ";" }}
fields = [
  {{ name = "code", column = "ISIKUKOOD" }},
  {{ name = "name", column = "NIMI" }},
  {{ name = "born", type = "date", format = "%d.%m.%Y", column = "SYNNIAEG" }},
  {{ name = "children", type = "integer", column = "LAPSI" }},
]

[[services]]
code = "legacy"
kind = "soap"
timeout_seconds = 1
data_subject_field = "code"
consumers = {{ "*" = ["*"] }}

[services.soap]
wsdl = "{wsdl}"
operation = "getPerson"
path = "/persons/{{code}}"
record = ["getPersonResult"]
fields = [{{ name = "code" }}, {{ name = "name" }}, {{ name = "born", type = "date" }},
          {{ name = "alive", type = "boolean" }}]

[[services]]
code = "legacy-search"
kind = "soap"
consumers = {{ "*" = ["*"] }}

[services.soap]
wsdl = "{wsdl}"
operation = "findPersons"
path = "/persons"
many = true
record = ["findPersonsResult", "Person"]
fields = [{{ name = "code" }}, {{ name = "born", type = "date" }}]
'''


@pytest.fixture
async def client(tmp_path: Path, legacy: tuple[str, Path]
                 ) -> AsyncIterator[TestClient[Any, Any]]:
    (tmp_path / "persons.csv").write_bytes(PERSONS_CSV.encode("cp1252"))
    config = parse_config(config_toml(legacy[1]), tmp_path / "adapter.toml", "toml")
    async with TestClient(TestServer(create_app(config))) as c:
        yield c


async def get(client: TestClient[Any, Any], path: str, consumer: str = BENEFITS
              ) -> tuple[int, Any, dict[str, str]]:
    async with client.get(path, headers={"X-Road-Client": consumer}) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def test_file_service(client: TestClient[Any, Any], tmp_path: Path) -> None:
    status, body, headers = await get(client, "/persons/persons/38001010001")
    assert (status, body) == (200, {"code": "38001010001", "name": "Žaneta Šimková",
                                    "born": "1980-01-01", "children": 2})
    assert headers["X-Xchange-Data-Subjects"] == "38001010001"
    status, body, _ = await get(client, "/persons/persons/38001010001", STATISTICS)
    assert body == {"code": "38001010001", "born": "1980-01-01"}

    status, body, _ = await get(client, "/persons/persons/38001010009")
    assert status == 404
    assert body["type"] == "adapter.not_found"

    status, body, headers = await get(client, "/persons/persons?limit=5")
    assert status == 200
    assert [r["code"] for r in body["items"]] == ["38001010001", "49002020002"]
    assert (body["limit"], body["has_more"]) == (2, True)
    assert headers["X-Xchange-Data-Subjects"] == "38001010001,49002020002"

    status, body, _ = await get(client, "/persons/persons?born=1990-02-02")
    assert (status, [r["code"] for r in body["items"]]) == (200, ["49002020002"])
    status, body, _ = await get(client, "/persons/persons?born=02.02.1990")
    assert (status, body["type"]) == (400, "adapter.bad_request")

    (tmp_path / "persons.csv").write_bytes(
        PERSONS_CSV.encode("cp1252").replace("Ölo".encode("cp1252"), b"\x81lo"))
    status, body, _ = await get(client, "/persons/persons/38001010001")
    assert status == 502
    assert body["type"] == "adapter.backend_failed"
    assert "line 3: byte 0x81" in body["message"]
    async with client.get("/health") as resp:
        assert resp.status == 503


async def test_openapi_of_both_kinds(client: TestClient[Any, Any]) -> None:
    async with client.get("/persons/openapi.json") as resp:
        doc = await resp.json()
    assert set(doc["paths"]) == {"/persons/{code}", "/persons"}
    listing = {p["name"]: p["schema"] for p in doc["paths"]["/persons"]["get"]["parameters"]}
    assert listing["born"] == {"type": "string", "format": "date"}
    record = doc["paths"]["/persons/{code}"]["get"]
    assert record["operationId"] == "lookup"
    async with client.get("/legacy-search/openapi.json") as resp:
        doc = await resp.json()
    params = {p["name"]: p["schema"] for p in doc["paths"]["/persons"]["get"]["parameters"]}
    assert params["bornAfter"]["format"] == "date"
    assert params["limit"]["type"] == "integer"
    async with client.get("/legacy/openapi.json") as resp:
        parse_openapi(await resp.read())


async def test_soap_service(client: TestClient[Any, Any]) -> None:
    status, body, headers = await get(client, "/legacy/persons/38001010001")
    assert (status, body) == (200, {"code": "38001010001", "name": "Mari Maasikas",
                                    "born": "1980-01-01", "alive": True})
    assert headers["X-Xchange-Data-Subjects"] == "38001010001"
    status, body, _ = await get(client, "/legacy/persons/nobody")
    assert (status, body["type"]) == (404, "adapter.not_found")
    status, body, _ = await get(client, "/legacy/persons/fault")
    assert (status, body["type"]) == (502, "adapter.soap_fault")
    assert "no such person in the register" in body["message"]
    status, body, _ = await get(client, "/legacy/persons/slow")
    assert (status, body["type"]) == (504, "adapter.timeout")

    status, body, _ = await get(client, "/legacy-search/persons?bornAfter=1985-01-01")
    assert (status, body["items"]) == (200, [{"code": "49002020002", "born": "1990-02-02"}])
    status, body, _ = await get(client, "/legacy-search/persons?bornAfter=1975")
    assert (status, body["type"]) == (400, "adapter.bad_request")


@pytest.mark.parametrize(("change", "where"), [
    (('key = "code"', 'key = "kood"'), r"adapter\.toml:\d+: services\[0\]\.file\.key: 'kood' "
                                       r"is not a declared field"),
    (('encoding = "cp1252"', 'encoding = "utf-16"'),
     r"adapter\.toml:\d+: services\[0\]\.file\.encoding: 'utf-16' does not write"),
    (('operation = "getPerson"', 'operation = "getPet"'),
     r"adapter\.toml:\d+: services\[1\]\.soap\.operation: population\.wsdl: no SOAP binding "
     r"has an operation 'getPet'"),
    (('format = "%d.%m.%Y", ', 'start = 0, '),
     r"adapter\.toml:\d+: services\[0\]\.file\.fields\[2\]\.start: 0 is less than"),
])
def test_configuration_errors_name_the_line(tmp_path: Path, legacy: tuple[str, Path],
                                            change: tuple[str, str], where: str) -> None:
    text = config_toml(legacy[1]).replace(*change, 1)
    with pytest.raises(AdapterConfigError, match=where):
        parse_config(text, tmp_path / "adapter.toml", "toml")
