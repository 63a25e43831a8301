"""Throwaway PKI and a registry folder (config, data file, keys) for the registry tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certs.keys import (
    self_signed_certificate,
    write_certificate,
    write_private_key,
    write_secret_file,
)
from registry.config import RegistryConfig


def self_signed(key: ec.EllipticCurvePrivateKey, cn: str) -> x509.Certificate:
    return self_signed_certificate(key, cn, now=datetime.now(UTC))


@dataclass(frozen=True)
class Pki:
    signing_key: ec.EllipticCurvePrivateKey
    signing_cert: x509.Certificate
    other_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    auth_cert: x509.Certificate


@pytest.fixture(scope="session")
def pki() -> Pki:
    signing_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1()
    )
    return Pki(
        signing_key=signing_key,
        signing_cert=self_signed(signing_key, "DEV configuration signer"),
        other_key=other_key,
        ca_cert=self_signed(ec.generate_private_key(ec.SECP256R1()), "DEV CA"),
        auth_cert=self_signed(ec.generate_private_key(ec.SECP256R1()), "ss1 auth"),
    )


LITERAL_HASH = "AB" * 32
PASSPHRASE = b"registry test passphrase"


def registry_data() -> dict[str, Any]:
    return {
        "instance": "DEV",
        "members": [
            {"id": "DEV/GOV/1234", "name": "Ministry of Tests", "subsystems": ["REGISTRY"]},
            {"id": "DEV/COM/5678", "name": "Test Company"},
        ],
        "security_servers": [
            {
                "id": "DEV/GOV/1234/ss1",
                "address": "127.0.0.1:5500",
                "auth_certs": ["certs/ss1-auth.pem"],
                "auth_cert_hashes": [LITERAL_HASH],
                "clients": ["DEV/GOV/1234/REGISTRY"],
            }
        ],
        "global_groups": [{"id": "DEV/owners", "members": ["DEV/GOV/1234"]}],
        "approved_cas": [{"name": "DEV CA", "certificate": "certs/ca.pem"}],
        "approved_tsas": [
            {"name": "DEV TSA", "url": "http://127.0.0.1:3180", "certificate": "certs/ca.pem"}
        ],
        "settings": {"conf_expiry_seconds": 600},
    }


def load_registry(folder: Path, pki: Pki, **config: object) -> RegistryConfig:
    """:func:`write_registry`, then its configuration as the registry reads it."""
    return RegistryConfig.from_file(write_registry(folder, pki, **config)).from_env({})


def write_registry(folder: Path, pki: Pki, **config: object) -> Path:
    """Lay out a registry folder; return the path of its TOML configuration."""
    write_private_key(folder / "keys" / "conf-sign.key", pki.signing_key, PASSPHRASE)
    write_secret_file(folder / "keys" / "passphrase", PASSPHRASE)
    write_certificate(folder / "keys" / "conf-sign.pem", pki.signing_cert)
    write_certificate(folder / "data" / "certs" / "ca.pem", pki.ca_cert)
    write_certificate(folder / "data" / "certs" / "ss1-auth.pem", pki.auth_cert)
    (folder / "data" / "registry.json").write_text(json.dumps(registry_data()))
    values: dict[str, object] = {
        "data_file": "data/registry.json",
        "signing_key": "keys/conf-sign.key",
        "signing_cert": "keys/conf-sign.pem",
        "passphrase_file": "keys/passphrase",
        "publish_dir": "publish",
        **config,
    }
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = folder / "registry.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
