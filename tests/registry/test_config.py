"""Tests of registry.config: the TOML file, path resolution, defaults and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.config import DATABASE_URL_VARIABLE, ConfigError, RegistryConfig


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "registry.toml"
    path.parent.mkdir()
    path.write_text(text)
    return path


BASE = """
keys_dir = "/etc/xchange/keys"
publish_dir = "../publish"
"""


def test_paths_are_relative_to_the_file_and_defaults_apply(tmp_path: Path) -> None:
    config = RegistryConfig.from_file(_write(tmp_path, BASE))
    folder = (tmp_path / "conf").resolve()
    assert config.database_url == f"sqlite:///{folder / 'registry.db'}"
    assert config.keys_dir == Path("/etc/xchange/keys")
    assert config.publish_dir == tmp_path.resolve() / "publish"
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 4400)
    assert config.regenerate_seconds is None
    assert config.admin_token_hours == 8.0
    assert config.download_url == "http://127.0.0.1:4400/globalconf"


def test_defaults_for_everything(tmp_path: Path) -> None:
    config = RegistryConfig.from_file(_write(tmp_path, ""))
    folder = (tmp_path / "conf").resolve()
    assert (config.keys_dir, config.publish_dir) == (folder / "keys", folder / "publish")


def test_database_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, 'database_url = "sqlite:///db/reg.db"\n')
    folder = (tmp_path / "conf").resolve()
    assert RegistryConfig.from_file(path).database_url == f"sqlite:///{folder / 'db/reg.db'}"
    monkeypatch.setenv(DATABASE_URL_VARIABLE, "postgresql://u:secret@db.example/reg")
    assert RegistryConfig.from_env(path).database_url == "postgresql://u:secret@db.example/reg"


@pytest.mark.parametrize(
    ("extra", "url"),
    [
        ('listen_host = "::1"\nlisten_port = 8080', "http://[::1]:8080/globalconf"),
        ('public_url = "https://conf.example.gov/g"', "https://conf.example.gov/g"),
    ],
)
def test_download_url(tmp_path: Path, extra: str, url: str) -> None:
    assert RegistryConfig.from_file(_write(tmp_path, BASE + extra)).download_url == url


def test_fractional_regeneration_interval(tmp_path: Path) -> None:
    config = RegistryConfig.from_file(_write(tmp_path, BASE + "regenerate_seconds = 0.25"))
    assert config.regenerate_seconds == 0.25


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE.replace('"../publish"', '""'), "publish_dir"),
        (BASE + 'data_file = "data.json"', "xchange registry import"),
        (BASE + 'signing_key = "k.pem"', "database now"),
        (BASE + "listen_prot = 1", "unknown configuration key"),
        (BASE + "listen_port = 70000", "listen_port"),
        (BASE + "listen_port = true", "listen_port"),
        (BASE + 'listen_port = "80"', "listen_port"),
        (BASE + 'listen_host = ""', "listen_host"),
        (BASE + 'public_url = "ftp://x"', "public_url"),
        (BASE + "regenerate_seconds = 0", "regenerate_seconds"),
        (BASE + 'regenerate_seconds = "1"', "regenerate_seconds"),
        (BASE + "admin_token_hours = -1", "admin_token_hours"),
        (BASE + 'database_url = "nonsense"', "database_url"),
        (BASE + "database_url = 5", "database_url"),
        ("keys_dir = ", "not valid TOML"),
    ],
)
def test_bad_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RegistryConfig.from_file(_write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        RegistryConfig.from_file(tmp_path / "nope.toml")
