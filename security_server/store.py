"""The security server's own configuration store: local clients, service descriptions,
services, endpoints, access rights, local groups and the admin audit log.

One SQL database, the same as the message log's (SQLite file or PostgreSQL, see
:mod:`security_server.db`); the schema is created and upgraded by the Alembic migrations in
``security_server/migrations`` (:func:`security_server.migrate.upgrade`).

:class:`ServerStore` is the only writer.  Every change is one transaction that also appends
an audit record (who, what, when), and bumps a version counter; readers build an immutable
:class:`~security_server.directory.Snapshot` from it.  Methods are synchronous: the admin
API calls them in a worker thread.  Errors are :class:`~xchange.errors.XRoadError` with
``admin.*`` codes; SQLAlchemy's own never leave this module.

Not here: fetching descriptions (``security_server.descriptions``), HTTP, authorisation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, get_args

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, col, select

from security_server.config import ConnectionType
from xchange.access import (
    ALL_ENDPOINTS,
    AccessRule,
    AccessRules,
    EndpointPattern,
    LocalGroupId,
    parse_subject,
)
from xchange.errors import BadRequestError, XRoadError
from xchange.identifiers import ClientId, ServiceId
from xchange.servicedesc import METADATA_SERVICE_CODES

__all__ = [
    "CONNECTION_TYPES",
    "DESCRIPTION_KINDS",
    "AccessRightRow",
    "AuditRow",
    "CataloguePublicationRow",
    "ClientCertRow",
    "ClientRow",
    "ConnectionType",
    "DescriptionKind",
    "DescriptionRow",
    "EndpointRow",
    "LocalGroupMemberRow",
    "LocalGroupRow",
    "MetaRow",
    "ServerStore",
    "ServiceRow",
    "ServiceSpec",
    "StoreError",
]

CONNECTION_TYPES: Final = frozenset(get_args(ConnectionType))
DescriptionKind = Literal["OPENAPI3", "REST", "WSDL"]
DESCRIPTION_KINDS: Final = frozenset(get_args(DescriptionKind))

_VERSION_KEY: Final = "config_version"


class StoreError(XRoadError):
    """A store operation refused or failed (``admin.*`` codes)."""

    default_code = "admin.bad_request"


# -- tables -------------------------------------------------------------------------------------


class ClientRow(SQLModel, table=True):
    __tablename__ = "ss_client"

    id: str = Field(primary_key=True, max_length=1100)
    enabled: bool = True
    is_connection: str = Field(default="HTTPS_AUTH", max_length=16)


class ClientCertRow(SQLModel, table=True):
    __tablename__ = "ss_client_cert"
    __table_args__ = (sa.UniqueConstraint("client_id", "sha256"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: str = Field(foreign_key="ss_client.id", ondelete="CASCADE", max_length=1100)
    sha256: str = Field(max_length=64)
    pem: str


class DescriptionRow(SQLModel, table=True):
    __tablename__ = "ss_service_description"

    id: int | None = Field(default=None, primary_key=True)
    client_id: str = Field(foreign_key="ss_client.id", ondelete="CASCADE", max_length=1100)
    kind: str = Field(max_length=16)
    url: str
    document: str | None = None
    enabled: bool = True
    refreshed_at: datetime | None = None


class ServiceRow(SQLModel, table=True):
    __tablename__ = "ss_service"
    __table_args__ = (sa.UniqueConstraint("client_id", "code"),)

    id: int | None = Field(default=None, primary_key=True)
    description_id: int = Field(foreign_key="ss_service_description.id", ondelete="CASCADE")
    client_id: str = Field(max_length=1100)
    code: str = Field(max_length=255)
    url: str
    timeout: float = 30.0
    tls_verify: bool = True


class EndpointRow(SQLModel, table=True):
    __tablename__ = "ss_endpoint"
    __table_args__ = (sa.UniqueConstraint("service_id", "method", "path"),)

    id: int | None = Field(default=None, primary_key=True)
    service_id: int = Field(foreign_key="ss_service.id", ondelete="CASCADE")
    method: str = Field(max_length=16)
    path: str
    generated: bool = False
    """Taken from the description (replaced on refresh), or added by an administrator."""


class AccessRightRow(SQLModel, table=True):
    __tablename__ = "ss_access_right"
    __table_args__ = (sa.UniqueConstraint("client_id", "service_code", "method", "path",
                                          "subject"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: str = Field(foreign_key="ss_client.id", ondelete="CASCADE", max_length=1100)
    service_code: str = Field(max_length=255)
    method: str = Field(max_length=16)
    path: str
    subject: str = Field(max_length=1400)


class LocalGroupRow(SQLModel, table=True):
    __tablename__ = "ss_local_group"
    __table_args__ = (sa.UniqueConstraint("client_id", "code"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: str = Field(foreign_key="ss_client.id", ondelete="CASCADE", max_length=1100)
    code: str = Field(max_length=255)
    description: str = ""


class LocalGroupMemberRow(SQLModel, table=True):
    __tablename__ = "ss_local_group_member"

    group_id: int = Field(foreign_key="ss_local_group.id", ondelete="CASCADE",
                          primary_key=True)
    member: str = Field(primary_key=True, max_length=1100)


class AuditRow(SQLModel, table=True):
    __tablename__ = "ss_admin_audit"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime
    actor: str = Field(max_length=256)
    action: str = Field(max_length=64)
    data: str
    """Canonical JSON of what changed (never secrets)."""


class CataloguePublicationRow(SQLModel, table=True):
    """Where the publication of one client's services to the registry's catalogue stands.

    ``wanted`` counts the changes that asked for a publication, ``published`` is the count
    the last successful publication covered: ``wanted > published`` means one is due.  Not
    configuration: not audited, not in backups.  When the client goes, its row stays until
    the withdrawal of its entries (an empty list) is published, then goes too."""

    __tablename__ = "ss_catalogue_publication"

    client_id: str = Field(primary_key=True, max_length=1100)
    wanted: int = 0
    published: int = 0
    tried: int = 0
    """The ``wanted`` count the last attempt covered (a failed one is retried at once when
    a later change raised ``wanted``, else after the retry interval)."""
    state: str = Field(default="pending", max_length=16)
    """``pending``, ``published`` or ``failed`` (the last attempt; retried)."""
    digest: str | None = Field(default=None, max_length=64)
    """SHA-256 of the catalogue last published (:func:`xchange.catalogue.catalogue_digest`)."""
    request_id: str | None = Field(default=None, max_length=128)
    services: int = 0
    """How many services the last published catalogue had."""
    attempted_at: datetime | None = None
    published_at: datetime | None = None
    last_error: str | None = None


class MetaRow(SQLModel, table=True):
    __tablename__ = "ss_meta"

    key: str = Field(primary_key=True, max_length=64)
    value: str


# -- plain values handed in and out -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One service of a description, as the administrator or a parsed document gives it."""

    code: str
    url: str
    endpoints: tuple[EndpointPattern, ...] = ()
    timeout: float = 30.0
    tls_verify: bool = True


def _not_found(what: str) -> StoreError:
    return StoreError(f"{what} not found", code="admin.not_found")


def _conflict(what: str) -> StoreError:
    return StoreError(what, code="admin.conflict")


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_service_code(code: str) -> str:
    try:
        ServiceId(ClientId("X", "X", "X"), code)
    except BadRequestError as exc:
        raise StoreError(exc.message) from exc
    if code in METADATA_SERVICE_CODES:
        raise StoreError(f"service code {code!r} is reserved for a metadata service")
    return code


class ServerStore:
    """Reads and writes the configuration tables; one transaction per change."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- plumbing -----------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Session]:
        try:
            with Session(self.engine) as session:
                yield session
        except SQLAlchemyError as exc:
            raise StoreError("configuration store could not be read",
                             code="server.serverproxy.internal_error") from exc

    @contextmanager
    def _change(self, actor: str, action: str, data: dict[str, Any],
                at: datetime) -> Iterator[Session]:
        """One transaction: the change, its audit record and a new version, or nothing."""
        try:
            with Session(self.engine) as session:
                yield session
                session.add(AuditRow(at=at, actor=actor, action=action, data=_json(data)))
                meta = session.get(MetaRow, _VERSION_KEY)
                if meta is None:
                    session.add(MetaRow(key=_VERSION_KEY, value="1"))
                else:
                    meta.value = str(int(meta.value) + 1)
                session.commit()
        except IntegrityError as exc:
            raise _conflict(f"{action}: conflicts with existing configuration") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"{action}: configuration store could not be written",
                             code="server.serverproxy.internal_error") from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read-only session (for whole-configuration readers such as backups)."""
        with self._read() as s:
            yield s

    def transaction(self, actor: str, action: str, data: dict[str, Any],
                    at: datetime) -> Any:
        """A change made outside this class's methods (restore), audited the same way."""
        return self._change(actor, action, data, at)

    def version(self) -> int:
        with self._read() as s:
            meta = s.get(MetaRow, _VERSION_KEY)
            return int(meta.value) if meta else 0

    def get_meta(self, key: str) -> str | None:
        with self._read() as s:
            meta = s.get(MetaRow, key)
            return meta.value if meta else None

    # -- clients ------------------------------------------------------------------------------

    def clients(self) -> list[ClientRow]:
        with self._read() as s:
            return list(s.exec(select(ClientRow).order_by(col(ClientRow.id))))

    def client(self, client: ClientId) -> ClientRow:
        with self._read() as s:
            row = s.get(ClientRow, str(client))
            if row is None:
                raise _not_found(f"client {client}")
            return row

    def add_client(self, client: ClientId, *, actor: str, at: datetime,
                   is_connection: ConnectionType = "HTTPS_AUTH") -> ClientRow:
        _check_connection(is_connection)
        row = ClientRow(id=str(client), is_connection=is_connection)
        with self._change(actor, "add_client", {"client": str(client),
                                                "is_connection": is_connection}, at) as s:
            if s.get(ClientRow, str(client)) is not None:
                raise _conflict(f"client {client} already exists")
            s.add(row)
        return self.client(client)

    def update_client(self, client: ClientId, *, actor: str, at: datetime,
                      enabled: bool | None = None,
                      is_connection: ConnectionType | None = None) -> ClientRow:
        if is_connection is not None:
            _check_connection(is_connection)
        data = {"client": str(client), "enabled": enabled, "is_connection": is_connection}
        with self._change(actor, "update_client", data, at) as s:
            row = s.get(ClientRow, str(client))
            if row is None:
                raise _not_found(f"client {client}")
            _set_given(row, enabled=enabled, is_connection=is_connection)
            s.add(row)
        return self.client(client)

    def delete_client(self, client: ClientId, *, actor: str, at: datetime) -> None:
        with self._change(actor, "delete_client", {"client": str(client)}, at) as s:
            row = s.get(ClientRow, str(client))
            if row is None:
                raise _not_found(f"client {client}")
            for desc in list(s.exec(select(DescriptionRow).where(
                    DescriptionRow.client_id == str(client)))):
                _delete_description(s, desc)
            for g in list(s.exec(select(LocalGroupRow).where(
                    LocalGroupRow.client_id == str(client)))):
                _delete_group(s, g)
            for model in (ClientCertRow, AccessRightRow):
                _run(s, sa.delete(model).where(col(model.client_id) == str(client)))
            _run(s, sa.delete(ClientRow).where(col(ClientRow.id) == str(client)))

    def client_certs(self, client: ClientId) -> list[ClientCertRow]:
        with self._read() as s:
            return list(s.exec(select(ClientCertRow).where(
                ClientCertRow.client_id == str(client)).order_by(col(ClientCertRow.id))))

    def add_client_cert(self, client: ClientId, sha256: str, pem: str, *, actor: str,
                        at: datetime) -> ClientCertRow:
        data = {"client": str(client), "sha256": sha256}
        with self._change(actor, "add_client_cert", data, at) as s:
            if s.get(ClientRow, str(client)) is None:
                raise _not_found(f"client {client}")
            row = ClientCertRow(client_id=str(client), sha256=sha256, pem=pem)
            s.add(row)
            s.flush()
            cert_id = row.id
        return next(c for c in self.client_certs(client) if c.id == cert_id)

    def delete_client_cert(self, client: ClientId, sha256: str, *, actor: str,
                           at: datetime) -> None:
        data = {"client": str(client), "sha256": sha256}
        with self._change(actor, "delete_client_cert", data, at) as s:
            row = s.exec(select(ClientCertRow).where(ClientCertRow.client_id == str(client),
                                                     ClientCertRow.sha256 == sha256)).first()
            if row is None:
                raise _not_found(f"certificate {sha256} of {client}")
            s.delete(row)

    # -- service descriptions and services ----------------------------------------------------

    def descriptions(self, client: ClientId | None = None) -> list[DescriptionRow]:
        with self._read() as s:
            query = select(DescriptionRow).order_by(col(DescriptionRow.id))
            if client is not None:
                query = query.where(DescriptionRow.client_id == str(client))
            return list(s.exec(query))

    def description(self, desc_id: int) -> DescriptionRow:
        with self._read() as s:
            row = s.get(DescriptionRow, desc_id)
            if row is None:
                raise _not_found(f"service description {desc_id}")
            return row

    def add_description(self, client: ClientId, kind: DescriptionKind, url: str,
                        document: str | None, services: Sequence[ServiceSpec], *,
                        actor: str, at: datetime) -> DescriptionRow:
        if kind not in DESCRIPTION_KINDS:
            raise StoreError(f"unknown description kind {kind!r}")
        data = {"client": str(client), "kind": kind, "url": url,
                "services": [s.code for s in services]}
        with self._change(actor, "add_description", data, at) as s:
            if s.get(ClientRow, str(client)) is None:
                raise _not_found(f"client {client}")
            desc = DescriptionRow(client_id=str(client), kind=kind, url=url, document=document,
                                  refreshed_at=at)
            s.add(desc)
            s.flush()
            assert desc.id is not None
            desc_id = desc.id
            for spec in services:
                _add_service(s, desc_id, str(client), spec)
        return self.description(desc_id)

    def refresh_description(self, desc_id: int, document: str | None,
                            services: Sequence[ServiceSpec], *, actor: str,
                            at: datetime) -> DescriptionRow:
        """Replace the document and its generated endpoints; keep each surviving service's
        URL, timeout, TLS setting, added endpoints and access rights.  Rights to endpoints
        that are gone are removed with them; services that are gone lose their rights."""
        data = {"description": desc_id, "services": [s.code for s in services]}
        with self._change(actor, "refresh_description", data, at) as s:
            desc = s.get(DescriptionRow, desc_id)
            if desc is None:
                raise _not_found(f"service description {desc_id}")
            old = {r.code: r for r in s.exec(select(ServiceRow).where(
                ServiceRow.description_id == desc_id))}
            wanted = {spec.code: spec for spec in services}
            for code, row in old.items():
                if code not in wanted:
                    _delete_service(s, row)
            for code, spec in wanted.items():
                if code in old:
                    _replace_generated_endpoints(s, old[code], spec.endpoints)
                else:
                    _add_service(s, desc_id, desc.client_id, spec)
            desc.document = document
            desc.refreshed_at = at
            s.add(desc)
        return self.description(desc_id)

    def update_description(self, desc_id: int, *, enabled: bool, actor: str,
                           at: datetime) -> DescriptionRow:
        data = {"description": desc_id, "enabled": enabled}
        with self._change(actor, "update_description", data, at) as s:
            desc = s.get(DescriptionRow, desc_id)
            if desc is None:
                raise _not_found(f"service description {desc_id}")
            desc.enabled = enabled
            s.add(desc)
        return self.description(desc_id)

    def delete_description(self, desc_id: int, *, actor: str, at: datetime) -> None:
        with self._change(actor, "delete_description", {"description": desc_id}, at) as s:
            desc = s.get(DescriptionRow, desc_id)
            if desc is None:
                raise _not_found(f"service description {desc_id}")
            _delete_description(s, desc)

    def services(self, client: ClientId | None = None) -> list[ServiceRow]:
        with self._read() as s:
            query = select(ServiceRow).order_by(col(ServiceRow.client_id), col(ServiceRow.code))
            if client is not None:
                query = query.where(ServiceRow.client_id == str(client))
            return list(s.exec(query))

    def service(self, service: ServiceId) -> ServiceRow:
        with self._read() as s:
            row = _service_row(s, service)
            if row is None:
                raise _not_found(f"service {service}")
            return row

    def endpoints(self, service: ServiceId) -> list[EndpointRow]:
        with self._read() as s:
            row = _service_row(s, service)
            if row is None:
                raise _not_found(f"service {service}")
            return list(s.exec(select(EndpointRow).where(EndpointRow.service_id == row.id)
                               .order_by(col(EndpointRow.path), col(EndpointRow.method))))

    def update_service(self, service: ServiceId, *, actor: str, at: datetime,
                       url: str | None = None, timeout: float | None = None,
                       tls_verify: bool | None = None) -> ServiceRow:
        data = {"service": str(service), "url": url, "timeout": timeout,
                "tls_verify": tls_verify}
        with self._change(actor, "update_service", data, at) as s:
            row = _service_row(s, service)
            if row is None:
                raise _not_found(f"service {service}")
            _set_given(row, url=url, timeout=timeout, tls_verify=tls_verify)
            s.add(row)
        return self.service(service)

    def add_endpoint(self, service: ServiceId, endpoint: EndpointPattern, *, actor: str,
                     at: datetime) -> None:
        data = {"service": str(service), "method": endpoint.method, "path": endpoint.path}
        with self._change(actor, "add_endpoint", data, at) as s:
            row = _service_row(s, service)
            if row is None:
                raise _not_found(f"service {service}")
            assert row.id is not None
            s.add(EndpointRow(service_id=row.id, method=endpoint.method, path=endpoint.path))

    def delete_endpoint(self, service: ServiceId, endpoint: EndpointPattern, *, actor: str,
                        at: datetime) -> None:
        data = {"service": str(service), "method": endpoint.method, "path": endpoint.path}
        with self._change(actor, "delete_endpoint", data, at) as s:
            row = _service_row(s, service)
            ep = None if row is None else s.exec(select(EndpointRow).where(
                EndpointRow.service_id == row.id, EndpointRow.method == endpoint.method,
                EndpointRow.path == endpoint.path)).first()
            if row is None or ep is None:
                raise _not_found(f"endpoint {endpoint.method} {endpoint.path} of {service}")
            if ep.generated:
                raise _conflict("an endpoint from the service description cannot be removed; "
                                "refresh the description instead")
            _delete_endpoint(s, row, ep)

    # -- access rights ------------------------------------------------------------------------

    def access_rights(self, client: ClientId | None = None) -> list[AccessRightRow]:
        with self._read() as s:
            query = select(AccessRightRow).order_by(col(AccessRightRow.id))
            if client is not None:
                query = query.where(AccessRightRow.client_id == str(client))
            return list(s.exec(query))

    def grant(self, service: ServiceId, subject: str, endpoint: EndpointPattern, *,
              actor: str, at: datetime) -> AccessRightRow:
        """Grant ``subject`` the whole service (``* /**``) or one of its endpoints."""
        subj = _subject(subject, service.provider)
        data = {"service": str(service), "subject": str(subj), "method": endpoint.method,
                "path": endpoint.path}
        with self._change(actor, "grant", data, at) as s:
            row = _service_row(s, service)
            if row is None:
                raise _not_found(f"service {service}")
            if endpoint != ALL_ENDPOINTS and s.exec(select(EndpointRow).where(
                    EndpointRow.service_id == row.id, EndpointRow.method == endpoint.method,
                    EndpointRow.path == endpoint.path)).first() is None:
                raise _not_found(f"endpoint {endpoint.method} {endpoint.path} of {service}")
            if isinstance(subj, LocalGroupId) and _group_row(s, subj) is None:
                raise _not_found(f"local group {subj}")
            right = AccessRightRow(client_id=row.client_id, service_code=row.code,
                                   method=endpoint.method, path=endpoint.path,
                                   subject=str(subj))
            s.add(right)
            s.flush()
            right_id = right.id
        return next(r for r in self.access_rights(service.provider) if r.id == right_id)

    def revoke(self, service: ServiceId, subject: str, endpoint: EndpointPattern, *,
               actor: str, at: datetime) -> None:
        subj = _subject(subject, service.provider)
        data = {"service": str(service), "subject": str(subj), "method": endpoint.method,
                "path": endpoint.path}
        with self._change(actor, "revoke", data, at) as s:
            right = s.exec(select(AccessRightRow).where(
                AccessRightRow.client_id == str(service.provider),
                AccessRightRow.service_code == service.code,
                AccessRightRow.method == endpoint.method, AccessRightRow.path == endpoint.path,
                AccessRightRow.subject == str(subj))).first()
            if right is None:
                raise _not_found(f"access right of {subj} to {service} {endpoint.method} "
                                 f"{endpoint.path}")
            s.delete(right)

    # -- local groups -------------------------------------------------------------------------

    def local_groups(self, client: ClientId | None = None) -> list[tuple[LocalGroupRow,
                                                                          list[str]]]:
        with self._read() as s:
            query = select(LocalGroupRow).order_by(col(LocalGroupRow.client_id),
                                                   col(LocalGroupRow.code))
            if client is not None:
                query = query.where(LocalGroupRow.client_id == str(client))
            return [(g, sorted(m.member for m in s.exec(select(LocalGroupMemberRow).where(
                LocalGroupMemberRow.group_id == g.id)))) for g in s.exec(query)]

    def add_local_group(self, group: LocalGroupId, description: str, *, actor: str,
                        at: datetime) -> None:
        data = {"group": str(group), "description": description}
        with self._change(actor, "add_local_group", data, at) as s:
            if s.get(ClientRow, str(group.owner)) is None:
                raise _not_found(f"client {group.owner}")
            if _group_row(s, group) is not None:
                raise _conflict(f"local group {group} already exists")
            s.add(LocalGroupRow(client_id=str(group.owner), code=group.code,
                                description=description))

    def delete_local_group(self, group: LocalGroupId, *, actor: str, at: datetime) -> None:
        with self._change(actor, "delete_local_group", {"group": str(group)}, at) as s:
            row = _group_row(s, group)
            if row is None:
                raise _not_found(f"local group {group}")
            _delete_group(s, row)

    def set_group_member(self, group: LocalGroupId, member: ClientId, present: bool, *,
                         actor: str, at: datetime) -> None:
        action = "add_group_member" if present else "remove_group_member"
        with self._change(actor, action, {"group": str(group), "member": str(member)},
                          at) as s:
            row = _group_row(s, group)
            if row is None:
                raise _not_found(f"local group {group}")
            assert row.id is not None
            existing = s.get(LocalGroupMemberRow, (row.id, str(member)))
            if present and existing is None:
                s.add(LocalGroupMemberRow(group_id=row.id, member=str(member)))
            elif not present:
                if existing is None:
                    raise _not_found(f"member {member} of {group}")
                s.delete(existing)

    # -- audit --------------------------------------------------------------------------------

    def audit(self, *, limit: int = 100, after_id: int = 0) -> list[AuditRow]:
        with self._read() as s:
            return list(s.exec(select(AuditRow).where(col(AuditRow.id) > after_id)
                               .order_by(col(AuditRow.id)).limit(limit)))

    def set_meta(self, key: str, value: str, *, actor: str, at: datetime) -> None:
        with self._change(actor, "set_meta", {"key": key, "value": value}, at) as s:
            row = s.get(MetaRow, key)
            s.add(MetaRow(key=key, value=value) if row is None else row)
            if row is not None:
                row.value = value

    def record(self, actor: str, action: str, data: dict[str, Any], at: datetime) -> None:
        """Audit an operation that changes nothing in these tables (backup, restore, key)."""
        with self._change(actor, action, data, at):
            pass

    # -- publication to the registry's service catalogue --------------------------------------

    def catalogue_due(self, client: ClientId) -> None:
        """Note that ``client``'s services changed: a publication is due."""
        with self._plain("catalogue_due") as s:
            row = s.get(CataloguePublicationRow, str(client))
            if row is None:
                row = CataloguePublicationRow(client_id=str(client))
            row.wanted += 1
            if row.state != "failed":
                row.state = "pending"
            s.add(row)

    def publications(self, client: ClientId | None = None) -> list[CataloguePublicationRow]:
        with self._read() as s:
            query = select(CataloguePublicationRow).order_by(
                col(CataloguePublicationRow.client_id))
            if client is not None:
                query = query.where(CataloguePublicationRow.client_id == str(client))
            return list(s.exec(query))

    def publication(self, client: ClientId) -> CataloguePublicationRow:
        """The client's row (a fresh, never published one if there is none yet)."""
        rows = self.publications(client)
        return rows[0] if rows else CataloguePublicationRow(client_id=str(client))

    def publication_result(self, client: ClientId, covered: int, *, at: datetime,
                           error: str | None = None, digest: str | None = None,
                           request_id: str | None = None, services: int = 0) -> None:
        """Record an attempt that started when ``wanted`` was ``covered``: success (no
        ``error``) publishes up to ``covered``; a change made meanwhile stays due.  A deleted
        client's row is removed once nothing is due: its withdrawal is published."""
        with self._plain("publication_result") as s:
            row = s.get(CataloguePublicationRow, str(client))
            if row is None:
                row = CataloguePublicationRow(client_id=str(client), wanted=covered)
            row.attempted_at, row.tried = at, max(row.tried, covered)
            if error is None:
                row.published = max(row.published, covered)
                row.digest, row.services, row.published_at = digest, services, at
                row.request_id = request_id or row.request_id
                row.last_error = None
                row.state = "published" if row.published >= row.wanted else "pending"
            else:
                row.state, row.last_error = "failed", error[:2000]
            if row.state != "published" or s.get(ClientRow, str(client)) is not None:
                s.add(row)
            elif sa.inspect(row).persistent:
                s.delete(row)

    @contextmanager
    def _plain(self, action: str) -> Iterator[Session]:
        """A transaction outside the configuration: no audit record, no new version."""
        try:
            with Session(self.engine) as session:
                yield session
                session.commit()
        except SQLAlchemyError as exc:
            raise StoreError(f"{action}: configuration store could not be written",
                             code="server.serverproxy.internal_error") from exc

    # -- the whole configuration, for the proxies and for backups -----------------------------

    def access_rules(self) -> AccessRules:
        with self._read() as s:
            return AccessRules(
                AccessRule(ServiceId(ClientId.parse(r.client_id), r.service_code),
                           parse_subject(r.subject), EndpointPattern(r.method, r.path))
                for r in s.exec(select(AccessRightRow)))

    def group_members(self) -> dict[LocalGroupId, frozenset[ClientId]]:
        return {LocalGroupId(ClientId.parse(g.client_id), g.code):
                frozenset(ClientId.parse(m) for m in members)
                for g, members in self.local_groups()}

    def all_endpoints(self) -> dict[int, tuple[EndpointPattern, ...]]:
        with self._read() as s:
            out: dict[int, list[EndpointPattern]] = {}
            for ep in s.exec(select(EndpointRow).order_by(col(EndpointRow.path),
                                                          col(EndpointRow.method))):
                out.setdefault(ep.service_id, []).append(EndpointPattern(ep.method, ep.path))
            return {k: tuple(v) for k, v in out.items()}


# -- helpers inside one transaction -------------------------------------------------------------


def _set_given(row: SQLModel, **values: Any) -> None:
    """Set the attributes whose new value is given (not None): a partial update."""
    for name, value in values.items():
        if value is not None:
            setattr(row, name, value)


def _check_connection(value: str) -> None:
    if value not in CONNECTION_TYPES:
        raise StoreError(f"connection type must be one of {sorted(CONNECTION_TYPES)}")


def _subject(text: str, provider: ClientId) -> ClientId | Any:
    try:
        subject = parse_subject(text)
    except BadRequestError as exc:
        raise StoreError(f"subject {text!r}: {exc.message}") from exc
    if isinstance(subject, LocalGroupId) and subject.owner != provider:
        raise StoreError(f"local group {subject} belongs to another client than {provider}")
    return subject


def _service_row(s: Session, service: ServiceId) -> ServiceRow | None:
    return s.exec(select(ServiceRow).where(ServiceRow.client_id == str(service.provider),
                                           ServiceRow.code == service.code)).first()


def _group_row(s: Session, group: LocalGroupId) -> LocalGroupRow | None:
    return s.exec(select(LocalGroupRow).where(LocalGroupRow.client_id == str(group.owner),
                                              LocalGroupRow.code == group.code)).first()


def _add_service(s: Session, desc_id: int, client_id: str, spec: ServiceSpec) -> None:
    check_service_code(spec.code)
    if s.exec(select(ServiceRow).where(ServiceRow.client_id == client_id,
                                       ServiceRow.code == spec.code)).first() is not None:
        raise _conflict(f"client {client_id} already has a service {spec.code!r}")
    row = ServiceRow(description_id=desc_id, client_id=client_id, code=spec.code, url=spec.url,
                     timeout=spec.timeout, tls_verify=spec.tls_verify)
    s.add(row)
    s.flush()
    assert row.id is not None
    for ep in dict.fromkeys(spec.endpoints):
        s.add(EndpointRow(service_id=row.id, method=ep.method, path=ep.path, generated=True))


def _replace_generated_endpoints(s: Session, row: ServiceRow,
                                 endpoints: Sequence[EndpointPattern]) -> None:
    wanted = set(endpoints)
    current = list(s.exec(select(EndpointRow).where(EndpointRow.service_id == row.id)))
    have = {EndpointPattern(e.method, e.path) for e in current}
    for ep in current:
        if ep.generated and EndpointPattern(ep.method, ep.path) not in wanted:
            _delete_endpoint(s, row, ep)
    assert row.id is not None
    for ep_pattern in wanted - have:
        s.add(EndpointRow(service_id=row.id, method=ep_pattern.method, path=ep_pattern.path,
                          generated=True))


def _run(s: Session, statement: sa.Executable) -> None:
    """Run a DELETE now, in the session's transaction, so children go before parents."""
    s.connection().execute(statement)


def _rights_of(row: ServiceRow) -> Any:
    return sa.delete(AccessRightRow).where(col(AccessRightRow.client_id) == row.client_id,
                                           col(AccessRightRow.service_code) == row.code)


def _delete_endpoint(s: Session, row: ServiceRow, ep: EndpointRow) -> None:
    _run(s, _rights_of(row).where(col(AccessRightRow.method) == ep.method,
                                  col(AccessRightRow.path) == ep.path))
    _run(s, sa.delete(EndpointRow).where(col(EndpointRow.id) == ep.id))


def _delete_service(s: Session, row: ServiceRow) -> None:
    _run(s, _rights_of(row))
    _run(s, sa.delete(EndpointRow).where(col(EndpointRow.service_id) == row.id))
    _run(s, sa.delete(ServiceRow).where(col(ServiceRow.id) == row.id))


def _delete_description(s: Session, desc: DescriptionRow) -> None:
    for row in list(s.exec(select(ServiceRow).where(ServiceRow.description_id == desc.id))):
        _delete_service(s, row)
    _run(s, sa.delete(DescriptionRow).where(col(DescriptionRow.id) == desc.id))


def _delete_group(s: Session, group: LocalGroupRow) -> None:
    _run(s, sa.delete(LocalGroupMemberRow).where(
        col(LocalGroupMemberRow.group_id) == group.id))
    subject = str(LocalGroupId(ClientId.parse(group.client_id), group.code))
    _run(s, sa.delete(AccessRightRow).where(col(AccessRightRow.subject) == subject))
    _run(s, sa.delete(LocalGroupRow).where(col(LocalGroupRow.id) == group.id))
