"""Registry configuration: one TOML file, read in one place, typed and frozen.

The file is flat; relative paths are resolved against the file's own folder::

    data_file = "registry-data.json"     # what to publish (schemas/registry-data.schema.json)
    signing_key = "keys/conf-sign.key"   # encrypted PKCS#8 key that signs global configuration
    signing_cert = "keys/conf-sign.pem"  # its certificate (goes into the anchor)
    passphrase_file = "keys/passphrase"  # the key's passphrase, mode 0600 (or passphrase_env)
    publish_dir = "publish"              # where globalconf.json and anchor.json are written
    listen_host = "127.0.0.1"            # optional, default 127.0.0.1
    listen_port = 4400                   # optional, default 4400
    public_url = "https://conf.example.gov/globalconf"   # optional, see download_url
    regenerate_seconds = 60              # optional, see RegistryConfig.regenerate_seconds

Unknown keys are refused, so that a typo does not silently fall back to a default.  The
passphrase (from ``passphrase_file`` or the variable ``passphrase_env`` names) is read only by
:meth:`RegistryConfig.from_env`; ``unsafe_plaintext_keys = true`` accepts an unencrypted key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from certs.keys import ProtectedKeyError, SecretSource

__all__ = ["ConfigError", "RegistryConfig"]

_REQUIRED_PATHS = ("data_file", "signing_key", "signing_cert", "publish_dir")
_KNOWN = frozenset(
    {*_REQUIRED_PATHS, "listen_host", "listen_port", "public_url", "regenerate_seconds",
     "passphrase_file", "passphrase_env", "unsafe_plaintext_keys"}
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
    key_passphrase_source: SecretSource | None = None
    unsafe_plaintext_keys: bool = False
    """Accept an unencrypted ``signing_key`` (development only)."""
    key_passphrase: bytes | None = field(default=None, repr=False)
    """The passphrase of ``signing_key``, read by :meth:`from_env`."""

    @property
    def download_url(self) -> str:
        if self.public_url is not None:
            return self.public_url
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"http://{host}:{self.listen_port}/globalconf"

    def from_env(self, environ: Mapping[str, str] | None = None) -> RegistryConfig:
        """Read the key passphrase from its file or from ``environ`` (default: the process
        environment).  The one place the registry reads either."""
        if self.key_passphrase_source is None:
            return self
        try:
            secret = self.key_passphrase_source.read(os.environ if environ is None else environ)
        except ProtectedKeyError as exc:
            raise ConfigError(str(exc)) from exc
        return replace(self, key_passphrase=secret)

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
        source = _passphrase_source(doc, base_dir)
        unsafe_plaintext = doc.get("unsafe_plaintext_keys", False)
        if not isinstance(unsafe_plaintext, bool):
            raise ConfigError("unsafe_plaintext_keys must be true or false")

        return cls(
            data_file=paths["data_file"],
            signing_key=paths["signing_key"],
            signing_cert=paths["signing_cert"],
            publish_dir=paths["publish_dir"],
            listen_host=host,
            listen_port=port,
            public_url=public_url,
            regenerate_seconds=None if interval is None else float(interval),
            key_passphrase_source=source,
            unsafe_plaintext_keys=unsafe_plaintext,
        )


def _passphrase_source(doc: Mapping[str, Any], base_dir: Path) -> SecretSource | None:
    file, env = doc.get("passphrase_file"), doc.get("passphrase_env")
    if file is None and env is None:
        return None
    if not isinstance(file, str | None) or not isinstance(env, str | None):
        raise ConfigError("passphrase_file and passphrase_env must be strings")
    try:
        return SecretSource(file=None if file is None else (base_dir / file).resolve(), env=env)
    except ProtectedKeyError as exc:
        raise ConfigError(f"passphrase_file / passphrase_env: {exc}") from exc
