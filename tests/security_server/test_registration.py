"""Deleting a client through the admin API sends its deletion request to the registry first:
against a real registry on a socket (signed requests, the registry's checks, an officer's
approval), with the global configuration that registry publishes; and what happens when the
registry is down or refuses, the server lacks the member's key, the client is not registered
there, or no configuration is in force."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from certs.ca import DevCA, IssuedCredentials
from security_server.admin_api import (
    AdminContext,
    audience_for,
    create_admin_app,
    openapi_document,
)
from security_server.db import create_db_engine
from security_server.directory import Directory, StoreDirectory
from security_server.migrate import upgrade
from security_server.registration import ClientUnregistration, ManagementSender
from security_server.store import ServerStore
from tests.registry.conftest import LiveRegistry, live_registry, make_registry  # noqa: F401
from xchange.adminauth import issue_token
from xchange.globalconf import ConfigurationAnchor, GlobalConf, TrustedGlobalConf
from xchange.identifiers import ClientId, SecurityServerId
from xchange.signing import SigningIdentity
from xchange_cli.federation import free_port
from xchange_cli.registry_admin import api_call

SERVER = SecurityServerId.parse("TEST/GOV/1234/ss1")  # the live registry's server
CLIENT = ClientId.parse("TEST/GOV/1234/REGISTRY")  # ... registered there as its client
LOCAL_ONLY = ClientId.parse("TEST/GOV/1234/drafts")  # a subsystem added here only
OFFICER = ("security-officer",)


def now() -> datetime:
    return datetime.now(UTC)


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return bytes(resp.read())


@pytest.fixture(scope="module")
def conf(live_registry: LiveRegistry) -> GlobalConf:  # noqa: F811
    """The global configuration the registry publishes, verified against its anchor."""
    anchor = ConfigurationAnchor.from_json(_fetch(live_registry.url + "/anchor"))
    return TrustedGlobalConf(anchor).update(_fetch(live_registry.url + "/globalconf"),
                                            now=now())


@pytest.fixture(scope="module")
def identity(issue_member_sign: Callable[..., IssuedCredentials]) -> SigningIdentity:
    creds = issue_member_sign(str(CLIENT.member))
    return SigningIdentity(CLIENT.member, creds.key, (creds.certificate,))


@dataclass
class Admin:
    url: str
    key: ec.EllipticCurvePrivateKey
    store: ServerStore

    async def delete(self, client: ClientId, query: str = "") -> tuple[int, Any]:
        token = issue_token(self.key, subject="sofia", roles=OFFICER,
                            audience=audience_for(str(SERVER)), issued_at=now(),
                            lifetime=timedelta(hours=1))
        path = f"/api/v1/clients/{str(client).replace('/', ':')}{query}"
        async with aiohttp.ClientSession() as s, s.delete(
                self.url + path, headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, await resp.json()

    def clients(self) -> set[str]:
        return {c.id for c in self.store.clients()}


MakeAdmin = Callable[..., Any]


@pytest.fixture
async def make_admin(tmp_path: Path) -> AsyncIterator[MakeAdmin]:
    """``await make_admin(registry_url, identities, conf)``: an admin API whose deletions go
    to that registry, signed with ``identities``, judged by ``conf`` (a callable)."""
    cleanup: list[tuple[web.AppRunner, Any]] = []

    async def make(registry: str, identities: dict[ClientId, SigningIdentity],
                   conf: Callable[[], GlobalConf | None]) -> Admin:
        engine = create_db_engine(f"sqlite:///{tmp_path / f'ss{len(cleanup)}.db'}")
        upgrade(engine)
        store = ServerStore(engine)
        for client in (CLIENT, LOCAL_ONLY):
            store.add_client(client, actor="alice", at=now())
        key = ec.generate_private_key(ec.SECP256R1())
        sender = ManagementSender(SERVER, identities, lambda: registry)
        ctx = AdminContext(store, Directory(StoreDirectory(store, recheck_seconds=3600)),
                           (key.public_key(),), audience_for(str(SERVER)), now,
                           server=str(SERVER),
                           unregistration=ClientUnregistration(sender, conf, now))
        runner = web.AppRunner(create_admin_app(ctx), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        cleanup.append((runner, engine))
        return Admin(f"http://127.0.0.1:{runner.addresses[0][1]}", key, store)

    try:
        yield make
    finally:
        for runner, engine in cleanup:
            await runner.cleanup()
            engine.dispose()


def _deletion_requests(registry: LiveRegistry, state: str) -> list[dict[str, Any]]:
    page = api_call(registry.url, registry.token("observer"), "GET",
                    f"/api/v1/management-requests?state={state}")
    return [r for r in page["items"] if r["kind"] == "client_delete"]


def _hosted(registry: LiveRegistry) -> list[str]:
    server = api_call(registry.url, registry.token("observer"), "GET",
                      "/api/v1/security-servers/" + str(SERVER).split("/", 1)[1])
    return [c["id"] if isinstance(c, dict) else c for c in server["clients"]]


def _valid(doc: Any) -> None:
    schema = openapi_document()["components"]["schemas"]["ClientDeletion"]
    jsonschema.Draft202012Validator(schema).validate(doc)


async def test_a_client_the_registry_does_not_know_here_is_deleted_without_a_request(
        make_admin: MakeAdmin, live_registry: LiveRegistry,  # noqa: F811
        identity: SigningIdentity, conf: GlobalConf) -> None:
    admin = await make_admin(live_registry.url, {CLIENT.member: identity}, lambda: conf)
    before = len(_deletion_requests(live_registry, "pending"))
    status, doc = await admin.delete(LOCAL_ONLY)
    assert (status, doc) == (200, {"id": str(LOCAL_ONLY), "unregistration": None})
    _valid(doc)
    # kept at the registry's wish: nothing asked, CLIENT left alone
    status, doc = await admin.delete(CLIENT, "?unregister=false")
    assert (status, doc["unregistration"]) == (200, None)
    assert admin.clients() == set()
    assert len(_deletion_requests(live_registry, "pending")) == before
    assert str(CLIENT) in _hosted(live_registry)


@pytest.mark.parametrize("failure", ["registry down", "no member key", "registry refuses",
                                     "no global configuration"])
async def test_when_the_request_fails_the_client_stays(
        make_admin: MakeAdmin, live_registry: LiveRegistry,  # noqa: F811
        identity: SigningIdentity, conf: GlobalConf, tmp_path: Path, pki_now: datetime,
        failure: str) -> None:
    registry, identities = live_registry.url, {CLIENT.member: identity}
    current: GlobalConf | None = conf
    if failure == "registry down":
        registry = f"http://127.0.0.1:{free_port()}"
    elif failure == "no member key":
        identities = {}
    elif failure == "registry refuses":  # a key from a CA the registry does not trust
        other = DevCA.create(tmp_path / "other-ca", "TEST", now=pki_now)
        creds = other.issue_key_and_cert(tmp_path / "k", "sign", CLIENT.member,
                                         member_name="Ministry of Tests", now=pki_now)
        identities = {CLIENT.member: SigningIdentity(CLIENT.member, creds.key,
                                                     (creds.certificate,))}
    else:
        current = None
    admin = await make_admin(registry, identities, lambda: current)
    before = len(_deletion_requests(live_registry, "pending"))
    status, doc = await admin.delete(CLIENT)
    assert (status, doc["type"]) == (424, "admin.unregistration_failed"), doc
    expected = {"registry down": "could not be reached", "no member key": "no signing key",
                "registry refuses": "registry.management.invalid_signature",
                "no global configuration": "no global configuration"}[failure]
    assert expected in doc["message"]
    assert str(CLIENT) in admin.clients()  # nothing removed
    assert len(_deletion_requests(live_registry, "pending")) == before
    assert str(CLIENT) in _hosted(live_registry)


async def test_deleting_a_registered_client_sends_its_deletion_request(
        make_admin: MakeAdmin, live_registry: LiveRegistry,  # noqa: F811
        identity: SigningIdentity, conf: GlobalConf) -> None:
    """Last in this module: the registry forgets CLIENT."""
    assert conf.is_hosted_on(CLIENT, SERVER)
    admin = await make_admin(live_registry.url, {CLIENT.member: identity}, lambda: conf)
    status, doc = await admin.delete(CLIENT)
    assert status == 200, doc
    _valid(doc)
    sent = doc["unregistration"]
    assert sent["state"] == "pending"  # client deletions wait for an officer
    assert str(CLIENT) not in admin.clients()
    (request,) = [r for r in _deletion_requests(live_registry, "pending")
                  if r["request_id"] == sent["request_id"]]
    assert request["server"] == str(SERVER) and request["member"] == str(CLIENT.member)
    assert request["payload"]["client"] == str(CLIENT)
    assert str(CLIENT) in _hosted(live_registry)
    api_call(live_registry.url, live_registry.token("registration_officer"), "POST",
             f"/api/v1/management-requests/{request['id']}/approve", {"comment": "ok"})
    assert str(CLIENT) not in _hosted(live_registry)
