"""Access-rule evaluation: deny by default.

A rule grants one subject (a subsystem or member, or a global group) the right to call one
service of the provider.  Service versions are ignored, as X-Road does: a right to
``.../getPerson`` covers every version of it.  Endpoint rules (method + path glob) and local
groups build on this in the security-server administration issue.

This module decides; it does not load rules or know where they come from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from xchange.errors import AccessDeniedError
from xchange.identifiers import ClientId, GlobalGroupId, ServiceId

__all__ = ["AccessRule", "AccessRules"]


@dataclass(frozen=True, slots=True)
class AccessRule:
    service: ServiceId
    subject: ClientId | GlobalGroupId


class AccessRules:
    """An immutable set of rules indexed by service for O(1) checks."""

    def __init__(self, rules: Iterable[AccessRule]) -> None:
        index: dict[ServiceId, set[ClientId | GlobalGroupId]] = {}
        for rule in rules:
            index.setdefault(rule.service.unversioned, set()).add(rule.subject)
        self._index = {k: frozenset(v) for k, v in index.items()}

    def check(
        self,
        client: ClientId,
        service: ServiceId,
        group_members: Callable[[GlobalGroupId], frozenset[ClientId]],
    ) -> None:
        """Raise AccessDeniedError unless ``client`` may call ``service``.

        A member-level grant does not cover the member's subsystems: X-Road grants rights to
        exactly the identifier named.
        """
        subjects = self._index.get(service.unversioned, frozenset())
        if client in subjects:
            return
        for subject in subjects:
            if isinstance(subject, GlobalGroupId) and client in group_members(subject):
                return
        raise AccessDeniedError(f"client {client} has no access to service {service}")
