"""WSDL operations, and a parser that refuses entities, DTDs and the network."""

from __future__ import annotations

import pytest

from xchange.errors import BadRequestError
from xchange.soap.wsdl import WsdlOperation, parse_wsdl

WSDL = b"""<?xml version="1.0"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
    xmlns:xrd="http://x-road.eu/xsd/xroad.xsd" name="t" targetNamespace="urn:t">
  <wsdl:binding name="b" type="x">
    <wsdl:operation name="getRandom"><xrd:version>v1</xrd:version></wsdl:operation>
    <wsdl:operation name="helloService"/>
    <wsdl:operation name="getRandom"><xrd:version>v1</xrd:version></wsdl:operation>
  </wsdl:binding>
</wsdl:definitions>"""


def test_operations() -> None:
    assert parse_wsdl(WSDL) == (WsdlOperation("getRandom", "v1"),
                                WsdlOperation("helloService"))


@pytest.mark.parametrize(
    "document",
    [
        b"<a/>",
        b"not xml",
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x "y">]>'
        b'<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/">&x;'
        b"</wsdl:definitions>",
        b'<?xml version="1.0"?><!DOCTYPE d SYSTEM "http://example.invalid/d.dtd">'
        b'<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"/>',
        b'<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"/>',
        b'<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"><wsdl:binding>'
        b'<wsdl:operation name="a/b"/></wsdl:binding></wsdl:definitions>',
    ],
)
def test_refused(document: bytes) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_wsdl(document)
    assert info.value.code == "admin.invalid_description"
