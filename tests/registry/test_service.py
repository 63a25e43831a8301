"""Tests of the registry's data and its administration rules, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from certs.ca import DevCA, IssuedCredentials
from registry.db import (
    VERSION_TABLE,
    create_db_engine,
    current_revision,
    head_revision,
    migrate,
)
from registry.models import AuditRow
from registry.service import RegistryService
from xchange.errors import AdminError
from xchange.identifiers import ClientId, SecurityServerId

M1 = ClientId("TEST", "GOV", "1001")
M2 = ClientId("TEST", "GOV", "1002")
SS1 = SecurityServerId(M1, "ss1")


@pytest.fixture
def svc(reg_engine: Engine, dev_ca: DevCA, pki_now: datetime) -> Iterator[RegistryService]:
    with Session(reg_engine) as session:
        s = RegistryService(session, actor="officer", now=pki_now)
        s.initialise("TEST")
        s.add_ca("TEST CA", dev_ca.certificate, ["http://127.0.0.1:9/ocsp"])
        s.create_member_class("GOV", "government")
        s.create_member(M1.member_class, M1.member_code, "Ministry One")
        s.create_member(M2.member_class, M2.member_code, "Agency Two")
        session.commit()
        yield s


def code_of(exc: pytest.ExceptionInfo[AdminError]) -> str:
    return exc.value.code


def test_migrations_reach_head_and_are_idempotent(reg_engine: Engine) -> None:
    assert current_revision(reg_engine) == head_revision()
    migrate(reg_engine)
    assert current_revision(reg_engine) == head_revision()


def test_the_security_servers_migrations_are_a_history_of_their_own(
    db_url: str,
) -> None:
    """Registry and configuration store in one database.  Both histories start at revision
    ``0001``: with one shared version table, the registry would take the store's ``0001`` for
    its own and never create its tables."""
    import sqlalchemy as sa

    from security_server.migrate import upgrade

    engine = create_db_engine(db_url)
    try:
        upgrade(engine)
        assert current_revision(engine) is None
        migrate(engine)
        assert current_revision(engine) == head_revision()
        tables = set(sa.inspect(engine).get_table_names())
        assert {VERSION_TABLE, "ss_alembic_version", "members", "ss_client"} <= tables
        assert "alembic_version" not in tables
    finally:
        engine.dispose()


def test_migration_matches_the_models(reg_engine: Engine) -> None:
    """The shipped migrations create exactly what the models describe."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    from registry.models import REGISTRY_TABLES

    with reg_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={
            "include_name": lambda name, kind, _p: kind != "table" or name in REGISTRY_TABLES,
            "include_object": lambda _o, name, kind, _r, _c: (
                kind != "table" or name in REGISTRY_TABLES),
            "compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_members_subsystems_and_listing(svc: RegistryService) -> None:
    svc.create_subsystem(M1, "alpha")
    svc.create_subsystem(M1, "beta")
    member = svc.get_member(M1)
    assert member["subsystems"] == ["alpha", "beta"]
    assert member["name"] == "Ministry One"
    page = svc.list_members(limit=1, offset=1)
    assert (page.total, [m["id"] for m in page.items]) == (2, [str(M2)])
    assert [m["id"] for m in svc.list_members(q="agency").items] == [str(M2)]
    assert svc.list_members(q="%").total == 0  # LIKE metacharacters are literal
    with pytest.raises(AdminError) as info:
        svc.create_member("GOV", "1001", "Again")
    assert code_of(info) == "admin.conflict"
    with pytest.raises(AdminError) as info:
        svc.create_member("NOPE", "1", "No class")
    assert code_of(info) == "admin.bad_request"
    with pytest.raises(AdminError) as info:
        svc.create_subsystem(ClientId("TEST", "GOV", "404"), "x")
    assert code_of(info) == "admin.not_found"


def test_server_auth_cert_and_clients(
    svc: RegistryService, issue_server_auth: Callable[..., IssuedCredentials]
) -> None:
    svc.create_subsystem(M1, "alpha")
    svc.create_subsystem(M2, "gamma")
    svc.create_server(SS1, "127.0.0.1:5500")
    auth = issue_server_auth(str(SS1))
    server = svc.add_auth_cert(SS1, auth.certificate)
    assert len(server["auth_cert_hashes"]) == 1
    svc.add_client(SS1, M1.subsystem_of("alpha"))
    svc.add_client(SS1, M2.subsystem_of("gamma"))
    server = svc.set_client_enabled(SS1, M2.subsystem_of("gamma"), False)
    assert server["clients"] == [{"id": "TEST/GOV/1001/alpha", "enabled": True},
                                 {"id": "TEST/GOV/1002/gamma", "enabled": False}]
    svc.change_address(SS1, "ss1.example:5500")
    assert svc.get_server(SS1)["address"] == "ss1.example:5500"

    with pytest.raises(AdminError) as info:
        svc.add_auth_cert(SS1, auth.certificate)
    assert code_of(info) == "admin.conflict"
    other = issue_server_auth("TEST/GOV/1002/ss2")
    with pytest.raises(AdminError, match="not for TEST/GOV/1001/ss1"):
        svc.add_auth_cert(SS1, other.certificate)
    with pytest.raises(AdminError, match="owns security servers"):
        svc.delete_member(M1)
    with pytest.raises(AdminError, match="still a client"):
        svc.delete_subsystem(M1.subsystem_of("alpha"))
    with pytest.raises(AdminError) as info:
        svc.change_address(SS1, "no-port")
    assert code_of(info) == "admin.bad_request"

    moved = svc.change_owner(SS1, M2)
    assert moved["id"] == "TEST/GOV/1002/ss1"
    svc.delete_server(SecurityServerId(M2, "ss1"))
    assert svc.list_servers().total == 0


def test_auth_cert_must_chain_to_an_approved_ca(
    svc: RegistryService, tmp_path: Path, pki_now: datetime
) -> None:
    svc.create_server(SS1, "127.0.0.1:5500")
    rogue_ca = DevCA.create(tmp_path / "rogue", "TEST", now=pki_now)
    rogue = rogue_ca.issue_key_and_cert(tmp_path / "ss1", "auth", SS1, member_name="M",
                                        now=pki_now)
    with pytest.raises(AdminError, match="does not chain"):
        svc.add_auth_cert(SS1, rogue.certificate)


def test_groups_services_settings_and_audit(svc: RegistryService) -> None:
    svc.create_subsystem(M1, "alpha")
    svc.create_group("owners", "server owners")
    svc.add_group_member("owners", M1)
    svc.add_group_member("owners", M1.subsystem_of("alpha"))
    with pytest.raises(AdminError, match="not a registered"):
        svc.add_group_member("owners", M1.subsystem_of("nope"))
    assert svc.get_group("owners")["members"] == ["TEST/GOV/1001", "TEST/GOV/1001/alpha"]

    svc.create_service(M1.subsystem_of("alpha"), "persons", "REST", "people",
                       '{"openapi": "3.1.0"}')
    assert svc.list_services(provider=M1.subsystem_of("alpha")).total == 1
    assert svc.list_services(kind="SOAP").total == 0
    svc.update_service(M1.subsystem_of("alpha"), "persons", {"description": "persons"})
    assert svc.get_service(M1.subsystem_of("alpha"), "persons")["description"] == "persons"

    with pytest.raises(AdminError) as info:
        svc.update_settings({"conf_expiry_seconds": 0})
    assert code_of(info) == "admin.bad_request"
    assert svc.update_settings({"conf_expiry_seconds": 300})["conf_expiry_seconds"] == 300

    svc.delete_subsystem(M1.subsystem_of("alpha"))
    assert svc.get_group("owners")["members"] == ["TEST/GOV/1001"]
    assert svc.list_services().total == 0

    svc.session.commit()
    rows = svc.session.exec(select(AuditRow).order_by(AuditRow.id)).all()  # type: ignore[arg-type]
    actions = [r.action for r in rows]
    assert actions[:5] == ["settings.init", "ca.add", "member_class.create", "member.create",
                           "member.create"]
    assert "settings.update" in actions and "subsystem.delete" in actions
    update = next(r for r in rows if r.action == "settings.update")
    assert update.before is not None and update.after is not None
    assert (update.before["conf_expiry_seconds"], update.after["conf_expiry_seconds"]) == (
        600, 300)
    assert all(r.actor == "officer" and r.at.tzinfo is not None for r in rows)
    assert svc.list_audit(action="member.create").total == 2


def test_times_come_back_aware(svc: RegistryService) -> None:
    created = svc.get_member(M1)["created_at"]
    assert created.endswith("Z")
    assert datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) <= (
        svc.now + timedelta(seconds=1))
