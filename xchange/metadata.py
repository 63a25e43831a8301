"""Metadata services' answers, in X-Road's formats (PR-META section 2, PR-MREST sections 4-5).

* ``listClients``: every member and subsystem of an instance, as the XML ``xroad:clientList``
  element or, when the caller asks for ``application/json``, its JSON form;
* ``listMethods`` / ``allowedMethods`` of a REST provider: ``{"service": [...]}`` with each
  service's identifier parts, its type and its endpoint list.

Pure: the caller passes global configuration and the services; nothing is looked up here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lxml import etree

from xchange.access import EndpointPattern
from xchange.globalconf import GlobalConf
from xchange.identifiers import NS_ID, NS_XROAD, ClientId, ServiceId

__all__ = [
    "ClientEntry",
    "ServiceEntry",
    "client_entries",
    "client_list_json",
    "client_list_xml",
    "service_list_json",
]

_SERVICE_TYPES = {"OPENAPI3": "OPENAPI", "REST": "REST", "WSDL": "WSDL"}


@dataclass(frozen=True, slots=True)
class ClientEntry:
    id: ClientId
    name: str


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    id: ServiceId
    kind: str
    """``OPENAPI3``, ``REST`` or ``WSDL``."""
    endpoints: tuple[EndpointPattern, ...]


def client_entries(conf: GlobalConf, instance: str | None = None) -> list[ClientEntry]:
    """Members, each followed by its subsystems, of ``instance`` (default: the conf's)."""
    if instance not in (None, conf.instance):
        return []  # one instance per federation: others have no clients here
    out: list[ClientEntry] = []
    for member in conf.members:
        out.append(ClientEntry(member.id, member.name))
        out.extend(ClientEntry(member.id.subsystem_of(code), member.name)
                   for code in member.subsystems)
    return out


def client_list_xml(entries: Iterable[ClientEntry]) -> bytes:
    root = etree.Element(f"{{{NS_XROAD}}}clientList", nsmap={"xroad": NS_XROAD, "id": NS_ID})
    for entry in entries:
        member = etree.SubElement(root, f"{{{NS_XROAD}}}member")
        member.append(entry.id.to_xml(f"{{{NS_XROAD}}}id"))
        etree.SubElement(member, f"{{{NS_XROAD}}}name").text = entry.name
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _id_json(client: ClientId) -> dict[str, str]:
    out = {"object_type": client.object_type.value, "xroad_instance": client.instance,
           "member_class": client.member_class, "member_code": client.member_code}
    if client.subsystem is not None:
        out["subsystem_code"] = client.subsystem
    return out


def client_list_json(entries: Iterable[ClientEntry]) -> dict[str, Any]:
    return {"member": [{"id": _id_json(e.id), "name": e.name} for e in entries]}


def service_list_json(services: Iterable[ServiceEntry]) -> dict[str, Any]:
    out = []
    for svc in services:
        entry: dict[str, Any] = {**_id_json(svc.id.provider), "object_type": "SERVICE",
                                 "service_code": svc.id.code,
                                 "service_type": _SERVICE_TYPES.get(svc.kind, svc.kind),
                                 "endpoint_list": [{"method": e.method, "path": e.path}
                                                   for e in svc.endpoints]}
        out.append(entry)
    return {"service": out}
