"""Tests of registry.publisher: what is built, signed and written, and when."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from certs.keys import write_certificate
from registry.config import ConfigError, RegistryConfig
from registry.publisher import ANCHOR_FILE, CONF_FILE, VERSION_FILE, Publisher
from tests.registry.conftest import LITERAL_HASH, Pki, load_registry, registry_data
from xchange.certificates import cert_sha256
from xchange.globalconf import ConfigurationAnchor, TrustedGlobalConf
from xchange.identifiers import ClientId, GlobalGroupId, SecurityServerId

T0 = datetime(2025, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)


@pytest.fixture
def config(tmp_path: Path, pki: Pki) -> RegistryConfig:
    return load_registry(tmp_path, pki)


def _trusted(config: RegistryConfig) -> TrustedGlobalConf:
    anchor = ConfigurationAnchor.from_json((config.publish_dir / ANCHOR_FILE).read_bytes())
    return TrustedGlobalConf(anchor)


def test_publish_writes_a_verifiable_document(config: RegistryConfig, pki: Pki) -> None:
    publication = Publisher(config).publish(T0)
    out = config.publish_dir
    assert (out / CONF_FILE).read_bytes() == publication.signed
    assert (out / ANCHOR_FILE).read_bytes() == publication.anchor
    assert (out / VERSION_FILE).read_text() == "1\n"
    assert not list(out.glob(".*.tmp"))

    trusted = _trusted(config)
    assert trusted.anchor.certificates == (pki.signing_cert,)
    assert trusted.anchor.download_url == config.download_url
    conf = trusted.update((out / CONF_FILE).read_bytes(), now=T0)
    assert conf == publication.conf
    assert conf.version == 1
    assert conf.generated_at == T0.replace(microsecond=0)
    assert conf.expires_at == conf.generated_at + timedelta(seconds=600)
    ss1 = conf.server(SecurityServerId.parse("DEV/GOV/1234/ss1"))
    assert ss1 is not None
    # Hash from the certificate file first, then the literal one, normalised to lower case.
    assert ss1.auth_cert_hashes == (cert_sha256(pki.auth_cert), LITERAL_HASH.lower())
    assert conf.server_by_auth_cert_hash(cert_sha256(pki.auth_cert)) == ss1
    assert conf.trust_anchors() == (pki.ca_cert,)
    assert conf.approved_cas[0].ocsp_url is None
    assert conf.is_registered(ClientId.parse("DEV/GOV/1234/REGISTRY"))
    assert conf.members_of_group(GlobalGroupId.parse("DEV/owners")) == {
        ClientId.parse("DEV/GOV/1234")
    }
    assert conf.global_groups[0].description == ""


def test_versions_increase_across_restarts(config: RegistryConfig) -> None:
    trusted = None
    for restart in range(3):
        publisher = Publisher(config)
        for step in range(2):
            now = T0 + timedelta(seconds=10 * (2 * restart + step))
            publisher.publish(now)
            trusted = trusted or _trusted(config)
            conf = trusted.update((config.publish_dir / CONF_FILE).read_bytes(), now=now)
            assert conf.version == 2 * restart + step + 1
    assert (config.publish_dir / VERSION_FILE).read_text() == "6\n"


def test_tick_publishes_when_due(config: RegistryConfig) -> None:
    publisher = Publisher(config)
    assert publisher.interval_seconds == 60  # the data file's default conf_refresh_seconds
    first = publisher.tick(T0)
    assert first is not None and first.conf.version == 1
    assert publisher.tick(T0 + timedelta(seconds=59)) is None
    due = publisher.tick(T0 + timedelta(seconds=60))
    assert due is not None and due.conf.version == 2

    # A changed data file is published on the next tick, whatever the interval.
    data = registry_data()
    data["members"][1]["name"] = "Renamed Company"
    config.data_file.write_text(json.dumps(data))
    stat = config.data_file.stat()
    os.utime(config.data_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    changed = publisher.tick(T0 + timedelta(seconds=61))
    assert changed is not None and changed.conf.version == 3
    assert changed.conf.member_name(ClientId.parse("DEV/COM/5678")) == "Renamed Company"
    assert publisher.tick(T0 + timedelta(seconds=62)) is None


def test_configured_interval_overrides_the_data_file(tmp_path: Path, pki: Pki) -> None:
    config = load_registry(tmp_path, pki, regenerate_seconds=0.5)
    publisher = Publisher(config)
    assert publisher.interval_seconds == 0.5
    publisher.tick(T0)
    assert publisher.tick(T0 + timedelta(seconds=0.4)) is None
    assert publisher.tick(T0 + timedelta(seconds=0.5)) is not None


def _unregistered_client(d: dict[str, Any]) -> None:
    d["security_servers"][0]["clients"].append("DEV/GOV/1234/GHOST")


@pytest.mark.parametrize(
    ("break_data", "message"),
    [
        (lambda path: path.write_text("{not json"), "not valid JSON"),
        (lambda path: path.write_text(json.dumps({"instance": "DEV"})), "members"),
        (lambda path: path.unlink(), "cannot read"),
        (lambda path: (path.parent / "certs" / "ca.pem").write_text("garbage"), "DEV CA"),
        (lambda path: _rewrite(path, _unregistered_client), "not registered"),
        (lambda path: _rewrite(path, lambda d: d.update(instance="PROD")), "instance"),
    ],
    ids=["not-json", "schema", "missing", "bad-ca-cert", "unregistered-client", "instance"],
)
def test_bad_data_keeps_the_published_files(
    config: RegistryConfig, break_data: Callable[[Path], object], message: str
) -> None:
    publisher = Publisher(config)
    good = publisher.publish(T0)
    break_data(config.data_file)
    with pytest.raises(ConfigError, match=message):
        publisher.publish(T0 + timedelta(seconds=60))
    assert publisher.latest is good
    assert (config.publish_dir / CONF_FILE).read_bytes() == good.signed
    assert (config.publish_dir / VERSION_FILE).read_text() == "1\n"


def _rewrite(path: Path, change: Callable[[dict[str, Any]], object]) -> None:
    data = registry_data()
    change(data)
    path.write_text(json.dumps(data))


def test_a_failed_run_does_not_use_up_a_version(config: RegistryConfig) -> None:
    publisher = Publisher(config)
    publisher.publish(T0)
    _rewrite(config.data_file, _unregistered_client)
    with pytest.raises(ConfigError):
        publisher.publish(T0)
    _rewrite(config.data_file, lambda d: None)
    assert publisher.publish(T0).conf.version == 2


def test_corrupt_version_file_stops_the_publisher(config: RegistryConfig) -> None:
    config.publish_dir.mkdir()
    (config.publish_dir / VERSION_FILE).write_text("twelve\n")
    with pytest.raises(ConfigError, match="not a version number"):
        Publisher(config)


def test_mismatched_signing_key_is_refused(tmp_path: Path, pki: Pki) -> None:
    config = load_registry(tmp_path, pki)
    write_certificate(config.signing_cert, pki.ca_cert)
    with pytest.raises(ConfigError, match="does not match"):
        Publisher(config)


def test_missing_signing_key_is_refused(config: RegistryConfig) -> None:
    config.signing_key.unlink()
    with pytest.raises(ConfigError, match="signing_key"):
        Publisher(config)
