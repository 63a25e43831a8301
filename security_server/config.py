"""Security-server configuration: one TOML file, read in one place, typed and frozen.

Paths in the file are relative to the file's own folder.  See docs/configuration.md for every
key, its unit and its default.  Environment variables, and the secrets the file points to (the
key passphrase, token PINs), are read only in :meth:`SecurityServerConfig.from_env`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from certs.keys import ProtectedKeyError, SecretSource
from xchange.access import AccessRule, AccessRules, parse_subject
from xchange.errors import BadRequestError
from xchange.identifiers import ClientId, SecurityServerId, ServiceId
from xchange.signing import MAX_BATCH_SIZE

__all__ = [
    "ArchiveConfig",
    "ConfigError",
    "ConnectionType",
    "ListenConfig",
    "Pkcs11KeyConfig",
    "SecurityServerConfig",
    "ServiceConfig",
    "SigningKeyConfig",
]


ConnectionType = Literal["HTTP", "HTTPS", "HTTPS_AUTH"]
"""How an information system must connect for a client: X-Road's NOSSL, SSLNOAUTH, SSLAUTH."""


class ConfigError(ValueError):
    """The configuration file is wrong; the message names the key."""


@dataclass(frozen=True, slots=True)
class ListenConfig:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Pkcs11KeyConfig:
    """A signing key in a PKCS#11 token, found by its label (``CKA_LABEL``)."""

    module: Path
    """The token's PKCS#11 library, e.g. ``/usr/lib/softhsm/libsofthsm2.so``."""
    token_label: str
    key_label: str
    pin_source: SecretSource
    pin: bytes | None = field(default=None, repr=False)
    """The user PIN, read from ``pin_source`` by :meth:`SecurityServerConfig.from_env`."""


@dataclass(frozen=True, slots=True)
class SigningKeyConfig:
    member: ClientId
    key: Path | None
    """The key file; None when the key is in a token (``pkcs11``)."""
    cert: Path
    """PEM: the signing certificate first, then its chain (the root may be included)."""
    pkcs11: Pkcs11KeyConfig | None = None


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    id: ServiceId
    url: str
    """Base URL of the provider system; the request's path and query are appended."""
    timeout: float = 30.0
    """Seconds for the whole provider-system exchange."""


@dataclass(frozen=True, slots=True)
class ArchiveConfig:
    """``[archive]``: exporting the message log into archive files (docs/audit.md)."""

    directory: Path
    """Where archive files are written (default ``<state_dir>/archives``)."""
    interval_seconds: float = 86400.0
    """How often the server archives (and first right after it starts)."""
    min_age_seconds: float = 0.0
    """Only records at least this old are archived (they must be time-stamped anyway)."""
    retention_days: float = 30.0
    """Archived records stay in the database this long, then are removed."""
    max_records: int = 10000
    """At most this many records per archive file."""
    recipients: tuple[Path, ...] = ()
    """PEM certificates (or public keys) of the auditors archives are encrypted to; none:
    archives are written unencrypted."""


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
    is_connection: Mapping[ClientId, ConnectionType] = field(default_factory=dict)
    """Connection type per client from ``[is_connection]``; clients not named there get
    ``HTTPS_AUTH`` when imported into the configuration store."""
    client_proxy_tls: ListenConfig | None = None
    """The client proxy's HTTPS listener (``[client_proxy] tls_port``); None: HTTP only."""
    internal_tls_cert: Path | None = None
    """The internal TLS certificate (PEM) the HTTPS listener serves; generated if missing."""
    internal_tls_key: Path | None = None
    admin_api: ListenConfig | None = None
    """The admin API listener (``[admin_api]``); None: no admin API."""
    admin_key: Path | None = None
    """PEM private key (EC P-256 or Ed25519) that signs and verifies admin tokens."""
    conf_refresh_seconds: float = 60.0
    peer_timeout: float = 60.0
    """Seconds the client proxy waits for the provider security server."""
    max_body_bytes: int = 64 * 1024 * 1024
    ocsp_refresh_seconds: float = 1200.0
    """How often the server fetches OCSP responses for its own certificates."""
    ocsp_retry_seconds: float = 60.0
    """How soon it tries again after a failed fetch."""
    archive: ArchiveConfig | None = None
    """``None`` only for configurations built by hand; files always get one."""
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    """The event loop ``xchange ss serve`` runs on (``[server] event_loop``): ``auto`` takes
    uvloop when it is installed and asyncio's own loop otherwise."""
    timestamping: Literal["batch", "sync"] = "batch"
    """``batch``: records are stamped every ``timestamping_interval_seconds`` (global
    configuration); ``sync``: each message waits for its record's stamp before it passes."""
    timestamping_max_failure_seconds: float = 14400.0
    """How long time-stamping may fail before new messages are refused."""
    key_passphrase_source: SecretSource | None = None
    """Where the passphrase of the encrypted key files comes from (``[keys]``
    ``passphrase_file`` or ``passphrase_env``)."""
    unsafe_plaintext_keys: bool = False
    """Accept unencrypted key files (development only)."""
    signing_batch_max: int = 64
    """``[keys] signing_batch_max``: the most messages waiting for one signing key that are
    signed with one signature (1 to 1024; 1: every message signed alone)."""
    key_passphrase: bytes | None = field(default=None, repr=False)
    """The passphrase itself, read by :meth:`from_env`."""
    encryption_keys: Path | None = None
    """The message log's key file (``security_server.logkeys``); None: stored in the clear."""
    registry_url: str | None = None
    """``[registry] url``: where management requests go (the service catalogue's updates
    too); None: the anchor's download URL without its last path segment."""
    catalogue_retry_seconds: float = 60.0
    """``[registry] retry_seconds``: how soon a failed catalogue publication is retried."""

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

    def from_env(self, environ: Mapping[str, str] | None = None, *,
                 secrets: bool = True) -> SecurityServerConfig:
        """Apply the deployment's environment: ``XCHANGE_DATABASE_URL`` and
        ``XCHANGE_MESSAGELOG_KEYS`` (a key file's path) over the file's values, and read the
        secrets the file points to (the key passphrase and token PINs, from
        their files or from ``environ``).  The one place that reads either.  Tools that use
        no key (``verify-log``) pass ``secrets=False``."""
        env = os.environ if environ is None else environ
        config = self
        if url := env.get("XCHANGE_DATABASE_URL"):
            config = replace(config, database_url=url)
        if keys := env.get("XCHANGE_MESSAGELOG_KEYS"):
            config = replace(config, encryption_keys=Path(keys))
        if not secrets:
            return config
        try:
            if self.key_passphrase_source is not None:
                config = replace(config, key_passphrase=self.key_passphrase_source.read(env))
            signing = tuple(
                replace(sk, pkcs11=replace(sk.pkcs11, pin=sk.pkcs11.pin_source.read(env)))
                if sk.pkcs11 is not None else sk
                for sk in self.signing_keys
            )
        except ProtectedKeyError as exc:
            raise ConfigError(str(exc)) from exc
        return replace(config, signing_keys=signing)

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


def _port(port: int, what: str) -> int:
    if not 0 < port < 65536:
        raise ConfigError(f"{what} must be from 1 to 65535")
    return port


_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _admin_listen(doc: Mapping[str, Any]) -> ListenConfig:
    """The admin API speaks plain HTTP with bearer tokens: loopback only, so a token never
    crosses a network in clear.  Remote administration goes through a TLS proxy."""
    listen = _listen(doc, "admin_api")
    if listen.host not in _LOOPBACK:
        raise ConfigError("admin_api.host must be a loopback address (127.0.0.1, ::1, "
                          "localhost); put a TLS-terminating proxy in front for remote use")
    return listen


def _listen(doc: Mapping[str, Any], name: str) -> ListenConfig:
    section = _get(doc, name, dict, "")
    port = _port(_get(section, "port", int, f"{name}."), f"{name}.port")
    return ListenConfig(host=_get(section, "host", str, f"{name}."), port=port)


_KNOWN_KEYS: dict[str, frozenset[str]] = {
    "": frozenset({"clients", "server", "client_proxy", "server_proxy", "keys", "globalconf",
                   "messagelog", "services", "access", "ocsp", "archive", "is_connection",
                   "admin_api", "registry"}),
    "registry": frozenset({"url", "retry_seconds"}),
    "admin_api": frozenset({"host", "port", "token_key"}),
    "server": frozenset({"id", "state_dir", "event_loop"}),
    "client_proxy": frozenset({"host", "port", "peer_timeout", "max_body_bytes", "tls_port",
                               "tls_cert", "tls_key"}),
    "server_proxy": frozenset({"host", "port"}),
    "keys": frozenset({"auth_key", "auth_cert", "signing", "passphrase_file", "passphrase_env",
                       "unsafe_plaintext_keys", "signing_batch_max"}),
    "globalconf": frozenset({"anchor", "refresh_seconds"}),
    "messagelog": frozenset({"database_url", "timestamping",
                             "timestamping_max_failure_seconds", "encryption_keys"}),
    "ocsp": frozenset({"refresh_seconds", "retry_seconds"}),
    "archive": frozenset({"directory", "interval_seconds", "min_age_seconds", "retention_days",
                          "max_records", "recipients"}),
}


_KNOWN_ENTRY_KEYS: dict[str, frozenset[str]] = {
    "services": frozenset({"id", "url", "timeout"}),
    "access": frozenset({"service", "clients"}),
    "keys.signing": frozenset({"member", "key", "cert", "pkcs11"}),
}
_PKCS11_KEYS = frozenset({"module", "token_label", "key_label", "pin_file", "pin_env"})


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


def _secret_source(table: Mapping[str, Any], name: str, where: str,
                   path: Callable[[str], Path]) -> SecretSource | None:
    """``<name>_file`` or ``<name>_env``: where a secret comes from (never the secret)."""
    file = _opt(table, f"{name}_file", str, where, None)
    env = _opt(table, f"{name}_env", str, where, None)
    if file is None and env is None:
        return None
    try:
        return SecretSource(file=None if file is None else path(file), env=env)
    except ProtectedKeyError as exc:
        raise ConfigError(f"{where}{name}_file / {where}{name}_env: {exc}") from exc


def _signing_key(entry: Mapping[str, Any], path: Callable[[str], Path]) -> SigningKeyConfig:
    where = "keys.signing."
    member = ClientId.parse(_get(entry, "member", str, where))
    if "key" in entry and "pkcs11" in entry:
        raise ConfigError("a [[keys.signing]] entry has keys.signing.key (a key file) or "
                          "keys.signing.pkcs11 (a key in a token), not both")
    token = None
    if "pkcs11" in entry:
        table = _get(entry, "pkcs11", dict, where)
        if unknown := sorted(set(table) - _PKCS11_KEYS):
            raise ConfigError(f"unknown key(s) in keys.signing.pkcs11: {', '.join(unknown)}")
        inner = "keys.signing.pkcs11."
        pin = _secret_source(table, "pin", inner, path)
        if pin is None:
            raise ConfigError("keys.signing.pkcs11 needs pin_file or pin_env")
        token = Pkcs11KeyConfig(module=path(_get(table, "module", str, inner)),
                                token_label=_get(table, "token_label", str, inner),
                                key_label=_get(table, "key_label", str, inner),
                                pin_source=pin)
    return SigningKeyConfig(
        member=member,
        key=path(_get(entry, "key", str, where)) if token is None else None,
        cert=path(_get(entry, "cert", str, where)),
        pkcs11=token,
    )


def _build(doc: Mapping[str, Any], base: Path) -> SecurityServerConfig:
    _refuse_unknown(doc)

    def path(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else base / p

    server = _get(doc, "server", dict, "")
    keys = _get(doc, "keys", dict, "")
    gconf = _get(doc, "globalconf", dict, "")
    log = _get(doc, "messagelog", dict, "")
    state = path(_opt(server, "state_dir", str, "server.", "."))
    signing = tuple(_signing_key(s, path) for s in _get(keys, "signing", list, "keys."))
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
            rules.append(AccessRule(svc, parse_subject(subject)))
    cp = doc.get("client_proxy", {})
    ocsp = _opt(doc, "ocsp", dict, "", {})
    timestamping = _opt(log, "timestamping", str, "messagelog.", "batch")
    if timestamping not in ("batch", "sync"):
        raise ConfigError('messagelog.timestamping must be "batch" or "sync"')
    event_loop = _opt(server, "event_loop", str, "server.", "auto")
    if event_loop not in ("auto", "uvloop", "asyncio"):
        raise ConfigError('server.event_loop must be "auto", "uvloop" or "asyncio"')
    is_connection: dict[ClientId, ConnectionType] = {}
    for name, kind in _opt(doc, "is_connection", dict, "", {}).items():
        if kind not in ("HTTP", "HTTPS", "HTTPS_AUTH"):
            raise ConfigError(f"is_connection.{name} must be HTTP, HTTPS or HTTPS_AUTH")
        is_connection[ClientId.parse(name)] = kind
    return SecurityServerConfig(
        server_id=SecurityServerId.parse(_get(server, "id", str, "server.")),
        client_proxy=_listen(doc, "client_proxy"),
        server_proxy=_listen(doc, "server_proxy"),
        auth_key=path(_get(keys, "auth_key", str, "keys.")),
        auth_cert=path(_get(keys, "auth_cert", str, "keys.")),
        signing_keys=signing,
        anchor=path(_get(gconf, "anchor", str, "globalconf.")),
        state_dir=state,
        database_url=_database_url(_get(log, "database_url", str, "messagelog."), base),
        clients=tuple(ClientId.parse(c) for c in _get(doc, "clients", list, "")),
        services=services,
        access=AccessRules(rules),
        is_connection=is_connection,
        client_proxy_tls=None if "tls_port" not in cp else ListenConfig(
            _get(cp, "host", str, "client_proxy."), _port(_get(cp, "tls_port", int,
                                                                "client_proxy."),
                                                           "client_proxy.tls_port")),
        internal_tls_cert=path(_opt(cp, "tls_cert", str, "client_proxy.",
                                    str(state / "internal-tls.pem"))),
        internal_tls_key=path(_opt(cp, "tls_key", str, "client_proxy.",
                                   str(state / "internal-tls.key"))),
        admin_api=_admin_listen(doc) if "admin_api" in doc else None,
        admin_key=path(_get(doc["admin_api"], "token_key", str, "admin_api."))
        if "admin_api" in doc else None,
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
        key_passphrase_source=_secret_source(keys, "passphrase", "keys.", path),
        unsafe_plaintext_keys=_opt(keys, "unsafe_plaintext_keys", bool, "keys.", False),
        signing_batch_max=_batch_max(keys),
        event_loop=event_loop,
        timestamping=timestamping,
        encryption_keys=(path(_get(log, "encryption_keys", str, "messagelog."))
                         if "encryption_keys" in log else None),
        timestamping_max_failure_seconds=_positive(
            _opt(log, "timestamping_max_failure_seconds", float, "messagelog.", 14400.0),
            "messagelog.timestamping_max_failure_seconds"),
        archive=_archive(_opt(doc, "archive", dict, "", {}), path, state),
        registry_url=_registry_url(_opt(doc, "registry", dict, "", {})),
        catalogue_retry_seconds=_positive(
            _opt(_opt(doc, "registry", dict, "", {}), "retry_seconds", float, "registry.",
                 60.0), "registry.retry_seconds"),
    )


def _batch_max(keys: Mapping[str, Any]) -> int:
    value = _opt(keys, "signing_batch_max", int, "keys.", 64)
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise ConfigError(f"keys.signing_batch_max must be 1 to {MAX_BATCH_SIZE}")
    return int(value)


def _registry_url(table: Mapping[str, Any]) -> str | None:
    url = _opt(table, "url", str, "registry.", None)
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError("registry.url must be an http:// or https:// URL")
    return None if url is None else str(url).rstrip("/")


def _archive(doc: Mapping[str, Any], path: Any, state_dir: Path) -> ArchiveConfig:
    recipients = _opt(doc, "recipients", list, "archive.", [])
    if not all(isinstance(r, str) for r in recipients):
        raise ConfigError("archive.recipients must be a list of file names")
    min_age = _opt(doc, "min_age_seconds", float, "archive.", 0.0)
    if min_age < 0:
        raise ConfigError("archive.min_age_seconds must not be negative")
    return ArchiveConfig(
        directory=path(_opt(doc, "directory", str, "archive.", str(state_dir / "archives"))),
        interval_seconds=_positive(_opt(doc, "interval_seconds", float, "archive.", 86400.0),
                                   "archive.interval_seconds"),
        min_age_seconds=min_age,
        retention_days=_positive(_opt(doc, "retention_days", float, "archive.", 30.0),
                                 "archive.retention_days"),
        max_records=int(_positive(_opt(doc, "max_records", int, "archive.", 10000),
                                  "archive.max_records")),
        recipients=tuple(path(r) for r in recipients),
    )
