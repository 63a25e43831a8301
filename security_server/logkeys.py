"""Reading the message log's encryption keys from their file (``[messagelog]
encryption_keys``).

The file is TOML, readable by its owner only (mode 0600 or stricter; anything more open is
refused, as ssh refuses an open private key)::

    current = "2026-11"          # the id new records are encrypted with

    [keys]                       # every key still needed to read old records
    "2026-01" = "<base64 of 32 random bytes>"
    "2026-11" = "<base64 of 32 random bytes>"

Rotation: add a key, point ``current`` at it, restart the server (:func:`rotate_key` does
the first two).  Remove a key only once no record (and no archive still to be made) uses it.
:func:`new_key_file` writes a file with one fresh key.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
import tomllib
from pathlib import Path

from security_server.config import ConfigError
from xchange.logcrypto import Keyring

__all__ = ["load_keyring", "new_key_file", "rotate_key"]


def load_keyring(path: Path) -> Keyring:
    """The keyring in ``path``; :class:`ConfigError` naming the problem otherwise."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{path}: message-log key file must not be accessible to group "
                              f"or others (mode {stat.S_IMODE(mode):o}; chmod 600 it)")
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    current, table = doc.get("current"), doc.get("keys")
    if not isinstance(current, str) or not isinstance(table, dict) or set(doc) - {"current",
                                                                                 "keys"}:
        raise ConfigError(f"{path}: a key file has `current = \"<id>\"` and a [keys] table, "
                          "nothing else")
    keys = {}
    for key_id, value in table.items():
        try:
            keys[key_id] = base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError) as exc:
            raise ConfigError(f"{path}: key {key_id!r} is not base64") from exc
    try:
        return Keyring(keys, current)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def new_key_file(path: Path, key_id: str) -> None:
    """Write a key file (mode 0600) holding one fresh random key, made current.  An existing
    file is not replaced."""
    Keyring({key_id: bytes(32)}, key_id)  # checks the id
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(_render(Keyring({key_id: secrets.token_bytes(32)}, key_id)))


def rotate_key(path: Path, key_id: str) -> None:
    """Add a fresh key ``key_id`` to the key file and make it current; the old keys stay, to
    read old records.  The file is replaced atomically, still mode 0600."""
    ring = load_keyring(path)
    if key_id in ring.keys:
        raise ConfigError(f"{path}: key id {key_id!r} is taken; rotation needs a new id")
    rotated = Keyring({**ring.keys, key_id: secrets.token_bytes(32)}, key_id)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(_render(rotated))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _render(ring: Keyring) -> str:
    lines = [f'current = "{ring.current}"', "", "[keys]"]
    lines += [f'"{key_id}" = "{base64.b64encode(key).decode("ascii")}"'
              for key_id, key in ring.keys.items()]
    return "\n".join(lines) + "\n"
