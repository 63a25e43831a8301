"""The soap backend against a real legacy SOAP service (spyne, its own process, a real
socket), and against HTTP servers that answer what a SOAP service should not."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web

from adapters.base import ConfigValueError, Query, Result
from adapters.soap_rest import SoapBackend, from_config
from certs.ca import DevCA, IssuedCredentials
from schemas import load_json_schema
from xchange.errors import AdapterError, SoapFaultError

PERSON_FIELDS = [
    {"name": "code"}, {"name": "name"}, {"name": "born", "type": "date"},
    {"name": "children", "type": "integer"}, {"name": "income", "type": "number"},
    {"name": "alive", "type": "boolean"},
]
MARI = {"code": "38001010001", "name": "Mari Maasikas", "born": "1980-01-01", "children": 2,
        "income": 1234.5, "alive": True}


@pytest.fixture
async def started() -> AsyncIterator[list[SoapBackend]]:
    backends: list[SoapBackend] = []
    yield backends
    for backend in backends:
        await backend.close()


async def make(section: Mapping[str, Any], base: Path, backends: list[SoapBackend]
               ) -> SoapBackend:
    jsonschema.validate(dict(section), load_json_schema("adapter-soap.schema.json"))
    backend = from_config("population", section, base)
    await backend.start()
    backends.append(backend)
    return backend


def get_person(wsdl_file: Path, **extra: Any) -> dict[str, Any]:
    return {"wsdl": wsdl_file.name, "operation": "getPerson", "path": "/{code}",
            "record": ["getPersonResult"], "fields": PERSON_FIELDS, **extra}


def find_persons(wsdl_file: Path, **extra: Any) -> dict[str, Any]:
    return {"wsdl": wsdl_file.name, "operation": "findPersons", "many": True,
            "record": ["findPersonsResult", "Person"], "fields": PERSON_FIELDS, **extra}


async def call(backend: SoapBackend, params: Mapping[str, Any], *, offset: int = 0,
               limit: int = 10, timeout: float = 10.0) -> Result:
    return await backend.run(Query(backend.operation, params, offset=offset, limit=limit,
                                   timeout=timeout))


async def test_one_record_by_path_parameter(legacy: tuple[str, Path],
                                            started: list[SoapBackend]) -> None:
    url, wsdl = legacy
    backend = await make(get_person(wsdl), wsdl.parent, started)
    assert backend.endpoint == url, "the WSDL's address"
    op = backend.operation
    assert (op.service, op.name, op.method, op.path, op.many) == (
        "population", "getPerson", "GET", "/{code}", False)
    assert [(p.name, p.location, p.type, p.required) for p in op.parameters] == [
        ("code", "path", "string", True)]
    assert [(f.name, f.type) for f in op.fields] == [
        ("code", "string"), ("name", "string"), ("born", "date"), ("children", "integer"),
        ("income", "number"), ("alive", "boolean")]

    assert (await call(backend, {"code": "38001010001"})).records == [MARI]
    assert (await call(backend, {"code": "49002020002"})).records == [
        {"code": "49002020002", "name": "Jüri Õunapuu", "born": "1990-02-02",
         "children": None, "income": None, "alive": False}]
    assert (await call(backend, {"code": "nobody"})).records == []
    # Markup in a parameter is text in the request, never XML.
    assert (await call(backend, {"code": "<code>38001010001</code>"})).records == []
    await backend.check()


async def test_a_list_with_parameters_typed_from_the_wsdl(legacy: tuple[str, Path],
                                                         started: list[SoapBackend]) -> None:
    _, wsdl = legacy
    backend = await make(find_persons(wsdl), wsdl.parent, started)
    assert [(p.name, p.location, p.type, p.required) for p in backend.operation.parameters] == [
        ("surname", "query", "string", False), ("bornAfter", "query", "date", False),
        ("limit", "query", "integer", False)]
    everyone = await call(backend, {})
    assert [r["code"] for r in everyone.records] == ["38001010001", "49002020002",
                                                    "37003030003"]
    assert not everyone.has_more
    maasikas = await call(backend, {"surname": "Maasikas"}, limit=1)
    assert maasikas.records == [MARI]
    assert maasikas.has_more
    second = await call(backend, {"surname": "Maasikas"}, offset=1, limit=1)
    assert [r["name"] for r in second.records] == ["Kati Maasikas"]
    assert not second.has_more
    young = await call(backend, {"bornAfter": "1975-01-01", "limit": 1})
    assert [r["code"] for r in young.records] == ["38001010001"]


async def test_declared_parameters_rename_and_type(legacy: tuple[str, Path],
                                                   started: list[SoapBackend]) -> None:
    _, wsdl = legacy
    backend = await make(find_persons(wsdl, parameters=[
        {"name": "family", "element": "surname", "description": "family name"},
        {"name": "max", "element": "limit", "type": "integer", "required": False}]),
        wsdl.parent, started)
    assert [(p.name, p.type, p.required, p.description)
            for p in backend.operation.parameters] == [
        ("family", "string", True, "family name"), ("max", "integer", False, "")]
    result = await call(backend, {"family": "Maasikas", "max": 1})
    assert result.records == [MARI]


async def test_a_soap_fault_is_a_clear_502(legacy: tuple[str, Path],
                                           started: list[SoapBackend]) -> None:
    _, wsdl = legacy
    backend = await make(get_person(wsdl), wsdl.parent, started)
    with pytest.raises(SoapFaultError) as caught:
        await call(backend, {"code": "fault"})
    err = caught.value
    assert (err.code, err.status) == ("adapter.soap_fault", 502)
    assert err.faultcode.endswith("Client.NotFound")
    assert err.faultstring == "no such person in the register"
    assert "no such person in the register" in err.message


async def test_a_slow_service_times_out(legacy: tuple[str, Path],
                                        started: list[SoapBackend]) -> None:
    _, wsdl = legacy
    backend = await make(get_person(wsdl), wsdl.parent, started)
    with pytest.raises(TimeoutError):
        await call(backend, {"code": "slow"}, timeout=0.5)
    assert (await call(backend, {"code": "38001010001"})).records == [MARI]


async def test_an_unreachable_service(legacy: tuple[str, Path],
                                      started: list[SoapBackend]) -> None:
    _, wsdl = legacy
    backend = await make(get_person(wsdl, endpoint="http://127.0.0.1:9/"), wsdl.parent,
                         started)
    with pytest.raises(AdapterError, match=r"the SOAP service at http://127\.0\.0\.1:9/ "
                                           r"cannot be reached") as caught:
        await call(backend, {"code": "38001010001"})
    assert (caught.value.code, caught.value.status) == ("adapter.backend_failed", 502)
    with pytest.raises(AdapterError, match="cannot be reached"):
        await backend.check()


SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
TNS = "http://population.example/legacy"


def envelope(body: str, ns: str = SOAP11) -> str:
    return f'<s:Envelope xmlns:s="{ns}"><s:Body>{body}</s:Body></s:Envelope>'


@contextlib.asynccontextmanager
async def canned(status: int, body: str, seen: list[bytes]) -> AsyncIterator[str]:
    """An HTTP server on a real socket answering every POST with ``body``; the requests it
    received are appended to ``seen``."""

    async def answer(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(status=status, text=body, content_type="text/xml")

    app = web.Application()
    app.router.add_post("/", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("status", "body", "error", "message"), [
    (503, "Service Unavailable", AdapterError,
     r"answered HTTP 503: the SOAP service's response is not well-formed"),
    (200, "<html><body>hello</body></html>", AdapterError, r"is not a SOAP envelope"),
    (200, envelope(""), AdapterError, r"has an empty SOAP body"),
    (200, envelope(f'<t:other xmlns:t="{TNS}"/>'), AdapterError,
     r"holds \{http://population\.example/legacy\}other, not "
     r"\{http://population\.example/legacy\}getPersonResponse"),
    (200, '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + envelope("&e;"),
     AdapterError, r"DOCTYPE is not accepted"),
    (500, envelope("<s:Fault><faultcode>s:Server</faultcode><faultstring>db down"
                   "</faultstring><detail><code>42</code></detail></s:Fault>"),
     SoapFaultError, r"fault: s:Server: db down"),
    (200, envelope(f'<t:getPersonResponse xmlns:t="{TNS}"><t:getPersonResult>'
                   "<t:code>1</t:code><t:born>yesterday</t:born></t:getPersonResult>"
                   "</t:getPersonResponse>"),
     AdapterError, r"field 'born': 'yesterday' is not a date"),
    (200, envelope(f'<t:getPersonResponse xmlns:t="{TNS}"><t:getPersonResult/>'
                   "<t:getPersonResult/></t:getPersonResponse>"),
     AdapterError, r"answered 2 records where one was expected"),
    (200, envelope(f'<t:getPersonResponse xmlns:t="{TNS}"><t:getPersonResult><t:name>'
                   + "x" * (17 * 1024 * 1024) + "</t:name></t:getPersonResult>"
                   "</t:getPersonResponse>"),
     AdapterError, r"response is larger than 16777216 bytes"),
])
async def test_answers_that_are_not_the_operations_response(
        legacy: tuple[str, Path], started: list[SoapBackend], status: int, body: str,
        error: type[AdapterError], message: str) -> None:
    seen: list[bytes] = []
    async with canned(status, body, seen) as endpoint:
        _, wsdl = legacy
        backend = await make(get_person(wsdl, endpoint=endpoint), wsdl.parent, started)
        with pytest.raises(error, match=message) as caught:
            await call(backend, {"code": "38001010001"})
        assert caught.value.status == 502
        assert b"<m:code>38001010001</m:code>" in seen[0]
        if isinstance(caught.value, SoapFaultError):
            detail = caught.value.detail or ""
            assert detail.startswith("<code") and detail.endswith(">42</code>")


async def test_a_large_answer_is_read_whole(legacy: tuple[str, Path],
                                            started: list[SoapBackend]) -> None:
    name = "y" * (3 * 1024 * 1024)
    body = envelope(f'<t:getPersonResponse xmlns:t="{TNS}"><t:getPersonResult><t:name>{name}'
                    "</t:name></t:getPersonResult></t:getPersonResponse>")
    async with canned(200, body, []) as endpoint:
        _, wsdl = legacy
        backend = await make(get_person(wsdl, endpoint=endpoint), wsdl.parent, started)
        (record,) = (await call(backend, {"code": "1"})).records
        assert record["name"] == name


async def test_an_https_service_is_trusted_through_ca_file_only(
        legacy: tuple[str, Path], started: list[SoapBackend], dev_ca: DevCA,
        issue_server_auth: Callable[..., IssuedCredentials], tmp_path: Path) -> None:
    server = issue_server_auth("TEST/GOV/1234/legacy")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(server.cert_path, server.key_path, password=server.key_passphrase)
    person = envelope(f'<t:getPersonResponse xmlns:t="{TNS}"><t:getPersonResult>'
                      "<t:code>1</t:code><t:name>TLS</t:name></t:getPersonResult>"
                      "</t:getPersonResponse>")

    async def answer(request: web.Request) -> web.Response:
        return web.Response(text=person, content_type="text/xml")

    app = web.Application()
    app.router.add_post("/", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    try:
        endpoint = f"https://127.0.0.1:{runner.addresses[0][1]}/"
        _, wsdl = legacy
        trusted = await make(get_person(wsdl, endpoint=endpoint, ca_file=str(dev_ca.cert_path)),
                             wsdl.parent, started)
        assert (await call(trusted, {"code": "1"})).records[0]["name"] == "TLS"
        unknown_ca = await make(get_person(wsdl, endpoint=endpoint), wsdl.parent, started)
        with pytest.raises(AdapterError, match=r"cannot be reached.*certificate verify failed"):
            await call(unknown_ca, {"code": "1"})
    finally:
        await runner.cleanup()


def test_the_fault_detail_and_soapaction_of_the_request(legacy: tuple[str, Path]) -> None:
    _, wsdl = legacy
    backend = from_config("population", get_person(wsdl), wsdl.parent)
    assert backend.soap.soap_action == "getPerson"
    assert backend.soap.content_type == "text/xml; charset=utf-8"


@pytest.mark.parametrize(("extra", "message", "where"), [
    ({"wsdl": "absent.wsdl"}, r"absent\.wsdl cannot be read: No such file", ("wsdl",)),
    ({"operation": "getPet"}, r"no SOAP binding has an operation 'getPet' \(operations: "
                              r"findPersons, getPerson\)", ("operation",)),
    ({"parameters": [{"name": "code", "element": "kood"}]},
     r"getPerson has no child element 'kood' \(it has code\)", ("parameters", 0, "element")),
    ({"parameters": [{"name": "code", "in": "query"}]},
     r"parameter 'code' is declared in query, but the path '/\{code\}' names it",
     ("parameters", 0, "in")),
    ({"path": "/{code}/{year}"}, r"the path '/\{code\}/\{year\}' names year", ("path",)),
])
def test_configuration_errors(legacy: tuple[str, Path], extra: dict[str, Any], message: str,
                              where: tuple[str | int, ...]) -> None:
    _, wsdl = legacy
    with pytest.raises(ConfigValueError, match=message) as caught:
        from_config("population", get_person(wsdl, **extra), wsdl.parent)
    assert caught.value.path == where


@pytest.mark.parametrize(("wsdl", "message"), [
    (b'<!DOCTYPE d [<!ENTITY x "y">]><d/>', r"a DOCTYPE is not accepted"),
    (b"<definitions/>", r"the root element is not wsdl:definitions"),
    (b"""<w:definitions xmlns:w="http://schemas.xmlsoap.org/wsdl/"
          xmlns:s="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:t="urn:t" targetNamespace="urn:t">
          <w:binding name="b" type="t:p"><s:binding style="rpc"/>
            <w:operation name="op"><s:operation soapAction="op"/></w:operation></w:binding>
        </w:definitions>""", r"operation 'op' is rpc style; only document/literal"),
    (b"""<w:definitions xmlns:w="http://schemas.xmlsoap.org/wsdl/"
          xmlns:s="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:t="urn:t" targetNamespace="urn:t">
          <w:binding name="b" type="t:p"><s:binding style="document"/>
            <w:operation name="op"><w:input><s:body use="encoded"/></w:input></w:operation>
          </w:binding></w:definitions>""", r"the input is encoded; only document/literal"),
])
def test_wsdls_that_are_refused(tmp_path: Path, wsdl: bytes, message: str) -> None:
    (tmp_path / "x.wsdl").write_bytes(wsdl)
    with pytest.raises(ConfigValueError, match=message):
        from_config("x", {"wsdl": "x.wsdl", "operation": "op", "fields": [{"name": "a"}]},
                    tmp_path)
