"""Tests of the identifier value objects: REST and XML forms, and hostile input."""

from __future__ import annotations

from typing import Any

import pytest
from lxml import etree

from xchange.errors import BadRequestError
from xchange.identifiers import (
    NS_ID,
    ClientId,
    GlobalGroupId,
    ObjectType,
    SecurityServerId,
    ServiceId,
    check_part,
)

CLIENT_CODE = "client.invalid_client_identifier"
SERVICE_CODE = "client.invalid_service_identifier"

_SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


def _reparse(elem: etree._Element) -> etree._Element:
    """Serialise and parse again, so the XML round trip goes through real bytes."""
    return etree.fromstring(etree.tostring(elem), _SAFE_PARSER)


def _id_elem(object_type: str | None, **parts: str) -> etree._Element:
    elem = etree.Element("client", nsmap={"id": NS_ID})
    if object_type is not None:
        elem.set(f"{{{NS_ID}}}objectType", object_type)
    for name, value in parts.items():
        etree.SubElement(elem, f"{{{NS_ID}}}{name}").text = value
    return elem


# -- REST form ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts", "canonical"),
    [
        ("EE/GOV/1234", ("EE", "GOV", "1234"), "EE/GOV/1234"),
        ("EE/GOV/1234/sub", ("EE", "GOV", "1234", "sub"), "EE/GOV/1234/sub"),
        ("INSTANCE/CLASS/MEMBER/SUBSYSTEM", ("INSTANCE", "CLASS", "MEMBER", "SUBSYSTEM"),
         "INSTANCE/CLASS/MEMBER/SUBSYSTEM"),
        # REST 4.8's recommended symbols travel unencoded
        ("EE/GOV/a'()+,-.=?_b", ("EE", "GOV", "a'()+,-.=?_b"), "EE/GOV/a'()+,-.=?_b"),
        # non-ASCII parts are UTF-8 percent-encoded
        ("EE/GOV/%C3%A4ri", ("EE", "GOV", "äri"), "EE/GOV/%C3%A4ri"),
        ("EE/GOV/%E6%9D%B1", ("EE", "GOV", "東"), "EE/GOV/%E6%9D%B1"),
        # needless encoding is accepted; the canonical form drops it
        ("%45E/GOV/1234", ("EE", "GOV", "1234"), "EE/GOV/1234"),
        ("EE/GOV/a%23b", ("EE", "GOV", "a#b"), "EE/GOV/a%23b"),
        # HTTP optional whitespace around a header value
        (" EE/GOV/1234\t", ("EE", "GOV", "1234"), "EE/GOV/1234"),
    ],
)
def test_client_id_rest_form(text: str, parts: tuple[str, ...], canonical: str) -> None:
    client = ClientId.parse(text)
    assert client.parts == parts
    assert str(client) == canonical
    assert ClientId.parse(str(client)) == client


@pytest.mark.parametrize(
    "code", ["a#b", "äri", "a&b@c~d$e!f*g", "a?b=c", "x" * 255, "ä" * 255, "<tag>", 'q"uote']
)
def test_client_id_round_trips_any_allowed_part(code: str) -> None:
    client = ClientId("EE", "GOV", code, code)
    text = str(client)
    assert text.count("/") == 3  # no part leaks a separator
    assert ClientId.parse(text) == client


def test_client_id_properties() -> None:
    member = ClientId.parse("EE/GOV/1234")
    sub = ClientId.parse("EE/GOV/1234/sub")
    assert member.object_type is ObjectType.MEMBER
    assert sub.object_type is ObjectType.SUBSYSTEM
    assert sub.member == member
    assert member.member is member
    assert member.subsystem_of("sub") == sub
    assert sub != member


@pytest.mark.parametrize(
    ("cls", "text", "code"),
    [
        (ClientId, "EE/GOV", CLIENT_CODE),
        (ClientId, "EE", CLIENT_CODE),
        (ClientId, "EE/GOV/1/sub/extra", CLIENT_CODE),
        (ServiceId, "EE/GOV/1/sub", SERVICE_CODE),
        (ServiceId, "EE/GOV/1/sub/svc/v1", SERVICE_CODE),
        (SecurityServerId, "EE/GOV/1", "client.bad_request"),
        (SecurityServerId, "EE/GOV/1/ss1/x", "client.bad_request"),
        (GlobalGroupId, "EE", "client.bad_request"),
        (GlobalGroupId, "EE/grp/x", "client.bad_request"),
    ],
)
def test_wrong_part_count_refused(cls: Any, text: str, code: str) -> None:
    with pytest.raises(BadRequestError) as info:
        cls.parse(text)
    assert info.value.code == code


@pytest.mark.parametrize(
    "text",
    ["", "   ", "EE//1234", "/GOV/1234", "EE/GOV/", "EE/GOV/1234/", "//", "EE/GOV/1234/ "],
)
def test_empty_parts_refused(text: str) -> None:
    with pytest.raises(BadRequestError) as info:
        ClientId.parse(text)
    assert info.value.code == CLIENT_CODE


_FORBIDDEN_RAW = [
    ":", ";", "\\", "%", "%zz", "a%", " ", "\t", "\n", "\r", "\x00", "\x1b", "\x7f",
    "\x85", "\xa0", "\u2028", "\u200b", "\x1c",
]
_FORBIDDEN_ENCODED = [
    "%2F", "%2f", "%3A", "%3a", "%3B", "%25", "%5C", "%20", "%09", "%0A", "%0D", "%00",
    "%7F", "%C2%85", "%C2%A0", "%E2%80%A8", "%E2%80%8B",
]


@pytest.mark.parametrize("bad", _FORBIDDEN_RAW + _FORBIDDEN_ENCODED)
@pytest.mark.parametrize("where", ["prefix", "middle", "suffix", "alone"])
def test_forbidden_characters_refused(bad: str, where: str) -> None:
    part = {"prefix": bad + "abc", "middle": "ab" + bad + "c", "suffix": "abc" + bad,
            "alone": bad}[where]
    for text in (f"EE/GOV/{part}/sub", f"EE/{part}/1234/sub"):
        with pytest.raises(BadRequestError) as info:
            ClientId.parse(text)
        assert info.value.code == CLIENT_CODE


@pytest.mark.parametrize("bad", ["\x1c", "\x1f", "\x85", "\n", "\r", "\x0b", "\x00", "\u2028"])
def test_control_characters_at_the_edges_refused(bad: str) -> None:
    # str.strip() would drop these silently; only HTTP optional whitespace is trimmed
    for text in (f"EE/GOV/1234{bad}", f"{bad}EE/GOV/1234"):
        with pytest.raises(BadRequestError) as info:
            ClientId.parse(text)
        assert info.value.code == CLIENT_CODE


@pytest.mark.parametrize(
    "bad", [":", ";", "%", "/", "\\", " ", "\x00", "\n", "\x7f", "\xa0", "", "x" * 256]
)
def test_constructor_validates_every_part(bad: str) -> None:
    for args in [(bad, "GOV", "1"), ("EE", bad, "1"), ("EE", "GOV", bad), ("EE", "GOV", "1", bad)]:
        with pytest.raises(BadRequestError) as info:
            ClientId(*args)
        assert info.value.code == CLIENT_CODE
    with pytest.raises(BadRequestError):
        ServiceId(ClientId("EE", "GOV", "1", "sub"), bad)
    with pytest.raises(BadRequestError):
        ServiceId(ClientId("EE", "GOV", "1", "sub"), "svc", bad)
    with pytest.raises(BadRequestError):
        SecurityServerId(ClientId("EE", "GOV", "1"), bad)
    with pytest.raises(BadRequestError):
        GlobalGroupId("EE", bad)


@pytest.mark.parametrize(
    ("part", "ok"),
    [
        ("x" * 255, True),
        ("x" * 256, False),
        ("%C3%A4" * 255, True),  # 255 characters once decoded, 1530 encoded
        ("%C3%A4" * 256, False),
    ],
)
def test_part_length_limit_is_on_decoded_characters(part: str, ok: bool) -> None:
    text = f"EE/GOV/{part}"
    if ok:
        assert len(ClientId.parse(text).member_code) == 255
    else:
        with pytest.raises(BadRequestError, match="longer than 255") as info:
            ClientId.parse(text)
        assert info.value.code == CLIENT_CODE


@pytest.mark.parametrize(
    "bad", ["%FF", "%C3", "%C3%28", "a%80b", "%ED%A0%80", "%F4%90%80%80", "%C0%AF"]
)
def test_invalid_utf8_percent_sequences_refused(bad: str) -> None:
    with pytest.raises(BadRequestError, match="UTF-8") as info:
        ClientId.parse(f"EE/GOV/{bad}")
    assert info.value.code == CLIENT_CODE
    with pytest.raises(BadRequestError, match="UTF-8") as info:
        ServiceId.parse(f"EE/GOV/1/sub/{bad}")
    assert info.value.code == SERVICE_CODE


def test_non_string_refused() -> None:
    not_text: Any = None
    with pytest.raises(BadRequestError):
        ClientId.parse(not_text)
    with pytest.raises(BadRequestError):
        check_part(not_text, "member code")


def test_check_part_returns_valid_value() -> None:
    assert check_part("ok-value", "x") == "ok-value"


# -- ServiceId, SecurityServerId, GlobalGroupId REST forms -----------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("EE/GOV/1234/sub/getPerson", "EE/GOV/1234/sub/getPerson"),
        ("EE/GOV/1234/sub/get%C3%A4", "EE/GOV/1234/sub/get%C3%A4"),
        ("INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE", "INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE"),
    ],
)
def test_service_id_rest_form(text: str, canonical: str) -> None:
    service = ServiceId.parse(text)
    assert service.provider == ClientId.parse(text.rsplit("/", 1)[0])
    assert service.version is None
    assert str(service) == canonical
    assert ServiceId.parse(str(service)) == service


@pytest.mark.parametrize(
    "text",
    ["EE/GOV//sub/svc", "EE/GOV/1/%2F/svc", "E:E/GOV/1/sub/svc", "EE/GOV/1/sub/%FF"],
)
def test_service_id_provider_errors_use_the_service_code(text: str) -> None:
    with pytest.raises(BadRequestError) as info:
        ServiceId.parse(text)
    assert info.value.code == SERVICE_CODE


@pytest.mark.parametrize("bad", ["get/Person", "get%2FPerson", "a:b", "", "x" * 256])
def test_service_code_refused(bad: str) -> None:
    with pytest.raises(BadRequestError) as info:
        ServiceId.parse(f"EE/GOV/1234/sub/{bad}")
    assert info.value.code == SERVICE_CODE


def test_service_version_is_not_in_rest_form_and_unversioned_drops_it() -> None:
    provider = ClientId("EE", "GOV", "1234", "sub")
    versioned = ServiceId(provider, "getPerson", "v1")
    plain = ServiceId(provider, "getPerson")
    assert str(versioned) == str(plain) == "EE/GOV/1234/sub/getPerson"
    assert versioned != plain
    assert versioned.unversioned == plain
    assert plain.unversioned is plain


@pytest.mark.parametrize(
    ("text", "owner", "code"),
    [
        ("EE/GOV/1234/ss1", ClientId("EE", "GOV", "1234"), "ss1"),
        ("EE/GOV/1234/ss%C3%A4", ClientId("EE", "GOV", "1234"), "ssä"),
    ],
)
def test_security_server_id_rest_form(text: str, owner: ClientId, code: str) -> None:
    server = SecurityServerId.parse(text)
    assert (server.owner, server.server_code) == (owner, code)
    assert str(server) == text
    assert SecurityServerId.parse(str(server)) == server


@pytest.mark.parametrize("text", ["EE/GOV/1234/ss/1", "EE/GOV/1234/s%2Fs", "EE/GOV/1234/"])
def test_security_server_id_refused(text: str) -> None:
    with pytest.raises(BadRequestError):
        SecurityServerId.parse(text)


def test_security_server_owner_must_be_a_member() -> None:
    with pytest.raises(BadRequestError, match="owned by a member"):
        SecurityServerId(ClientId("EE", "GOV", "1234", "sub"), "ss1")


@pytest.mark.parametrize("text", ["EE/admins", "EE/gr%C3%BCn"])
def test_global_group_id_rest_form(text: str) -> None:
    group = GlobalGroupId.parse(text)
    assert str(group) == text
    assert GlobalGroupId.parse(str(group)) == group


@pytest.mark.parametrize("text", ["EE/", "/admins", "EE/a%3Ab", "EE/a b"])
def test_global_group_id_refused(text: str) -> None:
    with pytest.raises(BadRequestError):
        GlobalGroupId.parse(text)


def test_identifiers_are_frozen_and_hashable() -> None:
    client = ClientId.parse("EE/GOV/1234/sub")
    with pytest.raises(AttributeError):
        client.member_code = "other"  # type: ignore[misc]
    assert {client, ClientId.parse("EE/GOV/1234/sub")} == {client}


# -- XML form -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ident",
    [
        ClientId("EE", "GOV", "1234"),
        ClientId("EE", "GOV", "1234", "sub"),
        ClientId("EE", "GOV", "äri", "a#b"),
        ServiceId(ClientId("EE", "GOV", "1234", "sub"), "getPerson"),
        ServiceId(ClientId("EE", "GOV", "1234", "sub"), "getPerson", "v1"),
        ServiceId(ClientId("EE", "GOV", "1234"), "getPerson", "v2"),
        SecurityServerId(ClientId("EE", "GOV", "1234"), "ss1"),
        GlobalGroupId("EE", "admins"),
    ],
)
def test_xml_round_trip(ident: ClientId | ServiceId | SecurityServerId | GlobalGroupId) -> None:
    elem = _reparse(ident.to_xml("{http://x-road.eu/xsd/xroad.xsd}client"))
    assert elem.tag == "{http://x-road.eu/xsd/xroad.xsd}client"
    assert type(ident).from_xml(elem) == ident


@pytest.mark.parametrize(
    ("ident", "object_type", "children"),
    [
        (ClientId("EE", "GOV", "1"), "MEMBER", ["xRoadInstance", "memberClass", "memberCode"]),
        (ClientId("EE", "GOV", "1", "s"), "SUBSYSTEM",
         ["xRoadInstance", "memberClass", "memberCode", "subsystemCode"]),
        (ServiceId(ClientId("EE", "GOV", "1", "s"), "svc", "v1"), "SERVICE",
         ["xRoadInstance", "memberClass", "memberCode", "subsystemCode", "serviceCode",
          "serviceVersion"]),
        (SecurityServerId(ClientId("EE", "GOV", "1"), "ss1"), "SERVER",
         ["xRoadInstance", "memberClass", "memberCode", "serverCode"]),
        (GlobalGroupId("EE", "g"), "GLOBALGROUP", ["xRoadInstance", "groupCode"]),
    ],
)
def test_xml_layout(
    ident: ClientId | ServiceId | SecurityServerId | GlobalGroupId,
    object_type: str,
    children: list[str],
) -> None:
    elem = ident.to_xml("service")
    assert elem.get(f"{{{NS_ID}}}objectType") == object_type
    assert [child.tag for child in elem] == [f"{{{NS_ID}}}{name}" for name in children]


_MEMBER = {"xRoadInstance": "EE", "memberClass": "GOV", "memberCode": "1"}


@pytest.mark.parametrize(
    ("cls", "elem", "code"),
    [
        (ClientId, _id_elem("SERVICE", **_MEMBER, serviceCode="svc"), CLIENT_CODE),
        (ClientId, _id_elem("SERVER", **_MEMBER, serverCode="ss"), CLIENT_CODE),
        (ClientId, _id_elem("member", **_MEMBER), CLIENT_CODE),
        (ServiceId, _id_elem("SUBSYSTEM", **_MEMBER, subsystemCode="s"), SERVICE_CODE),
        (ServiceId, _id_elem("MEMBER", **_MEMBER), SERVICE_CODE),
        (SecurityServerId, _id_elem("MEMBER", **_MEMBER), "client.bad_request"),
        (GlobalGroupId, _id_elem("SERVER", **_MEMBER, serverCode="ss"), "client.bad_request"),
    ],
)
def test_xml_wrong_object_type_refused(cls: Any, elem: etree._Element, code: str) -> None:
    with pytest.raises(BadRequestError, match="objectType") as info:
        cls.from_xml(elem)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("cls", "elem"),
    [
        (ClientId, _id_elem(None, **_MEMBER)),
        (ServiceId, _id_elem(None, **_MEMBER, serviceCode="svc")),
        (SecurityServerId, _id_elem(None, **_MEMBER, serverCode="ss")),
        (GlobalGroupId, _id_elem(None, xRoadInstance="EE", groupCode="g")),
        # a mandatory part missing, or present but empty
        (ClientId, _id_elem("MEMBER", xRoadInstance="EE", memberClass="GOV")),
        (ClientId, _id_elem("MEMBER", xRoadInstance="EE", memberClass="GOV", memberCode="")),
        (ClientId, _id_elem("MEMBER", xRoadInstance="EE", memberClass="GOV", memberCode="  ")),
        (ClientId, _id_elem("SUBSYSTEM", **_MEMBER)),
        (ServiceId, _id_elem("SERVICE", **_MEMBER)),
        (SecurityServerId, _id_elem("SERVER", **_MEMBER)),
        (GlobalGroupId, _id_elem("GLOBALGROUP", xRoadInstance="EE")),
        # a MEMBER naming a subsystem is not a member
        (ClientId, _id_elem("MEMBER", **_MEMBER, subsystemCode="s")),
        # forbidden characters inside the elements
        (ClientId, _id_elem("MEMBER", xRoadInstance="EE", memberClass="GOV", memberCode="a/b")),
        (ServiceId, _id_elem("SERVICE", **_MEMBER, serviceCode="a:b")),
        (ServiceId, _id_elem("SERVICE", **_MEMBER, serviceCode="svc", serviceVersion="v 1")),
    ],
)
def test_xml_malformed_refused(cls: Any, elem: etree._Element) -> None:
    with pytest.raises(BadRequestError):
        cls.from_xml(elem)


def test_xml_parts_are_trimmed_of_surrounding_whitespace() -> None:
    elem = _id_elem("MEMBER", xRoadInstance=" EE ", memberClass="\nGOV\n", memberCode="1")
    assert ClientId.from_xml(elem) == ClientId("EE", "GOV", "1")
