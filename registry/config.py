"""Registry configuration: one TOML file, read in one place, typed and frozen.

The file is flat; relative paths are resolved against the file's own folder::

    data_file = "registry-data.json"     # what to publish (schemas/registry-data.schema.json)
    signing_key = "keys/conf-sign.key"   # PEM private key that signs global configuration
    signing_cert = "keys/conf-sign.pem"  # its certificate (goes into the anchor)
    publish_dir = "publish"              # where globalconf.json and anchor.json are written
    listen_host = "127.0.0.1"            # optional, default 127.0.0.1
    listen_port = 4400                   # optional, default 4400
    public_url = "https://conf.example.gov/globalconf"   # optional, see download_url
    regenerate_seconds = 60              # optional, see RegistryConfig.regenerate_seconds

Unknown keys are refused, so that a typo does not silently fall back to a default.  The
environment is not read.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "RegistryConfig"]

_REQUIRED_PATHS = ("data_file", "signing_key", "signing_cert", "publish_dir")
_KNOWN = frozenset(
    {*_REQUIRED_PATHS, "listen_host", "listen_port", "public_url", "regenerate_seconds"}
)


class ConfigError(ValueError):
    """The registry's configuration or data file is wrong; the message names the key."""


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    data_file: Path
    signing_key: Path
    signing_cert: Path
    publish_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 4400
    public_url: str | None = None
    """Where security servers download global configuration (written into the anchor);
    defaults to this server's own ``/globalconf``.  Set it when listening on 0.0.0.0 or
    behind a proxy or CDN."""
    regenerate_seconds: float | None = None
    """Seconds between re-signings; ``None`` means the data file's
    ``settings.conf_refresh_seconds``.  Fractions are allowed so that tests can run fast."""

    @property
    def download_url(self) -> str:
        if self.public_url is not None:
            return self.public_url
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"http://{host}:{self.listen_port}/globalconf"

    @classmethod
    def from_file(cls, path: Path) -> RegistryConfig:
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        return cls.from_mapping(doc, base_dir=path.parent)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], *, base_dir: Path) -> RegistryConfig:
        unknown = sorted(set(doc) - _KNOWN)
        if unknown:
            raise ConfigError(f"unknown configuration key(s): {', '.join(unknown)}")
        paths: dict[str, Path] = {}
        for key in _REQUIRED_PATHS:
            value = doc.get(key)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{key} must be a non-empty string (a path)")
            paths[key] = (base_dir / value).resolve()

        host = doc.get("listen_host", "127.0.0.1")
        if not isinstance(host, str) or not host:
            raise ConfigError("listen_host must be a non-empty string")
        port = doc.get("listen_port", 4400)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError("listen_port must be an integer from 1 to 65535")
        public_url = doc.get("public_url")
        if public_url is not None and (
            not isinstance(public_url, str) or not public_url.startswith(("http://", "https://"))
        ):
            raise ConfigError("public_url must be an http:// or https:// URL")
        interval = doc.get("regenerate_seconds")
        if interval is not None and (
            isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0
        ):
            raise ConfigError("regenerate_seconds must be a positive number")

        return cls(
            data_file=paths["data_file"],
            signing_key=paths["signing_key"],
            signing_cert=paths["signing_cert"],
            publish_dir=paths["publish_dir"],
            listen_host=host,
            listen_port=port,
            public_url=public_url,
            regenerate_seconds=None if interval is None else float(interval),
        )
