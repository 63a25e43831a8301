"""``xchange registry ...`` in-process: the local commands, and API errors as one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from certs.ca import DevCA, IssuedCredentials
from certs.keys import load_private_key, write_certificate, write_secret_file
from certs.pkcs8 import PEM_BEGIN
from registry.adminroles import PERMISSIONS, audience
from registry.keys import KeyStore
from xchange.adminauth import verify_token
from xchange_cli.main import main

PASSPHRASE = b"registry cli passphrase"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_init_import_migrate_and_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dev_ca: DevCA,
    issue_server_auth: Callable[..., IssuedCredentials],
) -> None:
    config = tmp_path / "registry.toml"
    config.write_text('database_url = "sqlite:///reg.db"\npassphrase_file = "passphrase"\n')
    write_secret_file(tmp_path / "passphrase", PASSPHRASE)
    status, out, _ = run(capsys, "registry", "init", "--config", str(config),
                         "--instance", "TEST")
    assert status == 0 and json.loads(out)["instance"] == "TEST"
    keys = sorted((tmp_path / "keys").iterdir())
    assert keys[0].name == "admin-token.key" and keys[1].name.startswith("conf-sign-")
    for key in keys:
        assert key.stat().st_mode & 0o777 == 0o600
        assert key.read_bytes().startswith(PEM_BEGIN.encode())
        load_private_key(key, PASSPHRASE)
    # again: nothing changes; another instance: refused
    assert run(capsys, "registry", "init", "--config", str(config), "--instance", "TEST")[0] == 0
    status, _, err = run(capsys, "registry", "init", "--config", str(config),
                         "--instance", "PROD")
    assert status == 1 and "[admin.conflict]" in err and "already initialised" in err

    auth = issue_server_auth("TEST/GOV/1/ss1")
    write_certificate(tmp_path / "ca.pem", dev_ca.certificate)
    write_certificate(tmp_path / "ss1.pem", auth.certificate)
    data: dict[str, Any] = {"instance": "TEST", "members": [{"id": "TEST/GOV/1", "name": "One"}],
            "security_servers": [{"id": "TEST/GOV/1/ss1", "address": "127.0.0.1:5500",
                                  "auth_certs": ["ss1.pem"]}],
            "approved_cas": [{"name": "CA", "certificate": "ca.pem"}]}
    (tmp_path / "data.json").write_text(json.dumps(data))
    status, out, _ = run(capsys, "registry", "import", "--config", str(config),
                         str(tmp_path / "data.json"))
    assert status == 0 and "imported 2" in out
    data["security_servers"][0]["auth_cert_hashes"] = ["ab" * 32]
    (tmp_path / "hashes.json").write_text(json.dumps({**data, "members": [], "approved_cas": []}))
    status, _, err = run(capsys, "registry", "import", "--config", str(config),
                         str(tmp_path / "hashes.json"))
    assert status == 1 and "auth_cert_hashes cannot be imported" in err

    status, out, _ = run(capsys, "registry", "migrate", "--config", str(config))
    assert status == 0 and "revision 0002" in out

    status, out, _ = run(capsys, "registry", "token", "--config", str(config), "--subject",
                         "olga", "--role", "observer", "--hours", "1")
    admin_key = KeyStore(tmp_path / "keys", PASSPHRASE).admin_key()
    principal = verify_token(out.strip(), keys=[admin_key.public_key()],
                             audience=audience("TEST"), now=datetime.now(UTC), table=PERMISSIONS)
    assert (principal.subject, principal.roles) == ("olga", frozenset({"observer"}))
    status, _, err = run(capsys, "registry", "token", "--config", str(config), "--subject",
                         "x", "--role", "root")
    assert status == 1 and "unknown role" in err


def test_api_commands_need_a_url_and_a_token(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XCHANGE_REGISTRY_URL", raising=False)
    monkeypatch.delenv("XCHANGE_REGISTRY_TOKEN", raising=False)
    status, _, err = run(capsys, "registry", "member", "list")
    assert status == 1 and "--token" in err


def test_old_registry_configuration_is_refused_with_a_pointer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "registry.toml"
    config.write_text('data_file = "registry-data.json"\n')
    status, _, err = run(capsys, "registry", "migrate", "--config", str(config))
    assert status == 1 and "xchange registry import" in err


def test_keys_are_written_and_read_under_the_configured_passphrase_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "registry.toml"
    config.write_text('database_url = "sqlite:///reg.db"\n')
    status, _, err = run(capsys, "registry", "init", "--config", str(config),
                         "--instance", "TEST")
    assert status == 1 and "passphrase_file or passphrase_env" in err
    assert not (tmp_path / "reg.db").exists()  # refused before the database is touched

    config.write_text('database_url = "sqlite:///reg.db"\npassphrase_env = "REGISTRY_KEYS"\n')
    monkeypatch.delenv("REGISTRY_KEYS", raising=False)
    status, _, err = run(capsys, "registry", "init", "--config", str(config),
                         "--instance", "TEST")
    assert status == 1 and "REGISTRY_KEYS is not set" in err
    monkeypatch.setenv("REGISTRY_KEYS", "from the environment")
    assert run(capsys, "registry", "init", "--config", str(config), "--instance", "TEST")[0] == 0
    load_private_key(tmp_path / "keys" / "admin-token.key", b"from the environment")

    monkeypatch.setenv("REGISTRY_KEYS", "another passphrase")
    status, _, err = run(capsys, "registry", "token", "--config", str(config), "--subject",
                         "x", "--role", "observer")
    assert status == 1 and "admin-token key" in err and "wrong passphrase" in err


def test_unsafe_plaintext_keys_when_asked_for(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "registry.toml"
    config.write_text('database_url = "sqlite:///reg.db"\nunsafe_plaintext_keys = true\n')
    assert run(capsys, "registry", "init", "--config", str(config), "--instance", "TEST")[0] == 0
    key = tmp_path / "keys" / "admin-token.key"
    assert not key.read_bytes().startswith(PEM_BEGIN.encode())  # the unsafe plaintext form
    assert key.stat().st_mode & 0o777 == 0o600
    status, out, _ = run(capsys, "registry", "token", "--config", str(config), "--subject",
                         "x", "--role", "observer")
    assert status == 0 and out.count(".") == 2
