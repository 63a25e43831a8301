"""A SOAP provider system that answers with large messages, streamed, for
tests/e2e/test_soap_stream_response.py: a plain aiohttp handler and lxml, no xchange code,
run as its own process::

    python -m tests.e2e.soap_stream_provider --port PORT

``GET /?wsdl`` is a WSDL of its operations (namespace :data:`NS`), each answered with the
request's SOAP Header copied (PR-MESS 2.2) unless said otherwise; the size in MiB is the
request wrapper's ``mib`` element:

* ``bigAttachment`` -- ``multipart/related``: a SOAP part whose body names the attachment's
  size and SHA-256, then the attachment (``mib`` MiB of :func:`block`, written 1 MiB at a
  time);
* ``bigEnvelope`` -- ``text/xml``: an envelope whose answer element holds ``mib`` MiB of
  1 KiB ``row`` elements;
* ``wrongHeader`` -- as ``bigEnvelope``, but its ``id`` header field is not the request's;
* ``hostileAnswer`` -- as ``bigEnvelope``, with a DOCTYPE declaring an entity;
* ``bigFault`` -- a SOAP fault whose ``detail`` holds ``mib`` MiB of rows.

Every answer is sent chunked (no Content-Length), so that a security server cannot know its
size before reading it.  ``GET /seen`` reports the number of requests and the SHA-256 of the
last answer's SOAP part as sent, for the test to compare with what arrived.
"""

from __future__ import annotations

import argparse
import hashlib
import uuid
from collections.abc import Iterator

from aiohttp import web
from lxml import etree

NS = "http://streams.example/soap"
NS_SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
NS_XROAD = "http://x-road.eu/xsd/xroad.xsd"
MIB = 1024 * 1024
OPERATIONS = ("bigAttachment", "bigEnvelope", "wrongHeader", "hostileAnswer", "bigFault")
ROW = b"<p:row>" + b"z" * (1024 - 15) + b"</p:row>"  # 1 KiB
MARKER = b"STREAMED-BY-THE-PROVIDER"
"""In every answer's SOAP part: a client that sees it got (part of) the answer."""


def block() -> bytes:
    """1 MiB of the attachment: every byte value, and at its end the boundary delimiter but
    for its last character (so that a piece may end in what looks like its start)."""
    data = bytes(range(256)) * (MIB // 256)
    return data[:-11] + b"\r\n--BOUNDAR"


def wsdl() -> bytes:
    ops = "".join(f'<wsdl:operation name="{op}"><soap:operation soapAction="{op}"/>'
                  "</wsdl:operation>" for op in OPERATIONS)
    return (f"""<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:tns="{NS}" targetNamespace="{NS}">
<wsdl:binding name="StreamsBinding" type="tns:Streams">
<soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>{ops}
</wsdl:binding></wsdl:definitions>""").encode()


def _header(request: etree._Element, operation: str) -> bytes:
    header = request.find(f"{{{NS_SOAP_ENV}}}Header")
    assert header is not None
    fields = [etree.tostring(f) if operation != "wrongHeader" or f.tag != f"{{{NS_XROAD}}}id"
              else f'<xrd:id xmlns:xrd="{NS_XROAD}">{uuid.uuid4()}</xrd:id>'.encode()
              for f in header if isinstance(f.tag, str)]
    return b"<s:Header>\n  " + b"\n  ".join(fields) + b"\n</s:Header>\n"


def _envelope(header: bytes, body_start: bytes, body_end: bytes,
              prolog: bytes = b"") -> tuple[bytes, bytes]:
    head = (b'<?xml version="1.0" encoding="UTF-8"?>\n' + prolog +
            b'<s:Envelope xmlns:s="' + NS_SOAP_ENV.encode() + b'" xmlns:p="' + NS.encode() +
            b'">\n' + header + b"<s:Body>" + body_start)
    return head, body_end + b"</s:Body></s:Envelope>"


def _rows(mib: int) -> Iterator[bytes]:
    chunk = ROW * 1024
    for _ in range(mib):
        yield chunk


def answer(request: etree._Element) -> tuple[str, Iterator[bytes], tuple[int, int]]:
    """The answer's Content-Type, its bytes in pieces, and where its SOAP part is in them
    (offset, length)."""
    body = request.find(f"{{{NS_SOAP_ENV}}}Body")
    assert body is not None
    wrapper = body[0]
    operation = etree.QName(wrapper).localname
    mib = int(wrapper.findtext(f"{{{NS}}}mib") or "1")
    marker = b"<p:note>" + MARKER + b"</p:note>"
    if operation == "bigAttachment":
        digest = hashlib.sha256()
        for _ in range(mib):
            digest.update(block())
        soap = b"".join(_envelope(
            _header(request, operation),
            b"<p:bigAttachmentResponse>" + marker + b"<p:size>" + str(mib * MIB).encode() +
            b"</p:size><p:sha256>" + digest.hexdigest().encode() + b"</p:sha256>",
            b"<p:document href='cid:big.bin'/></p:bigAttachmentResponse>"))
        head = (b"--BOUNDARY\r\nContent-Type: text/xml; charset=UTF-8\r\n"
                b"Content-ID: <rootpart>\r\n\r\n")
        attachment = (b"\r\n--BOUNDARY\r\nContent-Type: application/octet-stream\r\n"
                      b"Content-ID: <big.bin>\r\n\r\n")

        def parts() -> Iterator[bytes]:
            yield head + soap + attachment
            for _ in range(mib):
                yield block()
            yield b"\r\n--BOUNDARY--\r\n"

        ctype = 'multipart/related; type="text/xml"; start="<rootpart>"; boundary="BOUNDARY"'
        return ctype, parts(), (len(head), len(soap))
    if operation == "bigFault":
        start, end = _envelope(b"", b"<s:Fault><faultcode>s:Server</faultcode><faultstring>"
                               b"too much</faultstring><detail>" + marker,
                               b"</detail></s:Fault>")
    else:
        prolog = (b'<!DOCTYPE s:Envelope [<!ENTITY x "xxx">]>\n'
                  if operation == "hostileAnswer" else b"")
        start, end = _envelope(_header(request, operation),
                               f"<p:{operation}Response>".encode() + marker,
                               f"</p:{operation}Response>".encode(), prolog)

    def pieces() -> Iterator[bytes]:
        yield start
        yield from _rows(mib)
        yield end

    return "text/xml; charset=UTF-8", pieces(), (0, len(start) + mib * MIB + len(end))


SEEN = web.AppKey("seen", dict)


async def handle_soap(request: web.Request) -> web.StreamResponse:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    envelope = etree.fromstring(await request.read(), parser)
    ctype, pieces, (offset, length) = answer(envelope)
    seen = request.app[SEEN]
    seen["count"] += 1
    wrapper = envelope.find(f"{{{NS_SOAP_ENV}}}Body/*")
    fault = wrapper is not None and etree.QName(wrapper).localname == "bigFault"
    out = web.StreamResponse(status=500 if fault else 200, headers={"Content-Type": ctype})
    out.enable_chunked_encoding()
    await out.prepare(request)
    soap_part = hashlib.sha256()
    sent = 0
    for piece in pieces:
        start, end = max(offset - sent, 0), offset + length - sent
        if end > 0 and start < len(piece):
            soap_part.update(piece[start:end])
        sent += len(piece)
        await out.write(piece)
    seen["soap_sha256"] = soap_part.hexdigest()
    await out.write_eof()
    return out


async def handle_get(request: web.Request) -> web.Response:
    if request.path == "/seen":
        return web.json_response(request.app[SEEN])
    return web.Response(body=wsdl(), content_type="text/xml")


def build_app() -> web.Application:
    app = web.Application(client_max_size=MIB)
    app[SEEN] = {"count": 0, "soap_sha256": ""}
    app.router.add_get("/{tail:.*}", handle_get)
    app.router.add_post("/{tail:.*}", handle_soap)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(build_app(), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()

