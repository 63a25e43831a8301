"""Building, signing and publishing the global configuration from the registry's data file.

The registry's data file (``schemas/registry-data.schema.json``) is turned into a
:class:`~xchange.globalconf.GlobalConf`, signed with :func:`~xchange.globalconf.sign_envelope`
and written as static files, so that any HTTP server or CDN can serve them::

    publish_dir/globalconf.json   the signed envelope
    publish_dir/anchor.json       the configuration anchor for security servers
    publish_dir/version           the last published version (the registry's only state)

Every file is replaced atomically (temporary file, fsync, ``os.replace``).

Versions are a persisted counter: each publication is the previous one + 1, and the counter
is made durable before the document that uses it is written.  A counter (rather than the unix
time) never goes back when the clock does, and never collides when the registry publishes
more than once a second (a data change right after a scheduled run).  Losing ``publish_dir``
restarts the count at 1, which security servers refuse as a rollback: it fails closed.

Not here: serving the files and the regeneration schedule's event loop (``registry/app.py``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.exceptions
from cryptography import x509

from certs.keys import PrivateKey, load_certificate, load_private_key
from registry.config import ConfigError, RegistryConfig
from schemas import load_json_schema
from xchange.certificates import cert_sha256
from xchange.errors import XRoadError
from xchange.globalconf import (
    ApprovedCA,
    ApprovedTSA,
    ConfigurationAnchor,
    FederationSettings,
    GlobalConf,
    GlobalGroupInfo,
    MemberInfo,
    SecurityServerInfo,
    sign_envelope,
)
from xchange.identifiers import ClientId, GlobalGroupId, SecurityServerId

__all__ = [
    "ANCHOR_FILE",
    "CONF_FILE",
    "VERSION_FILE",
    "Publication",
    "Publisher",
    "build_conf",
]

CONF_FILE = "globalconf.json"
ANCHOR_FILE = "anchor.json"
VERSION_FILE = "version"


@dataclass(frozen=True, slots=True)
class Publication:
    """One published configuration, as served: swapped in whole, so readers never see a mix."""

    conf: GlobalConf
    signed: bytes
    anchor: bytes
    published_at: datetime


def _load_cert(path: Path, what: str) -> x509.Certificate:
    try:
        return load_certificate(path)
    except (OSError, ValueError, IndexError) as exc:
        raise ConfigError(f"{what}: cannot load a PEM certificate from {path}: {exc}") from exc


def _auth_hashes(server: dict[str, Any], base: Path) -> tuple[str, ...]:
    from_files = (
        cert_sha256(_load_cert(base / p, server["id"])) for p in server.get("auth_certs", ())
    )
    literal = (h.lower() for h in server.get("auth_cert_hashes", ()))
    # dict.fromkeys drops repeats (a file and its hash both given) and keeps the order.
    return tuple(dict.fromkeys([*from_files, *literal]))


def build_conf(data_file: Path, *, version: int, now: datetime) -> GlobalConf:
    """Read the data file and build the configuration it describes, valid from ``now``.

    Certificate paths are relative to the data file's folder.  Raises :class:`ConfigError`.
    """
    try:
        doc: Any = json.loads(data_file.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{data_file}: cannot read: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"{data_file}: not valid JSON: {exc}") from exc
    validator = jsonschema.Draft202012Validator(load_json_schema("registry-data.schema.json"))
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise ConfigError(f"{data_file}: at {where}: {error.message}")

    base = data_file.parent
    try:
        settings = FederationSettings(**doc.get("settings", {}))
        generated_at = now.astimezone(UTC).replace(microsecond=0)
        return GlobalConf(
            instance=doc["instance"],
            version=version,
            generated_at=generated_at,
            expires_at=generated_at + timedelta(seconds=settings.conf_expiry_seconds),
            members=tuple(
                MemberInfo(ClientId.parse(m["id"]), m["name"], tuple(m.get("subsystems", ())))
                for m in doc["members"]
            ),
            security_servers=tuple(
                SecurityServerInfo(
                    SecurityServerId.parse(s["id"]),
                    s["address"],
                    # Files first, then literal hashes; dict.fromkeys drops repeats in order.
                    _auth_hashes(s, base),
                    tuple(ClientId.parse(c) for c in s.get("clients", ())),
                )
                for s in doc.get("security_servers", ())
            ),
            global_groups=tuple(
                GlobalGroupInfo(
                    GlobalGroupId.parse(g["id"]),
                    g.get("description", ""),
                    tuple(ClientId.parse(c) for c in g.get("members", ())),
                )
                for g in doc.get("global_groups", ())
            ),
            approved_cas=tuple(
                ApprovedCA(ca["name"], _load_cert(base / ca["certificate"], ca["name"]),
                           ca.get("ocsp_url"))
                for ca in doc.get("approved_cas", ())
            ),
            approved_tsas=tuple(
                ApprovedTSA(t["name"], t["url"], _load_cert(base / t["certificate"], t["name"]))
                for t in doc.get("approved_tsas", ())
            ),
            settings=settings,
        )
    except XRoadError as exc:
        raise ConfigError(f"{data_file}: {exc.message}") from exc


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # The rename itself must be durable too, or a crash could bring the old version back.
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Publisher:
    """Publishes the configuration on demand (:meth:`publish`) or when due (:meth:`tick`).

    Not thread-safe: one caller at a time.  :attr:`latest` may be read from anywhere.
    """

    def __init__(self, config: RegistryConfig) -> None:
        self._config = config
        try:
            if config.key_passphrase_source is not None and config.key_passphrase is None:
                raise ValueError("the passphrase was not read: call RegistryConfig.from_env")
            self._key: PrivateKey = load_private_key(
                config.signing_key, config.key_passphrase,
                unsafe_plaintext=config.unsafe_plaintext_keys)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"signing_key {config.signing_key}: {exc}") from exc
        self._cert = _load_cert(config.signing_cert, "signing_cert")
        if self._key.public_key() != self._cert.public_key():
            raise ConfigError("signing_key does not match signing_cert")
        self._version_file = config.publish_dir / VERSION_FILE
        self._last_version = self._read_version()
        self._latest: Publication | None = None
        self._anchor: ConfigurationAnchor | None = None
        self._attempt_mtime: int | None = None
        self._attempted_at: datetime | None = None

    @property
    def latest(self) -> Publication | None:
        return self._latest

    @property
    def interval_seconds(self) -> float:
        """Seconds between scheduled re-signings."""
        if self._config.regenerate_seconds is not None:
            return self._config.regenerate_seconds
        if self._latest is not None:
            return float(self._latest.conf.settings.conf_refresh_seconds)
        return float(FederationSettings().conf_refresh_seconds)

    def _read_version(self) -> int:
        try:
            text = self._version_file.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self._version_file}: cannot read: {exc}") from exc
        if not text.isdigit():
            # Guessing would risk publishing a version security servers refuse as a rollback.
            raise ConfigError(f"{self._version_file}: not a version number: {text[:40]!r}")
        return int(text)

    def publish(self, now: datetime) -> Publication:
        """Build, sign and write a new version now.  Raises ConfigError; files stay as they were."""
        self._attempted_at = now
        try:
            self._attempt_mtime = self._config.data_file.stat().st_mtime_ns
        except OSError:
            self._attempt_mtime = None
        version = self._last_version + 1
        conf = build_conf(self._config.data_file, version=version, now=now)
        signed = sign_envelope(conf.to_payload(), self._key, self._cert)
        if self._anchor is None or self._anchor.instance != conf.instance:
            self._anchor = ConfigurationAnchor(
                instance=conf.instance,
                certificates=(self._cert,),
                download_url=self._config.download_url,
                generated_at=conf.generated_at,
            )
        anchor = self._anchor.to_json()

        publish_dir = self._config.publish_dir
        try:
            publish_dir.mkdir(parents=True, exist_ok=True)
            # The counter first: a crash after it only skips a version, never reuses one.
            _write_atomic(self._version_file, f"{version}\n".encode("ascii"))
            self._last_version = version
            _write_atomic(publish_dir / CONF_FILE, signed)
            _write_atomic(publish_dir / ANCHOR_FILE, anchor)
        except OSError as exc:
            raise ConfigError(f"publish_dir {publish_dir}: cannot write: {exc}") from exc
        self._latest = Publication(conf, signed, anchor, now)
        return self._latest

    def tick(self, now: datetime) -> Publication | None:
        """Publish if the data file changed or the interval has passed since the last try."""
        if self._attempted_at is None:
            return self.publish(now)
        try:
            mtime: int | None = self._config.data_file.stat().st_mtime_ns
        except OSError:
            mtime = None
        interval = timedelta(seconds=self.interval_seconds)
        if mtime != self._attempt_mtime or now - self._attempted_at >= interval:
            return self.publish(now)
        return None

