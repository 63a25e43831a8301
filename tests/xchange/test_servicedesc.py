"""OpenAPI 3 documents to endpoints: templates to wildcards, JSON and YAML, refusals."""

from __future__ import annotations

import json

import pytest

from xchange.access import EndpointPattern
from xchange.errors import BadRequestError
from xchange.servicedesc import parse_openapi

DOC = {
    "openapi": "3.0.3",
    "info": {"title": "Persons", "version": "1.2"},
    "paths": {
        "/persons": {"get": {}, "post": {}, "parameters": []},
        "/persons/{id}": {"get": {}, "delete": {}},
        "/persons/{id}/cars/{car}": {"put": {}},
        "/files/{name}.json": {"get": {}},
    },
}


def test_endpoints_from_json() -> None:
    desc = parse_openapi(json.dumps(DOC).encode())
    assert (desc.title, desc.version) == ("Persons", "1.2")
    assert desc.endpoints == (
        EndpointPattern("GET", "/persons"), EndpointPattern("POST", "/persons"),
        EndpointPattern("GET", "/persons/*"), EndpointPattern("DELETE", "/persons/*"),
        EndpointPattern("PUT", "/persons/*/cars/*"), EndpointPattern("GET", "/files/*"),
    )


def test_endpoints_from_yaml() -> None:
    text = b"openapi: 3.1.0\ninfo: {title: T, version: '1'}\npaths:\n  /a/{b}:\n    patch: {}\n"
    assert parse_openapi(text).endpoints == (EndpointPattern("PATCH", "/a/*"),)


@pytest.mark.parametrize(
    "document",
    [
        b"", b"[]", b"\xff", b"{not json", b"swagger: '2.0'\npaths: {}\n",
        b'{"openapi": 3}', b'{"openapi": "3.0.0", "paths": []}',
        b'{"openapi": "3.0.0", "paths": {"persons": {"get": {}}}}',
        b'{"openapi": "3.0.0", "paths": {"/a/../b": {"get": {}}}}',
        # YAML aliases could expand a small document into a huge one
        b"openapi: 3.0.0\na: &x [1, 2]\nb: [*x, *x]\npaths: {}\n",
        b"openapi: 3.0.0\npaths: !!python/object/apply:os.system ['true']\n",
    ],
)
def test_refused(document: bytes) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_openapi(document)
    assert info.value.code == "admin.invalid_description"
