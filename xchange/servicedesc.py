"""Service descriptions: the endpoints of a REST service, read from its OpenAPI 3 document.

What this module does: parse an OpenAPI 3 document (JSON or YAML, as bytes) and list its
endpoints as X-Road does -- one :class:`~xchange.access.EndpointPattern` per operation, each
path template parameter (``/pets/{petId}``) turned into the one-segment wildcard ``*``.  A
segment that mixes text and a parameter (``/files/{name}.json``) becomes ``*`` as a whole:
the endpoint is then somewhat wider than the operation, never narrower.

What it does not do: fetch documents (the server does), validate the whole OpenAPI schema
(only what endpoints need), or read WSDL (``xchange.soap.wsdl``: XML is parsed only there).

YAML is read with a safe loader that also refuses aliases, so a small document cannot
expand into a huge one ("billion laughs").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import yaml

from xchange.access import EndpointPattern
from xchange.errors import BadRequestError

__all__ = [
    "MAX_DESCRIPTION_BYTES",
    "METADATA_SERVICE_CODES",
    "NoAliasLoader",
    "OpenApiDescription",
    "parse_openapi",
]

MAX_DESCRIPTION_BYTES: Final = 4 * 1024 * 1024
_MAX_ENDPOINTS: Final = 2000
_HTTP_METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

METADATA_SERVICE_CODES: Final = frozenset({"listMethods", "allowedMethods", "getOpenAPI",
                                             "getWsdl"})
"""Service codes the security server answers itself (PR-MREST); no service may take them."""


class NoAliasLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses aliases (no "billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("YAML aliases are not accepted")
        return super().compose_node(parent, index)


@dataclass(frozen=True, slots=True)
class OpenApiDescription:
    title: str
    version: str
    endpoints: tuple[EndpointPattern, ...]
    description: str = ""
    """``info.description``, for the service catalogue."""


def _bad(message: str) -> BadRequestError:
    return BadRequestError(f"OpenAPI description: {message}", code="admin.invalid_description")


def _load(document: bytes) -> Any:
    if len(document) > MAX_DESCRIPTION_BYTES:
        raise _bad(f"larger than {MAX_DESCRIPTION_BYTES} bytes")
    try:
        text = document.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad("not UTF-8") from exc
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise _bad(f"not JSON: {exc}") from exc
    try:
        return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise _bad("not YAML or JSON") from exc


def _template_to_glob(path: str) -> str:
    segments = path.split("/")
    return "/".join("*" if "{" in seg or "}" in seg else seg for seg in segments)


def parse_openapi(document: bytes) -> OpenApiDescription:
    """The title, version, description and endpoints of an OpenAPI 3.x document; raise
    :class:`BadRequestError` (``admin.invalid_description``) if it is not one."""
    doc = _load(document)
    if not isinstance(doc, dict):
        raise _bad("not an object")
    version = doc.get("openapi")
    if not isinstance(version, str) or not version.startswith("3."):
        raise _bad("not OpenAPI 3 (the 'openapi' field must be 3.x)")
    info = doc.get("info")
    title = info.get("title") if isinstance(info, dict) else None
    api_version = info.get("version") if isinstance(info, dict) else None
    summary = info.get("description") if isinstance(info, dict) else None
    paths = doc.get("paths", {})
    if not isinstance(paths, dict):
        raise _bad("'paths' is not an object")
    endpoints: list[EndpointPattern] = []
    for path, item in paths.items():
        if not isinstance(path, str) or not path.startswith("/") or not isinstance(item, dict):
            raise _bad(f"path {path!r} must start with '/' and hold an object")
        for method in _HTTP_METHODS:
            if method in item:
                try:
                    endpoints.append(EndpointPattern(method.upper(), _template_to_glob(path)))
                except BadRequestError as exc:
                    raise _bad(f"path {path!r}: {exc.message}") from exc
        if len(endpoints) > _MAX_ENDPOINTS:
            raise _bad(f"more than {_MAX_ENDPOINTS} endpoints")
    return OpenApiDescription(
        title=str(title or ""), version=str(api_version or ""),
        endpoints=tuple(dict.fromkeys(endpoints)),
        description=summary if isinstance(summary, str) else "",
    )
