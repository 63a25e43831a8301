"""The pure rules of management requests: shape, signatures, who must sign."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from certs.ca import DevCA, IssuedCredentials
from xchange.canonical import canonical_json
from xchange.errors import ManagementRequestError
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
