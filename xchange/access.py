"""Access-rule evaluation: deny by default, per service or per endpoint.

A rule grants one *subject* the right to call one service of a provider, either the whole
service or one *endpoint* of it (an HTTP method, or ``*`` for any, and a path glob):

* subjects are a subsystem or member (exactly that identifier: a member grant does not cover
  its subsystems), a global group (membership from global configuration) or a local group
  (defined on the provider's security server, owned by the provider);
* service versions are ignored, as X-Road does: a right to ``.../getPerson`` covers every
  version of it;
* path globs follow X-Road's endpoints: a segment ``*`` matches exactly one path segment,
  a last segment ``**`` matches any number of segments (zero included), every other segment
  matches itself.  ``/**`` (also written ``**``) with method ``*`` is the whole service.

Request paths are normalised by :func:`request_segments` before matching, and the rules are
written so that no spelling of a path can reach an endpoint the rule does not name:

1. the path is split on ``/`` *before* percent-decoding, so ``%2F`` can never make a new
   segment; a segment that decodes to something holding ``/``, ``\\``, ``%`` (double
   encoding), a control character or invalid UTF-8 is ambiguous and denied;
2. segments are decoded exactly once: ``/p%65rsons`` is ``/persons``, as the provider will
   read it;
3. ``.`` and ``..`` segments (also encoded, also with ``;params`` as some servers strip
   them) are denied, never resolved: the request goes to the provider as it was sent, so a
   resolved path would not be the path the provider sees;
4. an empty segment in the middle (``//``) is denied; one trailing ``/`` is ignored, so
   ``/persons/`` is ``/persons``;
5. matching is case-sensitive, as HTTP paths are: a grant for ``/persons`` does not cover
   ``/Persons`` (deny by default; a provider that ignores case grants the spellings it
   wants);
6. query strings take no part: rules name paths, and the caller passes the path alone.

This module decides; it does not load rules or know where they come from.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Final
from urllib.parse import unquote

from xchange.errors import AccessDeniedError, BadRequestError
from xchange.identifiers import ClientId, GlobalGroupId, ServiceId, check_part

__all__ = [
    "ALL_ENDPOINTS",
    "AccessRule",
    "AccessRules",
    "EndpointPattern",
    "GroupLookup",
    "LocalGroupId",
    "LocalGroupLookup",
    "Subject",
    "no_local_groups",
    "parse_subject",
    "request_segments",
]

_METHOD: Final = re.compile(r"\*|[A-Z]{1,16}")
_AMBIGUOUS: Final = frozenset("/\\%")


@dataclass(frozen=True, slots=True, order=True)
class LocalGroupId:
    """A group defined on the provider's security server by ``owner`` (a local client).

    A local group can be used only in the access rights of its owner's services, as in
    X-Road.  Its REST-like form is ``local:INSTANCE/CLASS/CODE[/SUBSYSTEM]:GROUPCODE``.
    """

    owner: ClientId
    code: str

    PREFIX: ClassVar[str] = "local:"

    def __post_init__(self) -> None:
        check_part(self.code, "local group code")

    @classmethod
    def parse(cls, text: str) -> LocalGroupId:
        if not text.startswith(cls.PREFIX):
            raise BadRequestError(f"local group {text!r} must start with {cls.PREFIX}")
        owner, sep, code = text[len(cls.PREFIX):].rpartition(":")
        if not sep:
            raise BadRequestError(f"local group {text!r} must be local:OWNER:CODE")
        return cls(ClientId.parse(owner), code)

    def __str__(self) -> str:
        return f"{self.PREFIX}{self.owner}:{self.code}"


Subject = ClientId | GlobalGroupId | LocalGroupId
GroupLookup = Callable[[GlobalGroupId], frozenset[ClientId]]
LocalGroupLookup = Callable[[LocalGroupId], frozenset[ClientId]]


def parse_subject(text: str) -> Subject:
    """``local:OWNER:CODE`` a local group, ``INSTANCE/GROUP`` a global group, otherwise a
    member (three parts) or a subsystem (four parts)."""
    if text.startswith(LocalGroupId.PREFIX):
        return LocalGroupId.parse(text)
    if text.count("/") == 1:
        return GlobalGroupId.parse(text)
    return ClientId.parse(text)


def no_local_groups(_group: LocalGroupId) -> frozenset[ClientId]:
    """For callers without local groups: every local group is empty."""
    return frozenset()


def _decoded_segment(raw: str, where: str) -> str:
    try:
        seg = unquote(raw, errors="strict")
    except UnicodeDecodeError as exc:
        raise AccessDeniedError(f"{where} is not valid UTF-8 once decoded") from exc
    if any(ch in _AMBIGUOUS or not ch.isprintable() for ch in seg):
        raise AccessDeniedError(f"{where} has an ambiguous segment {raw!r}")
    if seg.split(";", 1)[0] in (".", ".."):
        raise AccessDeniedError(f"{where} has a dot segment {raw!r}")
    return seg


def request_segments(path: str) -> tuple[str, ...]:
    """The decoded segments of a service-relative request path (``""`` or ``/...``, as
    received, still percent-encoded, without the query); raise
    :class:`AccessDeniedError` for a path that could be read two ways.  See the module
    docstring for the rules."""
    if "?" in path or "#" in path:
        raise AccessDeniedError("the request path must not hold a query or fragment")
    if path in ("", "/"):
        return ()
    if not path.startswith("/"):
        raise AccessDeniedError("the request path must start with '/'")
    raw = path[1:].split("/")
    if raw[-1] == "":
        raw.pop()  # one trailing slash
    if "" in raw:
        raise AccessDeniedError("the request path has an empty segment ('//')")
    return tuple(_decoded_segment(r, "the request path") for r in raw)


@dataclass(frozen=True, slots=True, order=True)
class EndpointPattern:
    """An HTTP method (``*`` for any) and a path glob, as X-Road's service endpoints.

    ``path`` is kept in its normal written form: ``/**`` for everything, ``/`` for the
    service root, otherwise ``/seg/*/seg[/**]`` without a trailing slash.  Literal segments
    are written decoded; a ``*`` inside a segment (``/a*b``) is refused, not guessed at.
    """

    method: str
    path: str
    _segments: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _METHOD.fullmatch(self.method):
            raise BadRequestError(f"endpoint method {self.method!r} must be * or an HTTP "
                                  "method in capitals")
        path = "/**" if self.path == "**" else self.path
        if not path.startswith("/"):
            raise BadRequestError(f"endpoint path {self.path!r} must start with '/'")
        segments = tuple(path[1:].split("/")) if path != "/" else ()
        if segments and segments[-1] == "":
            segments = segments[:-1]
        for i, seg in enumerate(segments):
            if seg == "**" and i != len(segments) - 1:
                raise BadRequestError(f"endpoint path {self.path!r}: '**' must be last")
            if seg in ("*", "**"):
                continue
            if not seg:
                raise BadRequestError(f"endpoint path {self.path!r} has an empty segment")
            if "*" in seg:
                raise BadRequestError(f"endpoint path {self.path!r}: '*' must be a whole "
                                      "segment")
            try:
                # the same rules as a request's segment, so every literal can be matched
                decoded = _decoded_segment(seg, f"endpoint path {self.path!r}")
            except AccessDeniedError as exc:
                raise BadRequestError(exc.message) from exc
            if decoded != seg:
                raise BadRequestError(f"endpoint path {self.path!r}: write segments "
                                      "decoded, not percent-encoded")
        object.__setattr__(self, "path", "/" + "/".join(segments))
        object.__setattr__(self, "_segments", segments)

    @property
    def is_whole_service(self) -> bool:
        return self.method == "*" and self._segments == ("**",)

    def matches(self, method: str, segments: tuple[str, ...]) -> bool:
        """Does a request with ``method`` and the normalised ``segments`` fall under this?"""
        if self.method not in ("*", method):
            return False
        pattern = self._segments
        if pattern and pattern[-1] == "**":
            head = pattern[:-1]
            return len(segments) >= len(head) and _segments_match(head, segments[:len(head)])
        return len(segments) == len(pattern) and _segments_match(pattern, segments)


def _segments_match(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    return all(p == "*" or p == s for p, s in zip(pattern, segments, strict=True))


ALL_ENDPOINTS: Final = EndpointPattern("*", "/**")
"""The whole service: any method, any path."""


@dataclass(frozen=True, slots=True)
class AccessRule:
    service: ServiceId
    subject: Subject
    endpoint: EndpointPattern = ALL_ENDPOINTS


class AccessRules:
    """An immutable set of rules indexed by service (unversioned) for quick checks."""

    def __init__(self, rules: Iterable[AccessRule]) -> None:
        index: dict[ServiceId, dict[Subject, set[EndpointPattern]]] = {}
        for rule in rules:
            per_subject = index.setdefault(rule.service.unversioned, {})
            per_subject.setdefault(rule.subject, set()).add(rule.endpoint)
        self._index = {
            svc: {subj: frozenset(eps) for subj, eps in subjects.items()}
            for svc, subjects in index.items()
        }
        # For check(): each subject's endpoints in their order of preference, sorted once.
        self._ordered = {
            svc: {subj: tuple(sorted(eps)) for subj, eps in subjects.items()}
            for svc, subjects in index.items()
        }

    def allowed_endpoints(
        self,
        client: ClientId,
        service: ServiceId,
        group_members: GroupLookup,
        local_members: LocalGroupLookup = no_local_groups,
    ) -> frozenset[EndpointPattern]:
        """Every endpoint of ``service`` granted to ``client``, directly or by a group."""
        subjects = self._index.get(service.unversioned, {})
        allowed: set[EndpointPattern] = set()
        for subject, endpoints in subjects.items():
            if not endpoints <= allowed and self._covers(subject, client, service,
                                                         group_members, local_members):
                allowed |= endpoints
        return frozenset(allowed)

    def all_rules(self) -> list[AccessRule]:
        """Every rule, in a stable order."""
        return sorted(
            (AccessRule(svc, subj, ep) for svc, subjects in self._index.items()
             for subj, eps in subjects.items() for ep in eps),
            key=lambda r: (str(r.service), str(r.subject), r.endpoint))

    def services(self) -> frozenset[ServiceId]:
        """The (unversioned) services any rule names."""
        return frozenset(self._index)

    def check(
        self,
        client: ClientId,
        service: ServiceId,
        method: str,
        path: str,
        group_members: GroupLookup,
        local_members: LocalGroupLookup = no_local_groups,
    ) -> EndpointPattern:
        """Return the endpoint that grants ``client`` the call ``method path`` of
        ``service``; raise :class:`AccessDeniedError` if none does.

        ``path`` is the service-relative request path as received (percent-encoded, no
        query).  A member-level grant does not cover the member's subsystems: X-Road grants
        rights to exactly the identifier named.  A local group counts only for its owner's
        services.
        """
        subjects = self._ordered.get(service.unversioned)
        if not subjects:
            raise AccessDeniedError(_denied(client, service))
        try:
            segments = request_segments(path)
        except AccessDeniedError as exc:
            raise AccessDeniedError(f"{_denied(client, service)}: {exc.message}") from exc
        # The client's own grants first: they need no group lookup.
        own = subjects.get(client)
        if own is not None:
            for endpoint in own:
                if endpoint.matches(method, segments):
                    return endpoint
        for subject, endpoints in subjects.items():
            if subject == client:
                continue
            matching = next((e for e in endpoints if e.matches(method, segments)), None)
            # Groups are looked up only when one of their endpoints would match.
            if matching is not None and self._covers(subject, client, service,
                                                     group_members, local_members):
                return matching
        raise AccessDeniedError(f"{_denied(client, service)} endpoint {method} {path or '/'}")

    @staticmethod
    def _covers(subject: Subject, client: ClientId, service: ServiceId,
                group_members: GroupLookup, local_members: LocalGroupLookup) -> bool:
        if isinstance(subject, ClientId):
            return subject == client
        if isinstance(subject, GlobalGroupId):
            return client in group_members(subject)
        return subject.owner == service.provider and client in local_members(subject)


def _denied(client: ClientId, service: ServiceId) -> str:
    """The start of a refusal's message (built only when refusing)."""
    return f"client {client} has no access to service {service}"
