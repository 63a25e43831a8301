"""End to end: a large SOAP *answer* crosses the security servers without being held whole.

The provider system (tests/e2e/soap_stream_provider.py, a plain aiohttp handler) streams its
answers chunked: a ``multipart/related`` one with a 100 MiB attachment and a ~40 MiB
``text/xml`` envelope.  The provider's security server checks the answer's Header and stamps
it with ``requestHash`` as the answer arrives, the consumer's checks it piece by piece; each
server's peak RSS (``VmHWM``, reset before the request) grows by well under 64 MiB.  Refused
answers -- a Header that does not echo the request, a DOCTYPE, more than ``max_body_bytes``
-- reach the client as faults only, and neither server logs a response for them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.client
import json
import re
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from lxml import etree

from tests.e2e.conftest import read_records
from tests.e2e.soap_stream_provider import MARKER, NS, OPERATIONS, ROW, block
from tests.e2e.test_soap import (
    BENEFITS,
    NS_SOAP_ENV,
    REGISTER,
    ROOT,
    SHA512,
    Soap,
    _admin,
    _cli,
    header_of,
    soap_federation,
    xroad_headers,
)
from xchange.identifiers import NS_XROAD, ServiceId
from xchange_cli.bench import procs
from xchange_cli.bench.stats import ProcSample
from xchange_cli.federation import ManagedProcess, free_port

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
MAX_BODY = 128 * MIB
SERVERS = ("ss-insurance", "ss-population")


@dataclass
class Streams:
    soap: Soap
    url: str
    pids: dict[str, int]

    def seen(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/seen", timeout=5) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Streams]:
    root = tmp_path_factory.mktemp("soap-stream-response")
    with soap_federation(root, max_body_bytes=MAX_BODY, service_timeout=120.0) as (soap,
                                                                                  running):
        port = free_port()
        provider = ManagedProcess(
            "soap-stream-provider",
            [sys.executable, "-m", "tests.e2e.soap_stream_provider", "--port", str(port)],
            root / "logs", cwd=ROOT)
        try:
            url = f"http://127.0.0.1:{port}"
            streams = Streams(soap, url, {n: running.processes[n].process.pid for n in SERVERS})
            provider.wait_until(lambda: streams.seen()["count"] == 0)
            admin = _admin(soap.fed.servers[0], "service-administrator")
            _cli("ss", "description", "add", str(REGISTER), "--type", "WSDL",
                 "--description-url", f"{url}/?wsdl", "--service-url", f"{url}/", *admin)
            for code in OPERATIONS:
                _cli("ss", "access", "grant", f"{REGISTER}/{code}", str(BENEFITS), *admin)
            yield streams
        finally:
            provider.stop()


def _request(operation: str, mib: int) -> tuple[bytes, str]:
    """A request for ``operation`` of ``mib`` MiB, and its message id."""
    message_id = str(uuid.uuid4())
    env = etree.Element(f"{{{NS_SOAP_ENV}}}Envelope",
                        nsmap={"soap": NS_SOAP_ENV, "xrd": NS_XROAD, "p": NS})
    header = etree.SubElement(env, f"{{{NS_SOAP_ENV}}}Header")
    for field in xroad_headers("getPerson", message_id=message_id):
        if etree.QName(field).localname == "service":
            field = ServiceId(REGISTER, operation).to_xml(f"{{{NS_XROAD}}}service")
        header.append(field)
    wrapper = etree.SubElement(etree.SubElement(env, f"{{{NS_SOAP_ENV}}}Body"),
                               f"{{{NS}}}{operation}")
    etree.SubElement(wrapper, f"{{{NS}}}mib").text = str(mib)
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8"), message_id


@dataclass
class Answer:
    """A text/xml answer as the client got it, read in pieces, never whole."""

    status: int
    soap_part: bytes
    """The body with its 1 KiB rows cut out."""
    rows: int
    sha256: str
    """Of the body as received."""
    size: int


@contextlib.contextmanager
def _posted(streams: Streams, data: bytes) -> Iterator[http.client.HTTPResponse]:
    """POST ``data`` to the consumer's client proxy: the response, to be read in pieces."""
    port = int(streams.soap.proxy_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", "/", body=data,
                     headers={"Content-Type": "text/xml; charset=UTF-8"})
        yield conn.getresponse()
    finally:
        conn.close()


def _call(streams: Streams, data: bytes) -> Answer:
    with _posted(streams, data) as resp:
        assert (resp.getheader("Content-Type") or "").startswith("text/xml")
        whole, kept, rows, size, pending = hashlib.sha256(), bytearray(), 0, 0, b""
        while piece := resp.read(MIB):
            size += len(piece)
            whole.update(piece)
            pending += piece
            end = pending.rfind(b"</p:row>")  # rows are whole up to it
            cut = 0 if end < 0 else end + len(b"</p:row>")
            rows += pending.count(ROW, 0, cut)
            kept += pending[:cut].replace(ROW, b"")
            pending = pending[cut:]
        kept += pending
        return Answer(resp.status, bytes(kept), rows, whole.hexdigest(), size)


def _stamp_removed(soap_part: bytes) -> bytes:
    """The SOAP part without the requestHash the provider's security server inserted."""
    return re.sub(rb"\s*<xrd:requestHash [^>]*>[^<]*</xrd:requestHash>", b"", soap_part,
                  count=1)


def _growth(streams: Streams, before: dict[str, ProcSample]) -> dict[str, float]:
    return {name: (procs.sample(pid).hwm_bytes - before[name].rss_bytes) / MIB
            for name, pid in streams.pids.items()}


def _reset(streams: Streams) -> dict[str, ProcSample]:
    before = {}
    for name, pid in streams.pids.items():
        assert procs.reset_peak(pid), "the kernel refused to reset the peak RSS"
        before[name] = procs.sample(pid)
    return before


def _check_stamp(soap_part: bytes, request: bytes) -> etree._Element:
    envelope = etree.fromstring(re.sub(rb"<p:row>.*?</p:row>", b"", soap_part))
    stamp = header_of(envelope, "requestHash")
    assert stamp.get("algorithmId") == SHA512
    assert stamp.text == base64.b64encode(hashlib.sha512(request).digest()).decode()
    sent = etree.fromstring(request)
    for field in ("client", "service", "id", "userId", "protocolVersion"):
        assert etree.tostring(header_of(envelope, field), method="c14n", exclusive=True) == \
            etree.tostring(header_of(sent, field), method="c14n", exclusive=True)
    return envelope


def test_a_100_mib_attachment_in_the_answer_streams_through(streams: Streams) -> None:
    request, _ = _request("bigAttachment", 100)
    before = _reset(streams)
    with _posted(streams, request) as resp:
        assert resp.status == 200, resp.read(4000)
        ctype = resp.getheader("Content-Type") or ""
        assert ctype.startswith("multipart/related") and 'boundary="BOUNDARY"' in ctype
        # the SOAP part and the attachment's headers, then the attachment, read in pieces
        head = resp.read(64 * 1024)
        soap_part, attachment_start = head.split(b"\r\n\r\n", 1)[1].split(
            b"\r\n--BOUNDARY\r\n", 1)
        attachment = hashlib.sha256()
        pending = attachment_start.split(b"\r\n\r\n", 1)[1]
        tail = b"\r\n--BOUNDARY--\r\n"
        while piece := resp.read(MIB):
            attachment.update(pending)
            pending = piece
        attachment.update(pending[:-len(tail)])
        assert pending.endswith(tail)
    growth = _growth(streams, before)
    print(f"peak RSS growth, 100 MiB attachment in the answer: {growth}")
    expected = hashlib.sha256(block() * 100).hexdigest()
    assert attachment.hexdigest() == expected  # the attachment arrived whole
    envelope = _check_stamp(soap_part, request)
    assert envelope.findtext(f".//{{{NS}}}sha256") == expected
    # every byte of the SOAP part but the inserted requestHash is as the provider sent it
    assert hashlib.sha256(_stamp_removed(soap_part)).hexdigest() == \
        streams.seen()["soap_sha256"]
    for name, mib in growth.items():
        assert mib < 64, f"{name}: peak RSS grew by {mib:.1f} MiB"


def test_a_40_mib_text_xml_answer_streams_through(streams: Streams) -> None:
    request, _ = _request("bigEnvelope", 40)
    before = _reset(streams)
    answer = _call(streams, request)
    growth = _growth(streams, before)
    print(f"peak RSS growth, 40 MiB text/xml answer: {growth}")
    assert answer.status == 200, answer.soap_part[:2000]
    assert answer.rows == 40 * 1024 and answer.size > 40 * MIB
    _check_stamp(answer.soap_part, request)
    assert MARKER in answer.soap_part
    for name, mib in growth.items():
        assert mib < 64, f"{name}: peak RSS grew by {mib:.1f} MiB"


def test_a_large_fault_of_the_provider_passes_untouched(streams: Streams) -> None:
    request, _ = _request("bigFault", 20)
    answer = _call(streams, request)
    assert answer.status == 500
    assert answer.rows == 20 * 1024
    # byte for byte as the provider system sent it: no requestHash, nothing rewritten
    assert answer.sha256 == streams.seen()["soap_sha256"]
    assert b"requestHash" not in answer.soap_part and b"too much" in answer.soap_part


@pytest.mark.parametrize(("operation", "mib", "code"), [
    ("wrongHeader", 20, "server.serverproxy.inconsistent_response"),
    ("hostileAnswer", 20, "server.serverproxy.inconsistent_response"),
    ("bigAttachment", MAX_BODY // MIB + 1, "server.serverproxy.service_failed"),
])
def test_a_refused_answer_reaches_the_client_as_a_fault_only(
        streams: Streams, operation: str, mib: int, code: str) -> None:
    request, message_id = _request(operation, mib)
    count = streams.seen()["count"]
    answer = _call(streams, request)
    assert streams.seen()["count"] == count + 1  # the provider system did answer
    assert answer.status == 500 and answer.size < 64 * 1024
    assert MARKER not in answer.soap_part and b"<p:row>" not in answer.soap_part
    fault = etree.fromstring(answer.soap_part).find(f".//{{{NS_SOAP_ENV}}}Fault")
    assert fault is not None and fault.findtext("faultcode") == code, answer.soap_part
    # the request was logged on both sides; no response was, on either
    for server in streams.soap.fed.servers:
        records = asyncio.run(read_records(server, message_id))
        assert [r.entry.kind for r in records] == ["request"], server.agency.server_code
