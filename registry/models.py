"""The registry's tables (SQLModel): everything the federation's administration keeps.

One row class per table; no behaviour beyond the column definitions.  The rules (who may
change what, what a change implies, the audit trail) live in :mod:`registry.service`, and
what the tables mean for security servers in :mod:`registry.confbuild`.  Identifiers are
stored in parts (member class, member code, subsystem code) with the instance taken from
:class:`FederationSetting`, because a registry publishes exactly one instance.

Times are stored as UTC (:class:`UTCDateTime`) and come back timezone-aware on SQLite and
PostgreSQL alike.  Certificates are stored as DER, with the hex SHA-256 of the DER next to
them where the configuration refers to the hash.

Schema changes go through Alembic (``registry/migrations``); :data:`REGISTRY_TABLES` is the
list of the tables that belong to the registry (the security server's tables share
SQLModel's metadata but not the registry's database).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

__all__ = [
    "REGISTRY_TABLES",
    "ApprovedCARow",
    "ApprovedTSARow",
    "AuditRow",
    "AuthCertRow",
    "ConfSigningKeyRow",
    "FederationSetting",
    "GlobalGroupMemberRow",
    "GlobalGroupRow",
    "ManagementRequestRow",
    "MemberClassRow",
    "MemberRow",
    "PublicationRow",
    "SecurityServerRow",
    "ServerClientRow",
    "ServiceRow",
    "SubsystemRow",
    "UTCDateTime",
]


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as naive UTC; SQLite has no time zones, PostgreSQL's
    ``timestamptz`` would convert to the session's zone.  Naive input is refused."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _time(**kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kwargs)


def _json(**kwargs: Any) -> Any:
    return Field(sa_type=sa.JSON, **kwargs)


class FederationSetting(SQLModel, table=True):
    """The one row of federation-wide settings (``id`` is always 1)."""

    __tablename__ = "federation_settings"

    id: int = Field(default=1, primary_key=True)
    instance: str = Field(max_length=255)
    ocsp_freshness_seconds: int = 3600
    timestamping_interval_seconds: int = 60
    conf_expiry_seconds: int = 600
    conf_refresh_seconds: int = 60
    auto_approve_auth_certs: bool = False
    """Approve an auth-certificate registration of an already registered server without an
    officer (never the bootstrap of a new server)."""
    auto_approve_clients: bool = False
    """Approve a subsystem registration on a server whose owner is the subsystem's member."""


class MemberClassRow(SQLModel, table=True):
    __tablename__ = "member_classes"

    code: str = Field(primary_key=True, max_length=255)
    description: str = Field(default="", max_length=1000)


class MemberRow(SQLModel, table=True):
    __tablename__ = "members"
    __table_args__ = (sa.UniqueConstraint("member_class", "code"),)

    id: int | None = Field(default=None, primary_key=True)
    member_class: str = Field(foreign_key="member_classes.code", max_length=255)
    code: str = Field(max_length=255)
    name: str = Field(max_length=1000)
    created_at: datetime = _time()


class SubsystemRow(SQLModel, table=True):
    __tablename__ = "subsystems"
    __table_args__ = (sa.UniqueConstraint("member_id", "code"),)

    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="members.id", ondelete="CASCADE")
    code: str = Field(max_length=255)
    created_at: datetime = _time()


class SecurityServerRow(SQLModel, table=True):
    __tablename__ = "security_servers"
    __table_args__ = (sa.UniqueConstraint("owner_id", "code"),)

    id: int | None = Field(default=None, primary_key=True)
    owner_id: int = Field(foreign_key="members.id")
    code: str = Field(max_length=255)
    address: str = Field(max_length=300)
    created_at: datetime = _time()


class AuthCertRow(SQLModel, table=True):
    __tablename__ = "auth_certs"

    id: int | None = Field(default=None, primary_key=True)
    server_id: int = Field(foreign_key="security_servers.id", ondelete="CASCADE")
    cert_hash: str = Field(max_length=64, unique=True)
    certificate: bytes
    registered_at: datetime = _time()


class ServerClientRow(SQLModel, table=True):
    """A subsystem registered as a client of a security server (the owner member is one
    implicitly and has no row)."""

    __tablename__ = "server_clients"

    server_id: int = Field(foreign_key="security_servers.id", primary_key=True,
                           ondelete="CASCADE")
    subsystem_id: int = Field(foreign_key="subsystems.id", primary_key=True,
                              ondelete="CASCADE")
    enabled: bool = True
    registered_at: datetime = _time()


class GlobalGroupRow(SQLModel, table=True):
    __tablename__ = "global_groups"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=255, unique=True)
    description: str = Field(default="", max_length=1000)


class GlobalGroupMemberRow(SQLModel, table=True):
    __tablename__ = "global_group_members"

    group_id: int = Field(foreign_key="global_groups.id", primary_key=True, ondelete="CASCADE")
    client_id: str = Field(primary_key=True, max_length=1100)
    """REST form of a member or subsystem of this instance."""


class ServiceRow(SQLModel, table=True):
    """One entry of the service catalogue, per provider subsystem."""

    __tablename__ = "services"
    __table_args__ = (sa.UniqueConstraint("subsystem_id", "code"),)

    id: int | None = Field(default=None, primary_key=True)
    subsystem_id: int = Field(foreign_key="subsystems.id", ondelete="CASCADE")
    code: str = Field(max_length=255)
    kind: str = Field(max_length=8)
    """``REST`` or ``SOAP``."""
    description: str = Field(default="", max_length=4000)
    description_document: str | None = Field(default=None, sa_type=sa.Text)
    """The OpenAPI (REST) or WSDL (SOAP) description, as text."""
    service_type: str | None = Field(default=None, max_length=8)
    """``REST``, ``OPENAPI`` or ``WSDL`` as the provider's security server published it;
    None for an entry an officer made (its ``kind`` says enough)."""
    version: str | None = Field(default=None, max_length=255)
    title: str = Field(default="", max_length=1000)
    endpoints: list[dict[str, str]] = _json(default_factory=list)
    """``[{"method", "path"}]`` of a REST service, as published."""
    published_by: str | None = Field(default=None, max_length=1100)
    """The security server whose ``service_catalogue_update`` made this entry; None: an
    officer did."""
    published_at: datetime | None = _time(default=None)


class ApprovedCARow(SQLModel, table=True):
    __tablename__ = "approved_cas"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=1000, unique=True)
    certificate: bytes
    ocsp_urls: list[str] = _json(default_factory=list)


class ApprovedTSARow(SQLModel, table=True):
    __tablename__ = "approved_tsas"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=1000, unique=True)
    url: str = Field(max_length=2000)
    certificate: bytes


class ConfSigningKeyRow(SQLModel, table=True):
    """A configuration-signing key: its certificate here, its private key in the key folder.

    ``state`` moves ``announced`` -> ``active`` -> ``retired``: an announced key is listed
    in the configuration (signed by the active one) so that security servers learn it before
    it signs anything.
    """

    __tablename__ = "conf_signing_keys"

    key_id: str = Field(primary_key=True, max_length=64)
    certificate: bytes
    state: str = Field(max_length=16)
    created_at: datetime = _time()
    activated_at: datetime | None = _time(default=None)


class PublicationRow(SQLModel, table=True):
    """The version counter (one row, ``id`` 1): the last version handed out."""

    __tablename__ = "publications"

    id: int = Field(default=1, primary_key=True)
    version: int = Field(default=0, sa_type=sa.BigInteger)
    generated_at: datetime | None = _time(default=None)
    content_hash: str | None = Field(default=None, max_length=64)
    """SHA-256 of the last published payload without its version and times: a change of
    data is a change of this hash."""


class ManagementRequestRow(SQLModel, table=True):
    """A management request from a security server and its decision."""

    __tablename__ = "management_requests"

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(max_length=128, unique=True)
    """The sender's one-time id: a second request with it is a replay."""
    kind: str = Field(max_length=32)
    server: str = Field(max_length=1100)
    member: str = Field(max_length=1100)
    """The member that signed it (the server's owner, or the subsystem's member)."""
    payload: dict[str, Any] = _json()
    state: str = Field(max_length=16, index=True)
    created_at: datetime = _time()
    decided_at: datetime | None = _time(default=None)
    decided_by: str | None = Field(default=None, max_length=256)
    comment: str = Field(default="", max_length=2000)
    document: str = Field(sa_type=sa.Text)
    """The signed request as received, kept as evidence."""


class AuditRow(SQLModel, table=True):
    """One change made through the registry: who, what, when, before and after."""

    __tablename__ = "admin_audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _time(index=True)
    actor: str = Field(max_length=256)
    action: str = Field(max_length=64)
    target: str = Field(max_length=1100)
    before: dict[str, Any] | None = _json(default=None)
    after: dict[str, Any] | None = _json(default=None)


REGISTRY_TABLES: Final = frozenset({
    "federation_settings", "member_classes", "members", "subsystems", "security_servers",
    "auth_certs", "server_clients", "global_groups", "global_group_members", "services",
    "approved_cas", "approved_tsas", "conf_signing_keys", "publications",
    "management_requests", "admin_audit_log",
})
