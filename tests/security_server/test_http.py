"""The one place errors become wire responses: codes, statuses, bodies, no stack traces."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from lxml import etree

from security_server.http import MESSAGE_ID, SOAP, error_middleware, hide_server_version
from xchange.errors import AccessDeniedError, XRoadError

_FAULT = "{http://schemas.xmlsoap.org/soap/envelope/}Body/" \
         "{http://schemas.xmlsoap.org/soap/envelope/}Fault"


async def _denied(request: web.Request) -> web.Response:
    request[MESSAGE_ID] = "id-1"
    raise AccessDeniedError("no access for you", detail="d")


async def _crash(request: web.Request) -> web.Response:
    raise RuntimeError("secret internals /etc/passwd")


async def _read(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="ok")


def _soap(handler: Callable[[web.Request], Awaitable[web.Response]]
          ) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def marked(request: web.Request) -> web.Response:
        request[SOAP] = True
        return await handler(request)

    return marked


Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    app = web.Application(middlewares=[error_middleware("server.clientproxy.internal_error")],
                          client_max_size=1024)
    app.router.add_get("/denied", _denied)
    app.router.add_get("/crash", _crash)
    app.router.add_post("/read", _read)
    app.router.add_post("/soap/denied", _soap(_denied))
    app.router.add_post("/soap/crash", _soap(_crash))
    app.router.add_post("/soap/read", _soap(_read))
    hide_server_version(app)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_xroad_error_becomes_header_and_json_body(client: Client) -> None:
    resp = await client.get("/denied")
    assert resp.status == 403
    assert resp.headers["X-Road-Error"] == "server.serverproxy.access_denied"
    assert resp.headers["X-Road-Id"] == "id-1"
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


async def _fault(resp: ClientResponse) -> etree._Element:
    assert resp.status == 500
    assert resp.content_type == "text/xml"
    assert "X-Road-Error" not in resp.headers
    fault = etree.fromstring(await resp.read()).find(_FAULT)
    assert fault is not None
    return fault


@pytest.mark.parametrize(("path", "code", "message"), [
    ("/soap/denied", "server.serverproxy.access_denied", "no access for you (d)"),
    ("/soap/read", "client.payload_too_large", "Request Entity Too Large"),
])
async def test_on_a_soap_request_errors_are_soap_faults(client: Client, path: str, code: str,
                                                        message: str) -> None:
    fault = await _fault(await client.post(path, data=b"x" * 4096))
    assert fault.findtext("faultcode") == code
    assert fault.findtext("faultstring") == message
    assert fault.findtext("faultactor") == ""
    assert len(fault.findtext("detail/faultDetail") or "") == 36


async def test_a_soap_internal_error_names_its_incident_only(client: Client) -> None:
    resp = await client.post("/soap/crash")
    fault = await _fault(resp)
    assert fault.findtext("faultcode") == "server.clientproxy.internal_error"
    assert fault.findtext("faultstring") == "internal error"
    assert b"secret" not in etree.tostring(fault)
