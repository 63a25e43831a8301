"""Publishing a client's services to the registry's catalogue: what is published, against a
real registry on a socket (signed requests, the registry's checks), and what happens when
the registry is down, refuses, or the server lacks the member's key."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from certs.ca import IssuedCredentials
from security_server.catalogue import (
    CataloguePublisher,
    build_catalogue,
    publication_json,
    stale_catalogues,
)
from security_server.migrate import upgrade
from security_server.store import ServerStore, ServiceSpec
from tests.registry.conftest import LiveRegistry, live_registry, make_registry  # noqa: F401
from xchange.access import EndpointPattern
from xchange.catalogue import CatalogueEntry
from xchange.identifiers import ClientId, SecurityServerId, ServiceId
from xchange.signing import SigningIdentity
from xchange_cli.federation import free_port
from xchange_cli.registry_admin import api_call

SERVER = SecurityServerId.parse("TEST/GOV/1234/ss1")  # the live registry's server
CLIENT = ClientId.parse("TEST/GOV/1234/REGISTRY")  # ... and its client
STRANGER = ClientId.parse("TEST/COM/5678/shop")
OPENAPI = json.dumps({"openapi": "3.0.3",
                      "info": {"title": "Register", "version": "1", "description": "Persons"},
                      "paths": {"/persons/{id}": {"get": {}}, "/persons": {"post": {}}}})
AT = datetime(2026, 1, 1, tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def store(engine: Engine) -> ServerStore:
    upgrade(engine)
    store = ServerStore(engine)
    for client in (CLIENT, STRANGER):
        store.add_client(client, actor="alice", at=AT)
    return store


@pytest.fixture(scope="module")
def identities(issue_member_sign: Callable[..., IssuedCredentials]
               ) -> dict[ClientId, SigningIdentity]:
    out = {}
    for member in (CLIENT.member, STRANGER.member):
        creds = issue_member_sign(str(member))
        out[member] = SigningIdentity(member, creds.key, (creds.certificate,))
    return out


def describe(store: ServerStore, client: ClientId = CLIENT) -> int:
    """An OpenAPI service, a REST service with a hand-made endpoint, a disabled WSDL one."""
    desc = store.add_description(client, "OPENAPI3", "http://is/openapi.json", OPENAPI, [
        ServiceSpec("register-api", "http://is/", (EndpointPattern("GET", "/persons/*"),
                                                   EndpointPattern("POST", "/persons")))],
        actor="alice", at=AT)
    store.add_description(client, "REST", "http://is/ping", None,
                          [ServiceSpec("ping", "http://is/ping")], actor="alice", at=AT)
    store.add_endpoint(ServiceId(client, "ping"), EndpointPattern("GET", "/"), actor="alice",
                       at=AT)
    wsdl = store.add_description(client, "WSDL", "http://is/x.wsdl", "<x/>",
                                 [ServiceSpec("getPerson", "http://is/soap")], actor="alice",
                                 at=AT)
    assert wsdl.id is not None
    store.update_description(wsdl.id, enabled=False, actor="alice", at=AT)
    assert desc.id is not None
    return desc.id


def catalogue(registry: LiveRegistry, client: ClientId = CLIENT) -> dict[str, Any]:
    page = api_call(registry.url, registry.token("observer"), "GET",
                    f"/api/v1/services?provider={client}")
    return {s["code"]: s for s in page["items"]}


def test_the_catalogue_is_the_enabled_services_with_their_endpoints(store: ServerStore) -> None:
    describe(store)
    assert build_catalogue(store, CLIENT) == (
        CatalogueEntry("ping", "REST", endpoints=(EndpointPattern("GET", "/"),)),
        CatalogueEntry("register-api", "OPENAPI", "Register", "Persons",
                       (EndpointPattern("POST", "/persons"),
                        EndpointPattern("GET", "/persons/*"))),
    )
    assert build_catalogue(store, STRANGER) == ()


async def test_changes_are_published_and_a_deletion_withdraws(
        store: ServerStore, identities: dict[ClientId, SigningIdentity],
        live_registry: LiveRegistry) -> None:  # noqa: F811
    publisher = CataloguePublisher(store, SERVER, identities, lambda: live_registry.url,
                                   clock=now)
    desc_id = describe(store)
    await publisher.changed(CLIENT)
    assert publication_json(store.publication(CLIENT))["due"] is True
    await publisher._run_once()
    state = publication_json(store.publication(CLIENT))
    assert (state["state"], state["services"], state["last_error"]) == ("published", 2, None)
    listed = catalogue(live_registry)
    assert set(listed) == {"ping", "register-api"}
    api = listed["register-api"]
    assert (api["type"], api["title"], api["published_by"]) == ("OPENAPI", "Register",
                                                                 str(SERVER))
    assert api["endpoints"] == [{"method": "POST", "path": "/persons"},
                                {"method": "GET", "path": "/persons/*"}]

    # nothing new to say: recorded without a request to the registry
    first = state["request_id"]
    await publisher.changed(CLIENT)
    await publisher._run_once()
    assert publication_json(store.publication(CLIENT))["request_id"] == first

    store.delete_description(desc_id, actor="alice", at=AT)
    await publisher.changed(CLIENT)
    await publisher._run_once()
    assert set(catalogue(live_registry)) == {"ping"}
    assert store.publication(CLIENT).request_id != first


async def test_at_start_what_is_not_known_to_be_published_is_published(
        store: ServerStore, identities: dict[ClientId, SigningIdentity],
        live_registry: LiveRegistry) -> None:  # noqa: F811
    """Services put in the store without the running server (the TOML import, a change or a
    deletion while it was down) are published when the background task starts; an
    unchanged list is not sent again, and a subsystem without services that never published
    sends nothing."""
    def started() -> CataloguePublisher:
        return CataloguePublisher(store, SERVER, identities, lambda: live_registry.url,
                                  clock=now)

    desc_id = describe(store)  # as the TOML import does: no publisher told
    assert stale_catalogues(store) == [CLIENT]  # STRANGER: nothing to say, never said
    publisher = started()
    assert await publisher.mark_stale() == [CLIENT]
    await publisher._run_once()
    assert set(catalogue(live_registry)) == {"ping", "register-api"}
    first = store.publication(CLIENT)
    assert (first.state, first.services) == ("published", 2)

    publisher = started()  # a restart with nothing changed
    assert await publisher.mark_stale() == []
    await publisher._run_once()
    assert store.publication(CLIENT).request_id == first.request_id

    store.delete_description(desc_id, actor="alice", at=AT)  # while the server was down
    publisher = started()
    assert await publisher.mark_stale() == [CLIENT]
    await publisher._run_once()
    assert set(catalogue(live_registry)) == {"ping"}

    store.delete_client(CLIENT, actor="alice", at=AT)  # deleted while down: withdrawn
    publisher = started()
    assert await publisher.mark_stale() == [CLIENT]
    await publisher._run_once()
    assert catalogue(live_registry) == {}
    assert store.publications(CLIENT) == []  # withdrawn: nothing left to keep of it
    assert stale_catalogues(store) == []
    publisher = started()
    assert await publisher.mark_stale() == []


async def test_deleting_a_client_withdraws_its_entries(
        store: ServerStore, identities: dict[ClientId, SigningIdentity],
        live_registry: LiveRegistry) -> None:  # noqa: F811
    """The admin API marks a deleted subsystem due (security_server.admin_api.delete_client);
    its empty list is then published like any other, failures retried; its publication row
    stays while the withdrawal is due, and goes once it is published."""
    url = f"http://127.0.0.1:{free_port()}"  # the registry down at first
    publisher = CataloguePublisher(store, SERVER, identities, lambda: url, clock=now,
                                   retry_seconds=0.0, timeout=5)
    describe(store)
    await publisher.publish(CLIENT)
    url = live_registry.url
    await publisher._run_once()
    assert set(catalogue(live_registry)) == {"ping", "register-api"}
    store.delete_client(CLIENT, actor="alice", at=AT)
    url = f"http://127.0.0.1:{free_port()}"
    await publisher.changed(CLIENT)
    (row,) = store.publications(CLIENT)
    assert row.state == "pending" and publication_json(row)["due"]
    await publisher._run_once()
    (row,) = store.publications(CLIENT)
    assert row.state == "failed" and publication_json(row)["due"]
    assert set(catalogue(live_registry)) == {"ping", "register-api"}
    url = live_registry.url
    await publisher._run_once()
    assert catalogue(live_registry) == {}
    assert store.publications(CLIENT) == []
    assert stale_catalogues(store) == []
    store.add_client(CLIENT, actor="alice", at=AT)  # back again: published afresh
    describe(store)
    await publisher.changed(CLIENT)
    await publisher._run_once()
    assert set(catalogue(live_registry)) == {"ping", "register-api"}
    (row,) = store.publications(CLIENT)
    assert (row.state, row.services) == ("published", 2)


async def test_a_registry_that_is_down_is_retried_until_it_is_up(
        store: ServerStore, identities: dict[ClientId, SigningIdentity],
        live_registry: LiveRegistry) -> None:  # noqa: F811
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    publisher = CataloguePublisher(store, SERVER, identities, lambda: url, clock=now,
                                   retry_seconds=0.0, timeout=5)
    describe(store)
    await publisher.changed(CLIENT)
    await publisher._run_once()
    state = publication_json(store.publication(CLIENT))
    assert state["state"] == "failed" and state["due"]
    assert "could not be reached" in state["last_error"]
    url = live_registry.url
    await publisher._run_once()
    assert store.publication(CLIENT).state == "published"
    assert "register-api" in catalogue(live_registry)


async def test_refusals_and_a_missing_key_are_recorded(
        store: ServerStore, identities: dict[ClientId, SigningIdentity],
        live_registry: LiveRegistry) -> None:  # noqa: F811
    publisher = CataloguePublisher(store, SERVER, identities, lambda: live_registry.url,
                                   clock=now)
    describe(store, STRANGER)
    refused = await publisher.publish(STRANGER)  # not a registered subsystem there
    assert refused.state == "failed"
    assert "registry.management.bad_request" in (refused.last_error or "")
    assert catalogue(live_registry, STRANGER) == {}
    keyless = CataloguePublisher(store, SERVER, {}, lambda: live_registry.url, clock=now)
    failed = await keyless.publish(CLIENT)
    assert failed.state == "failed"
    assert "holds no signing key for TEST/GOV/1234" in (failed.last_error or "")


def test_a_change_made_during_a_publication_stays_due(store: ServerStore) -> None:
    store.catalogue_due(CLIENT)
    covered = store.publication(CLIENT).wanted
    store.catalogue_due(CLIENT)  # while the first one is on its way
    store.publication_result(CLIENT, covered, at=AT, digest="d", services=1, request_id="r")
    row = store.publication(CLIENT)
    assert (row.state, row.wanted > row.published) == ("pending", True)
    store.publication_result(CLIENT, row.wanted, at=AT, error="registry down")
    store.catalogue_due(CLIENT)
    assert store.publication(CLIENT).state == "failed"  # stays failed until one succeeds
    store.publication_result(CLIENT, store.publication(CLIENT).wanted, at=AT, digest="e")
    assert publication_json(store.publication(CLIENT))["due"] is False


def test_a_deleted_clients_row_stays_until_its_withdrawal_is_published(
        store: ServerStore) -> None:
    store.catalogue_due(CLIENT)
    covered = store.publication(CLIENT).wanted  # its services, on their way
    store.delete_client(CLIENT, actor="alice", at=AT)
    store.catalogue_due(CLIENT)  # the withdrawal
    store.publication_result(CLIENT, covered, at=AT, digest="d", services=2)
    assert store.publications(CLIENT)[0].state == "pending"
    store.publication_result(CLIENT, store.publication(CLIENT).wanted, at=AT, error="down")
    assert store.publications(CLIENT)[0].state == "failed"
    store.publication_result(CLIENT, store.publication(CLIENT).wanted, at=AT, digest="e")
    assert store.publications(CLIENT) == []
    store.publication_result(STRANGER, 0, at=AT, digest="e")  # still a client: kept
    assert store.publications(STRANGER)[0].state == "published"


async def test_a_failed_publication_backs_off_unless_something_changed(
        store: ServerStore, identities: dict[ClientId, SigningIdentity]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    publisher = CataloguePublisher(store, SERVER, identities, lambda: url, clock=now,
                                   retry_seconds=3600, timeout=5)
    await publisher.changed(CLIENT)
    await publisher._run_once()
    first = store.publication(CLIENT)
    assert first.state == "failed" and first.tried == first.wanted
    await publisher._run_once()  # nothing new, and not an hour yet: not tried again
    assert store.publication(CLIENT).attempted_at == first.attempted_at
    await publisher.changed(CLIENT)  # a new change is tried at once
    await publisher._run_once()
    again = store.publication(CLIENT)
    assert again.tried == again.wanted == first.wanted + 1
    assert again.attempted_at != first.attempted_at


async def test_an_unregistered_client_has_nothing_left_to_withdraw(
        store: ServerStore, identities: dict[ClientId, SigningIdentity],
        live_registry: LiveRegistry) -> None:  # noqa: F811
    """Unregistered before it was deleted here: the registry refuses its empty list (the
    server no longer hosts it there) and has withdrawn the entries itself; that refusal
    ends the publication instead of failing it forever.  A non-empty list refused the same
    way stays failed."""
    publisher = CataloguePublisher(store, SERVER, identities, lambda: live_registry.url,
                                   clock=now)
    describe(store)
    assert (await publisher.publish(CLIENT)).state == "published"
    officer = live_registry.token("registration_officer")
    link = "/api/v1/security-servers/GOV/1234/ss1/clients"
    api_call(live_registry.url, officer, "DELETE", f"{link}/GOV/1234/REGISTRY")
    try:
        assert catalogue(live_registry) == {}  # the registry withdrew them
        refused = await publisher.publish(CLIENT)
        assert refused.state == "failed"
        assert "registry.management.not_allowed" in (refused.last_error or "")
        store.delete_client(CLIENT, actor="alice", at=AT)
        await publisher.changed(CLIENT)
        await publisher._run_once()
        assert store.publications(CLIENT) == []  # nothing left to withdraw, or to keep
    finally:
        api_call(live_registry.url, officer, "POST", link, {"client": str(CLIENT)})
