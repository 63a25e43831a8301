"""Tests of certs.index: the CA's SQLite record of issued certificates and settings."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509

from certs.ca import DevCA
from certs.index import INDEX_FILE, REVOCATION_REASONS, CertificateIndex, parse_reason
from certs.keys import generate_private_key
from xchange.identifiers import ClientId


def test_two_handles_on_one_file_see_each_other(tmp_path: Path, pki_now: datetime) -> None:
    ca = DevCA.create(tmp_path, "TEST", now=pki_now)
    cert = ca.issue_sign_cert(ClientId("TEST", "GOV", "1"), "Org",
                              generate_private_key().public_key(), now=pki_now)
    other = CertificateIndex(tmp_path / INDEX_FILE)
    other.revoke(cert.serial_number, reason=x509.ReasonFlags.superseded, at=pki_now)
    record = ca.status_of(cert.serial_number)
    assert record is not None and record.reason is x509.ReasonFlags.superseded
    other.set_setting("ocsp_url", "http://ocsp.example/")
    assert ca.ocsp_url == "http://ocsp.example/"
    other.set_setting("ocsp_url", None)
    assert ca.ocsp_url is None


def test_create_refuses_an_existing_index(tmp_path: Path, pki_now: datetime) -> None:
    CertificateIndex(tmp_path / INDEX_FILE)
    with pytest.raises(FileExistsError, match=INDEX_FILE):
        DevCA.create(tmp_path, "TEST", now=pki_now)


def test_unusable_index_is_an_os_error(tmp_path: Path) -> None:
    (tmp_path / INDEX_FILE).write_bytes(b"not a database, just some bytes" * 100)
    with pytest.raises(OSError, match=r"CA index .* cannot be used"):
        CertificateIndex(tmp_path / INDEX_FILE)
    with pytest.raises(OSError, match="cannot open the CA index"):
        CertificateIndex(tmp_path / "missing" / INDEX_FILE)


def test_revocation_time_must_be_aware(tmp_path: Path) -> None:
    index = CertificateIndex(tmp_path / INDEX_FILE)
    with pytest.raises(ValueError, match="timezone-aware"):
        index.revoke(1, reason=x509.ReasonFlags.unspecified, at=datetime(2030, 1, 1))


def test_reasons_by_rfc_5280_name() -> None:
    assert parse_reason("keyCompromise") is x509.ReasonFlags.key_compromise
    assert x509.ReasonFlags.remove_from_crl not in REVOCATION_REASONS
    with pytest.raises(ValueError, match="unknown revocation reason 'removeFromCRL'; one of: "):
        parse_reason("removeFromCRL")
