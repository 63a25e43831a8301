"""The admin API on a real socket: tokens and roles, the service-administration flow with
its audit log, schema validation, and a bounded schemathesis run with zero server errors."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from security_server.admin_api import AdminContext, audience_for, create_admin_app
from security_server.catalogue import CataloguePublisher
from security_server.db import create_db_engine
from security_server.directory import Directory, StoreDirectory
from security_server.migrate import upgrade
from security_server.store import ServerStore
from xchange.adminauth import issue_token
from xchange.errors import AccessDeniedError
from xchange.identifiers import ClientId, SecurityServerId, ServiceId

SERVER = "TEST/GOV/1/ss1"
PROVIDER = "TEST/GOV/1/register"
CONSUMER = ClientId.parse("TEST/GOV/2/benefits")
OPENAPI = json.dumps({"openapi": "3.0.3", "info": {"title": "P", "version": "1"},
                      "paths": {"/persons/{id}": {"get": {}, "delete": {}}}})


@dataclass
class Admin:
    url: str
    key: ec.EllipticCurvePrivateKey
    directory: Directory
    store: ServerStore

    def token(self, *roles: str, subject: str = "alice") -> str:
        return issue_token(self.key, subject=subject, roles=roles,
                           audience=audience_for(SERVER), issued_at=datetime.now(UTC),
                           lifetime=timedelta(hours=1))


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'ss.db'}")
    upgrade(engine)
    key = ec.generate_private_key(ec.SECP256R1())
    directory = Directory(StoreDirectory(ServerStore(engine), recheck_seconds=3600))
    store = ServerStore(engine)
    # No member key and no registry listening: publications fail, and say why.
    publisher = CataloguePublisher(store, SecurityServerId.parse(SERVER), {},
                                   lambda: "http://127.0.0.1:9", clock=lambda: datetime.now(UTC))
    ctx = AdminContext(store, directory, (key.public_key(),),
                       audience_for(SERVER), lambda: datetime.now(UTC), server=SERVER,
                       catalogue=publisher)
    runner = web.AppRunner(create_admin_app(ctx), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Admin(f"http://127.0.0.1:{port}", key, directory, store)
    finally:
        await runner.cleanup()
        engine.dispose()


async def call(admin: Admin, method: str, path: str, token: str | None,
               body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.request(
            method, admin.url + path, json=body, headers=headers) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


async def test_tokens_and_roles(admin: Admin) -> None:
    status, doc = await call(admin, "GET", "/api/v1/clients", None)
    assert (status, doc["type"]) == (401, "admin.unauthorized")
    status, doc = await call(admin, "GET", "/api/v1/clients", "not.a.jwt")
    assert (status, doc["type"]) == (401, "admin.unauthorized")
    other = issue_token(ec.generate_private_key(ec.SECP256R1()), subject="x",
                        roles=["observer"], audience=audience_for(SERVER),
                        issued_at=datetime.now(UTC), lifetime=timedelta(hours=1))
    assert (await call(admin, "GET", "/api/v1/clients", other))[0] == 401
    observer = admin.token("observer")
    assert (await call(admin, "GET", "/api/v1/clients", observer)) == (200, [])
    status, doc = await call(admin, "POST", "/api/v1/clients", observer, {"id": PROVIDER})
    assert (status, doc["type"]) == (403, "admin.forbidden")
    status, doc = await call(admin, "GET", "/api/v1/audit", observer)
    assert status == 403


async def test_service_administration_flow(admin: Admin) -> None:
    officer = admin.token("security-officer", subject="sec")
    services = admin.token("service-administrator", subject="svc")
    status, client = await call(admin, "POST", "/api/v1/clients", officer, {"id": PROVIDER})
    assert (status, client) == (201, {"id": PROVIDER, "enabled": True,
                                      "is_connection": "HTTPS_AUTH"})
    status, desc = await call(
        admin, "POST", "/api/v1/clients/TEST:GOV:1:register/service-descriptions", services,
        {"type": "OPENAPI3", "url": "http://127.0.0.1:9/openapi.json", "document": OPENAPI,
         "service_code": "persons", "service_url": "http://127.0.0.1:9/"})
    assert status == 201, desc
    assert desc["services"][0]["endpoints"] == [{"method": "DELETE", "path": "/persons/*"},
                                                {"method": "GET", "path": "/persons/*"}]
    svc_path = "/api/v1/services/TEST:GOV:1:register:persons"
    right = {"subject": str(CONSUMER), "method": "GET", "path": "/persons/*"}
    status, _ = await call(admin, "POST", f"{svc_path}/access-rights", services, right)
    assert status == 201
    persons = ServiceId(ClientId.parse(PROVIDER), "persons")
    admin.directory.check_access(CONSUMER, persons, "GET", "/persons/7", lambda g: frozenset())
    status, _ = await call(admin, "POST", f"{svc_path}/access-rights/delete", services, right)
    assert status == 204
    with pytest.raises(AccessDeniedError):  # the next lookup already sees the revocation
        admin.directory.check_access(CONSUMER, persons, "GET", "/persons/7",
                                     lambda g: frozenset())
    status, audit = await call(admin, "GET", "/api/v1/audit", admin.token("auditor"))
    assert [(a["actor"], a["action"]) for a in audit] == [
        ("sec", "add_client"), ("svc", "add_description"), ("svc", "grant"), ("svc", "revoke")]


async def test_service_changes_make_a_catalogue_publication_due(admin: Admin) -> None:
    token = admin.token("security-officer", "service-administrator", "auditor")
    await call(admin, "POST", "/api/v1/clients", token, {"id": PROVIDER})
    path = "/api/v1/clients/TEST:GOV:1:register/catalogue"
    status, state = await call(admin, "GET", path, token)
    assert status == 200 and (state["state"], state["due"], state["catalogue"]) == \
        ("pending", False, [])
    status, desc = await call(
        admin, "POST", "/api/v1/clients/TEST:GOV:1:register/service-descriptions", token,
        {"type": "OPENAPI3", "url": "http://127.0.0.1:9/openapi.json", "document": OPENAPI,
         "service_code": "persons"})
    status, state = await call(admin, "GET", path, token)
    assert state["due"] and state["catalogue"] == [{
        "code": "persons", "type": "OPENAPI", "title": "P", "description": "",
        "endpoints": [{"method": "DELETE", "path": "/persons/*"},
                      {"method": "GET", "path": "/persons/*"}]}]
    status, state = await call(admin, "POST", f"{path}/publish", token)
    assert status == 200 and state["state"] == "failed" and state["due"]
    assert "holds no signing key for TEST/GOV/1" in state["last_error"]
    status, _ = await call(admin, "PATCH", f"/api/v1/service-descriptions/{desc['id']}", token,
                           {"enabled": False})
    status, state = await call(admin, "GET", path, token)
    assert state["catalogue"] == [] and state["state"] == "failed"
    status, audit = await call(admin, "GET", "/api/v1/audit", token)
    assert audit[-2]["action"] == "publish_catalogue"
    assert audit[-2]["data"]["state"] == "failed"
    await call(admin, "POST", "/api/v1/clients", token, {"id": "TEST/GOV/1"})
    status, doc = await call(admin, "POST", "/api/v1/clients/TEST:GOV:1/catalogue/publish",
                             token)
    assert (status, doc["type"]) == (400, "admin.bad_request")
    assert "only subsystems" in doc["message"]
    status, doc = await call(admin, "GET", "/api/v1/clients/TEST:GOV:1:nope/catalogue", token)
    assert (status, doc["type"]) == (404, "admin.not_found")
    status, doc = await call(admin, "POST", "/api/v1/clients/TEST:GOV:1:nope/catalogue/publish",
                             admin.token("observer"))
    assert (status, doc["type"]) == (403, "admin.forbidden")


async def test_deleting_a_client_removes_it_and_withdraws_its_catalogue(admin: Admin) -> None:
    token = admin.token("security-officer", "service-administrator", "auditor")
    await call(admin, "POST", "/api/v1/clients", token, {"id": PROVIDER})
    await call(admin, "POST", "/api/v1/clients/TEST:GOV:1:register/service-descriptions",
               token, {"type": "OPENAPI3", "url": "http://127.0.0.1:9/openapi.json",
                       "document": OPENAPI, "service_code": "persons"})
    status, doc = await call(admin, "DELETE", "/api/v1/clients/TEST:GOV:1:register",
                             admin.token("service-administrator"))
    assert (status, doc["type"]) == (403, "admin.forbidden")
    status, doc = await call(admin, "DELETE", "/api/v1/clients/TEST:GOV:1:register", token)
    assert (status, doc) == (200, {"id": PROVIDER, "unregistration": None})
    assert (await call(admin, "GET", "/api/v1/clients", token)) == (200, [])
    assert (await call(admin, "GET", "/api/v1/services/TEST:GOV:1:register:persons",
                       token))[0] == 404
    # its (now empty) list is due at the registry
    row = admin.store.publication(ClientId.parse(PROVIDER))
    assert row.wanted > row.published and row.state != "published"
    status, audit = await call(admin, "GET", "/api/v1/audit", token)
    assert audit[-1]["action"] == "delete_client"
    status, doc = await call(admin, "DELETE", "/api/v1/clients/TEST:GOV:1:register", token)
    assert (status, doc["type"]) == (404, "admin.not_found")
    status, doc = await call(admin, "DELETE", "/api/v1/clients/TEST:GOV:1", token)
    assert (status, doc["type"]) == (409, "admin.conflict")
    assert "owns this server" in doc["message"]


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/api/v1/clients", {"id": PROVIDER, "extra": 1}, "admin.bad_request"),
        ("/api/v1/clients", {"id": "TEST/GOV"}, "admin.bad_request"),
        ("/api/v1/clients", [], "admin.bad_request"),
        ("/api/v1/clients/TEST:GOV:1:nope/service-descriptions",
         {"type": "REST", "url": "http://is.example/", "service_code": "s"}, "admin.not_found"),
        ("/api/v1/services/TEST:GOV:1:register:x/access-rights", {"subject": PROVIDER},
         "admin.not_found"),
        ("/api/v1/services/bad/access-rights", {"subject": PROVIDER}, "admin.bad_request"),
    ],
)
async def test_bad_requests(admin: Admin, path: str, body: Any, code: str) -> None:
    token = admin.token("security-officer", "service-administrator")
    status, doc = await call(admin, "POST", path, token, body)
    assert doc["type"] == code and status in (400, 404)


# The run takes tens of seconds, and far longer on a loaded machine (or beside another
# xdist worker): allow for that beyond the 120 s default.
@pytest.mark.timeout(300)
async def test_schemathesis_finds_no_server_error(admin: Admin, tmp_path: Path) -> None:
    """A bounded run of schemathesis against the OpenAPI document: no 5xx, whatever it
    sends, with a token that may do everything."""
    st = Path(sys.executable).with_name("st")
    if not st.exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    token = admin.token("security-officer", "service-administrator", "auditor",
                        "system-administrator")
    proc = await asyncio.create_subprocess_exec(
        str(st), "run", f"{admin.url}/api/v1/openapi.json", "--checks", "not_a_server_error",
        "--max-examples", "8", "--seed", "1", "--generation-database", "none",
        "--phases", "examples,coverage,fuzzing", "--header", f"Authorization: Bearer {token}",
        "--report-dir", str(tmp_path), "--no-color",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    finally:
        if proc.returncode is None:  # timed out: no process or pipe outlives the test
            proc.kill()
            await proc.communicate()
    assert proc.returncode == 0, out.decode(errors="replace")[-4000:]


WSDL = """<?xml version="1.0"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
    xmlns:xrd="http://x-road.eu/xsd/xroad.xsd" name="t" targetNamespace="urn:t">
  <wsdl:binding name="b" type="x">
    <wsdl:operation name="getRandom"><xrd:version>v1</xrd:version></wsdl:operation>
    <wsdl:operation name="helloService"/>
  </wsdl:binding>
</wsdl:definitions>"""


async def test_wsdl_and_rest_descriptions_refresh_and_disable(admin: Admin) -> None:
    token = admin.token("security-officer", "service-administrator")
    await call(admin, "POST", "/api/v1/clients", token, {"id": PROVIDER})
    base = "/api/v1/clients/TEST:GOV:1:register/service-descriptions"
    status, desc = await call(admin, "POST", base, token, {
        "type": "WSDL", "url": "http://127.0.0.1:9/service.wsdl", "document": WSDL,
        "service_url": "http://127.0.0.1:9/soap"})
    assert status == 201, desc
    assert sorted(s["code"] for s in desc["services"]) == ["getRandom", "helloService"]
    status, rest = await call(admin, "POST", base, token, {
        "type": "REST", "url": "http://127.0.0.1:9/api", "service_code": "api",
        "timeout": 3})
    assert status == 201 and rest["services"][0]["timeout"] == 3
    status, doc = await call(admin, "POST", base, token, {
        "type": "WSDL", "url": "http://127.0.0.1:9/x.wsdl",
        "document": '<!DOCTYPE x [<!ENTITY e "e">]><x/>'})
    assert (status, doc["type"]) == (422, "admin.invalid_description")
    # a description that cannot be downloaded is a clear error, not a hang or a 500
    status, doc = await call(admin, "POST", base, token, {
        "type": "OPENAPI3", "url": "http://127.0.0.1:9/openapi.json", "service_code": "x"})
    assert (status, doc["type"]) == (422, "admin.description_unreachable")
    status, doc = await call(admin, "PATCH", f"/api/v1/service-descriptions/{rest['id']}",
                             token, {"enabled": False})
    assert (status, doc["enabled"]) == (200, False)
    svc = admin.directory.service(ServiceId(ClientId.parse(PROVIDER), "api"))
    assert svc is not None and not svc.enabled
    status, _ = await call(admin, "DELETE", f"/api/v1/service-descriptions/{desc['id']}",
                           token)
    assert status == 204
    assert admin.directory.service(ServiceId(ClientId.parse(PROVIDER), "getRandom")) is None
