"""The one hardened XML parser: what it refuses, and what it leaves alone."""

from __future__ import annotations

import pytest

from xchange.errors import BadRequestError
from xchange.soap.xml import (
    UTF8_BOM,
    ElementSpans,
    XmlFeed,
    parse_xml,
    parse_xml_chunks,
    strip_bom,
)


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
    (b"<a>" + b"x" * 10_000 + b"</a>", "larger"),
    (b"<!--" + b" " * 5000 + b"-->" + b'<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>', "no element"),
])
@pytest.mark.parametrize("piece", [None, 1, 7, 4096])
def test_refused(document: bytes, why: str, piece: int | None) -> None:
    """The same refusals whole and fed piece by piece (``piece`` bytes at a time)."""
    with pytest.raises(BadRequestError) as info:
        if piece is None:
            parse_xml(document, max_bytes=10_000)
        else:
            parse_xml_chunks(_pieces(document, piece), max_bytes=10_000)
    assert info.value.code == "client.invalid_soap"
    assert why in info.value.message


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def test_pieces_parse_as_the_whole_and_a_bom_is_skipped() -> None:
    document = UTF8_BOM + b"<?xml version='1.0' encoding='UTF-8'?><a><b>x</b></a>"
    for size in (1, 5, 10_000):
        assert parse_xml_chunks(_pieces(document, size), max_bytes=100).findtext("b") == "x"


def test_pruning_keeps_the_header_and_the_body_wrapper_name_only() -> None:
    items = b"<item><v>1</v><w/></item>" * 20_000  # ~500 KB of body
    document = (b"<E><H><f><g>kept</g></f></H><B><op>" + items + b"</op></B></E>")
    root = parse_xml_chunks(_pieces(document, 65_536), max_bytes=len(document), prune="B")
    assert root.findtext("H/f/g") == "kept"
    body = root.find("B")
    assert body is not None
    [op] = list(body)
    assert op.tag == "op" and len(op) == 0
    # deep nesting and hostile content in the pruned part are still refused
    for bad, why in ((b"<x>" * 70 + b"</x>" * 70, "deeper"), (b"<?pi x?>", "processing"),
                     (b"&undeclared;", "well-formed")):
        with pytest.raises(BadRequestError, match=why):
            parse_xml_chunks(_pieces(b"<E><B><op><i>" + bad + b"</i></op></B></E>", 3),
                             max_bytes=10_000, prune="B")


def test_the_caller_names_the_code() -> None:
    with pytest.raises(BadRequestError) as info:
        parse_xml(b"<a", max_bytes=10, code="admin.invalid_description", what="WSDL")
    assert (info.value.code, info.value.message.split()[0]) == (
        "admin.invalid_description", "WSDL")


def test_deep_but_allowed_nesting_parses() -> None:
    assert parse_xml(b"<a>" * 64 + b"</a>" * 64, max_bytes=10_000).tag == "a"


def test_pruning_keeps_two_body_elements_and_one_after_the_body_at_most() -> None:
    """What is kept stays small even if a document holds many elements where one belongs:
    enough to tell that there is more than one."""
    document = (b"<E><H/><B>" + b"<op><x/></op>" * 10_000 + b"</B>" +
                b"<after><y>z</y></after>" * 10_000 + b"</E>")
    root = parse_xml_chunks(_pieces(document, 4096), max_bytes=len(document), prune="B")
    assert [c.tag for c in root] == ["H", "B", "after"]
    body, after = root[1], root[2]
    assert [c.tag for c in body] == ["op", "op"] and len(body[0]) == 0
    assert len(after) == 0


def test_a_feed_shows_its_root_as_it_grows() -> None:
    feed = XmlFeed(max_bytes=10_000, prune="B")
    feed.feed(b"<E><H><f>1</f></H><B>")
    feed.feed(b" " * 5000)  # past the prolog check: parsing has begun
    assert feed.root is not None and [c.tag for c in feed.root] == ["H", "B"]
    feed.feed(b"<op>")
    assert [c.tag for c in feed.root[1]] == ["op"]
    with pytest.raises(BadRequestError, match="larger than 10000"):
        feed.feed(b"x" * 5000)


_SPANNED = (b"\xef\xbb\xbf<?xml version='1.0'?><!-- < > --><s:E xmlns:s='urn:s'>"
            b"<s:H a='>' b=\"/>\"><x:a xmlns:x='urn:x'/><x:b xmlns:x='urn:x' q='a>b'>t&amp;"
            b"<![CDATA[</x:b><y>]]></x:b><?pi ?><c /></s:H><s:B><w><deep/></w></s:B></s:E>")


@pytest.mark.parametrize("piece", [1, 2, 3, 7, len(_SPANNED)])
def test_element_spans_find_elements_in_the_bytes_whatever_the_pieces(piece: int) -> None:
    spans = ElementSpans(3)
    seen = bytearray()
    for chunk in _pieces(_SPANNED, piece):
        seen += chunk
        spans.scan(seen)
    found = [(s.depth, s.name, _SPANNED[s.start:s.end]) for s in spans.spans]
    assert found == [
        (3, "x:a", b"<x:a xmlns:x='urn:x'/>"),
        (3, "x:b", b"<x:b xmlns:x='urn:x' q='a>b'>t&amp;<![CDATA[</x:b><y>]]></x:b>"),
        (3, "c", b"<c />"),
        (2, "s:H", _SPANNED[_SPANNED.index(b"<s:H"):_SPANNED.index(b"<s:B>")]),
        (3, "w", b"<w><deep/></w>"),
        (2, "s:B", b"<s:B><w><deep/></w></s:B>"),
        (1, "s:E", _SPANNED[_SPANNED.index(b"<s:E"):]),
    ]


@pytest.mark.parametrize("document", [b"<a></a></b>", b'<!DOCTYPE a [<!ENTITY e "x">]><a/>'])
def test_element_spans_refuse_what_they_cannot_follow(document: bytes) -> None:
    with pytest.raises(ValueError):
        ElementSpans(3).scan(document)
