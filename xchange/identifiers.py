"""X-Road identifiers as frozen, validated value objects.

Implements the identifier model of the X-Road Message Protocol v4.0 (Annex A, ``XRoadIdentifier``
with ``objectType`` MEMBER, SUBSYSTEM, SERVICE, SERVER, GLOBALGROUP) and the REST forms of the
X-Road Message Protocol for REST 1.0 (section 4.1, 4.2 and 4.8):

* REST form: ``INSTANCE/CLASS/CODE[/SUBSYSTEM]`` with each part percent-encoded (UTF-8);
  a forbidden character is refused even when encoded (``%2F`` is still ``/``);
* XML form: the ``id:`` elements with the ``id:objectType`` attribute.

Every part must be non-empty, at most 255 characters, printable and free of the characters
X-Road forbids in identifiers (``:``, ``;``, ``%``, ``/``, ``\\`` and control characters are refused
when decoded; REST 4.8 recommends only ``A-Z a-z 0-9 ' ( ) + , - . = ?`` and ``_``).

This module does not look anything up: whether a member exists is global configuration's
business.  Parsing raises :class:`~xchange.errors.BadRequestError` (with a
``client.invalid_*`` code) on bad input.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import ClassVar, Self, cast
from urllib.parse import quote, unquote

from lxml import etree

from xchange.errors import BadRequestError

__all__ = [
    "NS_ID",
    "NS_XROAD",
    "ClientId",
    "GlobalGroupId",
    "ObjectType",
    "SecurityServerId",
    "ServiceId",
    "check_part",
]

NS_XROAD = "http://x-road.eu/xsd/xroad.xsd"
NS_ID = "http://x-road.eu/xsd/identifiers"

MAX_PART_LENGTH = 255
_FORBIDDEN = frozenset(":;%/\\")


class ObjectType(enum.Enum):
    MEMBER = "MEMBER"
    SUBSYSTEM = "SUBSYSTEM"
    SERVICE = "SERVICE"
    SERVER = "SERVER"
    GLOBALGROUP = "GLOBALGROUP"


def check_part(value: str, what: str, code: str = "client.bad_request") -> str:
    """Validate one identifier part; return it unchanged or raise BadRequestError."""
    if not isinstance(value, str) or not value:
        raise BadRequestError(f"{what} must not be empty", code=code)
    if len(value) > MAX_PART_LENGTH:
        raise BadRequestError(f"{what} is longer than {MAX_PART_LENGTH} characters", code=code)
    bad = _forbidden_char(value)
    if bad is not None:
        raise BadRequestError(f"{what} contains a forbidden character {bad!r}", code=code)
    return value


@functools.lru_cache(maxsize=4096)
def _forbidden_char(value: str) -> str | None:
    """The first character an identifier part must not contain, if any.  Remembered: every
    message names the same few parts, and the check is a loop in Python."""
    for ch in value:
        if ch in _FORBIDDEN or not ch.isprintable() or ch.isspace():
            return ch
    return None


def _split_rest(text: str, counts: tuple[int, ...], what: str, code: str) -> list[str]:
    if not isinstance(text, str) or not text:
        raise BadRequestError(f"{what} is empty", code=code)
    # Only HTTP optional whitespace: str.strip() would also drop control characters.
    raw = text.strip(" \t").split("/")
    if len(raw) not in counts:
        wanted = " or ".join(str(c) for c in counts)
        raise BadRequestError(
            f"{what} {text!r} must have {wanted} parts separated by '/'", code=code
        )
    try:
        return [unquote(p, errors="strict") for p in raw]
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"{what} {text!r} is not valid UTF-8", code=code) from exc


@functools.lru_cache(maxsize=4096)
def _enc(part: str) -> str:
    return quote(part, safe="'()+,-.=?_!*~@$&")


# -- XML helpers: the only XML this module builds is the identifier element itself. ---------


def _xml_part(parent: etree._Element, name: str, value: str) -> None:
    child = etree.SubElement(parent, f"{{{NS_ID}}}{name}")
    child.text = value


def _xml_get(elem: etree._Element, name: str, *, required: bool = True) -> str | None:
    found = elem.find(f"{{{NS_ID}}}{name}")
    if found is None or found.text is None:
        if required:
            raise BadRequestError(f"identifier element lacks <id:{name}>")
        return None
    return found.text.strip()


def _xml_type(elem: etree._Element) -> str:
    value = elem.get(f"{{{NS_ID}}}objectType")
    if value is None:
        raise BadRequestError("identifier element lacks id:objectType")
    return value


@dataclass(frozen=True, slots=True, order=True)
class ClientId:
    """A member (``subsystem is None``) or one of its subsystems."""

    instance: str
    member_class: str
    member_code: str
    subsystem: str | None = None

    _CODE: ClassVar[str] = "client.invalid_client_identifier"

    def __post_init__(self) -> None:
        check_part(self.instance, "instance", self._CODE)
        check_part(self.member_class, "member class", self._CODE)
        check_part(self.member_code, "member code", self._CODE)
        if self.subsystem is not None:
            check_part(self.subsystem, "subsystem code", self._CODE)

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse the REST form ``INSTANCE/CLASS/CODE[/SUBSYSTEM]``."""
        if type(text) is str and cls is ClientId:
            return cast(Self, _parse_client(text))
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> Self:
        return cls(*_split_rest(text, (3, 4), "client identifier", cls._CODE))

    @property
    def object_type(self) -> ObjectType:
        return ObjectType.MEMBER if self.subsystem is None else ObjectType.SUBSYSTEM

    @property
    def member(self) -> ClientId:
        """The member this client belongs to (itself when it is a member)."""
        if self.subsystem is None:
            return self
        return _member_of(self)

    def subsystem_of(self, code: str) -> ClientId:
        return ClientId(self.instance, self.member_class, self.member_code, code)

    @property
    def parts(self) -> tuple[str, ...]:
        base = (self.instance, self.member_class, self.member_code)
        return base if self.subsystem is None else (*base, self.subsystem)

    def __str__(self) -> str:
        return _client_text(self)

    def to_xml(self, tag: str) -> etree._Element:
        """Build ``<tag id:objectType="MEMBER|SUBSYSTEM">`` with the id: parts (PR-MESS A)."""
        elem = etree.Element(tag, nsmap={"id": NS_ID})
        elem.set(f"{{{NS_ID}}}objectType", self.object_type.value)
        _xml_part(elem, "xRoadInstance", self.instance)
        _xml_part(elem, "memberClass", self.member_class)
        _xml_part(elem, "memberCode", self.member_code)
        if self.subsystem is not None:
            _xml_part(elem, "subsystemCode", self.subsystem)
        return elem

    @classmethod
    def from_xml(cls, elem: etree._Element) -> Self:
        kind = _xml_type(elem)
        if kind not in ("MEMBER", "SUBSYSTEM"):
            raise BadRequestError(f"client identifier has objectType {kind!r}", code=cls._CODE)
        sub = _xml_get(elem, "subsystemCode", required=kind == "SUBSYSTEM")
        if kind == "MEMBER" and sub is not None:
            raise BadRequestError("MEMBER identifier has a subsystemCode", code=cls._CODE)
        return cls(
            _xml_get(elem, "xRoadInstance") or "",
            _xml_get(elem, "memberClass") or "",
            _xml_get(elem, "memberCode") or "",
            sub,
        )


@dataclass(frozen=True, slots=True, order=True)
class ServiceId:
    """A service offered by a member or subsystem, optionally versioned."""

    provider: ClientId
    code: str
    version: str | None = None

    _CODE: ClassVar[str] = "client.invalid_service_identifier"

    def __post_init__(self) -> None:
        check_part(self.code, "service code", self._CODE)
        if self.version is not None:
            check_part(self.version, "service version", self._CODE)

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse ``INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE`` (REST form, subsystem required).

        A version is not part of the REST form; REST services are unversioned.
        """
        if type(text) is str and cls is ServiceId:
            return cast(Self, _parse_service(text))
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> Self:
        parts = _split_rest(text, (5,), "service identifier", cls._CODE)
        try:
            provider = ClientId(*parts[:4])
        except BadRequestError as exc:
            raise BadRequestError(exc.message, code=cls._CODE) from exc
        return cls(provider, parts[4])

    @property
    def unversioned(self) -> ServiceId:
        """The same service without a version; access rights ignore versions as X-Road does."""
        return ServiceId(self.provider, self.code) if self.version is not None else self

    def __str__(self) -> str:
        return _service_text(self)

    def to_xml(self, tag: str) -> etree._Element:
        elem = etree.Element(tag, nsmap={"id": NS_ID})
        elem.set(f"{{{NS_ID}}}objectType", ObjectType.SERVICE.value)
        p = self.provider
        _xml_part(elem, "xRoadInstance", p.instance)
        _xml_part(elem, "memberClass", p.member_class)
        _xml_part(elem, "memberCode", p.member_code)
        if p.subsystem is not None:
            _xml_part(elem, "subsystemCode", p.subsystem)
        _xml_part(elem, "serviceCode", self.code)
        if self.version is not None:
            _xml_part(elem, "serviceVersion", self.version)
        return elem

    @classmethod
    def from_xml(cls, elem: etree._Element) -> Self:
        if _xml_type(elem) != "SERVICE":
            raise BadRequestError("service identifier must have objectType SERVICE",
                                  code=cls._CODE)
        try:
            provider = ClientId(
                _xml_get(elem, "xRoadInstance") or "",
                _xml_get(elem, "memberClass") or "",
                _xml_get(elem, "memberCode") or "",
                _xml_get(elem, "subsystemCode", required=False),
            )
        except BadRequestError as exc:
            raise BadRequestError(exc.message, code=cls._CODE) from exc
        return cls(
            provider,
            _xml_get(elem, "serviceCode") or "",
            _xml_get(elem, "serviceVersion", required=False),
        )


@dataclass(frozen=True, slots=True, order=True)
class SecurityServerId:
    """A security server: its owner member and its server code."""

    owner: ClientId
    server_code: str

    def __post_init__(self) -> None:
        if self.owner.subsystem is not None:
            raise BadRequestError("a security server is owned by a member, not a subsystem")
        check_part(self.server_code, "server code")

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse ``INSTANCE/CLASS/CODE/SERVERCODE`` (the ``X-Road-Security-Server`` form)."""
        parts = _split_rest(text, (4,), "security server identifier", "client.bad_request")
        return cls(ClientId(*parts[:3]), parts[3])

    def __str__(self) -> str:
        return f"{self.owner}/{_enc(self.server_code)}"

    def to_xml(self, tag: str) -> etree._Element:
        elem = etree.Element(tag, nsmap={"id": NS_ID})
        elem.set(f"{{{NS_ID}}}objectType", ObjectType.SERVER.value)
        _xml_part(elem, "xRoadInstance", self.owner.instance)
        _xml_part(elem, "memberClass", self.owner.member_class)
        _xml_part(elem, "memberCode", self.owner.member_code)
        _xml_part(elem, "serverCode", self.server_code)
        return elem

    @classmethod
    def from_xml(cls, elem: etree._Element) -> Self:
        if _xml_type(elem) != "SERVER":
            raise BadRequestError("security server identifier must have objectType SERVER")
        owner = ClientId(
            _xml_get(elem, "xRoadInstance") or "",
            _xml_get(elem, "memberClass") or "",
            _xml_get(elem, "memberCode") or "",
        )
        return cls(owner, _xml_get(elem, "serverCode") or "")


@dataclass(frozen=True, slots=True, order=True)
class GlobalGroupId:
    """A global group of an instance, defined in the registry."""

    instance: str
    group_code: str

    def __post_init__(self) -> None:
        check_part(self.instance, "instance")
        check_part(self.group_code, "global group code")

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse ``INSTANCE/GROUPCODE``."""
        parts = _split_rest(text, (2,), "global group identifier", "client.bad_request")
        return cls(*parts)

    def __str__(self) -> str:
        return f"{_enc(self.instance)}/{_enc(self.group_code)}"

    def to_xml(self, tag: str) -> etree._Element:
        elem = etree.Element(tag, nsmap={"id": NS_ID})
        elem.set(f"{{{NS_ID}}}objectType", ObjectType.GLOBALGROUP.value)
        _xml_part(elem, "xRoadInstance", self.instance)
        _xml_part(elem, "groupCode", self.group_code)
        return elem

    @classmethod
    def from_xml(cls, elem: etree._Element) -> Self:
        if _xml_type(elem) != "GLOBALGROUP":
            raise BadRequestError("global group identifier must have objectType GLOBALGROUP")
        return cls(_xml_get(elem, "xRoadInstance") or "", _xml_get(elem, "groupCode") or "")


# -- the REST forms of the identifiers every message names, parsed and printed once ----------
# Identifiers are immutable values, so a parse or a text is as good remembered as redone;
# failures are not remembered (lru_cache does not keep exceptions).


@functools.lru_cache(maxsize=4096)
def _parse_client(text: str) -> ClientId:
    return ClientId._parse(text)


@functools.lru_cache(maxsize=4096)
def _member_of(client: ClientId) -> ClientId:
    # Asked for every message checked (is it signed by the client's member?).
    return ClientId(client.instance, client.member_class, client.member_code)


@functools.lru_cache(maxsize=4096)
def _client_text(client: ClientId) -> str:
    return "/".join(_enc(p) for p in client.parts)


@functools.lru_cache(maxsize=4096)
def _parse_service(text: str) -> ServiceId:
    return ServiceId._parse(text)


@functools.lru_cache(maxsize=4096)
def _service_text(service: ServiceId) -> str:
    return f"{service.provider}/{_enc(service.code)}"
