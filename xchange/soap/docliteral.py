"""Calling one operation of a legacy document/literal SOAP service: the pure part.

:func:`read_operation` takes the service's WSDL 1.1 (bytes; no imports followed, nothing
fetched) and finds what a call needs: the SOAP version and ``SOAPAction`` of the binding, the
request and response elements of the operation's messages, the child elements the request
element's XML Schema type declares (in their order, qualified or not), and the address of the
port.  :func:`request_envelope` writes a request; :func:`read_response` reads an answer into
plain text values, or raises :class:`~xchange.errors.SoapFaultError` for a SOAP fault.

Only ``document`` style with ``literal`` bodies is supported (RPC/encoded services are
refused with a clear error, not guessed at).  Every document is parsed by
:func:`xchange.soap.xml.parse_xml`: no DOCTYPE, no entities, no network, size and depth
limits.

What it does not do: HTTP (the adapter's ``soap`` backend does), validate a response against
the XML Schema, or follow ``wsdl:import`` / ``xs:import``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from lxml import etree

from xchange.errors import AdapterError, BadRequestError, SoapFaultError
from xchange.soap.envelope import NS_SOAP_ENV
from xchange.soap.wsdl import MAX_WSDL_BYTES, NS_WSDL
from xchange.soap.xml import parse_xml

__all__ = [
    "NS_SOAP11_ENV",
    "NS_SOAP12_ENV",
    "Child",
    "DocLiteralOperation",
    "WsdlError",
    "read_operation",
    "read_response",
    "request_envelope",
]

NS_XSD: Final = "http://www.w3.org/2001/XMLSchema"
NS_XSI: Final = "http://www.w3.org/2001/XMLSchema-instance"
NS_WSDL_SOAP11: Final = "http://schemas.xmlsoap.org/wsdl/soap/"
NS_WSDL_SOAP12: Final = "http://schemas.xmlsoap.org/wsdl/soap12/"
NS_SOAP11_ENV: Final = NS_SOAP_ENV
NS_SOAP12_ENV: Final = "http://www.w3.org/2003/05/soap-envelope"
MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024

SoapVersion = Literal["1.1", "1.2"]


class WsdlError(ValueError):
    """The WSDL does not describe the operation in a way this module can call."""


@dataclass(frozen=True, slots=True)
class Child:
    """A child element of the request element, as its XML Schema type declares it."""

    name: str
    namespace: str | None
    """None: unqualified (the schema's ``elementFormDefault`` is not ``qualified``)."""
    xsd_type: str | None = None
    """The local name of its type (``string``, ``date``, ...), if it names one."""
    required: bool = False


@dataclass(frozen=True, slots=True)
class DocLiteralOperation:
    name: str
    soap_version: SoapVersion
    soap_action: str
    request: etree.QName
    response: etree.QName
    children: tuple[Child, ...]
    """The request element's declared children in order; empty when the WSDL's schema does
    not declare them (then the caller's order is used and children are qualified)."""
    address: str | None

    @property
    def content_type(self) -> str:
        if self.soap_version == "1.1":
            return "text/xml; charset=utf-8"
        return f'application/soap+xml; charset=utf-8; action="{self.soap_action}"'

    @property
    def envelope_ns(self) -> str:
        return NS_SOAP11_ENV if self.soap_version == "1.1" else NS_SOAP12_ENV


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def _qname(elem: etree._Element, value: str | None, what: str) -> etree.QName:
    """Resolve a ``prefix:local`` attribute value against ``elem``'s namespaces."""
    if not value:
        raise WsdlError(f"{what} is missing")
    prefix, _, local = value.rpartition(":")
    namespace = elem.nsmap.get(prefix or None)
    if namespace is None and prefix:
        raise WsdlError(f"{what}: the prefix {prefix!r} is not declared")
    return etree.QName(namespace, local) if namespace else etree.QName(local)


def read_operation(wsdl: bytes, name: str) -> DocLiteralOperation:
    """What calling operation ``name`` of the WSDL needs; :class:`WsdlError` saying why not."""
    try:
        root = parse_xml(wsdl, max_bytes=MAX_WSDL_BYTES, code="admin.invalid_description",
                         what="the WSDL")
    except BadRequestError as exc:
        raise WsdlError(exc.message) from exc
    if root.tag != _q(NS_WSDL, "definitions"):
        raise WsdlError("the root element is not wsdl:definitions")
    binding, bop, version = _binding_operation(root, name)
    soap_ns = NS_WSDL_SOAP11 if version == "1.1" else NS_WSDL_SOAP12
    soap_binding = binding.find(_q(soap_ns, "binding"))
    soap_op = bop.find(_q(soap_ns, "operation"))
    style = (soap_op.get("style") if soap_op is not None else None) or (
        soap_binding.get("style") if soap_binding is not None else None) or "document"
    if style != "document":
        raise WsdlError(f"operation {name!r} is {style} style; only document/literal is "
                        "supported")
    for direction in ("input", "output"):
        body = bop.find(f"{_q(NS_WSDL, direction)}/{_q(soap_ns, 'body')}")
        if body is not None and body.get("use", "literal") != "literal":
            raise WsdlError(f"operation {name!r}: the {direction} is {body.get('use')}; only "
                            "document/literal is supported")
    port_type = _named(root, "portType", _qname(binding, binding.get("type"), "binding type"))
    pop = next((op for op in port_type.iterfind(_q(NS_WSDL, "operation"))
                if op.get("name") == name), None)
    if pop is None:
        raise WsdlError(f"the portType has no operation {name!r}")
    request = _message_element(root, pop, "input")
    response = _message_element(root, pop, "output")
    return DocLiteralOperation(
        name=name, soap_version=version,
        soap_action=(soap_op.get("soapAction") or "") if soap_op is not None else "",
        request=request, response=response, children=_children(root, request),
        address=_address(root, binding, soap_ns))


def _binding_operation(root: etree._Element, name: str
                       ) -> tuple[etree._Element, etree._Element, SoapVersion]:
    found: dict[SoapVersion, tuple[etree._Element, etree._Element]] = {}
    for binding in root.iterfind(_q(NS_WSDL, "binding")):
        version: SoapVersion | None = (
            "1.1" if binding.find(_q(NS_WSDL_SOAP11, "binding")) is not None else
            "1.2" if binding.find(_q(NS_WSDL_SOAP12, "binding")) is not None else None)
        if version is None:
            continue  # an HTTP binding, say
        for op in binding.iterfind(_q(NS_WSDL, "operation")):
            if op.get("name") == name:
                found.setdefault(version, (binding, op))
    for version in ("1.1", "1.2"):
        if version in found:
            return (*found[version], version)
    names = sorted({op.get("name") or "" for op in
                    root.iterfind(f"{_q(NS_WSDL, 'binding')}/{_q(NS_WSDL, 'operation')}")})
    raise WsdlError(f"no SOAP binding has an operation {name!r} (operations: "
                    f"{', '.join(names) or 'none'})")


def _named(root: etree._Element, kind: str, qname: etree.QName) -> etree._Element:
    for elem in root.iterfind(_q(NS_WSDL, kind)):
        if elem.get("name") == qname.localname:
            return elem
    raise WsdlError(f"no wsdl:{kind} named {qname.localname!r}")


def _message_element(root: etree._Element, pop: etree._Element, direction: str
                     ) -> etree.QName:
    io = pop.find(_q(NS_WSDL, direction))
    if io is None:
        raise WsdlError(f"operation {pop.get('name')!r} has no {direction}")
    message = _named(root, "message", _qname(io, io.get("message"), f"{direction} message"))
    parts = message.findall(_q(NS_WSDL, "part"))
    if len(parts) != 1 or parts[0].get("element") is None:
        raise WsdlError(f"message {message.get('name')!r} must have exactly one part naming "
                        "an element (document/literal)")
    return _qname(parts[0], parts[0].get("element"), "part element")


def _schemas(root: etree._Element, namespace: str | None) -> list[etree._Element]:
    return [s for s in root.iterfind(f"{_q(NS_WSDL, 'types')}/{_q(NS_XSD, 'schema')}")
            if s.get("targetNamespace") == namespace]


def _children(root: etree._Element, element: etree.QName) -> tuple[Child, ...]:
    for schema in _schemas(root, element.namespace):
        decl = next((e for e in schema.iterfind(_q(NS_XSD, "element"))
                     if e.get("name") == element.localname), None)
        if decl is None:
            continue
        ctype = decl.find(_q(NS_XSD, "complexType"))
        if ctype is None and decl.get("type"):
            type_name = _qname(decl, decl.get("type"), "element type")
            ctype = next((t for s in _schemas(root, type_name.namespace)
                          for t in s.iterfind(_q(NS_XSD, "complexType"))
                          if t.get("name") == type_name.localname), None)
        if ctype is None:
            return ()
        qualified = schema.get("elementFormDefault") == "qualified"
        children = []
        for child in ctype.iterfind(f"*/{_q(NS_XSD, 'element')}"):
            xsd_type = child.get("type")
            children.append(Child(
                name=child.get("name") or "",
                namespace=element.namespace if qualified else None,
                xsd_type=_qname(child, xsd_type, "type").localname if xsd_type else None,
                required=child.get("minOccurs", "1") != "0"))
        return tuple(children)
    return ()


def _address(root: etree._Element, binding: etree._Element, soap_ns: str) -> str | None:
    for port in root.iterfind(f"{_q(NS_WSDL, 'service')}/{_q(NS_WSDL, 'port')}"):
        if _qname(port, port.get("binding"), "port binding").localname == binding.get("name"):
            address = port.find(_q(soap_ns, "address"))
            if address is not None and address.get("location"):
                return address.get("location")
    return None


def request_envelope(op: DocLiteralOperation, values: Sequence[tuple[str, str | None]]) -> bytes:
    """The request: ``values`` (child element name, text) as children of the request
    element, in the order the schema declares them; a ``None`` text is left out."""
    env = etree.Element(_q(op.envelope_ns, "Envelope"), nsmap={"soapenv": op.envelope_ns})
    body = etree.SubElement(env, _q(op.envelope_ns, "Body"))
    wrapper = etree.SubElement(body, op.request.text, nsmap={"m": op.request.namespace}
                               if op.request.namespace else None)
    given = dict(values)
    declared = {c.name: c for c in op.children}
    order = [c.name for c in op.children] or [n for n, _ in values]
    for name in order:
        text = given.get(name)
        if text is None:
            continue
        child = declared.get(name)
        ns = child.namespace if child is not None else op.request.namespace
        etree.SubElement(wrapper, _q(ns, name) if ns else name).text = text
    return bytes(etree.tostring(env, xml_declaration=True, encoding="utf-8"))


def _response_error(message: str) -> AdapterError:
    return AdapterError(f"the SOAP service's response {message}")


def read_response(op: DocLiteralOperation, body: bytes, record: Sequence[str],
                  fields: Mapping[str, str]) -> list[dict[str, str | None]]:
    """The records of a response: the elements at the local-name path ``record`` below the
    response element (the response element itself when ``record`` is empty); of each, the
    text of the element at each local-name path of ``fields`` (``a/b``), ``None`` when it is
    absent or ``xsi:nil``.  A record element that is ``xsi:nil`` is no record.  A SOAP fault
    raises :class:`SoapFaultError`."""
    try:
        root = parse_xml(body, max_bytes=MAX_RESPONSE_BYTES, code="adapter.backend_failed",
                         what="the SOAP service's response")
    except BadRequestError as exc:
        raise AdapterError(exc.message) from exc
    envelope_ns = etree.QName(root).namespace
    if etree.QName(root).localname != "Envelope" or envelope_ns not in (NS_SOAP11_ENV,
                                                                        NS_SOAP12_ENV):
        raise _response_error("is not a SOAP envelope")
    soap_body = root.find(_q(envelope_ns, "Body"))
    content = [] if soap_body is None else [e for e in soap_body if isinstance(e.tag, str)]
    if not content:
        raise _response_error("has an empty SOAP body")
    top = content[0]
    if top.tag == _q(envelope_ns, "Fault"):
        raise _fault(top, envelope_ns)
    if etree.QName(top) != op.response:
        raise _response_error(f"holds {etree.QName(top).text}, not {op.response.text}")
    found = [top]
    for step in record:
        found = [c for e in found for c in e if isinstance(c.tag, str)
                 and etree.QName(c).localname == step and not _nil(c)]
    return [{name: _text_at(elem, path) for name, path in fields.items()} for elem in found]


def _text_at(elem: etree._Element, path: str) -> str | None:
    current: etree._Element | None = elem
    for step in path.split("/"):
        current = next((c for c in current if isinstance(c.tag, str)
                        and etree.QName(c).localname == step), None) if current is not None \
            else None
    if current is None or _nil(current):
        return None
    return _all_text(current)


def _nil(elem: etree._Element) -> bool:
    return elem.get(_q(NS_XSI, "nil")) in ("true", "1")


def _all_text(elem: etree._Element) -> str:
    return "".join(t if isinstance(t, str) else t.decode() for t in elem.itertext())


def _fault(fault: etree._Element, envelope_ns: str) -> SoapFaultError:
    def text(path: str) -> str:
        found = fault.find(path)
        return _all_text(found).strip() if found is not None else ""

    if envelope_ns == NS_SOAP11_ENV:
        code, reason, detail = text("faultcode"), text("faultstring"), fault.find("detail")
    else:
        code = text(f"{_q(envelope_ns, 'Code')}/{_q(envelope_ns, 'Value')}")
        reason = text(f"{_q(envelope_ns, 'Reason')}/{_q(envelope_ns, 'Text')}")
        detail = fault.find(_q(envelope_ns, "Detail"))
    detail_text = None
    if detail is not None and len(detail):
        detail_text = etree.tostring(detail[0], encoding="unicode")[:2000]
    return SoapFaultError(code or "(no faultcode)", reason or "(no faultstring)",
                          detail=detail_text)
