"""Tests of the REST message model: parsing IS requests, header parts and the request hash."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import uuid
from typing import Any

import pytest

from xchange.canonical import canonical_json
from xchange.errors import BadRequestError, InvalidSignatureError
from xchange.identifiers import ClientId, SecurityServerId, ServiceId
from xchange.rest import (
    FILTERED_HEADERS,
    MAX_TARGET_LENGTH,
    RestRequest,
    RestResponse,
    data_subjects_of,
    digest_payload,
    filter_headers,
    request_hash,
    request_hash_of,
)

SERVICE = "/r1/EE/GOV/5678/provider/getPerson"
CLIENT = "EE/GOV/1234/consumer"
PEER_BAD = "server.serverproxy.bad_request"


def from_is(
    target: str = SERVICE,
    headers: list[tuple[str, str]] | None = None,
    *,
    method: str = "GET",
    client: str | None = CLIENT,
    new_id: str | None = "generated-id",
) -> RestRequest:
    """Parse as the client proxy does: the header fields in order, as they arrived."""
    items = ([("X-Road-Client", client)] if client is not None else []) + (headers or [])
    return RestRequest.from_is(method, target, items, new_id=new_id)


def full_request() -> RestRequest:
    return from_is(
        SERVICE + "/persons/%C3%A4?id=1&x=%20",
        [
            ("X-Road-Id", "msg-1"),
            ("X-Road-UserId", "EE12345678901"),
            ("X-Road-Issue", "MT324223MSD"),
            ("X-Road-Security-Server", "EE/GOV/5678/ss1"),
            ("Accept", "application/json"),
            ("X-Custom", "värde"),
        ],
        method="POST",
    )


def make_response(request: RestRequest, **changes: Any) -> RestResponse:
    fields: dict[str, Any] = {
        "message_id": request.message_id,
        "client": request.client,
        "service": request.service,
        "request_hash": request_hash(request.header_part(), b"body"),
        "status": 200,
        "headers": (("content-type", "application/json"),),
    }
    fields.update(changes)
    return RestResponse(**fields)


# -- parsing the IS request -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "service", "path", "query"),
    [
        # PR-REST 4.1's example
        ("/r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE/v1/bar/zyggy?quu=1",
         "INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE", "/v1/bar/zyggy", "quu=1"),
        ("/r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/PETSTORE/pets/1",
         "INSTANCE/CLASS/MEMBER/SUBSYSTEM/PETSTORE", "/pets/1", ""),
        ("/r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE",
         "INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE", "", ""),
        ("/r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE/",
         "INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE", "/", ""),
        ("/r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE?a=1&b=2&a=3",
         "INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE", "", "a=1&b=2&a=3"),
        ("/r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE/a?",
         "INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE", "/a", ""),
        # the service-relative path and the query pass as sent, still encoded
        ("/r1/EE/GOV/1/sub/svc/pets/%2Fa%20b//c?q=%20&r=%3F",
         "EE/GOV/1/sub/svc", "/pets/%2Fa%20b//c", "q=%20&r=%3F"),
        ("/r1/EE/GOV/1/sub/svc/x?y?z", "EE/GOV/1/sub/svc", "/x", "y?z"),
        ("/r1/EE/GOV/1/sub/get%C3%A4/x", "EE/GOV/1/sub/get%C3%A4", "/x", ""),
    ],
)
def test_from_is_parses_the_target(target: str, service: str, path: str, query: str) -> None:
    req = from_is(target)
    assert req.service == ServiceId.parse(service)
    assert (req.path, req.query) == (path, query)
    assert req.target == path + (f"?{query}" if query else "")


@pytest.mark.parametrize(
    ("header", "client"),
    [
        ("EE/GOV/1234/consumer", ClientId("EE", "GOV", "1234", "consumer")),
        ("EE/GOV/1234", ClientId("EE", "GOV", "1234")),
        ("  EE/GOV/1234  ", ClientId("EE", "GOV", "1234")),
        ("EE/GOV/%C3%A4ri/sub", ClientId("EE", "GOV", "äri", "sub")),
    ],
)
def test_from_is_parses_the_client(header: str, client: ClientId) -> None:
    assert from_is(client=header).client == client


def test_header_names_are_case_insensitive() -> None:
    items = [("x-road-client", CLIENT), ("X-ROAD-ID", "abc"), ("x-road-userid", "EE1")]
    req = RestRequest.from_is("GET", SERVICE, items)
    assert (req.client, req.message_id, req.user_id) == (ClientId.parse(CLIENT), "abc", "EE1")


@pytest.mark.parametrize("client", [None, "", "   "])
def test_missing_client_header(client: str | None) -> None:
    with pytest.raises(BadRequestError) as info:
        from_is(client=client)
    assert info.value.code == "client.missing_header"
    assert info.value.status == 400


@pytest.mark.parametrize(
    "client",
    ["EE/GOV", "EE", "EE/GOV/1/sub/x", "EE//1", "EE/GOV/a%2Fb", "EE/GOV/%FF", "EE/GOV/a b",
     "EE/G:OV/1", "EE/GOV/" + "x" * 256],
)
def test_malformed_client_identifier(client: str) -> None:
    with pytest.raises(BadRequestError) as info:
        from_is(client=client)
    assert info.value.code == "client.invalid_client_identifier"


@pytest.mark.parametrize(
    "target",
    [
        "/r1/",
        "/r1/EE",
        "/r1/EE/GOV/1",
        "/r1/EE/GOV/1/sub",
        "/r1/EE/GOV/1/sub?svc=x",
        "/r1/EE/GOV/1/sub/",
        "/r1/EE/GOV//sub/svc",
        "/r1//GOV/1/sub/svc",
        "/r1/EE/GOV/1/sub//rest",
        "/r1/EE/GOV/1/sub/a%3Ab",
        "/r1/EE/GOV/1/sub/a%2Fb/rest",
        "/r1/EE/GOV/1/sub/%FF",
        "/r1/EE/GOV/1/s%20b/svc",
    ],
)
def test_malformed_service_identifier(target: str) -> None:
    with pytest.raises(BadRequestError) as info:
        from_is(target)
    assert info.value.code == "client.invalid_service_identifier"


@pytest.mark.parametrize(
    "target", ["", "/", "/r1", "/r2/EE/GOV/1/sub/svc", "/R1/EE/GOV/1/sub/svc",
               "r1/EE/GOV/1/sub/svc", "/x?/r1/EE/GOV/1/sub/svc", "//r1/EE/GOV/1/sub/svc"],
)
def test_not_the_r1_protocol(target: str) -> None:
    with pytest.raises(BadRequestError) as info:
        from_is(target)
    assert info.value.code == "client.bad_request"


def test_target_length_limit() -> None:
    base = SERVICE + "/"
    ok = base + "a" * (MAX_TARGET_LENGTH - len(base))
    assert len(from_is(ok).target) == MAX_TARGET_LENGTH - len(SERVICE)
    with pytest.raises(BadRequestError, match="longer than") as info:
        from_is(ok + "a")
    assert info.value.code == "client.bad_request"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
def test_methods_accepted(method: str) -> None:
    assert from_is(method=method).method == method


@pytest.mark.parametrize("method", ["", "get", "Get", "G3T", "GE T", "GET\r\n", "X" * 17])
def test_bad_methods_refused(method: str) -> None:
    with pytest.raises(BadRequestError) as info:
        from_is(method=method)
    assert info.value.code == "client.unsupported_method"


def test_message_id_generated_when_missing() -> None:
    req = RestRequest.from_is("GET", SERVICE, [("X-Road-Client", CLIENT)])
    assert uuid.UUID(req.message_id).version == 4
    other = RestRequest.from_is("GET", SERVICE, [("X-Road-Client", CLIENT)])
    assert other.message_id != req.message_id
    assert from_is(new_id="given-by-caller").message_id == "given-by-caller"
    assert from_is(headers=[("X-Road-Id", "   ")], new_id="fresh").message_id == "fresh"


def test_message_id_kept_when_given() -> None:
    req = from_is(headers=[("X-Road-Id", "fa2e18a5-c2cb-4d09-b994-f57727f7c3fb")], new_id="unused")
    assert req.message_id == "fa2e18a5-c2cb-4d09-b994-f57727f7c3fb"


def test_optional_x_road_headers() -> None:
    req = full_request()
    assert (req.message_id, req.user_id, req.issue) == ("msg-1", "EE12345678901", "MT324223MSD")
    assert req.security_server == SecurityServerId.parse("EE/GOV/5678/ss1")
    bare = from_is()
    assert (bare.user_id, bare.issue, bare.security_server) == (None, None, None)


@pytest.mark.parametrize("header", ["X-Road-Id", "X-Road-UserId", "X-Road-Issue"])
@pytest.mark.parametrize("value", ["a\x00b", "a\x7fb", "x" * 1025])
def test_optional_header_values_checked(header: str, value: str) -> None:
    with pytest.raises(BadRequestError) as info:
        from_is(headers=[(header, value)])
    assert info.value.code == "client.bad_request"


@pytest.mark.parametrize("value", ["EE/GOV/5678", "EE/GOV/5678/sub/ss1", "EE/GOV/5678/s%2Fs"])
def test_bad_security_server_header(value: str) -> None:
    with pytest.raises(BadRequestError):
        from_is(headers=[("X-Road-Security-Server", value)])


# -- filtered headers -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FILTERED_HEADERS))
def test_each_filtered_header_is_dropped(name: str) -> None:
    for spelling in (name, name.upper(), name.title()):
        assert filter_headers([(spelling, "v"), ("Accept", "a")]) == (("accept", "a"),)


@pytest.mark.parametrize(
    "name",
    ["Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
     "Transfer-Encoding", "Upgrade", "Host", "User-Agent", "Server", "X-Road-Client",
     "X-Road-Service", "X-Road-Id", "X-Road-UserId", "X-Road-Issue", "X-Road-Request-Hash",
     "X-Road-Request-Id", "X-Road-Error", "X-Road-Security-Server", "X-Road-Represented-Party"],
)
def test_pr_rest_filtered_and_x_road_headers_are_in_the_set(name: str) -> None:
    assert name.lower() in FILTERED_HEADERS


def test_user_headers_kept_in_order_and_filtered_dropped() -> None:
    req = from_is(
        headers=[
            ("Host", "consumer.example"),
            ("Accept", "application/xml"),
            ("User-Agent", "curl/8"),
            ("X-Road-Id", "m1"),
            ("Cache-Control", "no-cache"),
            ("Connection", "keep-alive"),
            ("X-Powered-By", "PHP/5.2.17"),
            ("Accept", "text/plain"),
            # PR-REST 4.3: other X-Road extension headers are handled like user headers
            ("X-Road-Custom-Extension", "kept"),
            ("Content-Type", "application/json; charset=utf-8"),
            ("Transfer-Encoding", "chunked"),
        ]
    )
    assert req.headers == (
        ("accept", "application/xml"),
        ("cache-control", "no-cache"),
        ("x-powered-by", "PHP/5.2.17"),
        ("accept", "text/plain"),
        ("x-road-custom-extension", "kept"),
        ("content-type", "application/json; charset=utf-8"),
    )


# -- header parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        full_request(),
        from_is(),
        from_is(SERVICE + "/", [("X-Road-UserId", "EE1")], method="DELETE"),
        from_is("/r1/EE/GOV/%C3%A4/sub/svc%C3%A4?q=%E6%9D%B1", [("X-Note", "東京 \"q\"")]),
    ],
)
def test_request_header_part_is_canonical_and_round_trips(request_: RestRequest) -> None:
    part = request_.header_part()
    doc = json.loads(part)
    assert canonical_json(doc) == part
    assert doc["type"] == "xchange-rest-request"
    assert doc["v"] == 1
    assert doc["client"] == str(request_.client)
    assert doc["headers"] == [list(h) for h in request_.headers]
    assert RestRequest.from_header_part(part) == request_


def test_response_header_part_is_canonical_and_round_trips() -> None:
    response = make_response(full_request())
    part = response.header_part()
    assert canonical_json(json.loads(part)) == part
    assert json.loads(part)["type"] == "xchange-rest-response"
    assert RestResponse.from_header_part(part) == response


def _mutated(part: bytes, **changes: Any) -> bytes:
    doc = json.loads(part)
    for key, value in changes.items():
        if value is _DELETE:
            del doc[key]
        else:
            doc[key] = value
    return canonical_json(doc)


_DELETE = object()
_REQ_PART = full_request().header_part()
_RESP_PART = make_response(full_request()).header_part()


@pytest.mark.parametrize(
    "data",
    [
        # not canonical
        json.dumps(json.loads(_REQ_PART)).encode(),
        json.dumps(json.loads(_REQ_PART), sort_keys=True).encode(),
        json.dumps(json.loads(_REQ_PART), separators=(",", ":")).encode(),  # unsorted keys
        json.dumps(json.loads(_REQ_PART), sort_keys=True, separators=(",", ":")).encode(),
        _REQ_PART + b"\n",
        b" " + _REQ_PART,
        _REQ_PART[:-1] + b',"id":"other"}',  # duplicate key
        # not a v1 request document
        _RESP_PART,
        _mutated(_REQ_PART, type="xchange-rest-requesT"),
        _mutated(_REQ_PART, type=_DELETE),
        _mutated(_REQ_PART, v=2),
        _mutated(_REQ_PART, v="1"),
        _mutated(_REQ_PART, v=_DELETE),
        _REQ_PART.replace(b'"v":1', b'"v":1.0'),
        _REQ_PART.replace(b'"v":1', b'"v":NaN'),
        _REQ_PART.replace(b'"v":1', b'"v":1e0'),
        # not JSON, not UTF-8, not an object, hostile
        b"",
        b"not json",
        b"\xff\xfe",
        _REQ_PART.replace(b"MT324223MSD", b"MT\xff"),
        b'["xchange-rest-request",1]',
        b"null",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        # incomplete or wrongly typed fields
        _mutated(_REQ_PART, id=_DELETE),
        _mutated(_REQ_PART, security_server=_DELETE),
        _mutated(_REQ_PART, headers=_DELETE),
        _mutated(_REQ_PART, id=1),
        _mutated(_REQ_PART, method=None),
        _mutated(_REQ_PART, path=["/x"]),
        _mutated(_REQ_PART, query=True),
        _mutated(_REQ_PART, user_id=5),
        _mutated(_REQ_PART, issue={"a": "b"}),
        _mutated(_REQ_PART, headers={"accept": "x"}),
        _mutated(_REQ_PART, headers=[["accept"]]),
        _mutated(_REQ_PART, headers=[["accept", "x", "y"]]),
        _mutated(_REQ_PART, headers=[["accept", 1]]),
        _mutated(_REQ_PART, headers=["accept: x"]),
        # missing or unknown fields
        _mutated(_REQ_PART, user_id=_DELETE),
        _mutated(_REQ_PART, extra="x"),
        _REQ_PART.replace(b'"v":1', b'"v":true'),
        # what the client proxy refuses from an IS, a peer may not slip in either
        _mutated(_REQ_PART, path="/../admin"),
        _mutated(_REQ_PART, path="/a/%2E%2e/b"),
        _mutated(_REQ_PART, path="relative"),
        _mutated(_REQ_PART, path="/a?b=1"),
        _mutated(_REQ_PART, path="/a b"),
        _mutated(_REQ_PART, method="get me"),
        _mutated(_REQ_PART, method=""),
        _mutated(_REQ_PART, query="a b"),
        _mutated(_REQ_PART, id=""),
        _mutated(_REQ_PART, user_id="a\x00"),
    ],
)
def test_bad_request_header_part_refused(data: bytes) -> None:
    with pytest.raises(BadRequestError) as info:
        RestRequest.from_header_part(data)
    assert info.value.code == PEER_BAD


@pytest.mark.parametrize(
    "changes",
    [
        {"client": "EE/GOV"},
        {"client": "EE/GOV/a%2Fb"},
        {"service": "EE/GOV/1/sub"},
        {"service": "EE/GOV/1/sub/a:b"},
        {"security_server": "EE/GOV/1"},
        {"security_server": 7},
    ],
)
def test_bad_identifiers_in_request_header_part_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(BadRequestError) as info:
        RestRequest.from_header_part(_mutated(_REQ_PART, **changes))
    assert info.value.code == PEER_BAD


@pytest.mark.parametrize(
    "data",
    [
        _REQ_PART,
        _mutated(_RESP_PART, status=99),
        _mutated(_RESP_PART, status=600),
        _mutated(_RESP_PART, status=True),
        _mutated(_RESP_PART, status="200"),
        _mutated(_RESP_PART, status=None),
        _mutated(_RESP_PART, status=_DELETE),
        _mutated(_RESP_PART, request_hash=_DELETE),
        _mutated(_RESP_PART, request_hash=None),
        _mutated(_RESP_PART, headers=[[1, 2]]),
        _RESP_PART.replace(b'"status":200', b'"status":200.0'),
        json.dumps(json.loads(_RESP_PART)).encode(),
    ],
)
def test_bad_response_header_part_refused(data: bytes) -> None:
    with pytest.raises(BadRequestError) as info:
        RestResponse.from_header_part(data)
    assert info.value.code == PEER_BAD


# -- request hash and binding ---------------------------------------------------------------


# FIPS 180-2 test vector: SHA-512("abc")
_SHA512_ABC = (
    "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
    "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
)


def test_request_hash_without_body_is_sha512_of_the_header_part() -> None:
    assert request_hash(b"abc", b"") == base64.b64encode(bytes.fromhex(_SHA512_ABC)).decode()


@pytest.mark.parametrize("body", [b"", b"x", b'{"id": 1}', bytes(range(256)) * 100])
def test_request_hash_matches_pr_rest(body: bytes) -> None:
    head = full_request().header_part()
    h = hashlib.sha512(head).digest()
    # PR-REST 4.3: SHA512(SHA512(headers) + SHA512(body)), or SHA512(headers) with no body
    expected = hashlib.sha512(h + hashlib.sha512(body).digest()).digest() if body else h
    got = request_hash(head, body)
    assert got == base64.b64encode(expected).decode("ascii")
    assert len(base64.b64decode(got, validate=True)) == 64


def test_request_hash_depends_on_every_byte() -> None:
    head = full_request().header_part()
    hashes = {
        request_hash(head, b""),
        request_hash(head, b"a"),
        request_hash(head, b"b"),
        request_hash(head + b" ", b"a"),
        request_hash(head + b" ", b""),
    }
    assert len(hashes) == 5


def test_digest_payload_layout() -> None:
    h = hashlib.sha512(b"head").digest()
    assert digest_payload(b"head", b"") == h
    assert digest_payload(b"head", b"body") == h + hashlib.sha512(b"body").digest()


def test_check_binding_accepts_the_matching_response() -> None:
    request = full_request()
    expected = request_hash(request.header_part(), b"body")
    make_response(request).check_binding(request, expected)


@pytest.mark.parametrize(
    "changes",
    [
        {"request_hash": request_hash(b"other", b"")},
        {"request_hash": ""},
        {"message_id": "msg-2"},
        {"client": ClientId.parse("EE/GOV/1234/other")},
        {"client": ClientId.parse("EE/GOV/1234")},
        {"service": ServiceId.parse("EE/GOV/5678/provider/getOther")},
    ],
)
def test_check_binding_refusals(changes: dict[str, Any]) -> None:
    request = full_request()
    expected = request_hash(request.header_part(), b"body")
    with pytest.raises(InvalidSignatureError) as info:
        make_response(request, **changes).check_binding(request, expected)
    assert info.value.code == "server.clientproxy.invalid_request_hash"


def test_check_binding_refuses_a_response_to_another_request() -> None:
    request = full_request()
    other = dataclasses.replace(request, message_id="msg-9")
    response = make_response(request)
    with pytest.raises(InvalidSignatureError):
        response.check_binding(other, request_hash(other.header_part(), b"body"))


@pytest.mark.parametrize(
    "tail", ["/..", "/../admin", "/a/./b", "/%2e%2e/admin", "/%2E", "/a/%2e%2E"]
)
def test_dot_segments_in_the_service_path_are_refused(tail: str) -> None:
    target = "/r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE" + tail
    headers = {"X-Road-Client": "INSTANCE/CLASS/MEMBER2/SUB"}
    with pytest.raises(BadRequestError) as info:
        RestRequest.from_is("GET", target, headers.items())
    assert info.value.code == "client.bad_request"


@pytest.mark.parametrize("body", [b"", b"x" * 1000])
def test_request_hash_of_the_digest_payload_is_the_request_hash(body: bytes) -> None:
    part = full_request().header_part()
    assert request_hash_of(digest_payload(part, body)) == request_hash(part, body)


def test_data_subjects_named_by_a_response_survive_its_header_part() -> None:
    request = from_is()
    named = make_response(request, headers=(("content-type", "application/json"),
                                            ("x-xchange-data-subjects", "38001010001,a%2Cb")))
    logged = RestResponse.from_header_part(named.header_part())
    assert data_subjects_of(logged) == ("38001010001", "a,b")
    assert data_subjects_of(make_response(request)) == ()
    assert "x-xchange-data-subjects" not in FILTERED_HEADERS
