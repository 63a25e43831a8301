"""Registry configuration: one TOML file, read in one place, typed and frozen.

The file is flat; relative paths are resolved against the file's own folder::

    database_url = "sqlite:///registry.db"   # optional; SQLite file next to this file
    keys_dir = "keys"                        # optional; signing keys and the admin-token key
    passphrase_file = "keys/passphrase"      # the keys' passphrase, mode 0600 (or passphrase_env)
    publish_dir = "publish"                  # optional; globalconf.json, anchor.json, version
    listen_host = "127.0.0.1"                # optional, default 127.0.0.1
    listen_port = 4400                       # optional, default 4400
    public_url = "https://conf.example.gov/globalconf"   # optional, see download_url
    regenerate_seconds = 60                  # optional, see RegistryConfig.regenerate_seconds
    admin_token_hours = 8                    # optional, lifetime of tokens `token` issues

The federation's data lives in the database (``xchange registry init`` creates it, the admin
API and ``xchange registry ...`` change it).  Unknown keys are refused, so that a typo does
not silently fall back to a default; the keys of the old file-based registry (``data_file``,
``signing_key``, ``signing_cert``) are refused with a pointer to ``xchange registry import``.

Every private key in ``keys_dir`` (configuration-signing keys, the admin-token key) is
encrypted PKCS#8 under one passphrase, named by ``passphrase_file`` or ``passphrase_env``;
``unsafe_plaintext_keys = true`` lets the registry read and write unencrypted keys instead.
The environment (the passphrase, ``XCHANGE_REGISTRY_DATABASE_URL``) is read only in
:meth:`RegistryConfig.from_env`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError

from certs.keys import ProtectedKeyError, SecretSource

__all__ = ["DATABASE_URL_VARIABLE", "ConfigError", "RegistryConfig"]

DATABASE_URL_VARIABLE = "XCHANGE_REGISTRY_DATABASE_URL"
_PATHS = {"keys_dir": "keys", "publish_dir": "publish"}
_KNOWN = frozenset({*_PATHS, "database_url", "listen_host", "listen_port", "public_url",
                    "regenerate_seconds", "admin_token_hours", "passphrase_file",
                    "passphrase_env", "unsafe_plaintext_keys"})
_RETIRED = frozenset({"data_file", "signing_key", "signing_cert"})


class ConfigError(ValueError):
    """The registry's configuration or data file is wrong; the message names the key."""


def _database_url(value: object, base_dir: Path) -> str:
    if value is None:
        return f"sqlite:///{(base_dir / 'registry.db').resolve()}"
    if not isinstance(value, str) or not value:
        raise ConfigError("database_url must be a non-empty string")
    try:
        url = sa.make_url(value)
    except ArgumentError as exc:
        raise ConfigError("database_url is not a database URL") from exc
    if url.drivername.startswith("sqlite") and url.database and url.database != ":memory:":
        # A relative SQLite path is relative to this file, as every other path here.
        url = url.set(database=str((base_dir / url.database).resolve()))
    return url.render_as_string(hide_password=False)


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    database_url: str
    keys_dir: Path
    publish_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 4400
    public_url: str | None = None
    """Where security servers download global configuration (written into the anchor);
    defaults to this server's own ``/globalconf``.  Set it when listening on 0.0.0.0 or
    behind a proxy or CDN."""
    regenerate_seconds: float | None = None
    """Longest time between re-signings; ``None`` means the federation setting
    ``conf_refresh_seconds``.  A change of data is published within about a second whatever
    this says.  Fractions are allowed so that tests can run fast."""
    admin_token_hours: float = 8.0
    """Lifetime of the admin tokens ``xchange registry token`` issues."""
    key_passphrase_source: SecretSource | None = None
    """Where the passphrase of the keys in ``keys_dir`` comes from (``passphrase_file`` or
    ``passphrase_env``)."""
    unsafe_plaintext_keys: bool = False
    """Read and write unencrypted keys in ``keys_dir`` (development only)."""
    key_passphrase: bytes | None = field(default=None, repr=False)
    """The passphrase itself, read by :meth:`from_env`."""

    @property
    def download_url(self) -> str:
        if self.public_url is not None:
            return self.public_url
        return f"{self.base_url}/globalconf"

    @property
    def base_url(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"http://{host}:{self.listen_port}"

    @classmethod
    def from_file(cls, path: Path) -> RegistryConfig:
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        return cls.from_mapping(doc, base_dir=path.parent)

    def from_env(self, environ: Mapping[str, str] | None = None) -> RegistryConfig:
        """Apply the deployment's environment (default: the process's): read the key
        passphrase from its file or variable, and take ``XCHANGE_REGISTRY_DATABASE_URL`` (if
        set) as the database URL, so that a password need not be written into the file.  The
        one place the registry reads either."""
        env = os.environ if environ is None else environ
        config = self
        if url := env.get(DATABASE_URL_VARIABLE):
            try:
                # A relative SQLite path in the variable is the process's, as sqlite3 reads it.
                config = replace(config, database_url=_database_url(url, Path()))
            except ConfigError as exc:
                raise ConfigError(f"{DATABASE_URL_VARIABLE}: {exc}") from exc
        if self.key_passphrase_source is None:
            return config
        try:
            secret = self.key_passphrase_source.read(env)
        except ProtectedKeyError as exc:
            raise ConfigError(str(exc)) from exc
        return replace(config, key_passphrase=secret)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], *, base_dir: Path) -> RegistryConfig:
        retired = sorted(set(doc) & _RETIRED)
        if retired:
            raise ConfigError(
                f"{', '.join(retired)}: the registry keeps its data in a database now; "
                "load an old data file with `xchange registry import`")
        unknown = sorted(set(doc) - _KNOWN)
        if unknown:
            raise ConfigError(f"unknown configuration key(s): {', '.join(unknown)}")
        paths: dict[str, Path] = {}
        for key, default in _PATHS.items():
            value = doc.get(key, default)
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
        numbers: dict[str, float | None] = {}
        for key in ("regenerate_seconds", "admin_token_hours"):
            value = doc.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
            ):
                raise ConfigError(f"{key} must be a positive number")
            numbers[key] = None if value is None else float(value)
        source = _passphrase_source(doc, base_dir)
        unsafe_plaintext = doc.get("unsafe_plaintext_keys", False)
        if not isinstance(unsafe_plaintext, bool):
            raise ConfigError("unsafe_plaintext_keys must be true or false")

        return cls(
            database_url=_database_url(doc.get("database_url"), base_dir),
            keys_dir=paths["keys_dir"],
            publish_dir=paths["publish_dir"],
            listen_host=host,
            listen_port=port,
            public_url=public_url,
            regenerate_seconds=numbers["regenerate_seconds"],
            admin_token_hours=numbers["admin_token_hours"] or 8.0,
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
