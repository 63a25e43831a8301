"""Tests of registry.config: the TOML file, path resolution, defaults and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from certs.keys import SecretSource, write_secret_file
from registry.config import ConfigError, RegistryConfig


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "registry.toml"
    path.parent.mkdir()
    path.write_text(text)
    return path


BASE = """
data_file = "data.json"
signing_key = "keys/sign.key"
signing_cert = "/etc/xchange/sign.pem"
publish_dir = "../publish"
"""


def test_paths_are_relative_to_the_file_and_defaults_apply(tmp_path: Path) -> None:
    config = RegistryConfig.from_file(_write(tmp_path, BASE))
    folder = (tmp_path / "conf").resolve()
    assert config.data_file == folder / "data.json"
    assert config.signing_key == folder / "keys" / "sign.key"
    assert config.signing_cert == Path("/etc/xchange/sign.pem")
    assert config.publish_dir == tmp_path.resolve() / "publish"
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 4400)
    assert config.regenerate_seconds is None
    assert config.download_url == "http://127.0.0.1:4400/globalconf"


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
        (BASE.replace('data_file = "data.json"', ""), "data_file"),
        (BASE.replace('"data.json"', '""'), "data_file"),
        (BASE + "listen_prot = 1", "unknown configuration key"),
        (BASE + "listen_port = 70000", "listen_port"),
        (BASE + "listen_port = true", "listen_port"),
        (BASE + 'listen_port = "80"', "listen_port"),
        (BASE + 'listen_host = ""', "listen_host"),
        (BASE + 'public_url = "ftp://x"', "public_url"),
        (BASE + "regenerate_seconds = 0", "regenerate_seconds"),
        (BASE + 'regenerate_seconds = "1"', "regenerate_seconds"),
        ("data_file = ", "not valid TOML"),
    ],
)
def test_bad_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RegistryConfig.from_file(_write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        RegistryConfig.from_file(tmp_path / "nope.toml")


def test_passphrase_comes_from_a_file_or_a_variable_read_by_from_env(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + 'passphrase_file = "keys/passphrase"')
    config = RegistryConfig.from_file(path)
    assert config.key_passphrase_source == SecretSource(
        file=(tmp_path / "conf" / "keys" / "passphrase").resolve())
    assert config.key_passphrase is None
    write_secret_file(tmp_path / "conf" / "keys" / "passphrase", b"s3cret\n")
    assert config.from_env({}).key_passphrase == b"s3cret"
    (tmp_path / "conf" / "keys" / "passphrase").chmod(0o604)
    with pytest.raises(ConfigError, match="owner only"):
        config.from_env({})

    path.write_text(BASE + 'passphrase_env = "REGISTRY_KEY"\nunsafe_plaintext_keys = false')
    config = RegistryConfig.from_file(path)
    assert config.from_env({"REGISTRY_KEY": "from-env"}).key_passphrase == b"from-env"
    with pytest.raises(ConfigError, match="REGISTRY_KEY is not set"):
        config.from_env({})
    assert RegistryConfig.from_file(path.parent / ".." / "conf" / "registry.toml") == config


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('passphrase_file = "a"\npassphrase_env = "B"', "exactly one"),
        ("passphrase_env = 7", "must be strings"),
        ('unsafe_plaintext_keys = "yes"', "true or false"),
    ],
)
def test_bad_passphrase_settings_are_refused(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RegistryConfig.from_file(_write(tmp_path, BASE + extra))
