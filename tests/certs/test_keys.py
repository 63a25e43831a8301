"""Key files and the self-signed configuration-signing certificate."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from certs.keys import (
    generate_private_key,
    load_private_key,
    self_signed_certificate,
    write_private_key,
)


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_private_key_file_is_owner_only_and_round_trips(tmp_path: Path, kind: str) -> None:
    key = generate_private_key(kind)  # type: ignore[arg-type]
    path = tmp_path / "sub" / "k.key"
    write_private_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_private_key(path).public_key() == key.public_key()


def test_existing_file_is_narrowed_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    path.write_text("old")
    path.chmod(0o644)
    write_private_key(path, generate_private_key())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_self_signed_certificate() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    key = generate_private_key()
    cert = self_signed_certificate(key, "conf signer", now=now, days=10, organization="DEMO")
    assert cert.subject == cert.issuer
    assert cert.public_key() == key.public_key()
    assert cert.not_valid_before_utc == now - timedelta(minutes=5)
    assert cert.not_valid_after_utc == now + timedelta(days=10)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    cert.verify_directly_issued_by(cert)
