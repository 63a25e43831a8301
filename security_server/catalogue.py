"""Publishing a client's services to the registry's service catalogue.

The administrator describes services here (:mod:`security_server.admin_api`); consumers look
for them in the registry's catalogue.  This module carries the first to the second:

* :func:`build_catalogue` reads one client's services from the configuration store as
  catalogue entries (:mod:`xchange.catalogue`): the services of its *enabled* descriptions,
  their type, the OpenAPI document's title and description, and the endpoints of REST
  services;
* :func:`catalogue_request` makes the ``service_catalogue_update`` management request for it
  (:mod:`xchange.management`), which the publisher has signed by the client's member's
  signing key and sent (:class:`~security_server.registration.ManagementSender`);
* :class:`CataloguePublisher` sends it to the registry, records the result in the store
  (:class:`~security_server.store.CataloguePublicationRow`) and, as a background task of the
  running server, publishes what admin changes made due and retries what failed, every
  ``retry_seconds``, so that an admin call never waits for (or fails with) the registry.

A publication whose catalogue is the one last published is recorded without sending
anything (a changed timeout does not concern the catalogue), unless it is asked for
explicitly.  When the background task starts, :func:`stale_catalogues` finds the subsystems
whose stored publication is not known to match their services (imported from the TOML file,
changed while the server was down, or deleted: a client that is gone has an empty list) and
marks them due.  Not here: the registry's side (:mod:`registry.management`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import aiohttp

from security_server.config import SecurityServerConfig
from security_server.registration import (
    ManagementSender,
    RegistryRequestError,
    Signer,
    sign_in_thread,
)
from security_server.store import CataloguePublicationRow, ServerStore
from xchange.access import EndpointPattern
from xchange.catalogue import (
    MAX_DESCRIPTION,
    MAX_TITLE,
    CatalogueEntry,
    catalogue_digest,
    catalogue_json,
)
from xchange.errors import BadRequestError, XRoadError
from xchange.globalconf import ConfigurationAnchor
from xchange.identifiers import ClientId, SecurityServerId, ServiceId
from xchange.management import ManagementRequest, new_request
from xchange.servicedesc import parse_openapi
from xchange.signing import SigningIdentity

__all__ = [
    "CataloguePublisher",
    "PublicationError",
    "build_catalogue",
    "catalogue_request",
    "publication_json",
    "registry_url",
    "stale_catalogues",
]

log = logging.getLogger(__name__)

_TYPES: Final = {"OPENAPI3": "OPENAPI", "REST": "REST", "WSDL": "WSDL"}
_NOT_HOSTED: Final = "registry.management.not_allowed"


class PublicationError(RegistryRequestError):
    """The catalogue could not be published (the registry is unreachable or refused it)."""

    default_code = "admin.publication_failed"


def registry_url(config: SecurityServerConfig) -> str:
    """The registry's base URL: ``[registry] url``, else the anchor's download URL without
    its last path segment (where the registry itself serves the configuration)."""
    if config.registry_url is not None:
        return config.registry_url
    try:
        url = ConfigurationAnchor.from_json(config.anchor.read_bytes()).download_url
    except OSError as exc:
        raise PublicationError(f"no registry URL: give [registry] url, or install the "
                               f"anchor ({config.anchor}: {exc.strerror})") from exc
    return url.rsplit("/", 1)[0]


def _entry(store: ServerStore, client: ClientId, code: str, kind: str,
           document: str | None) -> CatalogueEntry:
    title = summary = ""
    if kind == "OPENAPI3" and document:
        try:
            described = parse_openapi(document.encode("utf-8"))
            title, summary = described.title[:MAX_TITLE], described.description[:MAX_DESCRIPTION]
        except BadRequestError:
            pass  # it was read when added; a title is not worth failing over
    endpoints: tuple[EndpointPattern, ...] = ()
    if kind != "WSDL":
        endpoints = tuple(EndpointPattern(e.method, e.path)
                          for e in store.endpoints(ServiceId(client, code)))
    return CatalogueEntry(code, _TYPES[kind], title, summary, endpoints)


def build_catalogue(store: ServerStore, client: ClientId) -> tuple[CatalogueEntry, ...]:
    """What ``client`` offers, as the catalogue should show it (disabled descriptions'
    services are left out, as the metadata services leave them out)."""
    enabled = {d.id: d for d in store.descriptions(client) if d.enabled}
    return tuple(_entry(store, client, s.code, enabled[s.description_id].kind,
                        enabled[s.description_id].document)
                 for s in store.services(client) if s.description_id in enabled)


def stale_catalogues(store: ServerStore) -> list[ClientId]:
    """The subsystems whose catalogue is not known to be the one last published, and that
    are not already due: a local subsystem or one with a publication row (a deleted client
    keeps its row; its catalogue is empty).  A subsystem never published whose list is empty
    is left alone: nothing of it is known at the registry, and it may not be registered
    there yet."""
    rows = {r.client_id: r for r in store.publications()}
    clients = {ClientId.parse(c.id) for c in store.clients()}
    clients |= {ClientId.parse(c) for c in rows}
    out = []
    for client in sorted((c for c in clients if c.subsystem is not None), key=str):
        row = rows.get(str(client))
        if row is not None and (row.wanted > row.published or row.state == "failed"):
            continue  # already due: the background task sends it
        entries = build_catalogue(store, client)
        published = row.digest if row is not None else None
        if bool(entries) if published is None else catalogue_digest(entries) != published:
            out.append(client)
    return out


def catalogue_request(entries: tuple[CatalogueEntry, ...], client: ClientId,
                      server: SecurityServerId, now: datetime) -> ManagementRequest:
    """The ``service_catalogue_update`` of ``client``'s ``entries``, unsigned."""
    return new_request("service_catalogue_update", server, now=now, client=str(client),
                       services=catalogue_json(entries))


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def publication_json(row: CataloguePublicationRow) -> dict[str, Any]:
    """The publication state as the admin API and ``xchange ss status`` show it."""
    return {"client": row.client_id, "state": row.state,
            "due": row.wanted > row.published or row.state == "failed",
            "services": row.services, "request_id": row.request_id,
            "published_at": _time(row.published_at), "attempted_at": _time(row.attempted_at),
            "last_error": row.last_error}


class CataloguePublisher:
    """Publishes clients' catalogues to the registry; one publication at a time."""

    def __init__(self, store: ServerStore, server: SecurityServerId,
                 identities: Mapping[ClientId, SigningIdentity], registry: Callable[[], str], *,
                 clock: Callable[[], datetime], retry_seconds: float = 60.0,
                 timeout: float = 30.0, sign: Signer = sign_in_thread) -> None:
        self.store = store
        self.sender = ManagementSender(server, identities, registry, timeout=timeout,
                                       sign=sign)
        self.clock = clock
        self.retry_seconds = retry_seconds
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    async def changed(self, client: ClientId) -> None:
        """``client``'s services changed: publish soon, in the background.  Only subsystems
        have a catalogue (as in X-Road, members provide services through subsystems)."""
        if client.subsystem is None:
            return
        try:
            await asyncio.to_thread(self.store.catalogue_due, client)
        except XRoadError as exc:  # the change itself is made; do not fail it for this
            log.warning("service catalogue of %s not marked for publication: %s", client,
                        exc.message)
            return
        self._wake.set()

    async def publish(self, client: ClientId, *, force: bool = True) -> CataloguePublicationRow:
        """Publish now and return the state; never raises for the registry's sake (a member
        is :class:`BadRequestError`: it has no catalogue)."""
        if client.subsystem is None:
            raise BadRequestError(f"{client} is a member: only subsystems publish services",
                                  code="admin.bad_request")
        async with self._lock:
            await self._publish(client, force=force)
        return await asyncio.to_thread(self.store.publication, client)

    async def _publish(self, client: ClientId, *, force: bool) -> None:
        row = await asyncio.to_thread(self.store.publication, client)
        covered, now = row.wanted, self.clock()
        try:
            entries = await asyncio.to_thread(build_catalogue, self.store, client)
            digest = catalogue_digest(entries)
            if not force and row.state != "failed" and digest == row.digest:
                await asyncio.to_thread(self.store.publication_result, client, covered, at=now,
                                        digest=digest, services=len(entries))
                return
            answer = await self.sender.send(
                catalogue_request(entries, client, self.sender.server, now), PublicationError,
                what="update")
            if answer["state"] != "approved":
                raise PublicationError(f"the registry left the update {answer['state']}")
        except XRoadError as exc:
            if isinstance(exc, PublicationError) and exc.registry_code == _NOT_HOSTED \
                    and not entries:
                # Unregistered first: the registry drops what servers published for a
                # subsystem none hosts any more; while another hosts it, its list stands.
                log.info("service catalogue of %s: nothing to withdraw, the registry no "
                         "longer counts it as a client of this server", client)
                await asyncio.to_thread(self.store.publication_result, client, covered,
                                        at=now, digest=digest, services=0)
                return
            log.warning("service catalogue of %s not published: %s", client, exc.message)
            await asyncio.to_thread(self.store.publication_result, client, covered, at=now,
                                    error=exc.message)
            return
        log.info("service catalogue of %s published (%d services, request %s)", client,
                 len(entries), answer.get("request_id"))
        await asyncio.to_thread(self.store.publication_result, client, covered, at=now,
                                digest=digest, services=len(entries),
                                request_id=str(answer.get("request_id")))

    def _due(self, row: CataloguePublicationRow, now: datetime) -> bool:
        if row.state == "failed" and row.tried >= row.wanted:  # nothing new: back off
            last = row.attempted_at
            if last is not None and last.tzinfo is None:
                last = last.replace(tzinfo=UTC)
            return last is None or now - last >= timedelta(seconds=self.retry_seconds)
        return row.wanted > row.published

    async def mark_stale(self) -> list[ClientId]:
        """Mark due the subsystems :func:`stale_catalogues` names, and return them."""
        try:
            stale = await asyncio.to_thread(stale_catalogues, self.store)
            for client in stale:
                await asyncio.to_thread(self.store.catalogue_due, client)
        except XRoadError as exc:
            log.warning("service catalogues not compared with the last published: %s",
                        exc.message)
            return []
        if stale:
            log.info("service catalogues to publish at start: %s",
                     ", ".join(map(str, stale)))
        return stale

    async def run(self) -> None:
        """Mark stale catalogues due (:meth:`mark_stale`), then publish what is due and wait
        for a change or ``retry_seconds``; forever."""
        await self.mark_stale()
        async with aiohttp.ClientSession() as session:
            self.sender.session = session
            try:
                while True:
                    self._wake.clear()
                    await self._run_once()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.retry_seconds)
            finally:
                self.sender.session = None

    async def _run_once(self) -> None:
        try:
            rows = await asyncio.to_thread(self.store.publications)
        except XRoadError as exc:
            log.warning("service catalogue publications not read: %s", exc.message)
            return
        now = self.clock()
        for row in rows:
            if self._due(row, now):
                async with self._lock:
                    await self._publish(ClientId.parse(row.client_id), force=False)
