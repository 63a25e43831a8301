"""The configuration store on SQLite and PostgreSQL: migrations, clients, descriptions,
endpoints, access rights, local groups, the audit log, the TOML seed and the directory
snapshot the proxies read (invalidated on change)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from security_server.config import ListenConfig, SecurityServerConfig, ServiceConfig
from security_server.directory import Directory, StoreDirectory, seed_from_config
from security_server.migrate import upgrade
from security_server.store import ServerStore, ServiceSpec, StoreError
from xchange.access import ALL_ENDPOINTS, AccessRule, AccessRules, EndpointPattern, LocalGroupId
from xchange.errors import AccessDeniedError
from xchange.identifiers import ClientId, GlobalGroupId, SecurityServerId, ServiceId

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PROVIDER = ClientId("TEST", "GOV", "1", "register")
CONSUMER = ClientId("TEST", "GOV", "2", "benefits")
OTHER = ClientId("TEST", "GOV", "2", "analytics")
PERSONS = ServiceId(PROVIDER, "persons")
GET_ONE = EndpointPattern("GET", "/persons/*")
DELETE_ONE = EndpointPattern("DELETE", "/persons/*")
NO_GROUPS: dict[GlobalGroupId, frozenset[ClientId]] = {}


def groups(group: GlobalGroupId) -> frozenset[ClientId]:
    return NO_GROUPS.get(group, frozenset())


@pytest.fixture
def store(engine: Engine) -> ServerStore:
    upgrade(engine)
    return ServerStore(engine)


def add_persons(store: ServerStore) -> int:
    store.add_client(PROVIDER, actor="alice", at=AT)
    desc = store.add_description(
        PROVIDER, "OPENAPI3", "http://is/openapi.json", "{}",
        [ServiceSpec("persons", "http://is/", (GET_ONE, DELETE_ONE))], actor="alice", at=AT)
    assert desc.id is not None
    return desc.id


def test_migrations_are_idempotent_and_create_the_tables(engine: Engine) -> None:
    upgrade(engine)
    upgrade(engine)
    tables = set(sa.inspect(engine).get_table_names())
    assert {"ss_client", "ss_service", "ss_endpoint", "ss_access_right", "ss_admin_audit",
            "ss_alembic_version", "message_log"} <= tables


def test_grant_endpoint_and_revoke(store: ServerStore) -> None:
    add_persons(store)
    directory = Directory(StoreDirectory(store, recheck_seconds=3600))
    with pytest.raises(AccessDeniedError):
        directory.check_access(CONSUMER, PERSONS, "GET", "/persons/1", groups)
    store.grant(PERSONS, str(CONSUMER), GET_ONE, actor="alice", at=AT)
    directory.invalidate()
    directory.check_access(CONSUMER, PERSONS, "GET", "/persons/1", groups)
    with pytest.raises(AccessDeniedError):
        directory.check_access(CONSUMER, PERSONS, "DELETE", "/persons/1", groups)
    store.revoke(PERSONS, str(CONSUMER), GET_ONE, actor="bob", at=AT)
    directory.invalidate()
    with pytest.raises(AccessDeniedError):
        directory.check_access(CONSUMER, PERSONS, "GET", "/persons/1", groups)
    actions = [(a.actor, a.action) for a in store.audit()]
    assert actions[-2:] == [("alice", "grant"), ("bob", "revoke")]


def test_a_change_by_another_process_is_seen_at_the_next_recheck(store: ServerStore) -> None:
    add_persons(store)
    clock = [0.0]
    directory = Directory(StoreDirectory(store, recheck_seconds=2, monotonic=lambda: clock[0]))
    with pytest.raises(AccessDeniedError):
        directory.check_access(CONSUMER, PERSONS, "GET", "/persons/1", groups)
    ServerStore(store.engine).grant(PERSONS, str(CONSUMER), ALL_ENDPOINTS, actor="x", at=AT)
    with pytest.raises(AccessDeniedError):  # cached for up to recheck_seconds
        directory.check_access(CONSUMER, PERSONS, "GET", "/persons/1", groups)
    clock[0] = 2.5
    directory.check_access(CONSUMER, PERSONS, "GET", "/persons/1", groups)


def test_grant_needs_an_existing_endpoint_service_and_group(store: ServerStore) -> None:
    add_persons(store)
    with pytest.raises(StoreError) as info:
        store.grant(PERSONS, str(CONSUMER), EndpointPattern("POST", "/x"), actor="a", at=AT)
    assert info.value.code == "admin.not_found"
    with pytest.raises(StoreError):
        store.grant(ServiceId(PROVIDER, "nope"), str(CONSUMER), ALL_ENDPOINTS, actor="a",
                    at=AT)
    with pytest.raises(StoreError):
        store.grant(PERSONS, f"local:{PROVIDER}:friends", ALL_ENDPOINTS, actor="a", at=AT)
    with pytest.raises(StoreError):  # another client's local group
        store.grant(PERSONS, f"local:{CONSUMER}:friends", ALL_ENDPOINTS, actor="a", at=AT)
    store.grant(PERSONS, str(CONSUMER), GET_ONE, actor="a", at=AT)
    with pytest.raises(StoreError) as info:
        store.grant(PERSONS, str(CONSUMER), GET_ONE, actor="a", at=AT)
    assert info.value.code == "admin.conflict"


def test_local_groups(store: ServerStore) -> None:
    add_persons(store)
    group = LocalGroupId(PROVIDER, "friends")
    store.add_local_group(group, "our friends", actor="a", at=AT)
    store.set_group_member(group, OTHER, True, actor="a", at=AT)
    store.grant(PERSONS, str(group), GET_ONE, actor="a", at=AT)
    directory = Directory(StoreDirectory(store, recheck_seconds=0))
    directory.check_access(OTHER, PERSONS, "GET", "/persons/1", groups)
    with pytest.raises(AccessDeniedError):
        directory.check_access(CONSUMER, PERSONS, "GET", "/persons/1", groups)
    store.set_group_member(group, OTHER, False, actor="a", at=AT)
    with pytest.raises(AccessDeniedError):
        directory.check_access(OTHER, PERSONS, "GET", "/persons/1", groups)
    store.delete_local_group(group, actor="a", at=AT)
    assert store.access_rights() == []


def test_refresh_keeps_surviving_rights_and_drops_the_rest(store: ServerStore) -> None:
    desc_id = add_persons(store)
    store.grant(PERSONS, str(CONSUMER), GET_ONE, actor="a", at=AT)
    store.grant(PERSONS, str(OTHER), DELETE_ONE, actor="a", at=AT)
    store.update_service(PERSONS, url="http://is2/", timeout=5, tls_verify=False, actor="a",
                         at=AT)
    store.refresh_description(
        desc_id, "{}", [ServiceSpec("persons", "http://ignored/", (GET_ONE,)),
                        ServiceSpec("cars", "http://is/", ())], actor="a", at=AT)
    rights = {(r.subject, r.method) for r in store.access_rights()}
    assert rights == {(str(CONSUMER), "GET")}
    svc = store.service(PERSONS)
    assert (svc.url, svc.timeout, svc.tls_verify) == ("http://is2/", 5, False)
    assert [e.path for e in store.endpoints(ServiceId(PROVIDER, "cars"))] == []
    store.refresh_description(desc_id, "{}", [], actor="a", at=AT)
    assert store.services() == [] and store.access_rights() == []


def test_deleting_a_client_removes_everything_of_it(store: ServerStore) -> None:
    add_persons(store)
    store.grant(PERSONS, str(CONSUMER), GET_ONE, actor="a", at=AT)
    store.add_local_group(LocalGroupId(PROVIDER, "g"), "", actor="a", at=AT)
    store.add_client_cert(PROVIDER, "ab" * 32, "PEM", actor="a", at=AT)
    store.delete_client(PROVIDER, actor="a", at=AT)
    assert store.clients() == [] and store.services() == [] and store.access_rights() == []
    assert store.local_groups() == []


def test_reserved_and_duplicate_service_codes(store: ServerStore) -> None:
    add_persons(store)
    for code in ("listMethods", "getOpenAPI"):
        with pytest.raises(StoreError):
            store.add_description(PROVIDER, "REST", "http://is/", None,
                                  [ServiceSpec(code, "http://is/")], actor="a", at=AT)
    with pytest.raises(StoreError) as info:
        store.add_description(PROVIDER, "REST", "http://is/", None,
                              [ServiceSpec("persons", "http://is/")], actor="a", at=AT)
    assert info.value.code == "admin.conflict"
    assert len(store.descriptions()) == 1  # the failed change left nothing behind


def test_disabled_description_and_client_show_in_the_snapshot(store: ServerStore) -> None:
    desc_id = add_persons(store)
    directory = Directory(StoreDirectory(store, recheck_seconds=0))
    assert directory.client(PROVIDER) is not None
    svc = directory.service(PERSONS)
    assert svc is not None and svc.enabled and svc.endpoints == (DELETE_ONE, GET_ONE)
    store.update_description(desc_id, enabled=False, actor="a", at=AT)
    store.update_client(PROVIDER, enabled=False, actor="a", at=AT)
    svc = directory.service(PERSONS)
    assert svc is not None and not svc.enabled
    assert directory.client(PROVIDER) is None


def config(base: Path) -> SecurityServerConfig:
    return SecurityServerConfig(
        server_id=SecurityServerId.parse("TEST/GOV/1/ss1"),
        client_proxy=ListenConfig("127.0.0.1", 1), server_proxy=ListenConfig("127.0.0.1", 2),
        auth_key=base, auth_cert=base, signing_keys=(), anchor=base, state_dir=base,
        database_url="sqlite://", clients=(PROVIDER,),
        services=(ServiceConfig(PERSONS, "http://is/", 7.0),),
        access=AccessRules([AccessRule(PERSONS, CONSUMER)]),
        is_connection={PROVIDER: "HTTP"},
    )


def test_seed_from_config_imports_once(store: ServerStore, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert seed_from_config(store, cfg, AT)
    assert not seed_from_config(store, cfg, AT)
    assert {c.id: c.is_connection for c in store.clients()} == {
        str(PROVIDER): "HTTP", "TEST/GOV/1": "HTTPS_AUTH"}
    assert store.service(PERSONS).timeout == 7.0
    directory = Directory(StoreDirectory(store, recheck_seconds=0))
    directory.check_access(CONSUMER, PERSONS, "POST", "/any/path", groups)
    # once imported, a revocation sticks across restarts
    store.revoke(PERSONS, str(CONSUMER), ALL_ENDPOINTS, actor="a", at=AT)
    seed_from_config(store, cfg, AT)
    with pytest.raises(AccessDeniedError):
        directory.check_access(CONSUMER, PERSONS, "POST", "/any/path", groups)
