"""The adapter's layer above the backends: parameter typing, paging, minimisation, data
subjects and the OpenAPI document, without any silo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.base import Field, Operation, Parameter, Result, Value
from adapters.config import parse_config
from adapters.layer import (
    MAX_SUBJECTS_HEADER,
    convert,
    data_subjects,
    minimise,
    openapi_document,
    page_of,
    parse_params,
)
from tests.adapters.sqlkit import adapter_toml
from xchange.errors import AdapterError
from xchange.servicedesc import parse_openapi

CONFIG = parse_config(adapter_toml("sqlite:///r.db", "sqlite"), Path("/a.toml"), "toml")
SERVICE = CONFIG.services[0]


@pytest.mark.parametrize(("kind", "text", "value"), [
    ("string", "it's; DROP TABLE x", "it's; DROP TABLE x"),
    ("integer", "-42", -42),
    ("number", "3.25", 3.25),
    ("number", "1e3", 1000.0),
    ("boolean", "true", True),
    ("boolean", "false", False),
    ("date", "2024-02-29", "2024-02-29"),
    ("datetime", "2024-02-29T10:00:00Z", "2024-02-29T10:00:00+00:00"),
])
def test_convert_accepts(kind: str, text: str, value: object) -> None:
    assert convert("p", kind, text) == value  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "text"), [
    ("integer", "1.0"), ("integer", "0x10"), ("integer", "1 OR 1=1"), ("integer", ""),
    ("integer", "9" * 19), ("number", "inf"), ("number", "NaN"), ("number", "1,5"),
    ("boolean", "yes"), ("boolean", "True"), ("date", "2023-02-29"), ("date", "20240101"),
    ("datetime", "yesterday"), ("string", "a\x00b"), ("string", "x" * 1001),
])
def test_convert_refuses_with_400(kind: str, text: str) -> None:
    with pytest.raises(AdapterError) as info:
        convert("p", kind, text)  # type: ignore[arg-type]
    assert info.value.code == "adapter.bad_request"
    assert info.value.status == 400
    assert "'p'" in info.value.message


OP = Operation("svc", "find", "GET", "/things/{id}",
               (Parameter("id", "path", "integer"),
                Parameter("since", "query", "date", required=False)),
               (Field("id", "integer"), Field("name", "string"), Field("secret", "string")),
               many=True)


def test_parse_params_and_paging() -> None:
    assert parse_params(OP, {"id": "5"}, [("since", "2024-01-01"), ("limit", "3")]) == {
        "id": 5, "since": "2024-01-01"}
    assert parse_params(OP, {"id": "5"}, []) == {"id": 5, "since": None}
    assert page_of([("offset", "8"), ("limit", "3")], SERVICE) == (8, 3)
    assert page_of([], SERVICE) == (0, SERVICE.default_limit)
    assert page_of([("limit", "99999")], SERVICE) == (0, SERVICE.row_limit)
    with pytest.raises(AdapterError, match="unknown query parameter 'id'"):
        parse_params(OP, {"id": "5"}, [("id", "6")])


def test_minimise_keeps_only_granted_fields_in_order() -> None:
    records: list[dict[str, Value]] = [{"id": 1, "name": "a", "secret": "s"}]
    assert minimise(records, OP.fields, frozenset({"secret", "id"})) == [
        {"id": 1, "secret": "s"}]
    assert minimise(records, OP.fields, frozenset({"*"})) == records
    assert minimise(records, OP.fields, frozenset({"name"})) == [{"name": "a"}]


def test_data_subjects_are_encoded_unique_and_bounded() -> None:
    records: list[dict[str, Value]] = [
        {"code": "a,b"}, {"code": "x y"}, {"code": "a,b"}, {"code": None},
        {"code": "line\r\nbreak"}]
    assert data_subjects(records, "code") == "a%2Cb,x%20y,line%0D%0Abreak"
    assert data_subjects([{"code": None}], "code") is None
    many: list[dict[str, Value]] = [{"code": f"{i:011d}"} for i in range(MAX_SUBJECTS_HEADER // 11)]
    with pytest.raises(AdapterError, match="too many data subjects"):
        data_subjects(many, "code")
    assert Result(records).has_more is False


def test_openapi_document_is_what_a_security_server_accepts() -> None:
    doc = openapi_document(SERVICE, SERVICE.backend.operations(), CONFIG.title)
    parsed = parse_openapi(json.dumps(doc).encode())
    assert parsed.title == "Population register"
    assert sorted((e.method, e.path) for e in parsed.endpoints) == [
        ("GET", "/by-income"), ("GET", "/persons"), ("GET", "/persons-by-id/*"),
        ("GET", "/persons/*"), ("GET", "/slow/*")]
    listing = doc["paths"]["/persons"]["get"]
    assert [p["name"] for p in listing["parameters"]] == ["city", "offset", "limit"]
    assert "404" not in listing["responses"]
    assert "404" in doc["paths"]["/persons/{code}"]["get"]["responses"]
    assert "X-Xchange-Data-Subjects" in listing["responses"]["200"]["headers"]
