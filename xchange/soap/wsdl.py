"""The operations of a WSDL 1.1 document, as X-Road lists the services of a SOAP provider.

Each ``wsdl:binding/wsdl:operation`` is one service; its version is the X-Road
``version`` element inside the operation, if any.  The parser resolves no entities, opens no
network connection, loads no DTD and refuses any document that declares a DOCTYPE.

What it does not do: check the document against the WSDL schema or follow imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from lxml import etree

from xchange.errors import BadRequestError
from xchange.identifiers import NS_ID, NS_XROAD, check_part

__all__ = ["WsdlOperation", "parse_wsdl", "safe_xml"]

NS_WSDL: Final = "http://schemas.xmlsoap.org/wsdl/"
MAX_WSDL_BYTES: Final = 4 * 1024 * 1024


def _bad(message: str) -> BadRequestError:
    return BadRequestError(f"WSDL: {message}", code="admin.invalid_description")


def safe_xml(document: bytes) -> etree._Element:
    """Parse ``document`` with every dangerous feature off; refuse a DOCTYPE."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             dtd_validation=False, huge_tree=False, remove_pis=True)
    try:
        root = etree.fromstring(document, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise _bad(f"not well-formed XML: {exc}") from exc
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise _bad("a DOCTYPE is not accepted")
    return root


@dataclass(frozen=True, slots=True, order=True)
class WsdlOperation:
    name: str
    version: str | None = None


def parse_wsdl(document: bytes) -> tuple[WsdlOperation, ...]:
    """The distinct operations of the WSDL's bindings, in document order."""
    if len(document) > MAX_WSDL_BYTES:
        raise _bad(f"larger than {MAX_WSDL_BYTES} bytes")
    root = safe_xml(document)
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
