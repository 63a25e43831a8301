"""A document/literal operation from a WSDL; requests written and responses read."""

from __future__ import annotations

import pytest
from lxml import etree

from xchange.errors import AdapterError, SoapFaultError
from xchange.soap.docliteral import (
    NS_SOAP12_ENV,
    Child,
    WsdlError,
    read_operation,
    read_response,
    request_envelope,
)

# A SOAP 1.2 binding only, a named request type, unqualified children, and an address.
WSDL12 = b"""<?xml version="1.0"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap12="http://schemas.xmlsoap.org/wsdl/soap12/"
    xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:t="urn:vehicles"
    targetNamespace="urn:vehicles">
  <wsdl:types>
    <xs:schema targetNamespace="urn:vehicles">
      <xs:complexType name="Query">
        <xs:sequence>
          <xs:element name="plate" type="xs:string"/>
          <xs:element name="year" type="xs:int" minOccurs="0"/>
        </xs:sequence>
      </xs:complexType>
      <xs:element name="carQuery" type="t:Query"/>
      <xs:element name="carAnswer"/>
    </xs:schema>
  </wsdl:types>
  <wsdl:message name="in"><wsdl:part name="p" element="t:carQuery"/></wsdl:message>
  <wsdl:message name="out"><wsdl:part name="p" element="t:carAnswer"/></wsdl:message>
  <wsdl:portType name="pt">
    <wsdl:operation name="findCar">
      <wsdl:input message="t:in"/><wsdl:output message="t:out"/>
    </wsdl:operation>
  </wsdl:portType>
  <wsdl:binding name="b12" type="t:pt">
    <soap12:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <wsdl:operation name="findCar">
      <soap12:operation soapAction="urn:findCar"/>
      <wsdl:input><soap12:body use="literal"/></wsdl:input>
      <wsdl:output><soap12:body use="literal"/></wsdl:output>
    </wsdl:operation>
  </wsdl:binding>
  <wsdl:service name="s">
    <wsdl:port name="p" binding="t:b12"><soap12:address location="https://cars.example/ws"/>
    </wsdl:port>
  </wsdl:service>
</wsdl:definitions>"""


def test_a_soap12_operation_with_a_named_type() -> None:
    op = read_operation(WSDL12, "findCar")
    assert (op.soap_version, op.soap_action, op.address) == ("1.2", "urn:findCar",
                                                             "https://cars.example/ws")
    assert (op.request.text, op.response.text) == ("{urn:vehicles}carQuery",
                                                   "{urn:vehicles}carAnswer")
    assert op.children == (Child("plate", None, "string", True),
                           Child("year", None, "int", False))
    assert op.content_type == 'application/soap+xml; charset=utf-8; action="urn:findCar"'


def test_the_request_follows_the_schemas_order_and_leaves_out_none() -> None:
    op = read_operation(WSDL12, "findCar")
    env = etree.fromstring(request_envelope(op, [("year", "2001"), ("plate", "<123 ABC>")]))
    assert env.tag == f"{{{NS_SOAP12_ENV}}}Envelope"
    (wrapper,) = env[0]
    assert wrapper.tag == "{urn:vehicles}carQuery"
    assert [(c.tag, c.text) for c in wrapper] == [("plate", "<123 ABC>"), ("year", "2001")]
    env = etree.fromstring(request_envelope(op, [("plate", "X"), ("year", None)]))
    assert [c.tag for c in env[0][0]] == ["plate"]


def answer(body: str) -> bytes:
    return (f'<e:Envelope xmlns:e="{NS_SOAP12_ENV}" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            f'<e:Header/><e:Body>{body}</e:Body></e:Envelope>').encode()


def test_records_fields_paths_and_nil() -> None:
    op = read_operation(WSDL12, "findCar")
    body = answer('<carAnswer xmlns="urn:vehicles"><car><plate>1</plate><owner><name>Mari'
                  '</name></owner><year xsi:nil="true"/></car><car xsi:nil="true"/>'
                  '<car><plate>2</plate></car></carAnswer>')
    fields = {"plate": "plate", "owner": "owner/name", "year": "year"}
    assert read_response(op, body, ["car"], fields) == [
        {"plate": "1", "owner": "Mari", "year": None},
        {"plate": "2", "owner": None, "year": None}]
    assert read_response(op, body, [], {"first": "car/plate"}) == [{"first": "1"}]


def test_a_soap12_fault() -> None:
    op = read_operation(WSDL12, "findCar")
    fault = answer('<e:Fault><e:Code><e:Value>e:Receiver</e:Value></e:Code><e:Reason>'
                   '<e:Text xml:lang="en">register offline</e:Text></e:Reason></e:Fault>')
    with pytest.raises(SoapFaultError) as caught:
        read_response(op, fault, [], {})
    assert (caught.value.faultcode, caught.value.faultstring) == ("e:Receiver",
                                                                  "register offline")
    assert caught.value.detail is None


@pytest.mark.parametrize(("body", "message"), [
    (b"x" * (16 * 1024 * 1024 + 1), "is larger than"),
    (b"<a>", "the SOAP service's response is not well-formed"),
    (b'<!DOCTYPE a [<!ENTITY b "c">]><a>&b;</a>',
     "the SOAP service's response: a DOCTYPE is not accepted"),
])
def test_unreadable_responses(body: bytes, message: str) -> None:
    with pytest.raises(AdapterError, match=message) as caught:
        read_response(read_operation(WSDL12, "findCar"), body, [], {})
    assert caught.value.code == "adapter.backend_failed"


@pytest.mark.parametrize(("change", "message"), [
    ((b'element="t:carQuery"', b'element="q:carQuery"'), "the prefix 'q' is not declared"),
    ((b'<wsdl:part name="p" element="t:carAnswer"/>', b""), "must have exactly one part"),
    ((b'<wsdl:input message="t:in"/>', b""), "has no input"),
    ((b'type="t:pt"', b'type="t:other"'), "no wsdl:portType named 'other'"),
])
def test_wsdls_that_do_not_describe_a_call(change: tuple[bytes, bytes], message: str) -> None:
    with pytest.raises(WsdlError, match=message):
        read_operation(WSDL12.replace(*change), "findCar")
