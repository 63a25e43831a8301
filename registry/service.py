"""The registry's administration: every change to the federation's data goes through here.

:class:`RegistryService` works inside one SQLModel session that the caller opens and commits
(one transaction per API call or CLI command).  Each change method checks the rules of the
data, makes the change and appends an :class:`~registry.models.AuditRow` (who, what, when,
before and after) in the same transaction, so a change and its audit record commit together
or not at all.  Reads return plain dicts in the shape of the admin API
(``schemas/registry-admin.openapi.json``).

Errors are :class:`~xchange.errors.AdminError` with ``admin.bad_request``,
``admin.not_found`` or ``admin.conflict``.  Authorisation is not here (the API and the CLI
check the caller's permission before calling); neither is the signed configuration
(:mod:`registry.confbuild`) nor the management-request protocol (:mod:`registry.management`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlmodel import Session, SQLModel, col, func, select
from sqlmodel.sql.expression import SelectOfScalar

from registry.models import (
    ApprovedCARow,
    ApprovedTSARow,
    AuditRow,
    AuthCertRow,
    ConfSigningKeyRow,
    FederationSetting,
    GlobalGroupMemberRow,
    GlobalGroupRow,
    MemberClassRow,
    MemberRow,
    SecurityServerRow,
    ServerClientRow,
    ServiceRow,
    SubsystemRow,
)
from xchange.catalogue import CatalogueEntry
from xchange.certificates import cert_sha256, server_of_auth_cert
from xchange.errors import AdminError, BadRequestError, InvalidSignatureError
from xchange.globalconf import FederationSettings, InvalidGlobalConfError, SecurityServerInfo
from xchange.identifiers import ClientId, SecurityServerId, check_part

__all__ = ["SETTINGS_FIELDS", "Page", "RegistryService"]

_R = TypeVar("_R", bound=SQLModel)

SETTINGS_FIELDS = (
    "ocsp_freshness_seconds", "timestamping_interval_seconds", "conf_expiry_seconds",
    "conf_refresh_seconds", "auto_approve_auth_certs", "auto_approve_clients",
)


def _not_found(what: str) -> AdminError:
    return AdminError(f"{what} does not exist", code="admin.not_found")


def _conflict(message: str) -> AdminError:
    return AdminError(message, code="admin.conflict")


def _bad(message: str) -> AdminError:
    return AdminError(message, code="admin.bad_request")


def _part(value: str, what: str) -> str:
    try:
        return check_part(value, what)
    except BadRequestError as exc:
        raise _bad(exc.message) from exc


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def load_certificate_text(text: str) -> x509.Certificate:
    """A certificate given in an admin request: PEM, or base64 of the DER."""
    import base64
    import binascii

    try:
        if "-----BEGIN" in text:
            return x509.load_pem_x509_certificate(text.encode("ascii"))
        return x509.load_der_x509_certificate(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, UnicodeEncodeError) as exc:
        raise _bad("not a PEM or base64 DER X.509 certificate") from exc


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: the items and the total number matching the filter."""

    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int

    def to_json(self) -> dict[str, Any]:
        return {"items": self.items, "total": self.total, "limit": self.limit,
                "offset": self.offset}


class RegistryService:
    """The registry's data, read and changed by ``actor`` at time ``now``."""

    def __init__(self, session: Session, *, actor: str, now: datetime) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self.session = session
        self.actor = actor
        self.now = now

    # -- plumbing --------------------------------------------------------------------------

    def audit(self, action: str, target: str, before: dict[str, Any] | None,
              after: dict[str, Any] | None) -> None:
        self.session.add(AuditRow(at=self.now, actor=self.actor, action=action,
                                  target=target, before=before, after=after))

    def page(self, query: SelectOfScalar[_R], limit: int, offset: int,
              render: Callable[[_R], dict[str, Any]]) -> Page:
        total = self.session.exec(select(func.count()).select_from(query.subquery())).one()
        rows = self.session.exec(query.limit(limit).offset(offset)).all()
        return Page([render(r) for r in rows], int(total), limit, offset)

    def _flush(self, what: str) -> None:
        # Unique constraints are the last line against races between two officers.
        try:
            self.session.flush()
        except sa.exc.IntegrityError as exc:
            self.session.rollback()
            raise _conflict(f"{what} conflicts with existing data") from exc

    # -- settings ----------------------------------------------------------------------------

    def settings_row(self) -> FederationSetting:
        row = self.session.get(FederationSetting, 1)
        if row is None:
            raise _conflict("the registry is not initialised (xchange registry init)")
        return row

    @property
    def instance(self) -> str:
        return self.settings_row().instance

    def initialise(self, instance: str) -> None:
        """Create the settings row for ``instance``; refuses a second, different instance."""
        _part(instance, "instance")
        row = self.session.get(FederationSetting, 1)
        if row is not None:
            if row.instance != instance:
                raise _conflict(f"the registry is already initialised for {row.instance}")
            return
        self.session.add(FederationSetting(instance=instance))
        self.audit("settings.init", instance, None, {"instance": instance})
        self._flush("settings")

    def get_settings(self) -> dict[str, Any]:
        row = self.settings_row()
        return {"instance": row.instance, **{f: getattr(row, f) for f in SETTINGS_FIELDS}}

    def update_settings(self, changes: dict[str, Any]) -> dict[str, Any]:
        row = self.settings_row()
        before = self.get_settings()
        unknown = sorted(set(changes) - set(SETTINGS_FIELDS))
        if unknown:
            raise _bad(f"unknown setting(s): {', '.join(unknown)}")
        # JSON has one number type: 60.0 is the integer 60 (JSON Schema agrees).
        changes = {k: int(v) if isinstance(v, float) and v.is_integer() else v
                   for k, v in changes.items()}
        merged = {**before, **changes}
        try:  # check first: a refused change must leave the row as it was
            FederationSettings(**{k: merged[k] for k in FederationSettings().to_payload()})
        except InvalidGlobalConfError as exc:
            raise _bad(exc.message) from exc
        for name, value in changes.items():
            setattr(row, name, value)
        after = self.get_settings()
        self.audit("settings.update", row.instance, before, after)
        self._flush("settings")
        return after

    def federation_settings(self) -> FederationSettings:
        row = self.settings_row()
        return FederationSettings(
            ocsp_freshness_seconds=row.ocsp_freshness_seconds,
            timestamping_interval_seconds=row.timestamping_interval_seconds,
            conf_expiry_seconds=row.conf_expiry_seconds,
            conf_refresh_seconds=row.conf_refresh_seconds,
        )

    # -- member classes ----------------------------------------------------------------------

    def list_member_classes(self) -> list[dict[str, Any]]:
        rows = self.session.exec(select(MemberClassRow).order_by(col(MemberClassRow.code)))
        return [{"code": r.code, "description": r.description} for r in rows]

    def create_member_class(self, code: str, description: str = "") -> dict[str, Any]:
        _part(code, "member class")
        if self.session.get(MemberClassRow, code) is not None:
            raise _conflict(f"member class {code} already exists")
        self.session.add(MemberClassRow(code=code, description=description))
        after = {"code": code, "description": description}
        self.audit("member_class.create", code, None, after)
        self._flush(f"member class {code}")
        return after

    def delete_member_class(self, code: str) -> None:
        row = self.session.get(MemberClassRow, code)
        if row is None:
            raise _not_found(f"member class {code}")
        used = self.session.exec(select(MemberRow).where(MemberRow.member_class == code)).first()
        if used is not None:
            raise _conflict(f"member class {code} still has members")
        self.session.delete(row)
        self.audit("member_class.delete", code, {"code": code}, None)
        self._flush(f"member class {code}")

    # -- members and subsystems ---------------------------------------------------------------

    def member_id(self, member_class: str, code: str) -> ClientId:
        try:
            return ClientId(self.instance, member_class, code)
        except BadRequestError as exc:
            raise _bad(exc.message) from exc

    def _member_row(self, member: ClientId) -> MemberRow:
        if member.instance != self.instance or member.subsystem is not None:
            raise _not_found(f"member {member}")
        row = self.session.exec(select(MemberRow).where(
            MemberRow.member_class == member.member_class, MemberRow.code == member.member_code
        )).first()
        if row is None:
            raise _not_found(f"member {member}")
        return row

    def _member_json(self, row: MemberRow) -> dict[str, Any]:
        subs = self.session.exec(select(SubsystemRow.code).where(
            SubsystemRow.member_id == row.id).order_by(col(SubsystemRow.code))).all()
        return {"id": str(ClientId(self.instance, row.member_class, row.code)),
                "member_class": row.member_class, "member_code": row.code, "name": row.name,
                "subsystems": list(subs), "created_at": _time(row.created_at)}

    def list_members(self, *, limit: int = 100, offset: int = 0, q: str | None = None,
                     member_class: str | None = None) -> Page:
        query = select(MemberRow).order_by(col(MemberRow.member_class), col(MemberRow.code))
        if member_class is not None:
            query = query.where(MemberRow.member_class == member_class)
        if q:
            pattern = f"%{_escape_like(q)}%"
            query = query.where(sa.or_(col(MemberRow.name).ilike(pattern, escape="\\"),
                                       col(MemberRow.code).ilike(pattern, escape="\\")))
        return self.page(query, limit, offset, self._member_json)

    def get_member(self, member: ClientId) -> dict[str, Any]:
        return self._member_json(self._member_row(member))

    def create_member(self, member_class: str, code: str, name: str) -> dict[str, Any]:
        member = self.member_id(member_class, code)
        if self.session.get(MemberClassRow, member_class) is None:
            raise _bad(f"member class {member_class} does not exist")
        if self.session.exec(select(MemberRow).where(
                MemberRow.member_class == member_class, MemberRow.code == code)).first():
            raise _conflict(f"member {member} already exists")
        row = MemberRow(member_class=member_class, code=code, name=name, created_at=self.now)
        self.session.add(row)
        self._flush(f"member {member}")
        after = self._member_json(row)
        self.audit("member.create", str(member), None, after)
        return after

    def rename_member(self, member: ClientId, name: str) -> dict[str, Any]:
        row = self._member_row(member)
        before = self._member_json(row)
        row.name = name
        after = self._member_json(row)
        self.audit("member.update", str(member), before, after)
        self._flush(f"member {member}")
        return after

    def delete_member(self, member: ClientId) -> None:
        row = self._member_row(member)
        if self.session.exec(select(SecurityServerRow).where(
                SecurityServerRow.owner_id == row.id)).first() is not None:
            raise _conflict(f"member {member} still owns security servers")
        before = self._member_json(row)
        for sub in before["subsystems"]:
            self._drop_group_memberships(str(member.subsystem_of(sub)))
        self._drop_group_memberships(str(member))
        self.session.delete(row)
        self.audit("member.delete", str(member), before, None)
        self._flush(f"member {member}")

    def _drop_group_memberships(self, client: str) -> None:
        for m in self.session.exec(select(GlobalGroupMemberRow).where(
                GlobalGroupMemberRow.client_id == client)):
            self.session.delete(m)

    def _subsystem_row(self, client: ClientId) -> SubsystemRow:
        if client.subsystem is None:
            raise _bad(f"{client} is not a subsystem")
        member = self._member_row(client.member)
        row = self.session.exec(select(SubsystemRow).where(
            SubsystemRow.member_id == member.id, SubsystemRow.code == client.subsystem)).first()
        if row is None:
            raise _not_found(f"subsystem {client}")
        return row

    def create_subsystem(self, member: ClientId, code: str) -> dict[str, Any]:
        _part(code, "subsystem code")
        row = self._member_row(member)
        client = member.subsystem_of(code)
        if self.session.exec(select(SubsystemRow).where(
                SubsystemRow.member_id == row.id, SubsystemRow.code == code)).first():
            raise _conflict(f"subsystem {client} already exists")
        assert row.id is not None
        self.session.add(SubsystemRow(member_id=row.id, code=code, created_at=self.now))
        self.audit("subsystem.create", str(client), None, {"id": str(client)})
        self._flush(f"subsystem {client}")
        return {"id": str(client)}

    def delete_subsystem(self, client: ClientId) -> None:
        row = self._subsystem_row(client)
        if self.session.exec(select(ServerClientRow).where(
                ServerClientRow.subsystem_id == row.id)).first() is not None:
            raise _conflict(f"subsystem {client} is still a client of a security server")
        for service in self.session.exec(select(ServiceRow).where(
                ServiceRow.subsystem_id == row.id)):
            self.session.delete(service)
        self._drop_group_memberships(str(client))
        self.session.delete(row)
        self.audit("subsystem.delete", str(client), {"id": str(client)}, None)
        self._flush(f"subsystem {client}")

    def is_registered(self, client: ClientId) -> bool:
        try:
            if client.subsystem is None:
                self._member_row(client)
            else:
                self._subsystem_row(client)
        except AdminError:
            return False
        return True

    # -- security servers ----------------------------------------------------------------------

    def server_row(self, server: SecurityServerId) -> SecurityServerRow:
        owner = self._member_row(server.owner)
        row = self.session.exec(select(SecurityServerRow).where(
            SecurityServerRow.owner_id == owner.id,
            SecurityServerRow.code == server.server_code)).first()
        if row is None:
            raise _not_found(f"security server {server}")
        return row

    def _server_id(self, row: SecurityServerRow) -> SecurityServerId:
        owner = self.session.get(MemberRow, row.owner_id)
        assert owner is not None
        return SecurityServerId(ClientId(self.instance, owner.member_class, owner.code),
                                row.code)

    def _server_json(self, row: SecurityServerRow) -> dict[str, Any]:
        certs = self.session.exec(select(AuthCertRow).where(
            AuthCertRow.server_id == row.id).order_by(col(AuthCertRow.id))).all()
        clients = []
        for link, sub, member in self.session.exec(
            select(ServerClientRow, SubsystemRow, MemberRow)
            .where(ServerClientRow.server_id == row.id,
                   ServerClientRow.subsystem_id == SubsystemRow.id,
                   SubsystemRow.member_id == MemberRow.id)
            .order_by(col(MemberRow.member_class), col(MemberRow.code), col(SubsystemRow.code))
        ):
            client = ClientId(self.instance, member.member_class, member.code, sub.code)
            clients.append({"id": str(client), "enabled": link.enabled})
        return {"id": str(self._server_id(row)), "address": row.address,
                "auth_cert_hashes": [c.cert_hash for c in certs], "clients": clients,
                "created_at": _time(row.created_at)}

    def list_servers(self, *, limit: int = 100, offset: int = 0,
                     q: str | None = None) -> Page:
        query = select(SecurityServerRow).order_by(col(SecurityServerRow.id))
        if q:
            query = query.where(col(SecurityServerRow.code).ilike(
                f"%{_escape_like(q)}%", escape="\\"))
        return self.page(query, limit, offset, self._server_json)

    def get_server(self, server: SecurityServerId) -> dict[str, Any]:
        return self._server_json(self.server_row(server))

    def _check_address(self, server: SecurityServerId, address: str) -> None:
        try:
            SecurityServerInfo(server, address, ())
        except InvalidGlobalConfError as exc:
            raise _bad(exc.message) from exc

    def create_server(self, server: SecurityServerId, address: str) -> dict[str, Any]:
        owner = self._member_row(server.owner)
        self._check_address(server, address)
        if self.session.exec(select(SecurityServerRow).where(
                SecurityServerRow.owner_id == owner.id,
                SecurityServerRow.code == server.server_code)).first():
            raise _conflict(f"security server {server} already exists")
        assert owner.id is not None
        row = SecurityServerRow(owner_id=owner.id, code=server.server_code, address=address,
                                created_at=self.now)
        self.session.add(row)
        self._flush(f"security server {server}")
        after = self._server_json(row)
        self.audit("server.create", str(server), None, after)
        return after

    def change_address(self, server: SecurityServerId, address: str) -> dict[str, Any]:
        row = self.server_row(server)
        self._check_address(server, address)
        before = self._server_json(row)
        row.address = address
        after = self._server_json(row)
        self.audit("server.update", str(server), before, after)
        self._flush(f"security server {server}")
        return after

    def change_owner(self, server: SecurityServerId, new_owner: ClientId) -> dict[str, Any]:
        """Move a server to another member (X-Road's owner change).  Its code stays; so does
        every auth certificate, which the new owner is expected to replace."""
        row = self.server_row(server)
        owner = self._member_row(new_owner)
        new_id = SecurityServerId(new_owner, server.server_code)
        if self.session.exec(select(SecurityServerRow).where(
                SecurityServerRow.owner_id == owner.id,
                SecurityServerRow.code == server.server_code)).first():
            raise _conflict(f"security server {new_id} already exists")
        before = self._server_json(row)
        assert owner.id is not None
        row.owner_id = owner.id
        self._flush(f"security server {new_id}")
        after = self._server_json(row)
        self.audit("server.change_owner", str(server), before, after)
        return after

    def delete_server(self, server: SecurityServerId) -> None:
        row = self.server_row(server)
        before = self._server_json(row)
        clients = [ClientId.parse(c["id"]) for c in before["clients"]]
        for child in (*self.session.exec(select(AuthCertRow).where(
                AuthCertRow.server_id == row.id)),
                      *self.session.exec(select(ServerClientRow).where(
                          ServerClientRow.server_id == row.id))):
            self.session.delete(child)
        self.session.flush()  # children first: the unit of work would not order them
        self.session.delete(row)
        self.audit("server.delete", str(server), before, None)
        self._flush(f"security server {server}")
        for client in clients:
            self._withdraw_if_unhosted(client)

    def add_auth_cert(self, server: SecurityServerId, cert: x509.Certificate,
                      *, at: datetime | None = None) -> dict[str, Any]:
        """Register ``cert`` for ``server``: it must name that server and chain to an
        approved CA now."""
        from xchange.certificates import verify_chain

        row = self.server_row(server)
        try:
            named = server_of_auth_cert(cert)
        except InvalidSignatureError as exc:
            raise _bad(exc.message) from exc
        if named != server:
            raise _bad(f"the certificate is for {named}, not for {server}")
        anchors = [x509.load_der_x509_certificate(ca.certificate)
                   for ca in self.session.exec(select(ApprovedCARow))]
        try:
            verify_chain(cert, [], anchors, at=at or self.now, purpose="auth")
        except InvalidSignatureError as exc:
            raise _bad(f"auth certificate refused: {exc.message}") from exc
        digest = cert_sha256(cert)
        if self.session.exec(select(AuthCertRow).where(
                AuthCertRow.cert_hash == digest)).first() is not None:
            raise _conflict(f"auth certificate {digest} is already registered")
        before = self._server_json(row)
        assert row.id is not None
        self.session.add(AuthCertRow(server_id=row.id, cert_hash=digest, certificate=_der(cert),
                                     registered_at=self.now))
        self._flush(f"auth certificate {digest}")
        after = self._server_json(row)
        self.audit("server.auth_cert.add", str(server), before, after)
        return after

    def delete_auth_cert(self, server: SecurityServerId, cert_hash: str) -> dict[str, Any]:
        row = self.server_row(server)
        cert = self.session.exec(select(AuthCertRow).where(
            AuthCertRow.server_id == row.id, AuthCertRow.cert_hash == cert_hash.lower())).first()
        if cert is None:
            raise _not_found(f"auth certificate {cert_hash} of {server}")
        before = self._server_json(row)
        self.session.delete(cert)
        self._flush(f"auth certificate {cert_hash}")
        after = self._server_json(row)
        self.audit("server.auth_cert.delete", str(server), before, after)
        return after

    def _client_link(self, server: SecurityServerId,
                     client: ClientId) -> tuple[SecurityServerRow, SubsystemRow,
                                                ServerClientRow | None]:
        row = self.server_row(server)
        sub = self._subsystem_row(client)
        link = self.session.get(ServerClientRow, (row.id, sub.id))
        return row, sub, link

    def hosts(self, server: SecurityServerId, client: ClientId) -> bool:
        """Whether ``client`` is registered as a client of ``server`` (enabled or not)."""
        try:
            return self._client_link(server, client)[2] is not None
        except AdminError:
            return False

    def add_client(self, server: SecurityServerId, client: ClientId) -> dict[str, Any]:
        row, sub, link = self._client_link(server, client)
        if link is not None:
            raise _conflict(f"{client} is already a client of {server}")
        before = self._server_json(row)
        assert row.id is not None and sub.id is not None
        self.session.add(ServerClientRow(server_id=row.id, subsystem_id=sub.id,
                                         registered_at=self.now))
        self._flush(f"client {client}")
        after = self._server_json(row)
        self.audit("server.client.add", str(server), before, after)
        return after

    def set_client_enabled(self, server: SecurityServerId, client: ClientId,
                           enabled: bool) -> dict[str, Any]:
        row, _sub, link = self._client_link(server, client)
        if link is None:
            raise _not_found(f"client {client} of {server}")
        before = self._server_json(row)
        link.enabled = enabled
        self.session.add(link)
        self._flush(f"client {client}")
        after = self._server_json(row)
        self.audit("server.client." + ("enable" if enabled else "disable"), str(server),
                   before, after)
        return after

    def remove_client(self, server: SecurityServerId, client: ClientId) -> dict[str, Any]:
        row, _sub, link = self._client_link(server, client)
        if link is None:
            raise _not_found(f"client {client} of {server}")
        before = self._server_json(row)
        self.session.delete(link)
        self._flush(f"client {client}")
        after = self._server_json(row)
        self.audit("server.client.remove", str(server), before, after)
        self._withdraw_if_unhosted(client)
        return after

    def _withdraw_if_unhosted(self, client: ClientId) -> None:
        """A subsystem that no security server hosts any more offers nothing: the catalogue
        entries servers published for it go (an officer's stay), audited as
        ``service.catalogue.withdraw``.  Its server can no longer publish the empty list
        itself: the registry accepts one only from a server that hosts the subsystem."""
        sub = self._subsystem_row(client)
        if self.session.exec(select(ServerClientRow).where(
                ServerClientRow.subsystem_id == sub.id)).first() is not None:
            return
        rows = list(self.session.exec(select(ServiceRow).where(
            ServiceRow.subsystem_id == sub.id, col(ServiceRow.published_by).is_not(None))))
        if not rows:
            return
        for service in rows:
            self.session.delete(service)
        self._flush(f"catalogue of {client}")
        self.audit("service.catalogue.withdraw", str(client),
                   {"provider": str(client), "services": sorted(r.code for r in rows)},
                   {"provider": str(client), "services": []})

    # -- global groups -------------------------------------------------------------------------

    def _group_row(self, code: str) -> GlobalGroupRow:
        row = self.session.exec(select(GlobalGroupRow).where(GlobalGroupRow.code == code)).first()
        if row is None:
            raise _not_found(f"global group {code}")
        return row

    def _group_json(self, row: GlobalGroupRow) -> dict[str, Any]:
        members = self.session.exec(select(GlobalGroupMemberRow.client_id).where(
            GlobalGroupMemberRow.group_id == row.id).order_by(
                col(GlobalGroupMemberRow.client_id))).all()
        return {"id": f"{self.instance}/{row.code}", "code": row.code,
                "description": row.description, "members": list(members)}

    def list_groups(self, *, limit: int = 100, offset: int = 0) -> Page:
        return self.page(select(GlobalGroupRow).order_by(col(GlobalGroupRow.code)),
                          limit, offset, self._group_json)

    def get_group(self, code: str) -> dict[str, Any]:
        return self._group_json(self._group_row(code))

    def create_group(self, code: str, description: str = "") -> dict[str, Any]:
        _part(code, "global group code")
        if self.session.exec(select(GlobalGroupRow).where(GlobalGroupRow.code == code)).first():
            raise _conflict(f"global group {code} already exists")
        row = GlobalGroupRow(code=code, description=description)
        self.session.add(row)
        self._flush(f"global group {code}")
        after = self._group_json(row)
        self.audit("group.create", after["id"], None, after)
        return after

    def delete_group(self, code: str) -> None:
        row = self._group_row(code)
        before = self._group_json(row)
        for m in self.session.exec(select(GlobalGroupMemberRow).where(
                GlobalGroupMemberRow.group_id == row.id)):
            self.session.delete(m)
        self.session.delete(row)
        self.audit("group.delete", before["id"], before, None)
        self._flush(f"global group {code}")

    def add_group_member(self, code: str, client: ClientId) -> dict[str, Any]:
        row = self._group_row(code)
        if not self.is_registered(client):
            raise _bad(f"{client} is not a registered member or subsystem")
        before = self._group_json(row)
        if str(client) in before["members"]:
            raise _conflict(f"{client} is already in global group {code}")
        assert row.id is not None
        self.session.add(GlobalGroupMemberRow(group_id=row.id, client_id=str(client)))
        self._flush(f"global group {code}")
        after = self._group_json(row)
        self.audit("group.member.add", after["id"], before, after)
        return after

    def remove_group_member(self, code: str, client: ClientId) -> dict[str, Any]:
        row = self._group_row(code)
        link = self.session.get(GlobalGroupMemberRow, (row.id, str(client)))
        if link is None:
            raise _not_found(f"{client} in global group {code}")
        before = self._group_json(row)
        self.session.delete(link)
        self._flush(f"global group {code}")
        after = self._group_json(row)
        self.audit("group.member.remove", after["id"], before, after)
        return after

    # -- service catalogue -----------------------------------------------------------------------

    def _service_json(self, row: ServiceRow) -> dict[str, Any]:
        sub = self.session.get(SubsystemRow, row.subsystem_id)
        assert sub is not None
        member = self.session.get(MemberRow, sub.member_id)
        assert member is not None
        provider = ClientId(self.instance, member.member_class, member.code, sub.code)
        return {"id": f"{provider}/{row.code}", "provider": str(provider), "code": row.code,
                "kind": row.kind, "description": row.description,
                "description_document": row.description_document,
                "type": row.service_type or ("WSDL" if row.kind == "SOAP" else "REST"),
                "version": row.version, "title": row.title,
                "endpoints": [dict(e) for e in row.endpoints],
                "published_by": row.published_by,
                "published_at": None if row.published_at is None else _time(row.published_at)}

    def _service_row(self, provider: ClientId, code: str) -> ServiceRow:
        sub = self._subsystem_row(provider)
        row = self.session.exec(select(ServiceRow).where(
            ServiceRow.subsystem_id == sub.id, ServiceRow.code == code)).first()
        if row is None:
            raise _not_found(f"service {provider}/{code}")
        return row

    def list_services(self, *, limit: int = 100, offset: int = 0,
                      provider: ClientId | None = None, kind: str | None = None) -> Page:
        query = select(ServiceRow).order_by(col(ServiceRow.subsystem_id), col(ServiceRow.code))
        if provider is not None:
            try:
                sub = self._subsystem_row(provider)
            except AdminError:
                return Page([], 0, limit, offset)
            query = query.where(ServiceRow.subsystem_id == sub.id)
        if kind is not None:
            query = query.where(ServiceRow.kind == kind)
        return self.page(query, limit, offset, self._service_json)

    def get_service(self, provider: ClientId, code: str) -> dict[str, Any]:
        return self._service_json(self._service_row(provider, code))

    def create_service(self, provider: ClientId, code: str, kind: str, description: str = "",
                       description_document: str | None = None) -> dict[str, Any]:
        _part(code, "service code")
        if kind not in ("REST", "SOAP"):
            raise _bad("kind must be REST or SOAP")
        sub = self._subsystem_row(provider)
        if self.session.exec(select(ServiceRow).where(
                ServiceRow.subsystem_id == sub.id, ServiceRow.code == code)).first():
            raise _conflict(f"service {provider}/{code} already exists")
        assert sub.id is not None
        row = ServiceRow(subsystem_id=sub.id, code=code, kind=kind, description=description,
                         description_document=description_document)
        self.session.add(row)
        self._flush(f"service {provider}/{code}")
        after = self._service_json(row)
        self.audit("service.create", after["id"], None, after)
        return after

    def update_service(self, provider: ClientId, code: str,
                       changes: dict[str, Any]) -> dict[str, Any]:
        row = self._service_row(provider, code)
        before = self._service_json(row)
        for name, value in changes.items():
            if name not in ("description", "description_document", "kind"):
                raise _bad(f"cannot change {name!r} of a service")
            if name == "kind" and value not in ("REST", "SOAP"):
                raise _bad("kind must be REST or SOAP")
            setattr(row, name, value)
        self._flush(f"service {provider}/{code}")
        after = self._service_json(row)
        self.audit("service.update", after["id"], _summary(before), _summary(after))
        return after

    def delete_service(self, provider: ClientId, code: str) -> None:
        row = self._service_row(provider, code)
        before = self._service_json(row)
        self.session.delete(row)
        self.audit("service.delete", before["id"], _summary(before), None)
        self._flush(f"service {provider}/{code}")

    def replace_catalogue(self, provider: ClientId, entries: Sequence[CatalogueEntry],
                          published_by: SecurityServerId) -> dict[str, Any]:
        """Make ``entries`` the whole catalogue of ``provider``, as its security server
        ``published_by`` published it: entries of other codes go (an officer's too), the
        rest are created or overwritten.  One audit record lists the codes before and
        after."""
        sub = self._subsystem_row(provider)
        assert sub.id is not None
        rows = {r.code: r for r in self.session.exec(select(ServiceRow).where(
            ServiceRow.subsystem_id == sub.id))}
        before = sorted(rows)
        wanted = {e.code: e for e in entries}
        for code, row in rows.items():
            if code not in wanted:
                self.session.delete(row)
        for code, entry in wanted.items():
            row = rows.get(code) or ServiceRow(subsystem_id=sub.id, code=code, kind=entry.kind)
            row.kind, row.service_type, row.version = entry.kind, entry.type, entry.version
            row.title, row.description = entry.title, entry.description
            row.endpoints = [{"method": e.method, "path": e.path} for e in entry.endpoints]
            row.published_by, row.published_at = str(published_by), self.now
            if code not in rows:
                row.description_document = None
            self.session.add(row)
        self._flush(f"catalogue of {provider}")
        after = {"provider": str(provider), "published_by": str(published_by),
                 "services": sorted(wanted)}
        self.audit("service.catalogue.replace", str(provider),
                   {"provider": str(provider), "services": before}, after)
        return after

    # -- trust services ------------------------------------------------------------------------

    def _ca_json(self, row: ApprovedCARow) -> dict[str, Any]:
        cert = x509.load_der_x509_certificate(row.certificate)
        return {"id": row.id, "name": row.name, "ocsp_urls": list(row.ocsp_urls),
                "certificate_hash": cert_sha256(cert),
                "subject": cert.subject.rfc4514_string(),
                "not_after": _time(cert.not_valid_after_utc)}

    def list_cas(self) -> list[dict[str, Any]]:
        return [self._ca_json(r) for r in self.session.exec(
            select(ApprovedCARow).order_by(col(ApprovedCARow.id)))]

    def add_ca(self, name: str, cert: x509.Certificate,
               ocsp_urls: Sequence[str] = ()) -> dict[str, Any]:
        if self.session.exec(select(ApprovedCARow).where(ApprovedCARow.name == name)).first():
            raise _conflict(f"approved CA {name!r} already exists")
        row = ApprovedCARow(name=name, certificate=_der(cert), ocsp_urls=list(ocsp_urls))
        self.session.add(row)
        self._flush(f"approved CA {name!r}")
        after = self._ca_json(row)
        self.audit("ca.add", name, None, after)
        return after

    def delete_ca(self, ca_id: int) -> None:
        row = self.session.get(ApprovedCARow, ca_id)
        if row is None:
            raise _not_found(f"approved CA {ca_id}")
        before = self._ca_json(row)
        self.session.delete(row)
        self.audit("ca.delete", row.name, before, None)
        self._flush(f"approved CA {ca_id}")

    def _tsa_json(self, row: ApprovedTSARow) -> dict[str, Any]:
        cert = x509.load_der_x509_certificate(row.certificate)
        return {"id": row.id, "name": row.name, "url": row.url,
                "certificate_hash": cert_sha256(cert)}

    def list_tsas(self) -> list[dict[str, Any]]:
        return [self._tsa_json(r) for r in self.session.exec(
            select(ApprovedTSARow).order_by(col(ApprovedTSARow.id)))]

    def add_tsa(self, name: str, url: str, cert: x509.Certificate) -> dict[str, Any]:
        if self.session.exec(select(ApprovedTSARow).where(ApprovedTSARow.name == name)).first():
            raise _conflict(f"approved TSA {name!r} already exists")
        row = ApprovedTSARow(name=name, url=url, certificate=_der(cert))
        self.session.add(row)
        self._flush(f"approved TSA {name!r}")
        after = self._tsa_json(row)
        self.audit("tsa.add", name, None, after)
        return after

    def delete_tsa(self, tsa_id: int) -> None:
        row = self.session.get(ApprovedTSARow, tsa_id)
        if row is None:
            raise _not_found(f"approved TSA {tsa_id}")
        before = self._tsa_json(row)
        self.session.delete(row)
        self.audit("tsa.delete", row.name, before, None)
        self._flush(f"approved TSA {tsa_id}")

    # -- configuration-signing keys ------------------------------------------------------------

    def _conf_key_json(self, row: ConfSigningKeyRow) -> dict[str, Any]:
        cert = x509.load_der_x509_certificate(row.certificate)
        return {"key_id": row.key_id, "state": row.state, "created_at": _time(row.created_at),
                "activated_at": None if row.activated_at is None else _time(row.activated_at),
                "subject": cert.subject.rfc4514_string()}

    def list_conf_keys(self) -> list[dict[str, Any]]:
        return [self._conf_key_json(r) for r in self.session.exec(
            select(ConfSigningKeyRow).order_by(col(ConfSigningKeyRow.created_at)))]

    def conf_keys(self, *states: str) -> list[x509.Certificate]:
        """Certificates of the keys in ``states``, oldest first."""
        rows = self.session.exec(select(ConfSigningKeyRow).where(
            col(ConfSigningKeyRow.state).in_(states)).order_by(
                col(ConfSigningKeyRow.created_at), col(ConfSigningKeyRow.key_id)))
        return [x509.load_der_x509_certificate(r.certificate) for r in rows]

    def add_conf_key(self, cert: x509.Certificate) -> dict[str, Any]:
        """Record a new configuration-signing key.  The first key is active at once; later
        ones are *announced*: listed in the configuration, signed by the active key, so that
        security servers trust them before they sign anything."""
        key_id = cert_sha256(cert)
        if self.session.get(ConfSigningKeyRow, key_id) is not None:
            raise _conflict(f"configuration-signing key {key_id} already exists")
        first = not self.conf_keys("active")
        row = ConfSigningKeyRow(key_id=key_id, certificate=_der(cert),
                                state="active" if first else "announced", created_at=self.now,
                                activated_at=self.now if first else None)
        self.session.add(row)
        self._flush(f"configuration-signing key {key_id}")
        after = self._conf_key_json(row)
        self.audit("conf_key.add", key_id, None, after)
        return after

    def _conf_key_row(self, key_id: str) -> ConfSigningKeyRow:
        row = self.session.get(ConfSigningKeyRow, key_id)
        if row is None:
            raise _not_found(f"configuration-signing key {key_id}")
        return row

    def activate_conf_key(self, key_id: str) -> dict[str, Any]:
        """An announced key starts signing (alongside the other active keys)."""
        row = self._conf_key_row(key_id)
        if row.state != "announced":
            raise _conflict(f"key {key_id} is {row.state}, not announced")
        before = self._conf_key_json(row)
        row.state, row.activated_at = "active", self.now
        self._flush(f"configuration-signing key {key_id}")
        after = self._conf_key_json(row)
        self.audit("conf_key.activate", key_id, before, after)
        return after

    def retire_conf_key(self, key_id: str) -> dict[str, Any]:
        """A key stops signing and is no longer listed; security servers stop trusting it
        with the next configuration they accept."""
        row = self._conf_key_row(key_id)
        if row.state == "retired":
            raise _conflict(f"key {key_id} is already retired")
        if row.state == "active" and len(self.conf_keys("active")) == 1:
            raise _conflict("the last active configuration-signing key cannot be retired; "
                            "add and activate its successor first")
        before = self._conf_key_json(row)
        row.state = "retired"
        self._flush(f"configuration-signing key {key_id}")
        after = self._conf_key_json(row)
        self.audit("conf_key.retire", key_id, before, after)
        return after

    # -- audit log -------------------------------------------------------------------------------

    def list_audit(self, *, limit: int = 100, offset: int = 0, actor: str | None = None,
                   action: str | None = None) -> Page:
        query = select(AuditRow).order_by(col(AuditRow.id).desc())
        if actor is not None:
            query = query.where(AuditRow.actor == actor)
        if action is not None:
            query = query.where(AuditRow.action == action)
        return self.page(query, limit, offset, lambda r: {
            "id": r.id, "at": _time(r.at), "actor": r.actor, "action": r.action,
            "target": r.target, "before": r.before, "after": r.after})


def _time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _summary(service: dict[str, Any]) -> dict[str, Any]:
    # Description documents can be large; the audit log keeps their size, not their text.
    doc = service.get("description_document")
    return {**service, "description_document": None if doc is None else f"{len(doc)} chars"}
