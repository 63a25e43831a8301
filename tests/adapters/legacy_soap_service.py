"""A legacy SOAP 1.1 service built with spyne (an independent SOAP library), for the tests
of the ``soap`` adapter backend.  Run as a process of its own:

    python -m tests.adapters.legacy_soap_service [--port N]

It prints the port it listens on (one line), then serves until killed.  ``?wsdl`` gives its
WSDL.  Operations:

* ``getPerson(code)`` -- one person; ``code`` "nobody": no person (a nil result);
  "fault": a SOAP fault ``Client.NotFound``; "slow": answers after 3 seconds;
* ``findPersons(surname, bornAfter, limit)`` -- a list of persons.

spyne is imported only in that process: it raises warnings at import on this Python, and the
tests' own process turns warnings into errors.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from spyne import (
    Application,
    Array,
    Boolean,
    ComplexModel,
    Date,
    Decimal,
    Integer,
    ServiceBase,
    Unicode,
    rpc,
)
from spyne.model.fault import Fault
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

TNS = "http://population.example/legacy"


class Person(ComplexModel):  # type: ignore[misc]
    __namespace__ = TNS
    code = Unicode
    name = Unicode
    born = Date
    children = Integer
    income = Decimal
    alive = Boolean


PEOPLE = [
    Person(code="38001010001", name="Mari Maasikas", born=datetime.date(1980, 1, 1),
           children=2, income=1234.5, alive=True),
    Person(code="49002020002", name="Jüri Õunapuu", born=datetime.date(1990, 2, 2),
           children=None, income=None, alive=False),
    Person(code="37003030003", name="Kati Maasikas", born=datetime.date(1970, 3, 3),
           children=0, income=-5, alive=True),
]


class PopulationService(ServiceBase):  # type: ignore[misc]
    @rpc(Unicode(min_occurs=1, nillable=False), _returns=Person)  # type: ignore[untyped-decorator]
    def getPerson(ctx: Any, code: str) -> Any:
        if code == "fault":
            raise Fault("Client.NotFound", "no such person in the register")
        if code == "slow":
            time.sleep(3)
        return next((p for p in PEOPLE if p.code == code), None)

    @rpc(Unicode, Date, Integer, _returns=Array(Person))  # type: ignore[untyped-decorator]
    def findPersons(ctx: Any, surname: str | None, bornAfter: datetime.date | None,
                    limit: int | None) -> Any:
        found = [p for p in PEOPLE if surname is None or p.name.endswith(" " + surname)]
        found = [p for p in found if bornAfter is None or p.born > bornAfter]
        return found[:limit] if limit is not None else found


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    app = Application([PopulationService], tns=TNS, in_protocol=Soap11(validator="lxml"),
                      out_protocol=Soap11())
    server = make_server("127.0.0.1", args.port, WsgiApplication(app),
                         server_class=_ThreadingServer, handler_class=_QuietHandler)
    print(server.server_port, flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
