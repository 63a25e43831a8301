"""Building, signing and publishing the global configuration from the registry's database.

Each publication reads the data (:func:`registry.confbuild.build_conf`), takes the next
version from the database's counter, signs with every *active* configuration-signing key
(:func:`~xchange.globalconf.sign_envelope_by`) and writes static files that any HTTP server
or CDN can serve::

    publish_dir/globalconf.json   the signed envelope
    publish_dir/anchor.json       the configuration anchor for new security servers
    publish_dir/version           the last published version (a copy of the counter)

Every file is replaced atomically (temporary file, fsync, ``os.replace``, fsync of the
folder).

Versions never go back: the next version is one more than the larger of the database's
counter (row-locked on PostgreSQL, so two registry nodes never hand out the same number) and
``publish_dir/version``, and the counter is committed before any file that uses it is
written.  A database restored from an old backup therefore still publishes versions that
security servers accept.

:meth:`Publisher.tick` publishes when the data changed (the content hash of what the
configuration would say differs from the last publication's) or the interval has passed.

Not here: the HTTP server and the event loop (``registry/app.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from registry.confbuild import build_conf, content_hash
from registry.config import ConfigError, RegistryConfig
from registry.keys import KeyStore
from registry.models import PublicationRow
from registry.service import RegistryService
from xchange.errors import XRoadError
from xchange.globalconf import (
    ConfigurationAnchor,
    FederationSettings,
    GlobalConf,
    sign_envelope_by,
)

__all__ = [
    "ANCHOR_FILE",
    "CONF_FILE",
    "VERSION_FILE",
    "Publication",
    "Publisher",
    "write_atomic",
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
    content_hash: str


def write_atomic(path: Path, data: bytes) -> None:
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

    def __init__(self, config: RegistryConfig, engine: Engine, keys: KeyStore) -> None:
        self._config = config
        self._engine = engine
        self._keys = keys
        self._latest: Publication | None = None
        self._attempted_at: datetime | None = None
        self._settings = FederationSettings()

    @property
    def latest(self) -> Publication | None:
        return self._latest

    @property
    def interval_seconds(self) -> float:
        """Longest time between re-signings."""
        if self._config.regenerate_seconds is not None:
            return self._config.regenerate_seconds
        return float(self._settings.conf_refresh_seconds)

    def _file_version(self) -> int:
        path = self._config.publish_dir / VERSION_FILE
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from exc
        if not text.isdigit():
            raise ConfigError(f"{path}: not a version number: {text[:40]!r}")
        return int(text)

    def publish(self, now: datetime) -> Publication:
        """Build, sign and write a new version now.  Raises ConfigError; files stay as
        they were."""
        self._attempted_at = now
        try:
            return self._publish(now)
        except SQLAlchemyError as exc:
            raise ConfigError(f"registry database: {exc.__class__.__name__}: {exc}") from exc
        except XRoadError as exc:
            raise ConfigError(f"the registry's data is not publishable: {exc.message}") from exc

    def _publish(self, now: datetime) -> Publication:
        with Session(self._engine) as session:
            svc = RegistryService(session, actor="registry", now=now)
            counter = session.exec(
                select(PublicationRow).where(PublicationRow.id == 1).with_for_update()
            ).first() or PublicationRow(id=1, version=0)
            version = max(counter.version, self._file_version()) + 1
            conf = build_conf(svc, version=version, now=now)
            active = svc.conf_keys("active")
            if not active:
                raise ConfigError("no active configuration-signing key (xchange registry init)")
            signed = sign_envelope_by(conf.to_payload(),
                                      [self._keys.conf_signer(c) for c in active])
            anchor = ConfigurationAnchor(
                instance=conf.instance,
                certificates=conf.signing_keys,
                download_url=self._config.download_url,
                generated_at=conf.generated_at,
            ).to_json()
            digest = content_hash(conf)
            counter.version, counter.generated_at, counter.content_hash = (
                version, conf.generated_at, digest)
            session.add(counter)
            # The counter first: a crash after it only skips a version, never reuses one.
            session.commit()

        publish_dir = self._config.publish_dir
        try:
            publish_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(publish_dir / VERSION_FILE, f"{version}\n".encode("ascii"))
            write_atomic(publish_dir / CONF_FILE, signed)
            write_atomic(publish_dir / ANCHOR_FILE, anchor)
        except OSError as exc:
            raise ConfigError(f"publish_dir {publish_dir}: cannot write: {exc}") from exc
        self._settings = conf.settings
        self._latest = Publication(conf, signed, anchor, now, digest)
        return self._latest

    def tick(self, now: datetime) -> Publication | None:
        """Publish if the data changed or the interval has passed since the last try."""
        if self._attempted_at is None or self._latest is None:
            return self.publish(now)
        if now - self._attempted_at >= timedelta(seconds=self.interval_seconds):
            return self.publish(now)
        try:
            with Session(self._engine) as session:
                svc = RegistryService(session, actor="registry", now=now)
                digest = content_hash(build_conf(svc, version=1, now=now))
        except (SQLAlchemyError, XRoadError) as exc:
            raise ConfigError(f"registry data not readable: {exc}") from exc
        if digest != self._latest.content_hash:
            return self.publish(now)
        return None
