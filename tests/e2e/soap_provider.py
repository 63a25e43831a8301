"""A SOAP provider system for the end-to-end tests, built with spyne -- an independent SOAP
library, not xchange code -- and run as its own process::

    python -m tests.e2e.soap_provider --port PORT

Operations (document/literal wrapped, namespace :data:`NS`):

* ``getPerson(personCode)`` -> ``name``; an unknown code is a SOAP fault
  ``Client.NotFound`` ("no such person");
* ``storeDocument(title, document)`` -> ``size``, ``sha256`` of the document, which may come
  inline (base64) or as an MTOM/XOP attachment;
* ``forgetHeaders(personCode)`` -> ``name``, but its answer does not copy the X-Road header
  (a broken provider system).

Every other answer copies the request's SOAP header fields, as an X-Road service must
(PR-MESS 2.2).  ``GET /seen`` reports how many SOAP requests arrived and the HTTP headers of
the last one and the SHA-256 of its body, so that tests can assert that a refused request
never reached it and that a message arrived byte for byte.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from lxml import etree
from spyne import Application, ByteArray, Fault, Integer, ServiceBase, Unicode, rpc
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

NS = "http://population.example/soap"
NS_SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
PEOPLE = {"38001010001": "Mari Maasikas", "39002020002": "Jaan Tamm"}


class PopulationService(ServiceBase):  # type: ignore[misc]
    @rpc(Unicode(min_occurs=1), _returns=Unicode, _out_variable_name="name")
    def getPerson(ctx: Any, personCode: str) -> str:
        if personCode not in PEOPLE:
            raise Fault(faultcode="Client.NotFound", faultstring="no such person")
        return PEOPLE[personCode]

    @rpc(Unicode, ByteArray, _returns=(Integer, Unicode),
         _out_variable_names=("size", "sha256"))
    def storeDocument(ctx: Any, title: str, document: Iterable[bytes]) -> tuple[int, str]:
        data = b"".join(document or ())
        return len(data), hashlib.sha256(data).hexdigest()

    @rpc(Unicode, _returns=Unicode, _out_variable_name="name")
    def forgetHeaders(ctx: Any, personCode: str) -> str:
        return PEOPLE.get(personCode, "")


def _echo_headers(ctx: Any) -> None:
    """Copy the request's SOAP header fields into the answer (not for faults)."""
    if ctx.out_error is not None or not ctx.in_header_doc or ctx.out_document is None:
        return
    if ctx.descriptor is not None and ctx.descriptor.name == "forgetHeaders":
        return
    header = etree.Element(f"{{{NS_SOAP_ENV}}}Header")
    for field in ctx.in_header_doc:
        header.append(copy.deepcopy(field))
    ctx.out_document.insert(0, header)


class _Seen:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.last: dict[str, str] = {}


def _recording(app: Callable[..., Any], seen: _Seen) -> Callable[..., Any]:
    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") == "/seen":
            with seen.lock:
                body = json.dumps({"count": seen.count, "last": seen.last}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        if environ.get("REQUEST_METHOD") == "POST":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            with seen.lock:
                seen.count += 1
                seen.last = {"content_type": environ.get("CONTENT_TYPE", ""),
                             "soap_action": environ.get("HTTP_SOAPACTION", ""),
                             "x_road_client": environ.get("HTTP_X_ROAD_CLIENT", ""),
                             "body_sha256": hashlib.sha256(body).hexdigest()}
        return app(environ, start_response)

    return wsgi


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def build_app() -> Callable[..., Any]:
    protocol = Soap11(validator="lxml")
    protocol.event_manager.add_listener("after_serialize", _echo_headers)
    app = Application([PopulationService], tns=NS, name="PopulationService",
                      in_protocol=protocol, out_protocol=Soap11())
    app.out_protocol.event_manager.add_listener("after_serialize", _echo_headers)
    return _recording(WsgiApplication(app), _Seen())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with make_server("127.0.0.1", args.port, build_app(), server_class=_Server,
                     handler_class=_QuietHandler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
