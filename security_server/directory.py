"""The one seam through which the proxies see local clients, services and access rights.

The proxies ask a :class:`ServiceDirectory` (a ``typing.Protocol``):

* :meth:`~ServiceDirectory.client` -- is this a local client, enabled, how must its
  information system connect;
* :meth:`~ServiceDirectory.service` -- the provider system behind a service, or the
  server's own handler for a metadata service;
* :meth:`~ServiceDirectory.check_access` -- deny by default, per endpoint.

Two implementations:

* :class:`StoreDirectory` -- backed by the configuration store.  It keeps an immutable
  :class:`Snapshot` in memory and rebuilds it when told the store changed
  (:meth:`~StoreDirectory.invalidate`, called by the admin API after every commit) or when
  the store's version counter moved (checked at most every ``recheck_seconds``, for changes
  made by another process).  A revocation therefore denies the very next request.
* :class:`ConfigDirectory` -- the TOML file's ``clients``, ``[[services]]`` and ``[[access]]``
  alone, for a :class:`~security_server.runtime.Runtime` built without a store (unit tests).

:func:`seed_from_config` imports those TOML entries into an empty store, once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from security_server.body import SoapMessage
from security_server.config import ConnectionType, SecurityServerConfig
from security_server.store import ServerStore, ServiceSpec
from xchange.access import (
    AccessRules,
    EndpointPattern,
    GroupLookup,
    LocalGroupId,
)
from xchange.errors import AccessDeniedError, XRoadError
from xchange.globalconf import GlobalConf
from xchange.identifiers import ClientId, ServiceId
from xchange.messages import Request
from xchange.servicedesc import METADATA_SERVICE_CODES

__all__ = [
    "ConfigDirectory",
    "Directory",
    "LocalClient",
    "LocalHandler",
    "LocalService",
    "ServiceDirectory",
    "Snapshot",
    "StoreDirectory",
    "seed_from_config",
]

log = logging.getLogger(__name__)

ProviderAnswer = tuple[int, tuple[tuple[str, str], ...], bytes]
LocalHandler = Callable[[Request, SoapMessage | None, GlobalConf], Awaitable[ProviderAnswer]]
"""A service this server answers itself: given the request, what was read of a SOAP
request's message (None for REST) and global configuration."""
"""Answers a request (with its body) on the server itself -- metadata services -- instead of a
provider system."""


@dataclass(frozen=True, slots=True)
class LocalClient:
    id: ClientId
    enabled: bool = True
    is_connection: ConnectionType = "HTTPS_AUTH"
    certs: tuple[tuple[str, str], ...] = ()
    """The information systems' registered TLS certificates: (hex SHA-256 of DER, PEM)."""

    @property
    def cert_hashes(self) -> frozenset[str]:
        return frozenset(h for h, _ in self.certs)


@dataclass(frozen=True, slots=True)
class LocalService:
    id: ServiceId
    url: str
    """Base URL of the provider system; the request's path and query are appended."""
    timeout: float = 30.0
    tls_verify: bool = True
    enabled: bool = True
    kind: str = "REST"
    endpoints: tuple[EndpointPattern, ...] = ()
    description: str | None = None
    """The OpenAPI or WSDL document the service came from, if any."""
    local_handler: LocalHandler | None = None


@dataclass(frozen=True)
class Snapshot:
    """Everything the proxies need from the configuration, at one version."""

    version: int = 0
    clients: Mapping[ClientId, LocalClient] = field(default_factory=dict)
    services: Mapping[ServiceId, LocalService] = field(default_factory=dict)
    rules: AccessRules = field(default_factory=lambda: AccessRules([]))
    local_groups: Mapping[LocalGroupId, frozenset[ClientId]] = field(default_factory=dict)

    def local_members(self, group: LocalGroupId) -> frozenset[ClientId]:
        return self.local_groups.get(group, frozenset())

    def services_of(self, provider: ClientId) -> list[LocalService]:
        return sorted((s for s in self.services.values() if s.id.provider == provider),
                      key=lambda s: s.id.code)


class ServiceDirectory(Protocol):
    def snapshot(self) -> Snapshot: ...

    def invalidate(self) -> None: ...


MetadataFactory = Callable[[Snapshot, ServiceId], LocalService | None]
"""Builds the local service answering a metadata service code (see security_server.metadata)."""


def _no_metadata(_snapshot: Snapshot, _service: ServiceId) -> LocalService | None:
    return None


class Directory:
    """The lookups of the module docstring over any snapshot source."""

    def __init__(self, source: ServiceDirectory, metadata: MetadataFactory = _no_metadata):
        self.source = source
        self.metadata = metadata

    def snapshot(self) -> Snapshot:
        return self.source.snapshot()

    def invalidate(self) -> None:
        self.source.invalidate()

    def client(self, client: ClientId) -> LocalClient | None:
        """The enabled local client ``client``, or None."""
        found = self.snapshot().clients.get(client)
        return found if found is not None and found.enabled else None

    def service(self, service: ServiceId) -> LocalService | None:
        snap = self.snapshot()
        if service.code in METADATA_SERVICE_CODES and service.version is None:
            return self.metadata(snap, service)
        return snap.services.get(service.unversioned)

    def check_access(self, client: ClientId, service: ServiceId, method: str, path: str,
                     group_members: GroupLookup, *, soap: bool = False) -> None:
        """Deny by default.  Metadata services are open to every client, as in X-Road; over
        REST they answer GET only (a SOAP request, ``soap``, is a POST)."""
        if service.code in METADATA_SERVICE_CODES and service.version is None:
            if method != "GET" and not soap:
                raise AccessDeniedError(f"metadata service {service} answers GET only")
            return
        snap = self.snapshot()
        snap.rules.check(client, service, method, path, group_members, snap.local_members)


class ConfigDirectory:
    """A fixed snapshot of the TOML file's entries (no store)."""

    def __init__(self, config: SecurityServerConfig) -> None:
        clients = {c: LocalClient(c, is_connection=config.is_connection.get(c, "HTTPS_AUTH"))
                   for c in (*config.clients, config.server_id.owner)}
        services = {s.id.unversioned: LocalService(s.id.unversioned, s.url, s.timeout)
                    for s in config.services}
        self._snapshot = Snapshot(0, clients, services, config.access, {})

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def invalidate(self) -> None:
        """Nothing to do: the file does not change under a running server."""


class StoreDirectory:
    """Snapshots of a :class:`ServerStore`, cached until invalidated.

    ``snapshot()`` is called on the event loop; rebuilding reads the store synchronously,
    which is a handful of small queries and happens only after a change.
    """

    def __init__(self, store: ServerStore, *, recheck_seconds: float = 2.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.recheck_seconds = recheck_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._checked_at = 0.0
        self.on_rebuild: list[Callable[[Snapshot], None]] = []
        """Called with every newly built snapshot (the IS TLS layer learns certificates)."""

    def invalidate(self) -> None:
        with self._lock:
            self._snapshot = None

    def snapshot(self) -> Snapshot:
        with self._lock:
            snap, now = self._snapshot, self._monotonic()
            if snap is not None and now - self._checked_at < self.recheck_seconds:
                return snap
            self._checked_at = now
            if snap is not None and self.store.version() == snap.version:
                return snap
            try:
                fresh = build_snapshot(self.store)
            except XRoadError:
                if snap is None:
                    raise
                log.exception("configuration store unreadable; keeping version %d",
                              snap.version)
                return snap
            self._snapshot = fresh
            for listener in self.on_rebuild:
                listener(fresh)
            return fresh


def build_snapshot(store: ServerStore) -> Snapshot:
    version = store.version()
    clients = {}
    for row in store.clients():
        cid = ClientId.parse(row.id)
        certs = tuple((c.sha256, c.pem) for c in store.client_certs(cid))
        clients[cid] = LocalClient(cid, row.enabled, row.is_connection,  # type: ignore[arg-type]
                                   certs)
    descriptions = {d.id: d for d in store.descriptions()}
    endpoints = store.all_endpoints()
    services = {}
    for svc in store.services():
        desc = descriptions[svc.description_id]
        sid = ServiceId(ClientId.parse(svc.client_id), svc.code)
        assert svc.id is not None
        services[sid] = LocalService(
            sid, svc.url, svc.timeout, svc.tls_verify, desc.enabled, desc.kind,
            endpoints.get(svc.id, ()), desc.document)
    return Snapshot(version, clients, services, store.access_rules(), store.group_members())


_SEEDED_KEY = "toml_seed_imported"


def seed_from_config(store: ServerStore, config: SecurityServerConfig, at: datetime) -> bool:
    """Import the TOML ``clients``, ``[[services]]`` and ``[[access]]`` into the store the
    first time the server starts on it; afterwards the store (the admin API) is
    authoritative and those TOML entries are ignored.  Return whether it imported."""
    if store.get_meta(_SEEDED_KEY) is not None:
        if config.services or config.access.services():
            log.info("[[services]] and [[access]] in the configuration file were imported "
                     "once; the configuration store is authoritative now")
        return False
    actor = "configuration file"
    local = set(dict.fromkeys((config.server_id.owner, *config.clients)))
    existing = {ClientId.parse(c.id) for c in store.clients()}
    for client in local - existing:
        store.add_client(client, actor=actor, at=at,
                         is_connection=config.is_connection.get(client, "HTTPS_AUTH"))
    imported = set()
    for svc in config.services:
        if svc.id.provider not in local:
            # As before the store: a service of a provider that is not a local client is
            # never served, so it is not imported either.
            log.warning("[[services]] %s: its provider is not in clients; not imported", svc.id)
            continue
        spec = ServiceSpec(svc.id.code, svc.url, timeout=svc.timeout)
        store.add_description(svc.id.provider, "REST", svc.url, None, [spec], actor=actor,
                              at=at)
        imported.add(svc.id.unversioned)
    for rule in config.access.all_rules():
        if rule.service.unversioned in imported:
            store.grant(rule.service.unversioned, str(rule.subject), rule.endpoint,
                        actor=actor, at=at)
    store.set_meta(_SEEDED_KEY, at.isoformat(), actor=actor, at=at)
    return True
