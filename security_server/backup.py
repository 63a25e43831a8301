"""Backup and restore of a security server's configuration store, encrypted and verified.

A backup is the store's configuration (local clients and their IS certificates, service
descriptions with their services and endpoints, access rights, local groups) as one JSON
document (``schemas/ss-backup.schema.json``), encrypted with a key derived from the
operator's passphrase:

    b"XCSSBK1\\n" || salt (16) || nonce (12) || AES-256-GCM(key, nonce, document, aad)

with ``key = scrypt(passphrase, salt, n=2**15, r=8, p=1)`` and the first 28 bytes as the
associated data.  AES-GCM's tag is the MAC: a wrong passphrase and any altered byte fail
the same way.  Restore verifies *everything before it changes anything*: 1. the tag,
2. the JSON Schema, 3. every identifier, endpoint and subject parses, 4. the document is for
this server; only then is the configuration replaced, in one transaction with its audit
record.  The admin audit log and the message log are not part of a backup.

Not here: where backups are kept (the operator's business), keys and certificates of the
server itself (``[keys]`` files), the TOML file.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any, Final

import jsonschema
import sqlalchemy as sa
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlmodel import col, select

from security_server.store import (
    AccessRightRow,
    ClientCertRow,
    ClientRow,
    DescriptionRow,
    EndpointRow,
    LocalGroupMemberRow,
    LocalGroupRow,
    ServerStore,
    ServiceRow,
)
from xchange.access import EndpointPattern, LocalGroupId, parse_subject
from xchange.certificates import cert_sha256
from xchange.errors import BadRequestError, XRoadError
from xchange.identifiers import ClientId, ServiceId

__all__ = ["MIN_PASSPHRASE", "create_backup", "decrypt_backup", "restore_backup"]

MAGIC: Final = b"XCSSBK1\n"
MIN_PASSPHRASE: Final = 12
_SALT, _NONCE = 16, 12
_FORMAT = "xchange-ss-backup"


def _invalid(message: str) -> XRoadError:
    return XRoadError(message, code="admin.invalid_backup")


def _key(passphrase: str, salt: bytes) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE:
        raise BadRequestError(f"the passphrase must have at least {MIN_PASSPHRASE} characters",
                              code="admin.bad_request")
    return Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode("utf-8"))


@cache
def _validator() -> jsonschema.Validator:
    text = resources.files("schemas").joinpath("ss-backup.schema.json").read_text("utf-8")
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


# -- export ---------------------------------------------------------------------------------------


def export_document(store: ServerStore, server: str, at: datetime) -> dict[str, Any]:
    """The configuration as the backup document (plain, not yet encrypted)."""
    endpoints: dict[int, list[dict[str, Any]]] = {}
    with store.session() as s:
        for ep in s.exec(select(EndpointRow).order_by(col(EndpointRow.id))):
            endpoints.setdefault(ep.service_id, []).append(
                {"method": ep.method, "path": ep.path, "generated": ep.generated})
        services: dict[int, list[dict[str, Any]]] = {}
        for svc in s.exec(select(ServiceRow).order_by(col(ServiceRow.id))):
            assert svc.id is not None
            services.setdefault(svc.description_id, []).append(
                {"code": svc.code, "url": svc.url, "timeout": svc.timeout,
                 "tls_verify": svc.tls_verify, "endpoints": endpoints.get(svc.id, [])})
        certs: dict[str, list[str]] = {}
        for cert in s.exec(select(ClientCertRow).order_by(col(ClientCertRow.id))):
            certs.setdefault(cert.client_id, []).append(cert.pem)
        doc = {
            "format": _FORMAT, "version": 1, "server": server, "created_at": at.isoformat(),
            "clients": [{"id": c.id, "enabled": c.enabled, "is_connection": c.is_connection,
                         "certificates": certs.get(c.id, [])}
                        for c in s.exec(select(ClientRow).order_by(col(ClientRow.id)))],
            "descriptions": [
                {"client": d.client_id, "type": d.kind, "url": d.url, "document": d.document,
                 "enabled": d.enabled, "services": services.get(d.id or 0, [])}
                for d in s.exec(select(DescriptionRow).order_by(col(DescriptionRow.id)))],
            "access_rights": [
                {"client": r.client_id, "service_code": r.service_code, "method": r.method,
                 "path": r.path, "subject": r.subject}
                for r in s.exec(select(AccessRightRow).order_by(col(AccessRightRow.id)))],
            "local_groups": [
                {"client": g.client_id, "code": g.code, "description": g.description,
                 "members": sorted(m.member for m in s.exec(select(LocalGroupMemberRow).where(
                     LocalGroupMemberRow.group_id == g.id)))}
                for g in s.exec(select(LocalGroupRow).order_by(col(LocalGroupRow.id)))],
        }
    return doc


def create_backup(store: ServerStore, server: str, passphrase: str, *, actor: str,
                  at: datetime) -> bytes:
    plain = json.dumps(export_document(store, server, at), sort_keys=True).encode("utf-8")
    salt, nonce = os.urandom(_SALT), os.urandom(_NONCE)
    head = MAGIC + salt + nonce
    sealed = AESGCM(_key(passphrase, salt)).encrypt(nonce, plain, head)
    store.record(actor, "backup", {"bytes": len(plain)}, at)
    return head + sealed


# -- verify and restore ---------------------------------------------------------------------------


def decrypt_backup(blob: bytes, passphrase: str, server: str) -> dict[str, Any]:
    """Steps 1-4 of the module docstring; the verified document, or ``admin.invalid_backup``."""
    head_len = len(MAGIC) + _SALT + _NONCE
    if not blob.startswith(MAGIC) or len(blob) < head_len + 16:
        raise _invalid("not an xchange security-server backup")
    salt = blob[len(MAGIC):len(MAGIC) + _SALT]
    nonce = blob[len(MAGIC) + _SALT:head_len]
    try:
        plain = AESGCM(_key(passphrase, salt)).decrypt(nonce, blob[head_len:], blob[:head_len])
    except InvalidTag as exc:
        raise _invalid("the backup does not decrypt: wrong passphrase, or altered") from exc
    try:
        doc = json.loads(plain)
    except ValueError as exc:
        raise _invalid("the backup's content is not JSON") from exc
    error = jsonschema.exceptions.best_match(_validator().iter_errors(doc))
    if error is not None:
        raise _invalid(f"the backup does not match its schema: {error.message}")
    try:
        _check_values(doc)
    except BadRequestError as exc:
        raise _invalid(f"the backup holds a bad value: {exc.message}") from exc
    if doc["server"] != server:
        raise _invalid(f"the backup is of server {doc['server']}, not {server}")
    assert isinstance(doc, dict)
    return doc


def _known(ids: set[str], client: str) -> ClientId:
    if client not in ids:
        raise BadRequestError(f"{client} is not one of the backup's clients")
    return ClientId.parse(client)


def _check_values(doc: dict[str, Any]) -> None:
    ids = {c["id"] for c in doc["clients"]}
    for client in doc["clients"]:
        ClientId.parse(client["id"])
        for pem in client["certificates"]:
            try:
                x509.load_pem_x509_certificate(pem.encode("ascii"))
            except (ValueError, UnicodeEncodeError) as exc:
                raise BadRequestError("a certificate does not parse") from exc
    for desc in doc["descriptions"]:
        provider = _known(ids, desc["client"])
        for svc in desc["services"]:
            ServiceId(provider, svc["code"])
            for ep in svc["endpoints"]:
                EndpointPattern(ep["method"], ep["path"])
    for right in doc["access_rights"]:
        ServiceId(_known(ids, right["client"]), right["service_code"])
        EndpointPattern(right["method"], right["path"])
        parse_subject(right["subject"])
    for group in doc["local_groups"]:
        LocalGroupId(_known(ids, group["client"]), group["code"])
        for member in group["members"]:
            ClientId.parse(member)


_TABLES: Final = (AccessRightRow, LocalGroupMemberRow, LocalGroupRow, EndpointRow,
                  ServiceRow, DescriptionRow, ClientCertRow, ClientRow)
"""Children before parents."""


def restore_backup(store: ServerStore, doc: dict[str, Any], *, actor: str,
                   at: datetime) -> dict[str, int]:
    """Replace the configuration with a verified document, in one transaction."""
    counts = {k: len(doc[k]) for k in ("clients", "descriptions", "access_rights",
                                       "local_groups")}
    with store.transaction(actor, "restore", {"created_at": doc["created_at"], **counts},
                           at) as s:
        for model in _TABLES:
            s.connection().execute(sa.delete(model))
        for c in doc["clients"]:
            s.add(ClientRow(id=c["id"], enabled=c["enabled"], is_connection=c["is_connection"]))
        s.flush()
        for c in doc["clients"]:
            for pem in c["certificates"]:
                s.add(ClientCertRow(client_id=c["id"], sha256=_pem_sha256(pem), pem=pem))
        for d in doc["descriptions"]:
            desc = DescriptionRow(client_id=d["client"], kind=d["type"], url=d["url"],
                                  document=d["document"], enabled=d["enabled"], refreshed_at=at)
            s.add(desc)
            s.flush()
            assert desc.id is not None
            for svc in d["services"]:
                row = ServiceRow(description_id=desc.id, client_id=d["client"],
                                 code=svc["code"], url=svc["url"], timeout=svc["timeout"],
                                 tls_verify=svc["tls_verify"])
                s.add(row)
                s.flush()
                assert row.id is not None
                for ep in svc["endpoints"]:
                    s.add(EndpointRow(service_id=row.id, method=ep["method"], path=ep["path"],
                                      generated=ep["generated"]))
        for r in doc["access_rights"]:
            s.add(AccessRightRow(client_id=r["client"], service_code=r["service_code"],
                                 method=r["method"], path=r["path"], subject=r["subject"]))
        for g in doc["local_groups"]:
            group = LocalGroupRow(client_id=g["client"], code=g["code"],
                                  description=g["description"])
            s.add(group)
            s.flush()
            assert group.id is not None
            for member in g["members"]:
                s.add(LocalGroupMemberRow(group_id=group.id, member=member))
    return counts


def _pem_sha256(pem: str) -> str:
    return cert_sha256(x509.load_pem_x509_certificate(pem.encode("ascii")))
