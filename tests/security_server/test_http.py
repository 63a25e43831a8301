"""The one place errors become wire responses: codes, statuses, bodies, no stack traces.

The proxies' server renders errors with ``error_renderer`` (tested with the server itself in
test_httpserver.py); here the admin API's middleware, and SOAP faults."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from lxml import etree

from security_server.http import error_middleware, hide_server_version, soap_fault, unexpected
from xchange.errors import AccessDeniedError, XRoadError

_FAULT = "{http://schemas.xmlsoap.org/soap/envelope/}Body/" \
         "{http://schemas.xmlsoap.org/soap/envelope/}Fault"


async def _denied(request: web.Request) -> web.Response:
    raise AccessDeniedError("no access for you", detail="d")


async def _crash(request: web.Request) -> web.Response:
    raise RuntimeError("secret internals /etc/passwd")


async def _read(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="ok")


Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    app = web.Application(middlewares=[error_middleware("server.clientproxy.internal_error")],
                          client_max_size=1024)
    app.router.add_get("/denied", _denied)
    app.router.add_get("/crash", _crash)
    app.router.add_post("/read", _read)
    hide_server_version(app)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_xroad_error_becomes_header_and_json_body(client: Client) -> None:
    resp = await client.get("/denied")
    assert resp.status == 403
    assert resp.headers["X-Road-Error"] == "server.serverproxy.access_denied"
    assert resp.headers["Server"] == "xchange"
    assert resp.content_type == "application/json"
    assert await resp.json() == {"type": "server.serverproxy.access_denied",
                                 "message": "no access for you", "detail": "d"}


async def test_unexpected_exception_is_an_internal_error_without_details(
        client: Client) -> None:
    resp = await client.get("/crash")
    body = await resp.text()
    assert resp.status == 500
    assert resp.headers["X-Road-Error"] == "server.clientproxy.internal_error"
    assert "secret" not in body and "Traceback" not in body
    assert len((await resp.json())["detail"]) == 36  # the incident id in the server's log


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nowhere", 400, "client.bad_request"),
        ("PUT", "/denied", 405, "client.unsupported_method"),
        ("POST", "/read", 413, "client.payload_too_large"),
    ],
)
async def test_http_errors_get_xroad_codes(client: Client,
                                           method: str, path: str, status: int,
                                           code: str) -> None:
    resp = await client.request(method, path, data=b"x" * 4096)
    assert (resp.status, resp.headers["X-Road-Error"]) == (status, code)
    assert (await resp.json())["type"] == code


def test_every_status_used_is_registered() -> None:
    assert XRoadError("x", code="client.payload_too_large").status == 413


def _fault(status: int, headers: list[tuple[str, str]], body: bytes) -> etree._Element:
    assert status == 500
    assert headers == [("Content-Type", "text/xml; charset=utf-8")]
    fault = etree.fromstring(body).find(_FAULT)
    assert fault is not None
    return fault


def test_an_xroad_error_on_a_soap_request_is_a_soap_fault() -> None:
    answer = soap_fault(AccessDeniedError("no access for you", detail="d"))
    fault = _fault(answer.status, answer.headers, answer.body)
    assert fault.findtext("faultcode") == "server.serverproxy.access_denied"
    assert fault.findtext("faultstring") == "no access for you (d)"
    assert fault.findtext("faultactor") == ""
    assert len(fault.findtext("detail/faultDetail") or "") == 36


def test_a_soap_internal_error_names_its_incident_only() -> None:
    error = unexpected(RuntimeError("secret internals"), "server.clientproxy.internal_error")
    answer = soap_fault(error, incident=error.detail)
    fault = _fault(answer.status, answer.headers, answer.body)
    assert fault.findtext("faultcode") == "server.clientproxy.internal_error"
    assert fault.findtext("faultstring") == "internal error"
    assert fault.findtext("detail/faultDetail") == error.detail
    assert b"secret" not in answer.body
