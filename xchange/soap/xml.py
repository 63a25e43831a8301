"""The one hardened XML parser of xchange: every document from outside goes through
:func:`parse_xml` (or :func:`parse_xml_chunks`, the same fed piece by piece, for a large
SOAP envelope read from a spool).

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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from lxml import etree

from xchange.errors import BadRequestError

__all__ = ["MAX_DEPTH", "UTF8_BOM", "ElementSpans", "Span", "XmlFeed", "parse_xml",
           "parse_xml_chunks", "strip_bom"]

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


_OPTIONS: Final[dict[str, Any]] = {
    "resolve_entities": False, "no_network": True, "load_dtd": False, "dtd_validation": False,
    "huge_tree": False, "remove_pis": False, "remove_comments": True, "collect_ids": False}


def _parser() -> etree.XMLParser:
    return etree.XMLParser(**_OPTIONS)


def _check_prolog(data: bytes, code: str, what: str) -> None:
    """Refuse a DOCTYPE in the prolog of ``data`` (BOM stripped; its first bytes suffice)."""
    head = data[:_PROLOG_LIMIT]
    first_element = re.search(rb"<[A-Za-z_]", head)
    if first_element is None and len(data) > _PROLOG_LIMIT:
        raise BadRequestError(f"{what}: no element in the first {_PROLOG_LIMIT} bytes",
                              code=code)
    prolog = head if first_element is None else head[:first_element.start()]
    if _PROLOG_DOCTYPE.search(prolog):
        raise BadRequestError(f"{what}: a DOCTYPE is not accepted", code=code)


def _check_docinfo(root: etree._Element, code: str, what: str) -> None:
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise BadRequestError(f"{what}: a DOCTYPE is not accepted", code=code)


def parse_xml(data: bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH,
              code: str = "client.invalid_soap", what: str = "XML") -> etree._Element:
    """Parse ``data`` with every dangerous feature off; return the root element."""
    if len(data) > max_bytes:
        raise BadRequestError(f"{what} is larger than {max_bytes} bytes", code=code)
    data = strip_bom(data)
    _check_prolog(data, code, what)
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise BadRequestError(f"{what} is not well-formed: {exc}", code=code) from exc
    except ValueError as exc:  # e.g. a unicode string with an encoding declaration
        raise BadRequestError(f"{what} cannot be read: {exc}", code=code) from exc
    if root is None:
        raise BadRequestError(f"{what} is empty", code=code)
    _check_docinfo(root, code, what)
    _check_tree(root, max_depth, code, what)
    return root


class XmlFeed:
    """The hardened parser fed piece by piece (:func:`parse_xml_chunks` is it, run over an
    iterable): the refusals of :func:`parse_xml`, made as the pieces pass.  :attr:`root` is
    the document's root element as soon as its start tag was read, with what is kept of the
    tree below it so far.

    With ``prune`` (a tag, e.g. the SOAP ``Body``'s) the tree stays small whatever the size
    of the document: of a second-level element of that tag only its first two children
    (their names) are kept, what is nested below them is dropped as soon as it is complete;
    after the first such element, at most one more second-level element is kept, without
    its content.  (Enough to tell that a SOAP Body holds one element and nothing follows
    it.  A single text node is limited to 10 MB by the parser.)"""

    def __init__(self, *, max_bytes: int, max_depth: int = MAX_DEPTH,
                 code: str = "client.invalid_soap", what: str = "XML",
                 prune: str | None = None) -> None:
        self._parser = etree.XMLPullParser(events=("start", "end", "pi"), **_OPTIONS)
        self._max_bytes, self._max_depth = max_bytes, max_depth
        self._code, self._what, self._prune = code, what, prune
        self._path: list[str] = []
        self._head, self._started, self.size = b"", False, 0
        self._pruned_done = False  # the first element of the prune tag has ended
        self._after = 0  # second-level elements after it
        self._children = 0  # children of the current second-level element
        self.root: etree._Element | None = None

    def _bad(self, why: str) -> BadRequestError:
        return BadRequestError(f"{self._what}{why}", code=self._code)

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._max_bytes:
            raise self._bad(f" is larger than {self._max_bytes} bytes")
        try:
            if self._started:
                self._parser.feed(chunk)
            else:
                self._head += chunk
                if len(self._head) < _PROLOG_LIMIT + len(UTF8_BOM):
                    return
                self._start()
            self._consume()
        except etree.XMLSyntaxError as exc:
            raise self._bad(f" is not well-formed: {exc}") from exc

    def _start(self) -> None:
        head, self._head, self._started = strip_bom(self._head), b"", True
        _check_prolog(head, self._code, self._what)
        self._parser.feed(head)

    def close(self) -> etree._Element:
        """The end of the document: its root (with what was kept), checked."""
        try:
            if not self._started:
                self._start()
            root = self._parser.close()
            self._consume()
        except etree.XMLSyntaxError as exc:
            raise self._bad(f" is not well-formed: {exc}") from exc
        _check_docinfo(root, self._code, self._what)
        _check_tree(root, self._max_depth, self._code, self._what)  # the kept part
        return root

    def _consume(self) -> None:
        path = self._path
        for event, elem in self._parser.read_events():
            if event == "pi":
                raise self._bad(": processing instructions are not accepted")
            assert isinstance(elem, etree._Element)
            if event == "start":
                path.append(elem.tag)
                if len(path) > self._max_depth:
                    raise self._bad(f" is nested deeper than {self._max_depth} elements")
                if self.root is None:
                    self.root = elem
                elif len(path) == 2:
                    self._children = 0
                elif len(path) == 3:
                    self._children += 1
                continue
            if any(isinstance(c, etree._Entity) for c in elem):
                raise self._bad(": entity references are not accepted")
            if self._prune is not None and self._dropped(elem):
                parent = elem.getparent()
                if parent is not None:
                    parent.remove(elem)
            if len(path) == 2 and path[1] == self._prune:
                self._pruned_done = True
            path.pop()

    def _dropped(self, elem: etree._Element) -> bool:
        """Is ``elem`` (just ended) left out of the kept tree (class docstring)?"""
        depth = len(self._path)
        if depth < 2:
            return False
        if self._pruned_done:  # after the first pruned element: one name kept, no content
            if depth == 2:
                self._after += 1
                return self._after > 1
            return True
        if self._path[1] != self._prune:
            return False
        return depth >= 4 or (depth == 3 and self._children > 2)


@dataclass(frozen=True, slots=True)
class Span:
    """Where one element is in a document's bytes: ``data[start:end]`` is the element, from
    its start tag's ``<`` to the end of its end tag (or of its empty-element tag)."""

    depth: int
    """1 for the root element."""
    name: str
    """The qualified name as written (``prefix:local``)."""
    start: int
    end: int


_START_TAG = re.compile(rb"<([^\s/>!?]+)((?:[^\"'>]|\"[^\"]*\"|'[^']*')*)>")
_END_TAG = re.compile(rb"</([^\s>]+)\s*>")
_SKIPPED: Final = ((b"<!--", b"-->"), (b"<![CDATA[", b"]]>"), (b"<?", b"?>"))


class ElementSpans:
    """Finds where elements start and end in the bytes of a document as they come, down to
    ``max_depth``: :attr:`spans`, in the order the elements end.

    Not a parser: it only tells markup (tags, comments, CDATA sections, processing
    instructions) from character data, and trusts the document to be well-formed -- which
    :class:`XmlFeed` must check on the same bytes.  For what a parser does not say: where
    in the bytes an element is (lxml gives no offsets), so that a region can be rewritten
    and the rest passed on byte for byte."""

    def __init__(self, max_depth: int) -> None:
        self.spans: list[Span] = []
        self._max_depth = max_depth
        self._pos = 0
        self._open: list[tuple[str, int]] = []

    def scan(self, data: bytes | bytearray) -> None:
        """Go on through ``data``: every byte so far (it only grows), as far as complete
        markup goes."""
        pos, size = self._pos, len(data)
        while True:
            lt = data.find(b"<", pos)
            if lt < 0:
                pos = size
                break
            end = self._markup(data, lt)
            if end is None:  # incomplete: wait for more
                pos = lt
                break
            pos = end
        self._pos = pos

    def _markup(self, data: bytes | bytearray, lt: int) -> int | None:
        """The end of the markup at ``lt`` (recording an element's span), or None."""
        for opening, closing in _SKIPPED:
            if data.startswith(opening, lt):
                end = data.find(closing, lt + len(opening))
                return None if end < 0 else end + len(closing)
            if data[lt:lt + len(opening)] == opening[:len(data) - lt]:
                return None  # may become it
        if data.startswith(b"<!", lt):
            raise ValueError("a DOCTYPE (or other markup declaration) is not accepted")
        if data.startswith(b"</", lt):
            match = _END_TAG.match(data, lt)
            if match is None:
                return None
            depth = len(self._open)
            if not depth:
                raise ValueError("an end tag without its start tag")
            name, start = self._open.pop()
            if depth <= self._max_depth:
                self.spans.append(Span(depth, name, start, match.end()))
            return match.end()
        match = _START_TAG.match(data, lt)
        if match is None:
            return None
        name = match.group(1).decode("utf-8", "replace")
        if match.group(2).rstrip().endswith(b"/"):  # an empty-element tag
            depth = len(self._open) + 1
            if depth <= self._max_depth:
                self.spans.append(Span(depth, name, lt, match.end()))
        else:
            self._open.append((name, lt))
        return match.end()


def parse_xml_chunks(chunks: Iterable[bytes], *, max_bytes: int, max_depth: int = MAX_DEPTH,
                     code: str = "client.invalid_soap", what: str = "XML",
                     prune: str | None = None) -> etree._Element:
    """:func:`parse_xml` for a document given piece by piece, never held whole: the same
    refusals, made as the pieces pass (:class:`XmlFeed`, which says what ``prune`` keeps)."""
    feed = XmlFeed(max_bytes=max_bytes, max_depth=max_depth, code=code, what=what,
                   prune=prune)
    for chunk in chunks:
        feed.feed(chunk)
    return feed.close()


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
