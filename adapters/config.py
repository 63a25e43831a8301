"""An adapter's configuration: one TOML or YAML file, validated, typed and frozen.

Read in one place (:func:`load_config`).  The file is checked against
``schemas/adapter-config.schema.json``, each service's kind table (``[services.sql]``, ...)
against ``schemas/adapter-<kind>.schema.json``, then by the kind's ``from_config``.  Every
refusal is an :class:`AdapterConfigError` naming the file, the line and the field, e.g.::

    adapter.toml:14: services[0].sql.queries[1].parameters[0].type: 'strin' is not one of
    ['string', 'integer', 'number', 'boolean', 'date', 'datetime']

What this module does not do: open the silos (``Backend.start`` does, when the server
starts) or check what only an open silo can tell (the fields of a SQL query that declares
none): :func:`check_operations` does that once the backends have started.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import jsonschema
import yaml

from adapters.base import Backend, ConfigValueError, Operation
from adapters.kinds import KINDS, factory, kind_schema
from adapters.sourcemap import JsonPath, format_path, line_of, toml_lines, yaml_lines
from schemas import load_json_schema
from xchange.servicedesc import NoAliasLoader

__all__ = [
    "ALL_FIELDS",
    "AdapterConfig",
    "AdapterConfigError",
    "ServiceConfig",
    "check_operations",
    "load_config",
    "parse_config",
]

ALL_FIELDS: Final = "*"
"""In a consumer's list of fields: every field.  As a consumer: any consumer."""

_SCHEMA: Final = "adapter-config.schema.json"
_MAX_ERRORS: Final = 5


class AdapterConfigError(ValueError):
    """The configuration cannot be used; the message names the file, the line and the field."""

    def __init__(self, source: Path, problems: Sequence[tuple[int | None, str, str]]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = [f"{source}{f':{line}' if line else ''}: {field}: {message}"
                 for line, field, message in self.problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """One service of the adapter: a silo (``backend``) and the rules of the layer above it."""

    code: str
    kind: str
    backend: Backend
    consumers: Mapping[str, frozenset[str]]
    """Consumer subsystem id or ``*`` -> the fields it may receive (``{"*"}``: all)."""
    title: str = ""
    description: str = ""
    row_limit: int = 100
    """Most records one answer holds, whatever ``limit`` the caller asks for."""
    default_limit: int = 20
    timeout: float = 10.0
    """Seconds the silo may take per request."""
    data_subject_field: str | None = None

    def granted(self, consumer: str | None) -> frozenset[str] | None:
        """The fields ``consumer`` may receive (``{"*"}`` for all), or ``None``: refused.

        A consumer's own entry wins over the ``*`` entry, so a grant can also narrow."""
        if consumer is not None and consumer in self.consumers:
            return self.consumers[consumer]
        return self.consumers.get(ALL_FIELDS)


@dataclass(frozen=True, slots=True)
class AdapterConfig:
    source: Path
    services: tuple[ServiceConfig, ...]
    host: str = "127.0.0.1"
    port: int = 8080
    title: str = "xchange adapter"
    log_format: Literal["json", "text"] = "json"
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    """Who may call the services: the provider security server.  The adapter believes the
    ``X-Road-Client`` header, so no one else may reach it."""

    def allows(self, address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.allowed_networks)

    def service(self, code: str) -> ServiceConfig | None:
        return next((s for s in self.services if s.code == code), None)


def load_config(path: Path) -> AdapterConfig:
    """Read and check the file at ``path`` (``.toml``, or ``.yaml``/``.yml``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AdapterConfigError(path, [(None, "(file)", f"cannot be read: {exc}")]) from exc
    fmt: Literal["toml", "yaml"] = "yaml" if path.suffix in (".yaml", ".yml") else "toml"
    return parse_config(text, path, fmt)


def parse_config(text: str, source: Path, fmt: Literal["toml", "yaml"]) -> AdapterConfig:
    """Check ``text`` (the content of ``source``; relative paths are relative to its folder)."""
    doc, lines = _parse(text, source, fmt)

    def fail(problems: Sequence[tuple[JsonPath, str]]) -> AdapterConfigError:
        located = sorted(((line_of(lines, p), format_path(p), m) for p, m in problems),
                         key=lambda t: (t[0] or 0, t[1]))
        return AdapterConfigError(source, located[:_MAX_ERRORS])

    services = doc.get("services") if isinstance(doc, dict) else None
    # Each service may hold the table its kind names (an unknown kind is refused below).
    kinds = sorted({s["kind"] for s in services if isinstance(s, dict)
                    and isinstance(s.get("kind"), str)}) if isinstance(services, list) else []
    problems = _schema_problems(doc, _main_schema(tuple(kinds)), ())
    for i, service in enumerate(services if isinstance(services, list) else []):
        kind = service.get("kind") if isinstance(service, dict) else None
        if isinstance(kind, str) and kind not in KINDS:
            problems.append((("services", i, "kind"),
                             f"unknown kind {kind!r}; known: {', '.join(sorted(KINDS))}"))
    if problems:
        raise fail(problems)
    problems = []
    assert isinstance(services, list)
    for i, service in enumerate(services):
        kind = service["kind"]
        if kind not in service:
            problems.append((("services", i),
                             f"kind {kind!r} needs its table [services.{kind}]"))
        else:
            problems += _schema_problems(service[kind], kind_schema(kind),
                                         ("services", i, kind))
    problems += _rule_problems(services)
    if problems:
        raise fail(problems)
    base_dir = source.resolve().parent
    built = []
    for i, service in enumerate(services):
        kind = service["kind"]
        try:
            backend = factory(kind)(service["code"], service[kind], base_dir)
        except ConfigValueError as exc:
            raise fail([(("services", i, kind, *exc.path), str(exc))]) from exc
        except (ValueError, OSError) as exc:
            raise fail([(("services", i, kind), str(exc))]) from exc
        built.append(_service(service, backend))
    adapter = doc.get("adapter", {})
    networks = []
    for i, text in enumerate(adapter.get("allowed_networks", ["127.0.0.0/8", "::1/128"])):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise fail([(("adapter", "allowed_networks", i), f"not an address or network: "
                                                             f"{exc}")]) from exc
    return AdapterConfig(
        source=source, services=tuple(built),
        host=adapter.get("host", "127.0.0.1"), port=adapter.get("port", 8080),
        title=adapter.get("title", "xchange adapter"),
        log_format=adapter.get("log_format", "json"), allowed_networks=tuple(networks),
    )


def _parse(text: str, source: Path, fmt: Literal["toml", "yaml"]
           ) -> tuple[Any, dict[JsonPath, int]]:
    if fmt == "toml":
        try:
            return tomllib.loads(text), toml_lines(text)
        except tomllib.TOMLDecodeError as exc:
            # tomllib says "(at line N, column M)" itself
            raise AdapterConfigError(source, [(None, "(syntax)", str(exc))]) from exc
    try:
        doc = yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
        return doc, yaml_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise AdapterConfigError(source, [(line, "(syntax)", str(exc))]) from exc


def _main_schema(kinds: tuple[str, ...]) -> dict[str, Any]:
    """The configuration schema, its services admitting the tables of the kinds in use."""
    schema = load_json_schema(_SCHEMA)
    service = dict(schema["$defs"]["service"])
    service["properties"] = {**service["properties"], **{k: {"type": "object"} for k in kinds}}
    return {**schema, "$defs": {**schema["$defs"], "service": service}}


def _schema_problems(instance: Any, schema: Mapping[str, Any], at: JsonPath
                     ) -> list[tuple[JsonPath, str]]:
    validator = jsonschema.Draft202012Validator(schema)
    problems: list[tuple[JsonPath, str]] = []
    for error in validator.iter_errors(instance):
        path = (*at, *error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
            for key in sorted(k for k in error.instance if k not in known):
                problems.append(((*path, key), f"unknown key {key!r}"))
        elif error.validator == "required" and isinstance(error.instance, dict):
            required = error.schema.get("required", []) if isinstance(error.schema, dict) else []
            missing = [k for k in required if k not in error.instance]
            problems.append((path, f"missing key(s): {', '.join(missing)}"))
        else:
            problems.append((path, error.message))
    return problems


def _rule_problems(services: list[dict[str, Any]]) -> list[tuple[JsonPath, str]]:
    """What the schema cannot say: unique codes, a default page within the row limit, and
    every consumer granted the data-subject field (its values leave in a header anyway)."""
    problems: list[tuple[JsonPath, str]] = []
    seen: set[str] = set()
    for i, s in enumerate(services):
        if s["code"] in seen:
            problems.append((("services", i, "code"), f"service code {s['code']!r} used twice"))
        seen.add(s["code"])
        if s.get("default_limit", 0) > s.get("row_limit", 100):
            problems.append((("services", i, "default_limit"),
                             "must not be larger than row_limit"))
        subject = s.get("data_subject_field")
        for consumer, fields in s["consumers"].items():
            if subject is not None and subject not in fields and ALL_FIELDS not in fields:
                problems.append((("services", i, "consumers", consumer),
                                 f"must include the data_subject_field {subject!r}: its "
                                 "values name the data subjects in every answer"))
    return problems


def _service(doc: Mapping[str, Any], backend: Backend) -> ServiceConfig:
    row_limit = doc.get("row_limit", 100)
    return ServiceConfig(
        code=doc["code"], kind=doc["kind"], backend=backend,
        consumers={c: frozenset(f) for c, f in doc["consumers"].items()},
        title=doc.get("title", ""), description=doc.get("description", ""),
        row_limit=row_limit, default_limit=doc.get("default_limit", min(20, row_limit)),
        timeout=float(doc.get("timeout_seconds", 10.0)),
        data_subject_field=doc.get("data_subject_field"),
    )


def check_operations(config: AdapterConfig) -> None:
    """Once the backends have started (their fields are known): every granted field and the
    data-subject field must be a field of the service's records, and routes unique."""
    problems: list[tuple[int | None, str, str]] = []
    for i, service in enumerate(config.services):
        ops: Sequence[Operation] = service.backend.operations()
        fields = {f.name for op in ops for f in op.fields}
        for consumer, granted in service.consumers.items():
            unknown = sorted(granted - fields - {ALL_FIELDS})
            if unknown:
                problems.append((None, f"services[{i}].consumers.{consumer}",
                                 f"unknown field(s) {', '.join(unknown)}"))
        subject = service.data_subject_field
        for op in ops:
            if subject is not None and subject not in {f.name for f in op.fields}:
                problems.append((None, f"services[{i}].data_subject_field",
                                 f"operation {op.name!r} has no field {subject!r}"))
        routes = [(op.method, op.path) for op in ops]
        if len(set(routes)) != len(routes):
            problems.append((None, f"services[{i}]", "two operations share a path"))
    if problems:
        raise AdapterConfigError(config.source, problems)
