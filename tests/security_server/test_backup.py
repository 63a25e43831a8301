"""Configuration backups: a round trip restores exactly what was saved; a wrong passphrase,
an altered byte, another server's backup or a document that does not match the schema is
refused before anything changes."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.engine import Engine

from certs.keys import generate_private_key, self_signed_tls_certificate
from security_server.backup import (
    MAGIC,
    create_backup,
    decrypt_backup,
    export_document,
    restore_backup,
)
from security_server.backup import _key as derive_key
from security_server.migrate import upgrade
from security_server.store import ServerStore, ServiceSpec
from xchange.access import EndpointPattern, LocalGroupId
from xchange.certificates import cert_sha256
from xchange.errors import BadRequestError, XRoadError
from xchange.identifiers import ClientId, ServiceId

AT = datetime(2026, 1, 2, tzinfo=UTC)
SERVER = "TEST/GOV/1/ss1"
PROVIDER = ClientId("TEST", "GOV", "1", "register")
CONSUMER = ClientId("TEST", "GOV", "2", "benefits")
PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def store(engine: Engine) -> ServerStore:
    upgrade(engine)
    store = ServerStore(engine)
    store.add_client(PROVIDER, actor="a", at=AT, is_connection="HTTPS")
    cert = self_signed_tls_certificate(generate_private_key(), "is", now=AT, client=True)
    from cryptography.hazmat.primitives.serialization import Encoding

    store.add_client_cert(PROVIDER, cert_sha256(cert), cert.public_bytes(Encoding.PEM).decode(),
                          actor="a", at=AT)
    get_one = EndpointPattern("GET", "/persons/*")
    store.add_description(PROVIDER, "OPENAPI3", "http://is/o.json", '{"openapi": "3.0.0"}',
                          [ServiceSpec("persons", "http://is/", (get_one,), 5.0, False)],
                          actor="a", at=AT)
    store.add_endpoint(ServiceId(PROVIDER, "persons"), EndpointPattern("POST", "/x"),
                       actor="a", at=AT)
    store.grant(ServiceId(PROVIDER, "persons"), str(CONSUMER), get_one, actor="a", at=AT)
    group = LocalGroupId(PROVIDER, "friends")
    store.add_local_group(group, "friends", actor="a", at=AT)
    store.set_group_member(group, CONSUMER, True, actor="a", at=AT)
    store.grant(ServiceId(PROVIDER, "persons"), str(group), get_one, actor="a", at=AT)
    return store


def _content(store: ServerStore) -> dict[str, object]:
    doc = export_document(store, SERVER, AT)
    del doc["created_at"]
    return doc


def test_round_trip(store: ServerStore) -> None:
    before = _content(store)
    blob = create_backup(store, SERVER, PASSPHRASE, actor="sys", at=AT)
    assert blob.startswith(MAGIC) and b"persons" not in blob  # encrypted
    store.delete_client(PROVIDER, actor="a", at=AT)
    assert _content(store) != before
    counts = restore_backup(store, decrypt_backup(blob, PASSPHRASE, SERVER), actor="sys",
                            at=AT)
    assert counts == {"clients": 1, "descriptions": 1, "access_rights": 2, "local_groups": 1}
    assert _content(store) == before
    assert [a.action for a in store.audit(limit=1000)][-3:] == ["backup", "delete_client",
                                                                 "restore"]


def _sealed(plain: bytes) -> bytes:
    """A correctly encrypted blob around arbitrary content (to test the checks after the
    MAC)."""
    salt, nonce = os.urandom(16), os.urandom(12)
    head = MAGIC + salt + nonce
    return head + AESGCM(derive_key(PASSPHRASE, salt)).encrypt(nonce, plain, head)


def test_refusals(store: ServerStore) -> None:
    blob = create_backup(store, SERVER, PASSPHRASE, actor="sys", at=AT)
    doc = export_document(store, SERVER, AT)
    cases: list[tuple[bytes, str, str]] = [
        (blob, "wrong passphrase, long enough", SERVER),
        (blob[:-1] + bytes([blob[-1] ^ 1]), PASSPHRASE, SERVER),
        (blob[:20] + bytes([blob[20] ^ 1]) + blob[21:], PASSPHRASE, SERVER),
        (b"not a backup", PASSPHRASE, SERVER),
        (blob, PASSPHRASE, "TEST/GOV/9/other"),
        (_sealed(b"not json"), PASSPHRASE, SERVER),
        (_sealed(json.dumps({**doc, "version": 2}).encode()), PASSPHRASE, SERVER),
        (_sealed(json.dumps({**doc, "extra": 1}).encode()), PASSPHRASE, SERVER),
        (_sealed(json.dumps({**doc, "access_rights": [
            {"client": "TEST/GOV/7/x", "service_code": "s", "method": "GET", "path": "/",
             "subject": str(CONSUMER)}]}).encode()), PASSPHRASE, SERVER),
        (_sealed(json.dumps({**doc, "access_rights": [
            {"client": str(PROVIDER), "service_code": "s", "method": "GET", "path": "/../x",
             "subject": str(CONSUMER)}]}).encode()), PASSPHRASE, SERVER),
    ]
    before = _content(store)
    for data, passphrase, server in cases:
        with pytest.raises(XRoadError) as info:
            decrypt_backup(data, passphrase, server)
        assert info.value.code == "admin.invalid_backup", info.value
    assert _content(store) == before


def test_short_passphrase_is_refused(store: ServerStore) -> None:
    with pytest.raises(BadRequestError):
        create_backup(store, SERVER, "short", actor="sys", at=AT)
