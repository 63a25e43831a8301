"""The admin API over a real socket: authentication, roles, problems, audit, paging."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from registry.adminroles import audience
from registry.keys import KeyStore
from tests.registry.conftest import LiveRegistry
from xchange.adminauth import TOKEN_TYPE, issue_token, key_id


async def call(live: LiveRegistry, method: str, path: str, token: str | None,
               body: Any = None, **headers: str) -> tuple[int, Any, aiohttp.ClientResponse]:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session, session.request(
            method, live.url + path, json=body, headers=headers) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None, response


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_none_token(live: LiveRegistry) -> str:
    key = KeyStore.from_config(live.config).admin_key()
    header = {"alg": "none", "typ": TOKEN_TYPE, "kid": key_id(key.public_key())}
    now = int(datetime.now(UTC).timestamp())
    claims = {"sub": "mallory", "roles": ["system_administrator"], "aud": audience("TEST"),
              "iat": now, "exp": now + 600}
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."


@pytest.mark.parametrize(
    ("make_token", "message"),
    [
        (lambda live: None, "bearer token is required"),
        (forged_none_token, "algorithm 'none' is not allowed"),
        (lambda live: issue_token(KeyStore.from_config(live.config).admin_key(), subject="x",
                                  roles=["observer"], audience=audience("TEST"),
                                  issued_at=datetime.now(UTC) - timedelta(hours=2),
                                  lifetime=timedelta(hours=1)),
         "expired"),
        (lambda live: issue_token(ec.generate_private_key(ec.SECP256R1()), subject="x",
                                  roles=["observer"], audience=audience("TEST"),
                                  issued_at=datetime.now(UTC), lifetime=timedelta(hours=1)),
         "not signed by a key of this server"),
        (lambda live: issue_token(KeyStore.from_config(live.config).admin_key(), subject="x",
                                  roles=["observer"], audience="xchange-registry:PROD",
                                  issued_at=datetime.now(UTC), lifetime=timedelta(hours=1)),
         "not issued for this server"),
    ],
    ids=["missing", "alg-none", "expired", "foreign-key", "other-audience"],
)
async def test_bad_tokens_are_refused(live_registry: LiveRegistry, make_token: Any,
                                      message: str) -> None:
    status, problem, response = await call(live_registry, "GET", "/api/v1/members",
                                           make_token(live_registry))
    assert status == 401
    assert response.content_type == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert problem["code"] == "admin.unauthorized" and problem["status"] == 401
    assert message in problem["detail"]


async def test_a_role_lacking_the_right_is_forbidden(live_registry: LiveRegistry) -> None:
    observer = live_registry.token("observer", subject="olga")
    status, problem, _ = await call(live_registry, "POST", "/api/v1/members", observer,
                                    {"member_class": "GOV", "member_code": "9", "name": "X"})
    assert (status, problem["code"]) == (403, "admin.forbidden")
    assert "members.write" in problem["detail"]
    status, body, _ = await call(live_registry, "GET", "/api/v1/me", observer)
    assert body == {"subject": "olga", "roles": ["observer"], "permissions": ["registry.read"]}
    status, problem, _ = await call(live_registry, "GET", "/api/v1/audit-log", observer)
    assert status == 403


async def test_changes_are_audited_under_the_token_subject(live_registry: LiveRegistry) -> None:
    officer = live_registry.token("registration_officer", subject="rita")
    status, member, _ = await call(live_registry, "POST", "/api/v1/members", officer,
                                   {"member_class": "GOV", "member_code": "4242",
                                    "name": "Audit Agency"})
    assert status == 201 and member["id"] == "TEST/GOV/4242"
    status, _, _ = await call(live_registry, "PATCH", "/api/v1/members/GOV/4242", officer,
                              {"name": "Renamed Agency"})
    assert status == 200
    auditor = live_registry.token("security_officer")
    status, page, _ = await call(live_registry, "GET", "/api/v1/audit-log?actor=rita", auditor)
    assert [e["action"] for e in page["items"]] == ["member.update", "member.create"]
    assert page["items"][0]["before"]["name"] == "Audit Agency"
    assert page["items"][0]["after"]["name"] == "Renamed Agency"


async def test_problems_for_bad_input(live_registry: LiveRegistry) -> None:
    token = live_registry.token()
    cases = [
        ("POST", "/api/v1/members", {"member_class": "GOV"}, 400, "admin.bad_request"),
        ("POST", "/api/v1/members", {"member_class": "GOV", "member_code": "a/b", "name": "x"},
         400, "admin.bad_request"),
        ("GET", "/api/v1/members/GOV/does-not-exist", None, 404, "admin.not_found"),
        ("POST", "/api/v1/member-classes", {"code": "GOV"}, 409, "admin.conflict"),
        ("GET", "/api/v1/members?limit=0", None, 400, "admin.bad_request"),
        ("GET", "/api/v1/members?colour=red", None, 400, "admin.bad_request"),
        ("GET", "/api/v1/nothing-here", None, 404, "admin.not_found"),
    ]
    for method, path, body, status, code in cases:
        got, problem, _ = await call(live_registry, method, path, token, body)
        assert (got, problem["code"]) == (status, code), (method, path)


async def test_paging_and_filtering(live_registry: LiveRegistry) -> None:
    token = live_registry.token()
    status, page, _ = await call(live_registry, "GET", "/api/v1/members?limit=1&offset=0",
                                 token)
    assert status == 200 and len(page["items"]) == 1 and page["total"] >= 2
    status, page, _ = await call(live_registry, "GET", "/api/v1/members?q=company", token)
    assert [m["id"] for m in page["items"]] == ["TEST/COM/5678"]
    status, page, _ = await call(live_registry, "GET", "/api/v1/members?member_class=COM",
                                 token)
    assert page["total"] == 1
