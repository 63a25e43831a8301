"""The one hardened XML parser of xchange: every document from outside goes through
:func:`parse_xml`.

Refused before or while parsing, each with a :class:`~xchange.errors.BadRequestError` of the
caller's code:

* more than ``max_bytes`` bytes;
* a DOCTYPE (so no internal or external DTD, no entity declaration: XXE and "billion
  laughs" cannot start) -- looked for in the prolog before the parser runs (a prolog longer
  than 4 KiB is refused), and checked again on the parsed tree;
* anything that is not well-formed, including a reference to an undeclared entity;
* nesting deeper than ``max_depth`` elements;
* processing instructions other than the XML declaration.

The parser never resolves entities, never loads a DTD and never opens a network connection
(``resolve_entities=False, no_network=True, load_dtd=False``); XInclude is never processed.
A UTF-8 byte order mark is skipped, as X-Road's security server does (PR-MESS 2.6 "MAY
remove the BOM"); other encodings are accepted only as the XML declaration names them.

What it does not do: validate against a schema (:mod:`xchange.soap.envelope` does that for
the X-Road headers).
"""

from __future__ import annotations

import re
from typing import Any, Final

from lxml import etree

from xchange.errors import BadRequestError

__all__ = ["MAX_DEPTH", "UTF8_BOM", "parse_xml", "strip_bom"]

UTF8_BOM: Final = b"\xef\xbb\xbf"
MAX_DEPTH: Final = 64
"""Deepest element nesting accepted; SOAP envelopes of real services stay far below."""

# A DOCTYPE can only stand in the prolog, before the first element.  Looked for in the raw
# bytes first (ASCII-compatible encodings), so that the parser never sees one.
_PROLOG_DOCTYPE = re.compile(rb"<!\s*DOCTYPE", re.IGNORECASE)
_PROLOG_LIMIT: Final = 4096


def strip_bom(data: bytes) -> bytes:
    """``data`` without a leading UTF-8 byte order mark."""
    return data[len(UTF8_BOM):] if data.startswith(UTF8_BOM) else data


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_pis=False,
                           remove_comments=True, collect_ids=False)


def parse_xml(data: bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH,
              code: str = "client.invalid_soap", what: str = "XML") -> etree._Element:
    """Parse ``data`` with every dangerous feature off; return the root element."""
    if len(data) > max_bytes:
        raise BadRequestError(f"{what} is larger than {max_bytes} bytes", code=code)
    data = strip_bom(data)
    head = data[:_PROLOG_LIMIT]
    first_element = re.search(rb"<[A-Za-z_]", head)
    if first_element is None and len(data) > _PROLOG_LIMIT:
        raise BadRequestError(f"{what}: no element in the first {_PROLOG_LIMIT} bytes",
                              code=code)
    prolog = head if first_element is None else head[:first_element.start()]
    if _PROLOG_DOCTYPE.search(prolog):
        raise BadRequestError(f"{what}: a DOCTYPE is not accepted", code=code)
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise BadRequestError(f"{what} is not well-formed: {exc}", code=code) from exc
    except ValueError as exc:  # e.g. a unicode string with an encoding declaration
        raise BadRequestError(f"{what} cannot be read: {exc}", code=code) from exc
    if root is None:
        raise BadRequestError(f"{what} is empty", code=code)
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise BadRequestError(f"{what}: a DOCTYPE is not accepted", code=code)
    _check_tree(root, max_depth, code, what)
    return root


def _check_tree(root: etree._Element, max_depth: int, code: str, what: str) -> None:
    stack: list[tuple[etree._Element, int]] = [(root, 1)]
    while stack:
        elem, depth = stack.pop()
        if depth > max_depth:
            raise BadRequestError(f"{what} is nested deeper than {max_depth} elements",
                                  code=code)
        if isinstance(elem, etree._ProcessingInstruction):
            raise BadRequestError(f"{what}: processing instructions are not accepted",
                                  code=code)
        if isinstance(elem, etree._Entity):
            raise BadRequestError(f"{what}: entity references are not accepted", code=code)
        stack.extend((child, depth + 1) for child in elem)
