"""Who may do what in the registry's admin API, and how tokens for it are made.

Four roles, as in X-Road's central server (permissions are the strings the API checks):

================================  =============================================================
role                              may
================================  =============================================================
``observer``                      read everything except the audit log
``registration_officer``          read; members, subsystems, security servers, clients, global
                                  groups, the service catalogue; decide management requests
``security_officer``              read; approved CAs and TSAs; configuration-signing keys; read
                                  the audit log
``system_administrator``          read; federation settings, member classes; read the audit log
================================  =============================================================

Tokens are :mod:`xchange.adminauth` tokens for the audience ``xchange-registry:<INSTANCE>``,
signed with ``keys_dir/admin-token.key``.  ``xchange registry token`` issues them locally (it
needs the key file, so only whoever runs the registry machine can), which is how the first
officer gets a token; there are no passwords.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final

from sqlmodel import Session

from registry.config import RegistryConfig
from registry.db import opened_engine
from registry.keys import KeyStore
from registry.service import RegistryService
from xchange.adminauth import PermissionTable, issue_token
from xchange.errors import AdminError

__all__ = ["PERMISSIONS", "ROLES", "audience", "issue_admin_token"]

READ, AUDIT = "registry.read", "audit.read"
MEMBERS, GROUPS, SERVICES, REQUESTS = ("members.write", "groups.write", "services.write",
                                       "requests.decide")
TRUST, KEYS, SETTINGS = "trust.write", "keys.write", "settings.write"

PERMISSIONS: Final = PermissionTable({
    "observer": frozenset({READ}),
    "registration_officer": frozenset({READ, MEMBERS, GROUPS, SERVICES, REQUESTS}),
    "security_officer": frozenset({READ, TRUST, KEYS, AUDIT}),
    "system_administrator": frozenset({READ, SETTINGS, AUDIT}),
})
ROLES: Final = PERMISSIONS.roles


def audience(instance: str) -> str:
    return f"xchange-registry:{instance}"


def issue_admin_token(config: RegistryConfig, *, subject: str, roles: Iterable[str],
                      now: datetime, lifetime: timedelta) -> str:
    """Sign a token with the registry's admin-token key (the local bootstrap path)."""
    roles = sorted(set(roles))
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise AdminError(f"unknown role(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(ROLES))}", code="admin.bad_request")
    key = KeyStore.from_config(config).admin_key()
    with opened_engine(config.database_url) as engine, Session(engine) as session:
        instance = RegistryService(session, actor=subject, now=now).instance
    return issue_token(key, subject=subject, roles=roles, audience=audience(instance),
                       issued_at=now, lifetime=lifetime)
