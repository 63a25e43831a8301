"""Security-server configuration: one TOML file, read in one place, typed and frozen.

Paths in the file are relative to the file's own folder.  See docs/configuration.md for every
key, its unit and its default.  Environment variables are read only in
:meth:`SecurityServerConfig.from_env`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from xchange.access import AccessRule, AccessRules
from xchange.errors import BadRequestError
from xchange.identifiers import ClientId, GlobalGroupId, SecurityServerId, ServiceId

__all__ = [
    "ConfigError",
    "ListenConfig",
    "SecurityServerConfig",
    "ServiceConfig",
    "SigningKeyConfig",
]


class ConfigError(ValueError):
    """The configuration file is wrong; the message names the key."""


@dataclass(frozen=True, slots=True)
class ListenConfig:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class SigningKeyConfig:
    member: ClientId
    key: Path
    cert: Path
    """PEM: the signing certificate first, then its chain (the root may be included)."""


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    id: ServiceId
    url: str
    """Base URL of the provider system; the request's path and query are appended."""
    timeout: float = 30.0
    """Seconds for the whole provider-system exchange."""


@dataclass(frozen=True, slots=True)
class SecurityServerConfig:
    server_id: SecurityServerId
    client_proxy: ListenConfig
    server_proxy: ListenConfig
    auth_key: Path
    auth_cert: Path
    signing_keys: tuple[SigningKeyConfig, ...]
    anchor: Path
    """The configuration anchor handed over by the registry's administrator."""
    state_dir: Path
    """Where the last good global configuration is kept."""
    database_url: str
    clients: tuple[ClientId, ...]
    services: tuple[ServiceConfig, ...]
    access: AccessRules
    conf_refresh_seconds: float = 60.0
    peer_timeout: float = 60.0
    """Seconds the client proxy waits for the provider security server."""
    max_body_bytes: int = 64 * 1024 * 1024
    ocsp_refresh_seconds: float = 1200.0
    """How often the server fetches OCSP responses for its own certificates."""
    ocsp_retry_seconds: float = 60.0
    """How soon it tries again after a failed fetch."""
    timestamping: Literal["batch", "sync"] = "batch"
    """``batch``: records are stamped every ``timestamping_interval_seconds`` (global
    configuration); ``sync``: each message waits for its record's stamp before it passes."""
    timestamping_max_failure_seconds: float = 14400.0
    """How long time-stamping may fail before new messages are refused."""
    encryption_keys: Path | None = None
    """The message log's key file (``security_server.logkeys``); None: stored in the clear."""

    @classmethod
    def from_file(cls, path: Path) -> SecurityServerConfig:
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        try:
            return _build(doc, path.parent.resolve())
        except BadRequestError as exc:
            raise ConfigError(f"{path}: {exc.message}") from exc

    def from_env(self, environ: Mapping[str, str] | None = None) -> SecurityServerConfig:
        """Apply ``XCHANGE_DATABASE_URL`` and ``XCHANGE_MESSAGELOG_KEYS`` (a key file's path)
        over the file's values (deployment overrides)."""
        env = os.environ if environ is None else environ
        config = self
        if url := env.get("XCHANGE_DATABASE_URL"):
            config = replace(config, database_url=url)
        if keys := env.get("XCHANGE_MESSAGELOG_KEYS"):
            config = replace(config, encryption_keys=Path(keys))
        return config

    def service(self, service: ServiceId) -> ServiceConfig | None:
        wanted = service.unversioned
        for svc in self.services:
            if svc.id.unversioned == wanted:
                return svc
        return None


def _get(doc: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if not isinstance(doc, Mapping):  # an array entry that is not a table
        raise ConfigError(f"each entry of {where.rstrip('.')} must be a table")
    if key not in doc:
        raise ConfigError(f"missing key {where}{key}")
    value = doc[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    # TOML booleans are Python ints; "port = true" is a mistake, not port 1.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{where}{key} must be a {kind.__name__}")
    return value


def _opt(doc: Mapping[str, Any], key: str, kind: type, where: str, default: Any) -> Any:
    return _get(doc, key, kind, where) if key in doc else default


def _listen(doc: Mapping[str, Any], name: str) -> ListenConfig:
    section = _get(doc, name, dict, "")
    port = _get(section, "port", int, f"{name}.")
    if not 0 < port < 65536:
        raise ConfigError(f"{name}.port must be from 1 to 65535")
    return ListenConfig(host=_get(section, "host", str, f"{name}."), port=port)


_KNOWN_KEYS: dict[str, frozenset[str]] = {
    "": frozenset({"clients", "server", "client_proxy", "server_proxy", "keys", "globalconf",
                   "messagelog", "services", "access", "ocsp"}),
    "server": frozenset({"id", "state_dir"}),
    "client_proxy": frozenset({"host", "port", "peer_timeout", "max_body_bytes"}),
    "server_proxy": frozenset({"host", "port"}),
    "keys": frozenset({"auth_key", "auth_cert", "signing"}),
    "globalconf": frozenset({"anchor", "refresh_seconds"}),
    "messagelog": frozenset({"database_url", "timestamping",
                             "timestamping_max_failure_seconds", "encryption_keys"}),
    "ocsp": frozenset({"refresh_seconds", "retry_seconds"}),
}


_KNOWN_ENTRY_KEYS: dict[str, frozenset[str]] = {
    "services": frozenset({"id", "url", "timeout"}),
    "access": frozenset({"service", "clients"}),
    "keys.signing": frozenset({"member", "key", "cert"}),
}


def _refuse_unknown(doc: Mapping[str, Any]) -> None:
    """A typo must not silently fall back to a default."""
    for section, known in _KNOWN_KEYS.items():
        table = doc if not section else doc.get(section, {})
        if not isinstance(table, Mapping):
            continue
        unknown = sorted(set(table) - known)
        if unknown:
            where = f"[{section}] " if section else ""
            raise ConfigError(f"unknown key(s) {where}{', '.join(unknown)}")
    for array, known in _KNOWN_ENTRY_KEYS.items():
        parent: Any = doc
        for part in array.split("."):
            parent = parent.get(part, []) if isinstance(parent, Mapping) else []
        for entry in parent if isinstance(parent, list) else []:
            if isinstance(entry, Mapping) and (unknown := sorted(set(entry) - known)):
                raise ConfigError(f"unknown key(s) in [[{array}]]: {', '.join(unknown)}")


def _service_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value) < 10:
        raise ConfigError(f"services.url {value!r} must be an http:// or https:// URL")
    return value


def _positive(value: float, what: str) -> float:
    if not value > 0:
        raise ConfigError(f"{what} must be positive")
    return value


def _database_url(value: str, base: Path) -> str:
    """A relative SQLite path is relative to the configuration file, like every path here."""
    try:
        url = sa.make_url(value)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"messagelog.database_url is malformed: {exc}") from exc
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        db = Path(url.database)
        if not db.is_absolute():
            return url.set(database=str(base / db)).render_as_string(hide_password=False)
    return value


def _build(doc: Mapping[str, Any], base: Path) -> SecurityServerConfig:
    _refuse_unknown(doc)

    def path(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else base / p

    server = _get(doc, "server", dict, "")
    keys = _get(doc, "keys", dict, "")
    gconf = _get(doc, "globalconf", dict, "")
    log = _get(doc, "messagelog", dict, "")
    signing = tuple(
        SigningKeyConfig(
            member=ClientId.parse(_get(s, "member", str, "keys.signing.")),
            key=path(_get(s, "key", str, "keys.signing.")),
            cert=path(_get(s, "cert", str, "keys.signing.")),
        )
        for s in _get(keys, "signing", list, "keys.")
    )
    for sk in signing:
        if sk.member.subsystem is not None:
            raise ConfigError("keys.signing.member must name a member (INSTANCE/CLASS/CODE): "
                              "members sign, not subsystems")
    services = tuple(
        ServiceConfig(
            id=ServiceId.parse(_get(s, "id", str, "services.")),
            url=_service_url(_get(s, "url", str, "services.")),
            timeout=_positive(_opt(s, "timeout", float, "services.", 30.0), "services.timeout"),
        )
        for s in doc.get("services", [])
    )
    rules = []
    for a in doc.get("access", []):
        svc = ServiceId.parse(_get(a, "service", str, "access."))
        for subject in _get(a, "clients", list, "access."):
            if not isinstance(subject, str):
                raise ConfigError("access.clients must be a list of strings")
            # "INST/GROUP" (two parts) names a global group; otherwise a member or subsystem.
            sub: ClientId | GlobalGroupId = (
                GlobalGroupId.parse(subject) if subject.count("/") == 1
                else ClientId.parse(subject)
            )
            rules.append(AccessRule(svc, sub))
    cp = doc.get("client_proxy", {})
    ocsp = _opt(doc, "ocsp", dict, "", {})
    timestamping = _opt(log, "timestamping", str, "messagelog.", "batch")
    if timestamping not in ("batch", "sync"):
        raise ConfigError('messagelog.timestamping must be "batch" or "sync"')
    return SecurityServerConfig(
        server_id=SecurityServerId.parse(_get(server, "id", str, "server.")),
        client_proxy=_listen(doc, "client_proxy"),
        server_proxy=_listen(doc, "server_proxy"),
        auth_key=path(_get(keys, "auth_key", str, "keys.")),
        auth_cert=path(_get(keys, "auth_cert", str, "keys.")),
        signing_keys=signing,
        anchor=path(_get(gconf, "anchor", str, "globalconf.")),
        state_dir=path(_opt(server, "state_dir", str, "server.", ".")),
        database_url=_database_url(_get(log, "database_url", str, "messagelog."), base),
        clients=tuple(ClientId.parse(c) for c in _get(doc, "clients", list, "")),
        services=services,
        access=AccessRules(rules),
        conf_refresh_seconds=_positive(
            _opt(gconf, "refresh_seconds", float, "globalconf.", 60.0),
            "globalconf.refresh_seconds"),
        peer_timeout=_positive(_opt(cp, "peer_timeout", float, "client_proxy.", 60.0),
                               "client_proxy.peer_timeout"),
        max_body_bytes=int(_positive(
            _opt(cp, "max_body_bytes", int, "client_proxy.", 64 * 1024 * 1024),
            "client_proxy.max_body_bytes")),
        ocsp_refresh_seconds=_positive(_opt(ocsp, "refresh_seconds", float, "ocsp.", 1200.0),
                                       "ocsp.refresh_seconds"),
        ocsp_retry_seconds=_positive(_opt(ocsp, "retry_seconds", float, "ocsp.", 60.0),
                                     "ocsp.retry_seconds"),
        timestamping=timestamping,
        encryption_keys=(path(_get(log, "encryption_keys", str, "messagelog."))
                         if "encryption_keys" in log else None),
        timestamping_max_failure_seconds=_positive(
            _opt(log, "timestamping_max_failure_seconds", float, "messagelog.", 14400.0),
            "messagelog.timestamping_max_failure_seconds"),
    )
