"""Tests of certs.ocsp (the responder) and certs.ocsp_server (its HTTP face, on real sockets).

What a response says is checked with xchange.ocsp's verifier; the odd corners (status codes,
nonces, hash algorithms) with cryptography's parser.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from certs.ca import DevCA
from certs.index import INDEX_FILE
from certs.keys import generate_private_key
from certs.ocsp import OcspResponder, OcspSigner
from certs.ocsp_server import MAX_REQUEST_BYTES, OCSP_REQUEST_TYPE, create_app
from xchange.identifiers import ClientId
from xchange.ocsp import OcspStatus, ocsp_request, verify_ocsp_response

DER = serialization.Encoding.DER
MEMBER = ClientId("RESP", "GOV", "1")
Status = ocsp.OCSPResponseStatus


@dataclass
class Pki:
    ca: DevCA
    other: DevCA
    now: datetime

    def cert(self) -> x509.Certificate:
        return self.ca.issue_sign_cert(MEMBER, "Org", generate_private_key().public_key(),
                                       now=self.now)

    def verify(self, der: bytes, cert: x509.Certificate) -> OcspStatus:
        return verify_ocsp_response(der, cert, self.ca.certificate, at=self.now,
                                    max_age=timedelta(hours=1),
                                    code="server.clientproxy.cert_validation")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory, pki_now: datetime) -> Pki:
    tmp = tmp_path_factory.mktemp("responder")
    return Pki(DevCA.create(tmp / "ca", "RESP", now=pki_now),
               DevCA.create(tmp / "other", "OTHER", now=pki_now), pki_now)


def _status(der: bytes) -> Status:
    return ocsp.load_der_ocsp_response(der).response_status


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _sequence(*parts: bytes) -> bytes:
    body = b"".join(parts)
    return b"\x30" + _der_length(len(body)) + body


def _inner(der: bytes) -> bytes:
    """The contents of a DER SEQUENCE (short or long form length)."""
    assert der[0] == 0x30
    if der[1] < 0x80:
        return der[2:]
    return der[2 + (der[1] & 0x7F):]


def _two_cert_request(a: x509.Certificate, b: x509.Certificate, issuer: x509.Certificate) -> bytes:
    # OCSPRequest { TBSRequest { requestList { Request, Request } } }; cryptography builds one.
    def request_of(cert: x509.Certificate) -> bytes:
        return _inner(_inner(_inner(ocsp_request(cert, issuer))))

    return _sequence(_sequence(_sequence(request_of(a), request_of(b))))


# -- the responder -------------------------------------------------------------------------------


def test_answers_good_then_revoked_from_another_handle(pki: Pki) -> None:
    responder = OcspResponder(pki.ca)
    cert = pki.cert()
    assert pki.verify(responder.respond(ocsp_request(cert, pki.ca.certificate), pki.now),
                      cert).status == "good"
    # A revocation by another process: the index file is read again on every request.
    DevCA.load(pki.ca.directory).revoke(
        cert.serial_number, reason=x509.ReasonFlags.cessation_of_operation, at=pki.now)
    status = pki.verify(responder.respond(ocsp_request(cert, pki.ca.certificate), pki.now), cert)
    assert (status.status, status.revocation_reason) == ("revoked", "cessationOfOperation")


def test_multi_request_helper_builds_what_cryptography_refuses(pki: Pki) -> None:
    der = _two_cert_request(pki.cert(), pki.cert(), pki.ca.certificate)
    with pytest.raises(NotImplementedError, match="more than one request"):
        ocsp.load_der_ocsp_request(der)


@pytest.mark.parametrize("kind", ["garbage", "empty", "two certificates", "truncated"])
def test_malformed_requests(pki: Pki, kind: str) -> None:
    request = ocsp_request(pki.cert(), pki.ca.certificate)
    der = {
        "garbage": b"\x30\x82garbage",
        "empty": b"",
        "two certificates": _two_cert_request(pki.cert(), pki.cert(), pki.ca.certificate),
        "truncated": request[:-3],
    }[kind]
    assert _status(OcspResponder(pki.ca).respond(der, pki.now)) is Status.MALFORMED_REQUEST


def test_other_issuers_are_unauthorized(pki: Pki) -> None:
    foreign = pki.other.issue_sign_cert(MEMBER, "Org", generate_private_key().public_key(),
                                        now=pki.now)
    der = ocsp_request(foreign, pki.other.certificate)
    assert _status(OcspResponder(pki.ca).respond(der, pki.now)) is Status.UNAUTHORIZED


def test_nonce_is_echoed(pki: Pki) -> None:
    cert = pki.cert()
    nonce = x509.OCSPNonce(b"0123456789abcdef")
    request = (ocsp.OCSPRequestBuilder()
               .add_certificate(cert, pki.ca.certificate, hashes.SHA256())
               .add_extension(nonce, critical=False).build())
    der = OcspResponder(pki.ca).respond(request.public_bytes(DER), pki.now)
    response = ocsp.load_der_ocsp_response(der)
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value == nonce
    assert pki.verify(der, cert).status == "good"


def test_responses_identify_the_signer_by_key(pki: Pki) -> None:
    cert = pki.cert()
    response = ocsp.load_der_ocsp_response(
        OcspResponder(pki.ca).respond(ocsp_request(cert, pki.ca.certificate), pki.now))
    assert response.responder_key_hash == (
        x509.SubjectKeyIdentifier.from_public_key(pki.ca.certificate.public_key()).digest)
    assert response.certificates == []
    assert isinstance(response.signature_hash_algorithm, hashes.SHA256)


def test_signer_out_of_validity_answers_internal_error(pki: Pki) -> None:
    key = generate_private_key()
    responder_cert = pki.ca.issue_ocsp_responder_cert(key.public_key(), now=pki.now, days=1)
    responder = OcspResponder(pki.ca, signer=OcspSigner(key, responder_cert))
    request = ocsp_request(pki.cert(), pki.ca.certificate)
    assert _status(responder.respond(request, pki.now + timedelta(days=1))) is Status.SUCCESSFUL
    late = pki.now + timedelta(days=1, seconds=1)
    assert _status(responder.respond(request, late)) is Status.INTERNAL_ERROR


def test_refuses_signers_no_verifier_would_accept(pki: Pki) -> None:
    key = generate_private_key()
    tls = pki.ca.issue_tls_cert("ocsp.test", key.public_key(), now=pki.now)
    with pytest.raises(ValueError, match="lacks id-kp-OCSPSigning"):
        OcspResponder(pki.ca, signer=OcspSigner(key, tls))
    foreign = pki.other.issue_ocsp_responder_cert(key.public_key(), now=pki.now)
    with pytest.raises(ValueError, match="not a responder certificate of this CA"):
        OcspResponder(pki.ca, signer=OcspSigner(key, foreign))
    own = pki.ca.issue_ocsp_responder_cert(key.public_key(), now=pki.now)
    with pytest.raises(ValueError, match="key does not belong"):
        OcspResponder(pki.ca, signer=OcspSigner(generate_private_key(), own))
    with pytest.raises(ValueError, match="validity must be positive"):
        OcspResponder(pki.ca, validity=timedelta(0))
    with pytest.raises(ValueError, match="timezone-aware"):
        OcspResponder(pki.ca).respond(b"", pki.now.replace(tzinfo=None))


# -- over HTTP -----------------------------------------------------------------------------------

Client = TestClient[aiohttp.web.Request, aiohttp.web.Application]


@pytest.fixture
async def client(pki: Pki) -> AsyncIterator[Client]:
    app = create_app(OcspResponder(pki.ca), path="/ocsp", clock=lambda: pki.now)
    async with TestClient(TestServer(app)) as client:
        yield client


async def _post(client: Client, body: bytes, path: str = "/ocsp") -> aiohttp.ClientResponse:
    return await client.post(path, data=body, headers={"Content-Type": OCSP_REQUEST_TYPE})


@pytest.mark.parametrize("path", ["/ocsp", "/ocsp/"])
async def test_post(client: Client, pki: Pki, path: str) -> None:
    cert = pki.cert()
    response = await _post(client, ocsp_request(cert, pki.ca.certificate), path)
    assert response.status == 200
    assert response.content_type == "application/ocsp-response"
    assert response.headers["Cache-Control"] == "no-cache"
    assert pki.verify(await response.read(), cert).status == "good"


@pytest.mark.parametrize(
    "encode",
    [
        lambda der: quote(base64.b64encode(der).decode(), safe=""),  # RFC 6960 A.1
        lambda der: base64.b64encode(der).decode(),  # '/' and '+' left as they are
        lambda der: base64.urlsafe_b64encode(der).decode().rstrip("="),
    ],
    ids=["url-encoded base64", "raw base64", "base64url"],
)
async def test_get(client: Client, pki: Pki, encode: Callable[[bytes], str]) -> None:
    cert = pki.cert()
    path = "/ocsp/" + encode(ocsp_request(cert, pki.ca.certificate))
    response = await client.get(path)
    assert response.status == 200
    assert response.content_type == "application/ocsp-response"
    assert pki.verify(await response.read(), cert).status == "good"


@pytest.mark.parametrize("path", ["/ocsp/not*base64", "/ocsp/aGVsbG8="])
async def test_get_of_garbage_is_malformed_request(client: Client, path: str) -> None:
    response = await client.get(path)
    assert response.status == 200
    assert _status(await response.read()) is Status.MALFORMED_REQUEST


async def test_post_of_garbage_is_malformed_request(client: Client) -> None:
    response = await _post(client, b"garbage")
    assert response.status == 200
    assert _status(await response.read()) is Status.MALFORMED_REQUEST


async def test_http_mistakes(client: Client, pki: Pki) -> None:
    request = ocsp_request(pki.cert(), pki.ca.certificate)
    wrong_type = await client.post("/ocsp", data=request,
                                   headers={"Content-Type": "application/octet-stream"})
    assert wrong_type.status == 415
    assert "application/ocsp-request" in await wrong_type.text()
    too_big = await _post(client, b"\x30" * (MAX_REQUEST_BYTES + 1))
    assert too_big.status == 413
    assert (await client.post("/elsewhere", data=request)).status == 404
    assert (await client.put("/ocsp", data=request)).status == 405


async def test_failure_is_an_internal_error_response(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(pki.ca.directory, tmp_path / "ca")
    ca = DevCA.load(tmp_path / "ca")
    app = create_app(OcspResponder(ca), clock=lambda: pki.now)
    async with TestClient(TestServer(app)) as client:
        (tmp_path / "ca" / INDEX_FILE).write_bytes(b"no longer a database" * 100)
        response = await _post(client, ocsp_request(pki.cert(), pki.ca.certificate), "/")
        assert response.status == 500
        body = await response.read()
    assert _status(body) is Status.INTERNAL_ERROR
    assert b"Traceback" not in body
    assert "answering an OCSP request failed" in caplog.text


def test_path_must_be_absolute(pki: Pki) -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        create_app(OcspResponder(pki.ca), path="ocsp")
