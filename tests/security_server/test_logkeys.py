"""Tests of the message-log key file: reading, permissions, shape, and making a new one."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from security_server.config import ConfigError
from security_server.logkeys import load_keyring, new_key_file, rotate_key
from xchange_cli.main import main

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


def test_rotation_adds_a_current_key_and_keeps_the_old(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    new_key_file(path, "k1")
    old = load_keyring(path)
    rotate_key(path, "k2")
    ring = load_keyring(path)
    assert ring.current == "k2"
    assert ring.keys["k1"] == old.keys["k1"] and ring.keys["k2"] != old.keys["k1"]
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="taken"):
        rotate_key(path, "k1")
    assert not list(tmp_path.glob(".*.tmp"))


def test_key_file_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.toml"
    assert main(["ss", "log-key", "new", "--file", str(path), "--id", "2026-01"]) == 0
    assert main(["ss", "log-key", "rotate", "--file", str(path), "--id", "2026-11"]) == 0
    assert load_keyring(path).current == "2026-11"
    assert main(["ss", "log-key", "new", "--file", str(path), "--id", "x"]) == 1
    assert main(["ss", "log-key", "rotate", "--file", str(path), "--id", "bad id"]) == 1
    err = capsys.readouterr().err
    assert err.count("xchange: error") == 2 and "Traceback" not in err
