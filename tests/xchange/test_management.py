"""The pure rules of management requests: shape, signatures, who must sign."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from certs.ca import DevCA, IssuedCredentials
from xchange.access import EndpointPattern
from xchange.canonical import canonical_json
from xchange.catalogue import CatalogueEntry, catalogue_digest, catalogue_json
from xchange.errors import BadRequestError, ManagementRequestError
from xchange.identifiers import ClientId, SecurityServerId
from xchange.management import (
    REQUEST_TYPE,
    cert_text,
    new_request,
    request_payload,
    sign_request,
    verify_request,
)
from xchange.signing import SigningIdentity

OWNER = ClientId("TEST", "GOV", "5001")
SERVER = SecurityServerId(OWNER, "ss1")


@pytest.fixture(scope="module")
def owner(issue_member_sign: Callable[..., IssuedCredentials]) -> SigningIdentity:
    creds = issue_member_sign(str(OWNER))
    return SigningIdentity(OWNER, creds.key, (creds.certificate,))


@pytest.fixture(scope="module")
def auth(issue_server_auth: Callable[..., IssuedCredentials]) -> IssuedCredentials:
    return issue_server_auth(str(SERVER))


def refused(data: bytes, dev_ca: DevCA, at: datetime, code: str) -> str:
    with pytest.raises(ManagementRequestError) as info:
        verify_request(data, anchors=[dev_ca.certificate], now=at)
    assert info.value.code == code
    return info.value.message


def test_round_trip_and_domain_separation(owner: SigningIdentity, auth: IssuedCredentials,
                                          dev_ca: DevCA, pki_now: datetime) -> None:
    request = new_request("auth_cert_register", SERVER, now=pki_now,
                          auth_cert=cert_text(auth.certificate), address="ss1.example:5500")
    data = sign_request(request, owner, auth.key)
    verified = verify_request(data, anchors=[dev_ca.certificate], now=pki_now)
    assert verified.request == request and verified.signer == OWNER
    assert request_payload(request).startswith(REQUEST_TYPE.encode() + b"\x00")
    assert len(request_payload(request)) == len(REQUEST_TYPE) + 1 + 64


def _tamper(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    envelope = json.loads(data)
    change(envelope)
    return canonical_json(envelope)


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (lambda e: e["request"].update(address="evil:1"), "registry.management.invalid_signature",
         "does not verify"),
        (lambda e: e["request"].update(extra="x"), "registry.management.bad_request",
         "Additional properties"),
        (lambda e: e["request"].pop("address"), "registry.management.bad_request",
         "needs exactly"),
        (lambda e: e.update(auth_signature=e["signature"]),
         "registry.management.invalid_signature", "wrong alg or typ"),
        (lambda e: e.pop("auth_signature"), "registry.management.invalid_signature",
         "auth key"),
        (lambda e: e.update(signature="x.y.z"), "registry.management.invalid_signature",
         "no usable signing certificate"),
    ],
    ids=["altered", "extra-field", "missing-field", "auth-sig-by-member", "no-pop", "garbage"],
)
def test_tampering_is_refused(owner: SigningIdentity, auth: IssuedCredentials, dev_ca: DevCA,
                              pki_now: datetime, change: Callable[[dict[str, Any]], None],
                              code: str, message: str) -> None:
    request = new_request("auth_cert_register", SERVER, now=pki_now,
                          auth_cert=cert_text(auth.certificate), address="ss1.example:5500")
    data = _tamper(sign_request(request, owner, auth.key), change)
    assert message in refused(data, dev_ca, pki_now, code)


def test_a_certificate_for_another_server_is_not_allowed(
    owner: SigningIdentity, issue_server_auth: Callable[..., IssuedCredentials],
    dev_ca: DevCA, pki_now: datetime,
) -> None:
    other = issue_server_auth("TEST/GOV/5001/ss2")
    request = new_request("auth_cert_register", SERVER, now=pki_now,
                          auth_cert=cert_text(other.certificate), address="ss1.example:5500")
    message = refused(sign_request(request, owner, other.key), dev_ca, pki_now,
                      "registry.management.not_allowed")
    assert "is for TEST/GOV/5001/ss2" in message


def test_freshness_window(owner: SigningIdentity, dev_ca: DevCA, pki_now: datetime) -> None:
    request = new_request("address_change", SERVER, now=pki_now, address="a.example:1")
    data = sign_request(request, owner)
    verify_request(data, anchors=[dev_ca.certificate], now=pki_now + timedelta(minutes=9))
    refused(data, dev_ca, pki_now + timedelta(minutes=11), "registry.management.stale_request")
    refused(data, dev_ca, pki_now - timedelta(minutes=2), "registry.management.stale_request")


def test_clients_must_be_subsystems(owner: SigningIdentity, dev_ca: DevCA,
                                    pki_now: datetime) -> None:
    request = new_request("client_register", SERVER, now=pki_now, client="TEST/GOV/5001/x")
    data = _tamper(sign_request(request, owner),
                   lambda e: e["request"].update(client="TEST/GOV/5001/x/y"))
    refused(data, dev_ca, pki_now, "registry.management.bad_request")


def test_programming_errors() -> None:
    with pytest.raises(ValueError, match="unknown"):
        new_request("format_disk", SERVER, now=datetime.now().astimezone())
    with pytest.raises(ValueError, match="needs exactly"):
        new_request("address_change", SERVER, now=datetime.now().astimezone())


# -- service_catalogue_update -------------------------------------------------------------------

PROVIDER = OWNER.subsystem_of("register")
CATALOGUE = [
    CatalogueEntry("persons", "OPENAPI", "Persons", "who lives where",
                   (EndpointPattern("GET", "/persons/*"), EndpointPattern("POST", "/echo"))),
    CatalogueEntry("ping", "REST", version="v2"),
    CatalogueEntry("getPerson", "WSDL"),
]


def test_a_catalogue_update_round_trips_signed_by_the_clients_member(
        owner: SigningIdentity, dev_ca: DevCA, pki_now: datetime) -> None:
    request = new_request("service_catalogue_update", SERVER, now=pki_now,
                          client=str(PROVIDER), services=catalogue_json(CATALOGUE))
    verified = verify_request(sign_request(request, owner), anchors=[dev_ca.certificate],
                              now=pki_now)
    assert verified.signer == OWNER and verified.request.client == PROVIDER
    assert verified.request.services == tuple(sorted(CATALOGUE, key=lambda e: e.code))
    doc = json.loads(sign_request(request, owner))["request"]["services"]
    assert doc[0] == {"code": "getPerson", "type": "WSDL", "title": "", "description": "",
                      "endpoints": []}
    assert doc[2]["version"] == "v2" and "version" not in doc[1]


def test_a_catalogue_update_signed_by_another_member_is_not_allowed(
        issue_member_sign: Callable[..., IssuedCredentials], dev_ca: DevCA,
        pki_now: datetime) -> None:
    other = ClientId("TEST", "GOV", "5002")
    creds = issue_member_sign(str(other))
    request = new_request("service_catalogue_update", SERVER, now=pki_now,
                          client=str(PROVIDER), services=[])
    data = sign_request(request, SigningIdentity(other, creds.key, (creds.certificate,)))
    assert "must be signed by TEST/GOV/5001" in refused(data, dev_ca, pki_now,
                                                        "registry.management.not_allowed")


def _entry(**change: Any) -> dict[str, Any]:
    return {"code": "persons", "type": "OPENAPI", "title": "", "description": "",
            "endpoints": [{"method": "GET", "path": "/persons/*"}], **change}


@pytest.mark.parametrize(
    ("services", "message"),
    [
        ([_entry(), _entry()], "listed twice"),
        ([_entry(endpoints=[{"method": "GET", "path": "/persons/*/"}])], "normal form"),
        ([_entry(endpoints=[{"method": "GET", "path": "/a/../b"}])], "endpoint path"),
        ([_entry(endpoints=[{"method": "GET", "path": "/x"}] * 2)], "endpoint twice"),
        ([_entry(type="WSDL")], "cannot have REST endpoints"),
        ([_entry(code="a/b")], "forbidden character"),
        ([_entry(type="SOAP")], "SOAP"),
        ([_entry(version="")], "version"),
        ([_entry(title=7)], "title"),
        ("persons", "services"),
    ],
    ids=["duplicate-code", "trailing-slash", "dot-dot", "duplicate-endpoint", "wsdl-endpoints",
         "bad-code", "bad-type", "empty-version", "title-not-string", "not-a-list"],
)
def test_bad_catalogues_are_bad_requests(owner: SigningIdentity, dev_ca: DevCA,
                                         pki_now: datetime, services: Any,
                                         message: str) -> None:
    request = new_request("service_catalogue_update", SERVER, now=pki_now,
                          client=str(PROVIDER), services=[])
    data = _tamper(sign_request(request, owner),
                   lambda e: e["request"].update(services=services))
    assert message in refused(data, dev_ca, pki_now, "registry.management.bad_request")


def test_a_catalogue_is_for_a_subsystem(owner: SigningIdentity, dev_ca: DevCA,
                                        pki_now: datetime) -> None:
    request = new_request("service_catalogue_update", SERVER, now=pki_now,
                          client=str(PROVIDER), services=[])
    data = _tamper(sign_request(request, owner),
                   lambda e: e["request"].update(client=str(OWNER)))
    refused(data, dev_ca, pki_now, "registry.management.bad_request")


def test_catalogue_digest_ignores_order_not_content() -> None:
    assert catalogue_digest(CATALOGUE) == catalogue_digest(reversed(CATALOGUE))
    changed = [*CATALOGUE[:2], CatalogueEntry("getPerson", "WSDL", "now with a title")]
    assert catalogue_digest(changed) != catalogue_digest(CATALOGUE)
    with pytest.raises(BadRequestError, match="cannot have REST endpoints"):
        CatalogueEntry("x", "WSDL", endpoints=(EndpointPattern("GET", "/"),))
    assert (CatalogueEntry("x", "WSDL").kind, CatalogueEntry("x", "REST").kind) == \
        ("SOAP", "REST")
