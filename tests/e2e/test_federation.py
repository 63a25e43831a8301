"""A signed, logged query crosses the federation: real processes, sockets, TLS and keys.

Each test talks to the consumer's client proxy exactly as an agency's information system
would (X-Road REST), or to the provider's server proxy over mutual TLS as a (misbehaving)
security server would, and asserts on what comes back and on what the logs hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import http.client
import io
import json
import shutil
import socket
import sqlite3
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509

from certs.keys import load_certificates, load_private_key, read_secret_file
from security_server.tls import client_context, server_context
from tests.e2e.conftest import read_records, wait_for
from xchange.body import BodyDigest, ExternalBody, read_all
from xchange.messagelog import ChainBrokenError, StoredRecord
from xchange.ocsp import ocsp_request
from xchange.rest import RestRequest, RestResponse, request_hash
from xchange.signing import SigningIdentity, sign_message
from xchange.transport import (
    PEER_OCSP_PATH,
    PEER_PATH,
    SignedMessage,
    decode_frame,
    encode_frame,
)
from xchange_cli.audit import check_log
from xchange_cli.demo import Answer, query
from xchange_cli.demo_provider import sample_bytes
from xchange_cli.federation import (
    CONSUMER,
    PROVIDER,
    Federation,
    ManagedProcess,
    RunningFederation,
    ServerFiles,
    free_port,
)

pytestmark = pytest.mark.e2e

PERSON = "/persons/38001010001"


def _ask(fed: Federation, path: str = PERSON, *, client: str | None = None,
         service: str = "persons", headers: dict[str, str] | None = None,
         server: int = 1) -> Answer:
    svc = str(fed.services[service]) if service in fed.services else service
    return query(fed.servers[server].client_proxy_url, svc, path,
                 client or str(fed.allowed_client), headers)


def _error(answer: Answer) -> str | None:
    return answer.headers.get("X-Road-Error")


async def _records(server: ServerFiles, query_id: str) -> list[StoredRecord]:
    return await read_records(server, query_id)


def _identity(server: ServerFiles) -> SigningIdentity:
    passphrase = read_secret_file(server.directory.parent / "keys.passphrase")
    return SigningIdentity(server.agency.member,
                           load_private_key(server.directory / "sign.key", passphrase),
                           tuple(load_certificates(server.directory / "sign.pem")))


def _flip(signature: str) -> str:
    """Alter one character in the middle of the JWS signature part."""
    i = len(signature) - 20
    return signature[:i] + ("A" if signature[i] != "A" else "B") + signature[i + 1:]


# -- the happy path ---------------------------------------------------------------------------


def test_allowed_query_returns_the_providers_answer_with_xroad_headers(fed: Federation) -> None:
    message_id = str(uuid.uuid4())
    answer = _ask(fed, headers={"X-Road-Id": message_id, "X-Road-UserId": "EE38001010001",
                                "X-Road-Issue": "case-7"})
    assert answer.status == 200, answer.body
    assert answer.json()["name"] == "Mari Maasikas"
    assert answer.headers["X-Road-Id"] == message_id
    assert answer.headers["X-Road-Client"] == str(fed.allowed_client)
    assert answer.headers["X-Road-Service"] == str(fed.services["persons"])
    assert len(answer.headers["X-Road-Request-Hash"]) == 88  # base64 of SHA-512
    assert "X-Road-Error" not in answer.headers


def test_x_road_id_is_generated_when_missing(fed: Federation) -> None:
    answer = _ask(fed)
    assert answer.status == 200
    assert uuid.UUID(answer.headers["X-Road-Id"])


def test_provider_system_sees_the_request_and_xroad_headers_unchanged(fed: Federation) -> None:
    body = json.dumps({"q": "ä"}).encode()
    answer = query(fed.servers[1].client_proxy_url, str(fed.services["persons"]),
                   "/echo/a%20b?x=1&x=2&y=%2F", str(fed.allowed_client),
                   {"X-Road-UserId": "EE1", "Content-Type": "application/json",
                    "X-Custom": "kept"}, method="POST", body=body)
    assert answer.status == 200, answer.body
    seen = answer.json()
    assert seen["method"] == "POST"
    assert seen["path"] == "/echo/a%20b?x=1&x=2&y=%2F"
    assert seen["body"] == '{"q": "\\u00e4"}'
    assert seen["content_type"] == "application/json"
    assert seen["x_road_headers"]["X-Road-Client"] == str(fed.allowed_client)
    assert seen["x_road_headers"]["X-Road-UserId"] == "EE1"


def test_errors_of_the_provider_system_pass_through_untouched(fed: Federation) -> None:
    answer = _ask(fed, "/persons/00000000000")
    assert answer.status == 404
    assert answer.json() == {"error": "no such person"}
    assert "X-Road-Error" not in answer.headers


# -- large bodies stream through ----------------------------------------------------------------

MIB = 1024 * 1024


def _stored_bodies(database: Path) -> tuple[set[str], set[str]]:
    """The ids of the large bodies a log holds chunks of, and of those its records name."""
    with sqlite3.connect(database) as db:
        chunks = {row[0] for row in db.execute("SELECT DISTINCT body_id FROM message_body_chunk")}
        named = {row[0] for row in db.execute(
            "SELECT body_id FROM message_log WHERE body_id IS NOT NULL")}
    return chunks, named


def _no_orphans(database: Path) -> bool:
    chunks, named = _stored_bodies(database)
    return chunks <= named


def test_large_bodies_stream_both_ways_and_are_logged_whole(fed: Federation) -> None:
    upload = b"".join(sample_bytes(5 * MIB + 7))
    up_id, down_id = str(uuid.uuid4()), str(uuid.uuid4())
    answer = query(fed.servers[1].client_proxy_url, str(fed.services["persons"]), "/digest",
                   str(fed.allowed_client), {"X-Road-Id": up_id}, method="POST", body=upload)
    assert answer.status == 200, answer.body
    assert answer.json() == {"bytes": len(upload),
                             "sha256": hashlib.sha256(upload).hexdigest()}
    size = 6 * MIB + 3
    answer = _ask(fed, f"/bytes?size={size}", headers={"X-Road-Id": down_id})
    assert answer.status == 200, answer.body[:300]
    assert answer.body == b"".join(sample_bytes(size))
    assert answer.headers["Content-Length"] == str(size)

    for server in (fed.servers[1], fed.servers[0]):
        (request, _) = asyncio.run(_records(server, up_id))
        (_, response) = asyncio.run(_records(server, down_id))
        # logged beside their records, in chunks, and read back whole
        for record, data in ((request, upload), (response, answer.body)):
            assert isinstance(record.entry.body, ExternalBody)
            assert record.entry.body.digest == BodyDigest.of(data)
            assert read_all(record.entry.body) == data
        chunks, named = _stored_bodies(server.database)
        assert len(chunks) >= 2
        assert chunks == named
        result = check_log(server.config)  # signatures over the streamed digests verify
        assert result.ok, result.failures


def test_a_body_over_the_limit_is_refused_before_anything_is_sent(fed: Federation) -> None:
    limit = 64 * MIB  # the default max_body_bytes
    service = f"/r1/{fed.services['persons']}/digest"
    host, port = "127.0.0.1", fed.servers[1].client_proxy_port
    # Declared too long: refused before a byte of the body is read.
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.putrequest("POST", service)
    conn.putheader("X-Road-Client", str(fed.allowed_client))
    conn.putheader("Content-Length", str(limit + 1))
    conn.endheaders()
    resp = conn.getresponse()
    assert (resp.status, resp.getheader("X-Road-Error")) == (413, "client.payload_too_large")
    conn.close()

    # Sent in chunks, with no length: refused once the limit is passed.
    message_id = str(uuid.uuid4())
    conn = http.client.HTTPConnection(host, port, timeout=60)
    piece = b"\x5a" * MIB
    # (the server may answer and close before the whole body is sent)
    with contextlib.suppress(OSError):
        conn.request("POST", service, body=(piece for _ in range(65)), encode_chunked=True,
                     headers={"X-Road-Client": str(fed.allowed_client),
                              "X-Road-Id": message_id})
    resp = conn.getresponse()
    assert (resp.status, resp.getheader("X-Road-Error")) == (413, "client.payload_too_large")
    conn.close()
    for server in fed.servers:  # nothing logged, nothing left behind
        assert asyncio.run(_records(server, message_id)) == []
        wait_for(functools.partial(_no_orphans, server.database))


def test_a_body_cut_short_is_not_passed_on_and_leaves_nothing_behind(fed: Federation) -> None:
    message_id = str(uuid.uuid4())
    with socket.create_connection(("127.0.0.1", fed.servers[1].client_proxy_port)) as sock:
        sock.sendall(
            f"POST /r1/{fed.services['persons']}/digest HTTP/1.1\r\nHost: x\r\n"
            f"X-Road-Client: {fed.allowed_client}\r\nX-Road-Id: {message_id}\r\n"
            f"Content-Length: {4 * MIB}\r\n\r\n".encode() + b"\x5a" * (3 * MIB))
    # The server notices the closed connection, drops the spool and the chunks stored so far.
    time.sleep(1)
    wait_for(lambda: _no_orphans(fed.servers[1].database))
    for server in fed.servers:
        assert asyncio.run(_records(server, message_id)) == []
    assert _ask(fed).status == 200


# -- refusals -----------------------------------------------------------------------------------


def test_denied_client_gets_access_denied(fed: Federation) -> None:
    message_id = str(uuid.uuid4())
    answer = _ask(fed, client=str(fed.denied_client), headers={"X-Road-Id": message_id})
    assert answer.status == 403
    assert _error(answer) == "server.serverproxy.access_denied"
    assert answer.json()["type"] == "server.serverproxy.access_denied"
    # the provider keeps the signed, refused request as evidence
    [record] = asyncio.run(_records(fed.servers[0], message_id))
    assert (record.entry.status, record.entry.error_code) == (
        "rejected", "server.serverproxy.access_denied")


@pytest.mark.parametrize(
    "client",
    [
        f"{PROVIDER.member}/population-register",  # registered, but on another server
        "DEMO/GOV/99999999/nobody",  # not a member at all
        f"{CONSUMER.member}/no-such-subsystem",
    ],
)
def test_client_not_registered_on_this_server_is_unknown_member(fed: Federation,
                                                                client: str) -> None:
    answer = _ask(fed, client=client)
    assert answer.status == 400
    assert _error(answer) == "server.clientproxy.unknown_member"


@pytest.mark.parametrize(
    ("service", "path", "headers", "status", "code"),
    [
        ("DEMO/GOV/70000001/population-register/nosuch", "/x", {}, 404,
         "server.serverproxy.unknown_service"),
        ("DEMO/GOV/70000009/nobody/persons", "/x", {}, 404,
         "server.clientproxy.unknown_service"),
        ("DEMO/GOV/70000001", "", {}, 400, "client.invalid_service_identifier"),
        ("DEMO/GOV/70000001/population%3Aregister/persons", "", {}, 400,
         "client.invalid_service_identifier"),
    ],
)
def test_bad_service_identifiers(fed: Federation, service: str, path: str,
                                 headers: dict[str, str], status: int, code: str) -> None:
    answer = _ask(fed, path, service=service, headers=headers)
    assert (answer.status, _error(answer)) == (status, code)
    assert answer.json()["type"] == code


def test_malformed_client_header(fed: Federation) -> None:
    answer = _ask(fed, client="DEMO/GOV")
    assert (answer.status, _error(answer)) == (400, "client.invalid_client_identifier")


def test_missing_client_header(fed: Federation) -> None:
    import urllib.error
    import urllib.request

    url = f"{fed.servers[1].client_proxy_url}/r1/{fed.services['persons']}{PERSON}"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=10)
    assert info.value.code == 400
    assert info.value.headers["X-Road-Error"] == "client.missing_header"
    assert json.loads(info.value.read())["type"] == "client.missing_header"


def test_provider_system_down_is_service_failed(fed: Federation) -> None:
    answer = _ask(fed, "/persons", service="down")
    assert (answer.status, _error(answer)) == (502, "server.serverproxy.service_failed")


def test_slow_provider_system_is_cut_off_at_the_service_timeout(fed: Federation) -> None:
    started = time.monotonic()
    answer = _ask(fed, "?seconds=10", service="slow")
    elapsed = time.monotonic() - started
    assert (answer.status, _error(answer)) == (502, "server.serverproxy.service_failed")
    assert 1.4 < elapsed < 5, elapsed  # the slow service's timeout is 1.5 s


# -- the protocol between security servers: TLS and signatures -------------------------------


async def _post_frame(fed: Federation, frame: bytes, *, as_server: int = 1,
                      to_server: int = 0) -> tuple[int, str | None, bytes]:
    me, peer = fed.servers[as_server], fed.servers[to_server]
    ctx = client_context(me.directory / "auth.pem", me.directory / "auth.key",
                         [fed.ca.certificate], passphrase=fed.key_passphrase)
    async with aiohttp.ClientSession() as session, session.post(
        f"https://127.0.0.1:{peer.server_proxy_port}{PEER_PATH}", data=io.BytesIO(frame),
        ssl=ctx
    ) as resp:
        return resp.status, resp.headers.get("X-Road-Error"), await resp.read()


def _ocsp(fed: Federation, cert_path: Path) -> bytes:
    """A fresh OCSP response for one of the federation's certificates, from its responder."""
    cert = load_certificates(cert_path)[0]
    request = urllib.request.Request(
        fed.ocsp_url, data=ocsp_request(cert, fed.ca.certificate),
        headers={"Content-Type": "application/ocsp-request"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return bytes(resp.read())


def _frame(fed: Federation, header_part: bytes, signature: str, body: bytes = b"") -> bytes:
    """A request frame as the consumer's server would send it, with its OCSP staples."""
    me = fed.servers[1].directory
    return encode_frame(SignedMessage(header_part, signature, body,
                                      (_ocsp(fed, me / "sign.pem"), _ocsp(fed, me / "auth.pem"))))


def _signed_request(fed: Federation, *, message_id: str | None = None,
                    signed_at: datetime | None = None) -> tuple[RestRequest, bytes, str]:
    target = f"/r1/{fed.services['persons']}{PERSON}"
    headers = {"X-Road-Client": str(fed.allowed_client),
               "X-Road-Id": message_id or str(uuid.uuid4())}
    req = RestRequest.from_is("GET", target, headers.items())
    header_part = req.header_part()
    return req, header_part, sign_message(_identity(fed.servers[1]), header_part, b"",
                                          signed_at=signed_at or datetime.now(UTC),
                                          nonce=uuid.uuid4().hex)


async def test_altered_request_signature_is_refused_and_logged(fed: Federation) -> None:
    req, header_part, signature = _signed_request(fed)
    frame = _frame(fed, header_part, _flip(signature))
    status, code, _ = await _post_frame(fed, frame)
    assert (status, code) == (400, "server.serverproxy.invalid_signature")
    [record] = await _records(fed.servers[0], req.message_id)
    assert record.entry.status == "rejected"
    assert record.entry.error_code == "server.serverproxy.invalid_signature"
    assert record.entry.signature == _flip(signature)


async def test_request_signed_by_another_member_is_refused(fed: Federation) -> None:
    target = f"/r1/{fed.services['persons']}{PERSON}"
    headers = {"X-Road-Client": str(fed.allowed_client)}
    req = RestRequest.from_is("GET", target, headers.items())
    # signed with the provider's key although the consumer is named as client
    sig = sign_message(_identity(fed.servers[0]), req.header_part(), b"",
                       signed_at=datetime.now(UTC), nonce=uuid.uuid4().hex)
    status, code, _ = await _post_frame(fed, _frame(fed, req.header_part(), sig))
    assert (status, code) == (400, "server.serverproxy.invalid_signature")


async def test_a_correct_frame_passes_and_a_replayed_one_is_refused(fed: Federation) -> None:
    _, header_part, signature = _signed_request(fed)
    frame = _frame(fed, header_part, signature)
    status, code, body = await _post_frame(fed, frame)
    assert (status, code) == (200, None)
    response = RestResponse.from_header_part(decode_frame(body).header_part)
    assert response.status == 200
    assert response.request_hash == request_hash(header_part, b"")
    status, code, _ = await _post_frame(fed, frame)
    assert (status, code) == (409, "server.serverproxy.duplicate_message_id")


async def test_the_same_x_road_id_may_be_sent_again(fed: Federation) -> None:
    """Replay protection keys on the signature's one-time value, not on the IS's X-Road-Id:
    an information system may resend a request under the same id."""
    message_id = str(uuid.uuid4())
    for _ in range(2):
        _, header_part, signature = _signed_request(fed, message_id=message_id)
        status, code, _ = await _post_frame(fed, _frame(fed, header_part, signature))
        assert (status, code) == (200, None)


@pytest.mark.parametrize("age", [timedelta(minutes=10), timedelta(minutes=-5)])
async def test_a_request_signed_long_ago_or_in_the_future_is_refused(
        fed: Federation, age: timedelta) -> None:
    _, header_part, signature = _signed_request(fed, signed_at=datetime.now(UTC) - age)
    status, code, _ = await _post_frame(fed, _frame(fed, header_part, signature))
    assert (status, code) == (400, "server.serverproxy.stale_message")


async def test_a_large_frame_is_verified_whole_before_anything_passes(fed: Federation) -> None:
    """A streamed body is spooled to its end and checked against the signature before the
    provider system sees a byte: one altered byte at the very end is enough to refuse it."""
    body = b"".join(sample_bytes(3 * MIB))
    altered = body[:-1] + bytes([body[-1] ^ 1])

    def signed(message_id: str) -> tuple[bytes, str]:
        headers = {"X-Road-Client": str(fed.allowed_client), "X-Road-Id": message_id}
        req = RestRequest.from_is("POST", f"/r1/{fed.services['persons']}/digest",
                                  headers.items())
        return req.header_part(), sign_message(_identity(fed.servers[1]), req.header_part(),
                                               body, signed_at=datetime.now(UTC),
                                               nonce=uuid.uuid4().hex)

    refused_id, passed_id = str(uuid.uuid4()), str(uuid.uuid4())
    status, code, _ = await _post_frame(fed, _frame(fed, *signed(refused_id), altered))
    assert (status, code) == (400, "server.serverproxy.invalid_signature")
    [record] = await _records(fed.servers[0], refused_id)  # kept whole, as evidence
    assert (record.entry.status, record.entry.kind) == ("rejected", "request")
    assert isinstance(record.entry.body, ExternalBody)
    assert record.entry.body.digest == BodyDigest.of(altered)

    status, code, answer = await _post_frame(fed, _frame(fed, *signed(passed_id), body))
    assert (status, code) == (200, None)
    seen = json.loads(decode_frame(answer).body)
    assert seen == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


async def test_garbage_between_servers_is_a_clear_error(fed: Federation) -> None:
    status, code, body = await _post_frame(fed, b"not a frame")
    assert (status, code) == (400, "server.serverproxy.bad_request")
    assert b"Traceback" not in body


async def test_peer_with_unregistered_tls_certificate_is_refused(fed: Federation,
                                                                 tmp_path: Path) -> None:
    """A server proxy refuses a security server whose auth certificate is not registered,
    even if it is issued by the federation's CA and signs correctly."""
    me = fed.servers[1]
    rogue = fed.ca.issue_key_and_cert(tmp_path, "auth", me.agency.server,
                                      member_name=me.agency.name,
                                      now=fed.ca.certificate.not_valid_before_utc)
    ctx = client_context(rogue.cert_path, rogue.key_path, [fed.ca.certificate],
                         passphrase=rogue.key_passphrase)
    _, header_part, signature = _signed_request(fed)
    async with aiohttp.ClientSession() as session, session.post(
        f"https://127.0.0.1:{fed.servers[0].server_proxy_port}{PEER_PATH}",
        data=_frame(fed, header_part, signature), ssl=ctx,
    ) as resp:
        assert resp.status == 401
        assert resp.headers["X-Road-Error"] == "server.serverproxy.ssl_authentication_failed"


@pytest.fixture
async def fake_provider_proxy(federation: RunningFederation) -> AsyncIterator[list[bytes]]:
    """Replace the provider's server proxy by one holding its real keys that alters the
    signature of every response; restore the real one afterwards."""
    fed = federation.federation
    provider = fed.servers[0]
    federation.stop_process(provider.agency.server_code)
    identity = _identity(provider)
    frames: list[bytes] = []
    staples = (_ocsp(fed, provider.directory / "sign.pem"),
               _ocsp(fed, provider.directory / "auth.pem"))

    async def handle(request: web.Request) -> web.Response:
        msg = decode_frame(await request.read())
        req = RestRequest.from_header_part(msg.header_part)
        response = RestResponse(req.message_id, req.client, req.service,
                                request_hash(msg.header_part, msg.body), 200,
                                (("content-type", "application/json"),))
        body = b'{"name": "forged"}'
        sig = sign_message(identity, response.header_part(), b'{"name": "genuine"}')
        frame = encode_frame(SignedMessage(response.header_part(), sig, body, staples))
        frames.append(frame)
        return web.Response(body=frame, content_type="application/vnd.xchange.signed-message")

    async def status(request: web.Request) -> web.Response:
        return web.Response(body=staples[1], content_type="application/ocsp-response")

    app = web.Application()
    app.router.add_post(PEER_PATH, handle)
    app.router.add_get(PEER_OCSP_PATH, status)
    runner = web.AppRunner(app)
    await runner.setup()
    tls = server_context(provider.directory / "auth.pem", provider.directory / "auth.key",
                         [fed.ca.certificate], passphrase=fed.key_passphrase)
    site = web.TCPSite(runner, "127.0.0.1", provider.server_proxy_port, ssl_context=tls)
    await site.start()
    try:
        yield frames
    finally:
        await runner.cleanup()
        await asyncio.to_thread(federation.start_server, 0)


async def test_altered_response_is_refused_and_logged(fed: Federation,
                                                      fake_provider_proxy: list[bytes]) -> None:
    message_id = str(uuid.uuid4())
    url = f"{fed.servers[1].client_proxy_url}/r1/{fed.services['persons']}{PERSON}"
    async with aiohttp.ClientSession() as session, session.get(
        url, headers={"X-Road-Client": str(fed.allowed_client), "X-Road-Id": message_id}
    ) as resp:
        assert resp.headers["X-Road-Error"] == "server.clientproxy.invalid_signature"
        assert b"forged" not in await resp.read()
    assert fake_provider_proxy, "the fake provider proxy was not reached"
    records = await _records(fed.servers[1], message_id)
    assert [(r.entry.kind, r.entry.status) for r in records] == [("request", "ok"),
                                                                  ("response", "rejected")]
    assert records[1].entry.body == b'{"name": "forged"}'


def _swap_provider_auth_cert(fed: Federation, cert: x509.Certificate) -> None:
    """Register ``cert`` as the provider server's only auth certificate, in the registry's
    database, as an officer would; the registry republishes within a second."""
    from sqlmodel import Session

    from registry.config import RegistryConfig
    from registry.db import create_db_engine as registry_engine
    from registry.service import RegistryService

    server = fed.servers[0].agency.server
    engine = registry_engine(RegistryConfig.from_file(fed.registry_config).database_url)
    try:
        with Session(engine) as session:
            svc = RegistryService(session, actor="e2e", now=datetime.now(UTC))
            for old in svc.get_server(server)["auth_cert_hashes"]:
                svc.delete_auth_cert(server, old)
            svc.add_auth_cert(server, cert)
            session.commit()
    finally:
        engine.dispose()


def test_provider_with_unregistered_tls_certificate_is_refused(fed: Federation,
                                                              tmp_path: Path) -> None:
    """The consumer pins the provider to its registered certificate: register another
    certificate and the real provider server is refused before the request is sent."""
    provider = fed.servers[0]
    real = load_certificates(provider.directory / "auth.pem")[0]
    other = fed.ca.issue_key_and_cert(tmp_path, "auth", provider.agency.server,
                                      member_name=provider.agency.name,
                                      now=datetime.now(UTC)).certificate
    try:
        _swap_provider_auth_cert(fed, other)
        # the registry republishes on change; the consumer picks it up within a second
        wait_for(lambda: _ask(fed).status != 200)
        answer = _ask(fed)
        assert (answer.status, _error(answer)) == (502,
                                                   "server.clientproxy.ssl_authentication_failed")
    finally:
        _swap_provider_auth_cert(fed, real)
        wait_for(lambda: _ask(fed).status == 200)
    assert _ask(fed).status == 200


# -- the message log -----------------------------------------------------------------------------


def test_both_logs_hold_signed_messages_with_intact_chains(fed: Federation) -> None:
    answer = _ask(fed)
    assert answer.status == 200
    message_id = answer.headers["X-Road-Id"]
    for server, directions in ((fed.servers[1], ["outgoing", "incoming"]),
                               (fed.servers[0], ["incoming", "outgoing"])):
        records = asyncio.run(_records(server, message_id))
        assert [(r.entry.kind, r.entry.direction, r.entry.status) for r in records] == [
            ("request", directions[0], "ok"), ("response", directions[1], "ok")]
        result = check_log(server.config)
        assert result.ok, result.failures
        assert result.signatures_verified >= 2


def test_altering_a_stored_record_breaks_the_chain(fed: Federation, tmp_path: Path) -> None:
    assert _ask(fed).status == 200
    copy = tmp_path / "copy.db"
    with sqlite3.connect(fed.servers[0].database) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    with sqlite3.connect(copy) as db:
        db.execute("UPDATE message_log SET body = CAST('{\"forged\": 1}' AS BLOB) "
                   "WHERE sequence = 2")

    with pytest.raises(ChainBrokenError) as info:
        asyncio.run(read_records(fed.servers[0], database=copy))
    assert info.value.sequence == 2


@pytest.mark.parametrize("side", [1, 0], ids=["consumer-log", "provider-log"])
def test_no_message_passes_when_the_log_cannot_be_written(fed: Federation, side: int) -> None:
    server = fed.servers[side]
    code = "server.clientproxy.logging_failed" if side == 1 else \
        "server.serverproxy.logging_failed"
    with sqlite3.connect(server.database) as db:
        db.execute("CREATE TRIGGER test_block BEFORE INSERT ON message_log "
                   "BEGIN SELECT RAISE(ABORT, 'log unwritable'); END")
    try:
        message_id = str(uuid.uuid4())
        answer = _ask(fed, headers={"X-Road-Id": message_id})
        assert (answer.status, _error(answer)) == (500, code)
        assert b"Mari" not in answer.body
        if side == 1:  # nothing left the consumer's server
            assert asyncio.run(_records(fed.servers[0], message_id)) == []
    finally:
        with sqlite3.connect(server.database) as db:
            db.execute("DROP TRIGGER test_block")
    assert _ask(fed).status == 200
    assert check_log(server.config).ok


# -- global configuration --------------------------------------------------------------------------


def test_expired_global_configuration_stops_traffic(tmp_path: Path) -> None:
    from xchange_cli.federation import build_federation

    fed = build_federation(tmp_path / "fed", conf_expiry_seconds=3, conf_refresh_seconds=1,
                           registry_regenerate_seconds=0.5, ss_refresh_seconds=0.5)
    with RunningFederation(fed) as running:
        assert _ask(fed).status == 200
        running.stop_process("registry")
        outdated = "server.clientproxy.global_conf_outdated"
        wait_for(lambda: _error(_ask(fed)) == outdated, timeout=10)
        answer = _ask(fed)
        assert (answer.status, _error(answer)) == (503, outdated)
        # the provider refuses too, on its own clock

        def provider_refuses() -> bool:
            _, header_part, signature = _signed_request(fed)
            status, code, _ = asyncio.run(_post_frame(fed, _frame(fed, header_part, signature)))
            return (status, code) == (503, "server.serverproxy.global_conf_outdated")

        wait_for(provider_refuses, timeout=10)
        # and recovers as soon as the registry publishes again
        running.start_registry()
        wait_for(lambda: _ask(fed).status == 200, timeout=10)


def test_impostor_security_server_process_is_refused(federation: RunningFederation,
                                                     tmp_path: Path) -> None:
    """A whole security-server process configured as the consumer's but holding an auth
    certificate that was never registered: the provider refuses it."""
    fed = federation.federation
    consumer = fed.servers[1]
    rogue_dir = tmp_path / "rogue"
    shutil.copytree(consumer.directory, rogue_dir,
                    ignore=shutil.ignore_patterns("auth.*", "messagelog.db*", "state"))
    fed.ca.issue_key_and_cert(rogue_dir, "auth", consumer.agency.server,
                              member_name=consumer.agency.name,
                              now=fed.ca.certificate.not_valid_before_utc)
    cp_port = free_port()
    text = (rogue_dir / "security-server.toml").read_text()
    text = text.replace(f"port = {consumer.client_proxy_port}", f"port = {cp_port}")
    text = text.replace(f"port = {consumer.server_proxy_port}", f"port = {free_port()}")
    text = text.replace(f"port = {consumer.admin_port}", f"port = {free_port()}")
    text = text.replace(f"tls_port = {consumer.client_proxy_tls_port}",
                        f"tls_port = {free_port()}")
    text = text.replace(str(consumer.database), str(rogue_dir / "messagelog.db"))
    (rogue_dir / "security-server.toml").write_text(text)
    import sys

    proc = ManagedProcess("rogue", [sys.executable, "-m", "xchange_cli", "ss", "serve",
                                    "--config", str(rogue_dir / "security-server.toml")],
                          tmp_path, cwd=rogue_dir)
    try:
        url = f"http://127.0.0.1:{cp_port}"
        import urllib.request

        proc.wait_until(lambda: urllib.request.urlopen(f"{url}/health").status == 200)
        answer = query(url, str(fed.services["persons"]), PERSON, str(fed.allowed_client))
        assert (answer.status, _error(answer)) == (
            401, "server.serverproxy.ssl_authentication_failed")
    finally:
        proc.stop()


def test_security_servers_log_to_postgresql(tmp_path: Path) -> None:
    """The same federation with both message logs on PostgreSQL (by URL)."""
    import contextlib
    import os

    from tests.conftest import PG_URL_VARIABLE, postgres_schema
    from xchange_cli.federation import build_federation

    base = os.environ.get(PG_URL_VARIABLE)
    if not base:
        pytest.skip(f"{PG_URL_VARIABLE} not set: PostgreSQL end-to-end test skipped")
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(postgres_schema(base)) for _ in range(2)]
        fed = build_federation(tmp_path / "fed", database_urls=urls)
        with RunningFederation(fed):
            answer = _ask(fed)
            assert answer.status == 200
            assert _error(_ask(fed, client=str(fed.denied_client))) == \
                "server.serverproxy.access_denied"
            for server in fed.servers:
                result = check_log(server.config)
                assert result.ok and result.signatures_verified >= 2


def test_verify_log_command(fed: Federation, tmp_path: Path) -> None:
    import subprocess
    import sys

    assert _ask(fed).status == 200
    cmd = [sys.executable, "-m", "xchange_cli", "ss", "verify-log", "--config"]
    done = subprocess.run([*cmd, str(fed.servers[0].config)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "hash chain intact" in done.stdout
    assert "signatures verified" in done.stdout
    assert "time-stamps verified" in done.stdout
    # a configuration pointing at no log is an error, not an empty log that "verifies"
    moved = tmp_path / "security-server.toml"
    moved.write_text(fed.servers[0].config.read_text().replace(
        str(fed.servers[0].database), str(tmp_path / "nothing.db")))
    for name in ("anchor.json", "state"):
        (tmp_path / name).symlink_to(fed.servers[0].directory / name)
    done = subprocess.run([*cmd, str(moved)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("xchange: error") and "no message log" in done.stderr
    assert "Traceback" not in done.stderr


def _event_loops(fed: Federation) -> list[set[str]]:
    """The event loops each security server said it ran on (once per start), from its
    process log."""
    found = []
    for log_file in sorted((fed.root / "logs").glob("ss-*.log")):
        loops = {ln.rsplit("event loop: ", 1)[1] for ln in log_file.read_text().splitlines()
                 if "event loop: " in ln}
        found.append(loops)
    return found


def test_security_servers_run_on_uvloop_by_default(fed: Federation) -> None:
    pytest.importorskip("uvloop", reason="uvloop is not installed on this platform")
    assert _event_loops(fed) == [{"uvloop"}, {"uvloop"}]


def test_messages_cross_on_asyncios_own_loop(tmp_path: Path) -> None:
    """``[server] event_loop = "asyncio"``: the same exchange, streamed bodies included, on
    the loop the in-process tests use."""
    from xchange_cli.federation import build_federation

    fed = build_federation(tmp_path / "fed", event_loop="asyncio")
    with RunningFederation(fed):
        assert _event_loops(fed) == [{"asyncio"}, {"asyncio"}]
        assert _ask(fed).status == 200
        assert _error(_ask(fed, client=str(fed.denied_client))) == \
            "server.serverproxy.access_denied"
        upload = b"".join(sample_bytes(3 * MIB + 1))
        answer = query(fed.servers[1].client_proxy_url, str(fed.services["persons"]),
                       "/digest", str(fed.allowed_client), method="POST", body=upload)
        assert answer.status == 200, answer.body
        assert answer.json()["sha256"] == hashlib.sha256(upload).hexdigest()
        for server in fed.servers:
            result = check_log(server.config)
            assert result.ok and result.signatures_verified >= 3
