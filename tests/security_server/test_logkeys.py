"""Tests of the message-log key file: reading, permissions, shape, and making a new one."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from security_server.config import ConfigError
from security_server.logkeys import load_keyring, new_key_file

KEY = base64.b64encode(b"\x07" * 32).decode()


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_new_key_file_is_private_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    new_key_file(path, "2026-11")
    assert path.stat().st_mode & 0o777 == 0o600
    ring = load_keyring(path)
    assert ring.current == "2026-11" and len(ring.keys["2026-11"]) == 32
    with pytest.raises(FileExistsError):
        new_key_file(path, "2026-12")


def test_several_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "k.toml", f'current = "b"\n[keys]\na = "{KEY}"\nb = "{KEY}"\n')
    ring = load_keyring(path)
    assert (ring.current, sorted(ring.keys)) == ("b", ["a", "b"])


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_open_permissions_are_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "k.toml", f'current = "a"\n[keys]\na = "{KEY}"\n', mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_keyring(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f'[keys]\na = "{KEY}"\n', "current"),
        (f'current = "a"\nkeys = "{KEY}"\n', "current"),
        (f'current = "a"\nextra = 1\n[keys]\na = "{KEY}"\n', "nothing else"),
        ('current = "a"\n[keys]\na = "not base64!"\n', "not base64"),
        (f'current = "b"\n[keys]\na = "{KEY}"\n', "not in the keyring"),
        ('current = "a"\n[keys]\na = "AAAA"\n', "not 32 bytes"),
        ("current = ", "keys.toml"),
    ],
)
def test_malformed_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_keyring(write(tmp_path / "keys.toml", text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_keyring(tmp_path / "absent.toml")
