"""End to end: SOAP (X-Road Message Protocol 4.0) through two security servers.

The information system is zeep, a SOAP client from PyPI; the provider system is built with
spyne (tests/e2e/soap_provider.py).  Neither contains xchange code.  The service is put on
the federation as X-Road operators do it: its WSDL registered through the admin CLI, access
granted to one subsystem.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import zeep
import zeep.exceptions
from lxml import etree
from zeep.plugins import HistoryPlugin

from tests.e2e.conftest import read_records
from xchange.body import read_all
from xchange.identifiers import NS_XROAD, ClientId, ServiceId
from xchange_cli.audit import check_log
from xchange_cli.federation import (
    CONSUMER,
    PROVIDER,
    Federation,
    ManagedProcess,
    RunningFederation,
    ServerFiles,
    build_federation,
    free_port,
)
from xchange_cli.main import main

pytestmark = pytest.mark.e2e

NS_SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
NS_ID = "http://x-road.eu/xsd/identifiers"
NS_XOP = "http://www.w3.org/2004/08/xop/include"
NS_PROVIDER = "http://population.example/soap"
NS_REPRESENTATION = "http://x-road.eu/xsd/representation.xsd"
SHA512 = "http://www.w3.org/2001/04/xmlenc#sha512"
REGISTER = PROVIDER.subsystem("population-register")
BENEFITS = CONSUMER.subsystem("benefits")
ANALYTICS = CONSUMER.subsystem("analytics")
OPERATIONS = ("getPerson", "storeDocument", "forgetHeaders")
ROOT = Path(__file__).resolve().parents[2]
MAX_BODY = 2 * 1024 * 1024


@dataclass
class Soap:
    fed: Federation
    provider_url: str
    session: requests.Session

    @property
    def proxy_url(self) -> str:
        return self.fed.servers[1].client_proxy_url

    def seen(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.provider_url}/seen", timeout=5) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result


def _cli(*args: str) -> Any:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(list(args))
    assert status == 0, out.getvalue()
    return json.loads(out.getvalue())


@contextlib.contextmanager
def soap_federation(root: Path, *, max_body_bytes: int,
                    service_timeout: float = 10.0) -> Iterator[tuple[Soap, RunningFederation]]:
    """A federation with the spyne provider system's services registered and granted."""
    fed = build_federation(root, conf_expiry_seconds=60, conf_refresh_seconds=1,
                           registry_regenerate_seconds=0.5, ss_refresh_seconds=0.5,
                           max_body_bytes=max_body_bytes, service_timeout=service_timeout)
    port = free_port()
    provider = ManagedProcess("soap-provider", [sys.executable, "-m", "tests.e2e.soap_provider",
                                                "--port", str(port)], root / "logs", cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        with requests.Session() as session:
            provider.wait_until(lambda: bool(Soap(fed, url, session).seen()))
            with RunningFederation(fed) as running:
                _register(fed, url)
                yield Soap(fed, url, session), running
    finally:
        provider.stop()


@pytest.fixture(scope="module")
def soap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Soap]:
    with soap_federation(tmp_path_factory.mktemp("soap-federation"),
                         max_body_bytes=MAX_BODY) as (soap, _):
        yield soap


def _admin(server: ServerFiles, role: str) -> tuple[str, ...]:
    """The CLI options that reach ``server``'s admin API with a token of ``role``."""
    from security_server.admin_api import audience_for
    from security_server.admin_keys import admin_private_key
    from security_server.config import SecurityServerConfig
    from security_server.runtime import utc_now
    from xchange.adminauth import issue_token

    config = SecurityServerConfig.from_file(server.config).from_env()
    token = issue_token(admin_private_key(config), subject="soap-admin", roles=[role],
                        audience=audience_for(str(server.agency.server)),
                        issued_at=utc_now(), lifetime=timedelta(hours=1))
    return ("--url", server.admin_url, "--token", token)


def _register(fed: Federation, provider_url: str) -> None:
    admin = _admin(fed.servers[0], "service-administrator")
    desc = _cli("ss", "description", "add", str(REGISTER), "--type", "WSDL",
                "--description-url", f"{provider_url}/?wsdl", "--service-url",
                f"{provider_url}/", *admin)
    assert {s["code"] for s in desc["services"]} == set(OPERATIONS), desc
    for code in OPERATIONS:
        _cli("ss", "access", "grant", f"{REGISTER}/{code}", str(BENEFITS), *admin)


# -- the IS side: zeep ------------------------------------------------------------------------


def _field(name: str, text: str) -> etree._Element:
    elem = etree.Element(f"{{{NS_XROAD}}}{name}")
    elem.text = text
    return elem


def xroad_headers(code: str, *, client: ClientId = BENEFITS, message_id: str | None = None,
                  user_id: str | None = "EE38001010001") -> list[etree._Element]:
    """The X-Road header fields an IS puts in its SOAP request (PR-MESS 2.2)."""
    fields = [client.to_xml(f"{{{NS_XROAD}}}client"),
              ServiceId(REGISTER, code).to_xml(f"{{{NS_XROAD}}}service"),
              _field("id", message_id or str(uuid.uuid4()))]
    if user_id is not None:
        fields.append(_field("userId", user_id))
    fields.append(_field("protocolVersion", "4.0"))
    return fields


def zeep_client(soap: Soap, wsdl: str | None = None) -> tuple[Any, HistoryPlugin]:
    """A zeep client that loads the provider's WSDL and sends to the consumer's client proxy."""
    history = HistoryPlugin()
    client = zeep.Client(wsdl or f"{soap.provider_url}/?wsdl", plugins=[history],
                         transport=zeep.Transport(session=soap.session))
    binding = next(iter(client.wsdl.bindings))
    service = client.create_service(binding, soap.proxy_url + "/")
    return (client, service), history


def _last(history: HistoryPlugin, which: str) -> etree._Element:
    """The envelope zeep last sent or received."""
    entry = history.last_sent if which == "sent" else history.last_received
    assert entry is not None
    envelope: etree._Element = entry["envelope"]
    return envelope


def header_of(envelope: etree._Element, name: str) -> etree._Element:
    found = envelope.find(f"{{{NS_SOAP_ENV}}}Header/{{{NS_XROAD}}}{name}")
    assert found is not None, etree.tostring(envelope)
    return found


def test_zeep_calls_a_spyne_service_through_two_security_servers(soap: Soap) -> None:
    (_, service), history = zeep_client(soap)
    message_id = str(uuid.uuid4())
    name = service.getPerson(personCode="38001010001",
                             _soapheaders=xroad_headers("getPerson", message_id=message_id))
    assert name == "Mari Maasikas"

    sent, received = _last(history, "sent"), _last(history, "received")
    # the provider system echoed the X-Road header fields; the provider's server added the
    # requestHash of exactly the bytes zeep sent (PR-MESS 2.2)
    for field in ("client", "service", "id", "userId", "protocolVersion"):
        assert etree.tostring(header_of(received, field), method="c14n", exclusive=True) == \
            etree.tostring(header_of(sent, field), method="c14n", exclusive=True)
    stamp = header_of(received, "requestHash")
    assert stamp.get("algorithmId") == SHA512
    sent_bytes = etree.tostring(sent, encoding="utf-8", xml_declaration=True)
    assert stamp.text == base64.b64encode(hashlib.sha512(sent_bytes).digest()).decode()

    # the provider system got only Content-Type and SOAPAction, never the REST headers
    seen = soap.seen()["last"]
    assert seen["content_type"].startswith("text/xml")
    assert seen["soap_action"] == '"getPerson"'
    assert seen["x_road_client"] == ""


def test_both_servers_log_the_signed_soap_exchange(soap: Soap) -> None:
    (_, service), _history = zeep_client(soap)
    message_id = str(uuid.uuid4())
    service.getPerson(personCode="39002020002",
                      _soapheaders=xroad_headers("getPerson", message_id=message_id))
    import asyncio

    for server in soap.fed.servers:
        records = asyncio.run(read_records(server, message_id))
        assert [(r.entry.kind, r.entry.status) for r in records] == [
            ("request", "ok"), ("response", "ok")], server.agency.server_code
        request, response = records
        assert json.loads(request.entry.header_part)["type"] == "xchange-soap-request"
        assert b"<ns0:personCode>39002020002</ns0:personCode>" in read_all(request.entry.body)
        assert b"requestHash" in read_all(response.entry.body)
        assert request.entry.user_id == "EE38001010001"
        result = check_log(server.config)  # what `xchange ss verify-log` runs
        assert result.ok, result.failures


def test_a_fault_of_the_provider_system_passes_through_untouched(soap: Soap) -> None:
    (_, service), history = zeep_client(soap)
    with pytest.raises(zeep.exceptions.Fault) as info:
        service.getPerson(personCode="00000000000", _soapheaders=xroad_headers("getPerson"))
    assert info.value.message == "no such person"
    assert info.value.code.endswith("Client.NotFound")
    # spyne's fault, as spyne wrote it: no X-Road header and no requestHash added
    assert _last(history, "received").find(f"{{{NS_SOAP_ENV}}}Header") is None


def test_a_response_without_the_echoed_headers_is_refused(soap: Soap) -> None:
    (_, service), _history = zeep_client(soap)
    with pytest.raises(zeep.exceptions.Fault) as info:
        service.forgetHeaders(personCode="38001010001",
                              _soapheaders=xroad_headers("forgetHeaders"))
    assert info.value.code == "server.serverproxy.inconsistent_response"
    detail = info.value.detail
    assert detail is not None and detail.findtext("faultDetail")


@pytest.mark.parametrize(("client", "code"), [
    (ANALYTICS, "server.serverproxy.access_denied"),
    (PROVIDER.subsystem("population-register"), "server.clientproxy.unknown_member"),
])
def test_refusals_are_soap_faults_with_xroad_codes(soap: Soap, client: ClientId,
                                                   code: str) -> None:
    (_, service), history = zeep_client(soap)
    with pytest.raises(zeep.exceptions.Fault) as info:
        service.getPerson(personCode="38001010001",
                          _soapheaders=xroad_headers("getPerson", client=client))
    assert info.value.code == code
    fault = _last(history, "received").find(f".//{{{NS_SOAP_ENV}}}Fault")
    assert fault is not None
    assert fault.findtext("faultactor") == ""
    assert uuid.UUID(fault.findtext("detail/faultDetail") or "")


def test_the_client_must_connect_as_its_connection_type_requires(soap: Soap) -> None:
    """As for REST: analytics switched to HTTPS is refused over plain HTTP with a fault."""
    consumer = soap.fed.servers[1]
    admin = _admin(consumer, "security-officer")
    pem = _cli("ss", "internal-cert", *admin)["pem"]
    data = _good()
    data = data.replace(b"<id:subsystemCode>benefits", b"<id:subsystemCode>analytics")
    _cli("ss", "client", "update", str(ANALYTICS), "--connection", "HTTPS", *admin)
    try:
        refused = _post(soap, data)
        assert _fault_code(refused) == "server.clientproxy.is_authentication_failed"
        pem_file = consumer.directory / "internal-for-test.pem"
        pem_file.write_text(pem, encoding="ascii")
        over_tls = soap.session.post(
            f"https://127.0.0.1:{consumer.client_proxy_tls_port}/", data=data,
            headers={"Content-Type": "text/xml"}, verify=str(pem_file), timeout=30)
        # past the connection check: refused by the provider, which grants analytics nothing
        assert _fault_code(over_tls) == "server.serverproxy.access_denied"
    finally:
        _cli("ss", "client", "update", str(ANALYTICS), "--connection", "HTTP", *admin)


@pytest.mark.parametrize(("server", "code"), [
    (PROVIDER.server, None),
    (CONSUMER.server, "server.clientproxy.unknown_service"),  # does not host the provider
])
def test_security_server_targeting_and_represented_party(soap: Soap, server: Any,
                                                         code: str | None) -> None:
    (_, service), history = zeep_client(soap)
    party = etree.Element(f"{{{NS_REPRESENTATION}}}representedParty")
    etree.SubElement(party, f"{{{NS_REPRESENTATION}}}partyClass").text = "COM"
    etree.SubElement(party, f"{{{NS_REPRESENTATION}}}partyCode").text = "12345678"
    headers = [*xroad_headers("getPerson"), server.to_xml(f"{{{NS_XROAD}}}securityServer"),
               party]
    if code is not None:
        with pytest.raises(zeep.exceptions.Fault) as info:
            service.getPerson(personCode="38001010001", _soapheaders=headers)
        assert info.value.code == code
        return
    assert service.getPerson(personCode="38001010001", _soapheaders=headers) == \
        "Mari Maasikas"
    echoed = _last(history, "received").find(f"{{{NS_SOAP_ENV}}}Header/"
                                             f"{{{NS_REPRESENTATION}}}representedParty")
    assert echoed is not None and echoed.findtext(f"{{{NS_REPRESENTATION}}}partyCode") == \
        "12345678"


def test_soap_and_rest_services_are_not_mixed(soap: Soap) -> None:
    # a SOAP request for the REST service "persons" of the same provider
    data = _good("persons")
    assert _fault_code(_post(soap, data)) == "server.serverproxy.unknown_service"
    # a REST request for the SOAP service getPerson
    with pytest.raises(urllib.error.HTTPError) as info:
        request = urllib.request.Request(
            f"{soap.proxy_url}/r1/{REGISTER}/getPerson", headers={"X-Road-Client":
                                                                 str(BENEFITS)})
        urllib.request.urlopen(request, timeout=30)
    with info.value:
        assert info.value.headers["X-Road-Error"] == "server.serverproxy.unknown_service"


def _fault_code(response: requests.Response) -> str | None:
    assert response.status_code == 500, response.content[:300]
    return etree.fromstring(response.content).findtext(f".//{{{NS_SOAP_ENV}}}Fault/faultcode")


async def test_the_provider_refuses_an_envelope_that_differs_from_the_signed_header_part(
        soap: Soap) -> None:
    """A consumer security server that signs one thing and sends another gets nothing through:
    the provider's server proxy reads the envelope again and compares."""
    from tests.e2e.test_federation import _frame, _identity, _post_frame
    from xchange.signing import sign_message
    from xchange.soap.envelope import parse_request

    data = _good()
    req = parse_request(data, "text/xml", None, max_bytes=MAX_BODY)
    tampered = data.replace(b"38001010001", b"39002020002")  # same headers, another body:
    other = _good().replace(b"<id:subsystemCode>benefits", b"<id:subsystemCode>analytics")
    before = soap.seen()["count"]
    for body, expected in ((other, "server.serverproxy.bad_request"), (tampered, None)):
        header_part = req.header_part()
        signature = sign_message(_identity(soap.fed.servers[1]), header_part, body,
                                 signed_at=datetime.now(UTC), nonce=uuid.uuid4().hex)
        status, code, _ = await _post_frame(soap.fed, _frame(soap.fed, header_part, signature,
                                                             body))
        if expected is None:  # the body is signed as it is: only the headers must agree
            assert (status, code) == (200, None)
        else:
            assert (status, code) == (400, expected)
    assert soap.seen()["count"] == before + 1
    records = await read_records(soap.fed.servers[0], req.message_id)
    assert [(r.entry.status, r.entry.error_code) for r in records] == [
        ("rejected", "server.serverproxy.bad_request"),  # the body that differed
        ("ok", None), ("ok", None)]  # the other one, request and response


# -- attachments --------------------------------------------------------------------------------


def _mtom_request(client: Any, document: bytes) -> tuple[bytes, str]:
    """zeep builds the envelope; the document travels as an MTOM/XOP attachment (PR-MESS
    Annex G), packaged here because zeep sends attachments only in answers."""
    envelope = client.create_message(client.service, "storeDocument", title="scan",
                                     document=b"placeholder",
                                     _soapheaders=xroad_headers("storeDocument"))
    target = envelope.find(f".//{{{NS_PROVIDER}}}document")
    target.text = None
    etree.SubElement(target, f"{{{NS_XOP}}}Include", href="cid:scan.bin")
    # Without an XML declaration: spyne 2.14 cannot read an MTOM root part that has one.
    root = etree.tostring(envelope, encoding="UTF-8")
    boundary = f"MIME_{uuid.uuid4().hex}"
    body = b"".join([
        f"--{boundary}\r\n".encode(),
        b'Content-Type: application/xop+xml; charset=UTF-8; type="text/xml"\r\n',
        b"Content-Transfer-Encoding: 8bit\r\nContent-ID: <rootpart>\r\n\r\n", root, b"\r\n",
        f"--{boundary}\r\n".encode(),
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n"
        b"Content-ID: <scan.bin>\r\n\r\n", document, b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ])
    ctype = (f'multipart/related; type="application/xop+xml"; start="<rootpart>"; '
             f'start-info="text/xml"; boundary="{boundary}"')
    return body, ctype


def test_an_mtom_attachment_crosses_signed_and_reaches_the_provider_whole(soap: Soap) -> None:
    (client, _service), _history = zeep_client(soap)
    document = bytes(range(256)) * 64 + b"\r\n--MIME_fake\r\n"  # binary, boundary-like bytes
    body, ctype = _mtom_request(client, document)
    binding = client.service._binding
    operation = binding.get("storeDocument")
    response = client.transport.post(soap.proxy_url + "/anything", body,
                                     {"Content-Type": ctype, "SOAPAction": '"storeDocument"'})
    assert response.status_code == 200, response.content
    result = binding.process_reply(client, operation, response)
    assert result.size == len(document)
    assert result.sha256 == hashlib.sha256(document).hexdigest()
    # the requestHash covers the SOAP part alone (PR-MESS 2.2), not the attachment
    answer = etree.fromstring(response.content)
    soap_part = body.split(b"\r\n\r\n", 1)[1].split(b"\r\n--MIME_", 1)[0]
    assert header_of(answer, "requestHash").text == \
        base64.b64encode(hashlib.sha512(soap_part).digest()).decode()
    assert soap.seen()["last"]["content_type"] == ctype
    assert soap.seen()["last"]["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_a_swa_attachment_reaches_the_provider_byte_for_byte(soap: Soap) -> None:
    """SOAP with Attachments (PR-MESS Annex F): text/xml root part first, any parts after."""
    (client, _service), _history = zeep_client(soap)
    envelope = client.create_message(client.service, "getPerson", personCode="38001010001",
                                     _soapheaders=xroad_headers("getPerson"))
    root = etree.tostring(envelope, encoding="UTF-8")
    attachment = b"%PDF-1.4 \x00\xff binary \r\n--SWA\r\n"
    body = (b"--SWA_BOUNDARY\r\nContent-Type: text/xml; charset=UTF-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\nContent-ID: <rootpart>\r\n\r\n" + root +
            b"\r\n--SWA_BOUNDARY\r\nContent-Type: application/pdf\r\n"
            b"Content-Transfer-Encoding: binary\r\nContent-ID: <scan.pdf>\r\n\r\n" +
            attachment + b"\r\n--SWA_BOUNDARY--\r\n")
    ctype = 'multipart/related; type="text/xml"; start="<rootpart>"; boundary="SWA_BOUNDARY"'
    response = _post(soap, body, {"Content-Type": ctype})
    assert response.status_code == 200, response.content
    assert b"Mari Maasikas" in response.content
    assert soap.seen()["last"]["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert header_of(etree.fromstring(response.content), "requestHash").text == \
        base64.b64encode(hashlib.sha512(root).digest()).decode()


def test_zeep_without_attachments_sends_plain_text_xml(soap: Soap) -> None:
    (_, service), history = zeep_client(soap)
    result = service.storeDocument(title="inline", document=b"abc",
                                   _soapheaders=xroad_headers("storeDocument"))
    assert (result.size, result.sha256) == (3, hashlib.sha256(b"abc").hexdigest())
    assert soap.seen()["last"]["content_type"].startswith("text/xml")
    assert header_of(_last(history, "received"), "requestHash").text


# -- the request target -------------------------------------------------------------------------


def test_an_absolute_form_request_target_is_accepted(soap: Soap) -> None:
    """An IS that uses the security server as its HTTP proxy sends ``POST http://...``."""
    (client, _), _history = zeep_client(soap)
    envelope = client.create_message(client.service, "getPerson", personCode="38001010001",
                                     _soapheaders=xroad_headers("getPerson"))
    data = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
    port = soap.fed.servers[1].client_proxy_port
    proxies = {"http": f"http://127.0.0.1:{port}"}
    response = soap.session.post("http://provider.example/population", data=data,
                             headers={"Content-Type": "text/xml; charset=utf-8"},
                             proxies=proxies, timeout=30)
    assert response.status_code == 200, response.content
    assert b"Mari Maasikas" in response.content


# -- metadata services --------------------------------------------------------------------------


def _meta_request(code: str, body: str = "", client: ClientId = BENEFITS) -> bytes:
    env = etree.Element(f"{{{NS_SOAP_ENV}}}Envelope",
                        nsmap={"soap": NS_SOAP_ENV, "xrd": NS_XROAD, "id": NS_ID})
    header = etree.SubElement(env, f"{{{NS_SOAP_ENV}}}Header")
    header.append(client.to_xml(f"{{{NS_XROAD}}}client"))
    header.append(ServiceId(REGISTER, code).to_xml(f"{{{NS_XROAD}}}service"))
    header.append(_field("id", str(uuid.uuid4())))
    header.append(_field("protocolVersion", "4.0"))
    wrapper = etree.SubElement(etree.SubElement(env, f"{{{NS_SOAP_ENV}}}Body"),
                               f"{{{NS_XROAD}}}{code}")
    if body:
        etree.SubElement(wrapper, f"{{{NS_XROAD}}}serviceCode").text = body
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


def _post(soap: Soap, data: bytes, headers: dict[str, str] | None = None,
          path: str = "/") -> requests.Response:
    return soap.session.post(soap.proxy_url + path, data=data,
                         headers={"Content-Type": "text/xml; charset=UTF-8", **(headers or {})},
                         timeout=30)


def _services(response: requests.Response, wrapper: str) -> set[str]:
    env = etree.fromstring(response.content)
    listed = env.find(f"{{{NS_SOAP_ENV}}}Body/{{{NS_XROAD}}}{wrapper}")
    assert listed is not None, response.content
    assert header_of(env, "requestHash").text
    return {s.findtext(f"{{{NS_ID}}}serviceCode") or "" for s in listed}


def test_list_methods_and_allowed_methods_answer_through_the_federation(soap: Soap) -> None:
    listed = _post(soap, _meta_request("listMethods"))
    assert listed.status_code == 200, listed.content
    assert _services(listed, "listMethodsResponse") == set(OPERATIONS)
    allowed = _post(soap, _meta_request("allowedMethods"))
    assert _services(allowed, "allowedMethodsResponse") == set(OPERATIONS)
    nothing = _post(soap, _meta_request("allowedMethods", client=ANALYTICS))
    assert _services(nothing, "allowedMethodsResponse") == set()


def test_get_wsdl_answers_with_the_wsdl_attached_and_zeep_can_use_it(soap: Soap,
                                                                     tmp_path: Path) -> None:
    response = _post(soap, _meta_request("getWsdl", "getPerson"))
    assert response.status_code == 200, response.content
    ctype = response.headers["Content-Type"]
    assert ctype.startswith("multipart/related")
    boundary = ctype.split('boundary="', 1)[1].split('"', 1)[0]
    parts = response.content.split(f"--{boundary}".encode())
    wsdl = parts[2].split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
    assert b"127.0.0.1" not in wsdl  # the provider system's address is hidden (PR-META 4)
    assert b"http://example.org/xroad-endpoint" in wsdl
    path = tmp_path / "population.wsdl"
    path.write_bytes(wsdl)
    (_, service), _history = zeep_client(soap, str(path))
    assert service.getPerson(personCode="38001010001",
                             _soapheaders=xroad_headers("getPerson")) == "Mari Maasikas"


def test_a_spooled_metadata_request_is_answered_from_its_soap_part(soap: Soap) -> None:
    """Over 1 MiB the message is spooled: its SOAP part is read back (not its attachment)
    and answered; a SOAP part over 1 MiB is refused as too large, not as broken SOAP."""
    root = _meta_request("listMethods")
    attachment = b"\x00\xff" * (600 * 1024)
    body = (b"--META\r\nContent-Type: text/xml; charset=UTF-8\r\n"
            b"Content-ID: <rootpart>\r\n\r\n" + root +
            b"\r\n--META\r\nContent-Type: application/octet-stream\r\n\r\n" +
            attachment + b"\r\n--META--\r\n")
    listed = _post(soap, body, {"Content-Type": 'multipart/related; type="text/xml"; '
                                                 'start="<rootpart>"; boundary="META"'})
    assert listed.status_code == 200, listed.content
    assert _services(listed, "listMethodsResponse") == set(OPERATIONS)
    assert header_of(etree.fromstring(listed.content), "requestHash").text == \
        base64.b64encode(hashlib.sha512(root).digest()).decode()
    big = _meta_request("getWsdl", "getPerson").replace(
        b"<soap:Header>", b"<soap:Header><!--" + b"x" * (1100 * 1024) + b"-->")
    refused = _post(soap, big)
    assert _fault_code(refused) == "client.payload_too_large", refused.content


# -- hostile and malformed messages ---------------------------------------------------------------


def _good(code: str = "getPerson", *, header_extra: str = "", wrapper: str | None = None,
          prolog: str = "", version: str = "4.0", env_ns: str = NS_SOAP_ENV,
          xrd_ns: str = NS_XROAD, drop: str = "") -> bytes:
    wrapper = wrapper or code
    fields = {
        "client": """<xrd:client id:objectType="SUBSYSTEM"><id:xRoadInstance>DEMO
</id:xRoadInstance><id:memberClass>GOV</id:memberClass><id:memberCode>70000002</id:memberCode>
<id:subsystemCode>benefits</id:subsystemCode></xrd:client>""".replace("DEMO\n", "DEMO"),
        "service": f"""<xrd:service id:objectType="SERVICE"><id:xRoadInstance>DEMO
</id:xRoadInstance><id:memberClass>GOV</id:memberClass><id:memberCode>70000001</id:memberCode>
<id:subsystemCode>population-register</id:subsystemCode><id:serviceCode>{code}</id:serviceCode>
</xrd:service>""".replace("DEMO\n", "DEMO"),
        "id": f"<xrd:id>{uuid.uuid4()}</xrd:id>",
        "protocolVersion": f"<xrd:protocolVersion>{version}</xrd:protocolVersion>",
    }
    header = "".join(v for k, v in fields.items() if k != drop) + header_extra
    return (f"""<?xml version="1.0" encoding="UTF-8"?>{prolog}
<soap:Envelope xmlns:soap="{env_ns}" xmlns:xrd="{xrd_ns}" xmlns:id="{NS_ID}"
    xmlns:p="{NS_PROVIDER}"><soap:Header>{header}</soap:Header>
<soap:Body><p:{wrapper}><p:personCode>38001010001</p:personCode></p:{wrapper}></soap:Body>
</soap:Envelope>""").encode()


def _deep(depth: int) -> bytes:
    inner = "<a>" * depth + "x" + "</a>" * depth
    return _good().replace(b"<p:personCode>38001010001</p:personCode>",
                           f"<p:personCode>{inner}</p:personCode>".encode())


_LAUGHS = """<!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>"""
_XXE = '<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
_EXTERNAL_DTD = '<!DOCTYPE soap:Envelope SYSTEM "http://127.0.0.1:9/evil.dtd">'
_CASES: list[tuple[str, bytes, dict[str, str], str]] = [
    ("billion laughs", _good(prolog=_LAUGHS).replace(b"38001010001</p:personCode>",
                                                     b"&lol3;</p:personCode>"), {},
     "client.invalid_soap"),
    ("xxe", _good(prolog=_XXE).replace(b"38001010001</p:personCode>",
                                       b"&xxe;</p:personCode>"), {}, "client.invalid_soap"),
    ("external dtd", _good(prolog=_EXTERNAL_DTD), {}, "client.invalid_soap"),
    ("undeclared entity", _good().replace(b"38001010001</p:personCode>",
                                          b"&xxe;</p:personCode>"), {}, "client.invalid_soap"),
    ("processing instruction", _good().replace(b"<soap:Body>", b"<soap:Body><?evil x?>"), {},
     "client.invalid_soap"),
    ("too deep", _deep(100), {}, "client.invalid_soap"),
    ("not xml", b"this is not xml", {}, "client.invalid_soap"),
    ("truncated", _good()[:-40], {}, "client.invalid_soap"),
    ("soap 1.2 namespace", _good(env_ns="http://www.w3.org/2003/05/soap-envelope"), {},
     "client.invalid_soap"),
    ("wrong x-road namespace", _good(xrd_ns="http://x-road.eu/xsd/xroad-old.xsd"), {},
     "client.missing_header"),
    ("missing client", _good(drop="client"), {}, "client.missing_header"),
    ("missing id", _good(drop="id"), {}, "client.missing_header"),
    ("missing protocolVersion", _good(drop="protocolVersion"), {}, "client.missing_header"),
    ("duplicate id", _good(header_extra="<xrd:id>again</xrd:id>"), {},
     "client.duplicate_header"),
    ("protocol 3.1", _good(version="3.1"), {}, "client.invalid_protocol_version"),
    ("client without objectType", _good().replace(b'<xrd:client id:objectType="SUBSYSTEM">',
                                                  b"<xrd:client>"), {},
     "client.invalid_header"),
    ("unknown x-road field", _good(header_extra="<xrd:colour>red</xrd:colour>"), {},
     "client.invalid_header"),
    ("wrong wrapper", _good(wrapper="getSomethingElse"), {}, "client.invalid_body"),
    ("two body elements", _good().replace(b"</soap:Body>", b"<p:more/></soap:Body>"), {},
     "client.invalid_body"),
    ("unquoted SOAPAction", _good(), {"SOAPAction": "getPerson"},
     "client.invalid_soap_action"),
    ("json content type", _good(), {"Content-Type": "application/json"},
     "client.invalid_content_type"),
    ("soap 1.2 content type", _good(), {"Content-Type": "application/soap+xml"},
     "client.invalid_content_type"),
    ("latin-1 charset", _good(), {"Content-Type": "text/xml; charset=iso-8859-1"},
     "client.invalid_content_type"),
    ("multipart without boundary", _good(), {"Content-Type": "multipart/related"},
     "client.invalid_content_type"),
    ("oversize", _good().replace(b"38001010001", b"9" * MAX_BODY), {},
     "client.payload_too_large"),
]


@pytest.mark.parametrize(("data", "headers", "code"), [c[1:] for c in _CASES],
                         ids=[c[0] for c in _CASES])
def test_hostile_and_malformed_messages_are_refused_and_nothing_is_forwarded(
        soap: Soap, data: bytes, headers: dict[str, str], code: str) -> None:
    before = soap.seen()["count"]
    response = _post(soap, data, headers)
    assert response.status_code == 500, response.content[:500]
    assert response.headers["Content-Type"].startswith("text/xml")
    fault = etree.fromstring(response.content).find(f".//{{{NS_SOAP_ENV}}}Fault")
    assert fault is not None
    assert fault.findtext("faultcode") == code, fault.findtext("faultstring")
    assert b"Traceback" not in response.content and b"/etc/passwd" not in response.content
    assert b"root:" not in response.content
    assert soap.seen()["count"] == before


def test_a_utf8_bom_is_accepted_as_x_road_does(soap: Soap) -> None:
    response = _post(soap, b"\xef\xbb\xbf" + _good(), {"SOAPAction": '""'})
    assert response.status_code == 200, response.content
    assert b"Mari Maasikas" in response.content


def test_a_message_refused_at_the_consumer_is_not_logged_or_sent(soap: Soap) -> None:
    import asyncio

    data = _good(wrapper="wrong")
    message_id = etree.fromstring(data).findtext(f".//{{{NS_XROAD}}}id")
    assert _post(soap, data).status_code == 500
    for server in soap.fed.servers:
        assert asyncio.run(read_records(server, message_id)) == []


def test_get_on_any_path_is_not_soap(soap: Soap) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(soap.proxy_url + "/some/soap/endpoint", timeout=10)
    info.value.close()
    assert info.value.code == 405

