"""The operations of a WSDL 1.1 document, as X-Road lists the services of a SOAP provider.

Each ``wsdl:binding/wsdl:operation`` is one service; its version is the X-Road
``version`` element inside the operation, if any.  The parser resolves no entities, opens no
network connection, loads no DTD and refuses any document that declares a DOCTYPE.

What it does not do: check the document against the WSDL schema or follow imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from xchange.errors import BadRequestError
from xchange.identifiers import NS_ID, NS_XROAD, check_part
from xchange.soap.xml import parse_xml

__all__ = ["WsdlOperation", "parse_wsdl"]

NS_WSDL: Final = "http://schemas.xmlsoap.org/wsdl/"
MAX_WSDL_BYTES: Final = 4 * 1024 * 1024


def _bad(message: str) -> BadRequestError:
    return BadRequestError(f"WSDL: {message}", code="admin.invalid_description")


@dataclass(frozen=True, slots=True, order=True)
class WsdlOperation:
    name: str
    version: str | None = None


def parse_wsdl(document: bytes) -> tuple[WsdlOperation, ...]:
    """The distinct operations of the WSDL's bindings, in document order."""
    root = parse_xml(document, max_bytes=MAX_WSDL_BYTES, code="admin.invalid_description",
                     what="WSDL")
    if root.tag != f"{{{NS_WSDL}}}definitions":
        raise _bad("the root element is not wsdl:definitions")
    found: dict[WsdlOperation, None] = {}
    for op in root.iterfind(f"{{{NS_WSDL}}}binding/{{{NS_WSDL}}}operation"):
        name = op.get("name")
        if not name:
            raise _bad("a binding operation has no name")
        version = None
        for ns in (NS_XROAD, NS_ID):
            elem = op.find(f"{{{ns}}}version")
            if elem is not None and elem.text and elem.text.strip():
                version = elem.text.strip()
        try:
            check_part(name, "operation name")
            if version is not None:
                check_part(version, "operation version")
        except BadRequestError as exc:
            raise _bad(exc.message) from exc
        found[WsdlOperation(name, version)] = None
    if not found:
        raise _bad("no binding operations")
    return tuple(found)
