"""The one hardened XML parser: what it refuses, and what it leaves alone."""

from __future__ import annotations

import pytest

from xchange.errors import BadRequestError
from xchange.soap.xml import UTF8_BOM, parse_xml, strip_bom


def test_a_plain_document_parses() -> None:
    assert parse_xml(b"<a><b>x</b></a>", max_bytes=100).findtext("b") == "x"


def test_a_utf8_bom_is_skipped() -> None:
    assert parse_xml(UTF8_BOM + b"<?xml version='1.0' encoding='UTF-8'?><a/>",
                     max_bytes=100).tag == "a"
    assert strip_bom(b"<a/>") == b"<a/>"


@pytest.mark.parametrize(("document", "why"), [
    (b'<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>', "DOCTYPE"),
    (b"<?xml version='1.0'?>\n<!doctype a SYSTEM 'http://127.0.0.1:9/x.dtd'><a/>", "DOCTYPE"),
    (b'<!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>', "DOCTYPE"),
    (b"<a>&undeclared;</a>", "well-formed"),
    (b"<a><?php evil ?></a>", "processing instructions"),
    (b"<a>" * 65 + b"</a>" * 65, "deeper"),
    (b"<a>", "well-formed"),
    (b"", "well-formed"),
    (b"x" * 10_001, "larger"),
    (b"<!--" + b" " * 5000 + b"-->" + b'<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>', "no element"),
])
def test_refused(document: bytes, why: str) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_xml(document, max_bytes=10_000)
    assert info.value.code == "client.invalid_soap"
    assert why in info.value.message


def test_the_caller_names_the_code() -> None:
    with pytest.raises(BadRequestError) as info:
        parse_xml(b"<a", max_bytes=10, code="admin.invalid_description", what="WSDL")
    assert (info.value.code, info.value.message.split()[0]) == (
        "admin.invalid_description", "WSDL")


def test_deep_but_allowed_nesting_parses() -> None:
    assert parse_xml(b"<a>" * 64 + b"</a>" * 64, max_bytes=10_000).tag == "a"
