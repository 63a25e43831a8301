"""Tests of registry.publisher: what is built, signed and written, and when; key rotation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from registry.config import ConfigError, RegistryConfig
from registry.db import create_db_engine
from registry.keys import KeyStore
from registry.publisher import ANCHOR_FILE, CONF_FILE, VERSION_FILE, Publisher
from registry.service import RegistryService
from tests.registry.conftest import SERVER, MakeRegistry, load_config
from xchange.certificates import cert_sha256
from xchange.globalconf import ConfigurationAnchor, TrustedGlobalConf
from xchange.identifiers import ClientId, GlobalGroupId, SecurityServerId


@pytest.fixture
def config(tmp_path: Path, make_registry: MakeRegistry) -> RegistryConfig:
    return load_config(make_registry(tmp_path))


@pytest.fixture
def publisher(config: RegistryConfig) -> Iterator[Publisher]:
    engine = create_db_engine(config.database_url)
    yield Publisher(config, engine, KeyStore.from_config(config))
    engine.dispose()


def _change(config: RegistryConfig, now: datetime, action: str, *args: object) -> object:
    engine = create_db_engine(config.database_url)
    try:
        with Session(engine) as session:
            result = getattr(RegistryService(session, actor="test", now=now), action)(*args)
            session.commit()
            return result
    finally:
        engine.dispose()


def _trusted(config: RegistryConfig) -> TrustedGlobalConf:
    anchor = ConfigurationAnchor.from_json((config.publish_dir / ANCHOR_FILE).read_bytes())
    return TrustedGlobalConf(anchor)


def test_publish_writes_a_verifiable_document(
    config: RegistryConfig, publisher: Publisher, pki_now: datetime
) -> None:
    t0 = pki_now + timedelta(microseconds=250000)
    publication = publisher.publish(t0)
    out = config.publish_dir
    assert (out / CONF_FILE).read_bytes() == publication.signed
    assert (out / ANCHOR_FILE).read_bytes() == publication.anchor
    assert (out / VERSION_FILE).read_text() == "1\n"
    assert not list(out.glob(".*.tmp"))

    trusted = _trusted(config)
    assert trusted.anchor.download_url == config.download_url
    conf = trusted.update((out / CONF_FILE).read_bytes(), now=t0)
    assert conf == publication.conf
    assert conf.signing_keys == trusted.anchor.certificates
    assert (conf.version, conf.generated_at) == (1, pki_now)
    assert conf.expires_at == conf.generated_at + timedelta(seconds=600)
    ss1 = conf.server(SecurityServerId.parse(SERVER))
    assert ss1 is not None and len(ss1.auth_cert_hashes) == 1
    assert ss1.clients == (ClientId.parse("TEST/GOV/1234/REGISTRY"),)
    assert conf.approved_cas[0].ocsp_url is None
    assert conf.members_of_group(GlobalGroupId.parse("TEST/owners")) == {
        ClientId.parse("TEST/GOV/1234")}
    assert [t.name for t in conf.approved_tsas] == ["TEST TSA"]


def test_versions_only_go_up(config: RegistryConfig, publisher: Publisher,
                             pki_now: datetime) -> None:
    assert publisher.publish(pki_now).conf.version == 1
    assert publisher.publish(pki_now).conf.version == 2
    # A database restored from an older backup: the published counter still wins.
    (config.publish_dir / VERSION_FILE).write_text("41\n")
    assert publisher.publish(pki_now).conf.version == 42
    (config.publish_dir / VERSION_FILE).write_text("garbage")
    with pytest.raises(ConfigError, match="not a version number"):
        publisher.publish(pki_now)
    assert json.loads((config.publish_dir / CONF_FILE).read_bytes())["signed"]["version"] == 42


def test_tick_publishes_on_change_and_on_interval(
    config: RegistryConfig, publisher: Publisher, pki_now: datetime
) -> None:
    first = publisher.tick(pki_now)
    assert first is not None and first.conf.version == 1
    assert publisher.tick(pki_now + timedelta(seconds=1)) is None  # nothing changed
    _change(config, pki_now, "rename_member", ClientId.parse("TEST/COM/5678"), "Renamed Ltd")
    changed = publisher.tick(pki_now + timedelta(seconds=2))
    assert changed is not None
    assert changed.conf.member_name(ClientId.parse("TEST/COM/5678")) == "Renamed Ltd"
    assert publisher.tick(pki_now + timedelta(seconds=3)) is None
    due = publisher.tick(pki_now + timedelta(seconds=63))  # conf_refresh_seconds = 60
    assert due is not None and due.conf.version == 3


def test_a_disabled_client_and_a_server_without_certificates_are_not_published(
    config: RegistryConfig, publisher: Publisher, pki_now: datetime
) -> None:
    server = SecurityServerId.parse(SERVER)
    _change(config, pki_now, "set_client_enabled", server,
            ClientId.parse("TEST/GOV/1234/REGISTRY"), False)
    conf = publisher.publish(pki_now).conf
    ss1 = conf.server(server)
    assert ss1 is not None and ss1.clients == ()
    _change(config, pki_now, "create_server", SecurityServerId.parse("TEST/COM/5678/ss9"),
            "127.0.0.1:5599")
    conf = publisher.publish(pki_now).conf
    assert conf.server(SecurityServerId.parse("TEST/COM/5678/ss9")) is None


def test_key_rotation_through_publications(
    config: RegistryConfig, publisher: Publisher, pki_now: datetime
) -> None:
    """announce (old signs, both listed) -> activate (both sign) -> retire old (new alone)."""
    publisher.publish(pki_now)
    trusted = _trusted(config)
    old_id = cert_sha256(trusted.anchor.certificates[0])
    trusted.update(publisher.publish(pki_now).signed, now=pki_now)

    new_cert = KeyStore.from_config(config).new_conf_key("TEST", pki_now)
    new_id = cert_sha256(new_cert)
    added = _change(config, pki_now, "add_conf_key", new_cert)
    assert isinstance(added, dict) and added["state"] == "announced"

    def step() -> list[str]:
        data = publisher.publish(pki_now).signed
        trusted.update(data, now=pki_now)
        return [s["keyid"] for s in json.loads(data)["signatures"]]

    assert step() == [old_id]
    assert {cert_sha256(c) for c in trusted.trusted_keys} == {old_id, new_id}
    _change(config, pki_now, "activate_conf_key", new_id)
    assert sorted(step()) == sorted([old_id, new_id])
    _change(config, pki_now, "retire_conf_key", old_id)
    assert step() == [new_id]
    assert [cert_sha256(c) for c in trusted.trusted_keys] == [new_id]
    anchor = ConfigurationAnchor.from_json((config.publish_dir / ANCHOR_FILE).read_bytes())
    assert [cert_sha256(c) for c in anchor.certificates] == [new_id]


def test_a_missing_private_key_stops_publishing_and_keeps_the_files(
    config: RegistryConfig, publisher: Publisher, pki_now: datetime
) -> None:
    good = publisher.publish(pki_now).signed
    for key in config.keys_dir.glob("conf-sign-*.key"):
        key.unlink()
    with pytest.raises(ConfigError, match="configuration-signing key"):
        publisher.publish(pki_now)
    assert (config.publish_dir / CONF_FILE).read_bytes() == good
    assert publisher.latest is not None and publisher.latest.signed == good


def test_the_last_active_key_cannot_be_retired(config: RegistryConfig,
                                                pki_now: datetime) -> None:
    from xchange.errors import AdminError

    engine = create_db_engine(config.database_url)
    try:
        with Session(engine) as session:
            svc = RegistryService(session, actor="test", now=datetime.now(UTC))
            (only,) = svc.list_conf_keys()
            with pytest.raises(AdminError, match="last active"):
                svc.retire_conf_key(only["key_id"])
            with pytest.raises(AdminError, match="not announced"):
                svc.activate_conf_key(only["key_id"])
    finally:
        engine.dispose()
