"""``xchange ss keys generate`` and ``import-cert``: a security server's certificate lifecycle
from key to installed certificate, with the development CA's ``xchange ca issue`` between."""

from __future__ import annotations

from pathlib import Path

import pytest

from certs.keys import load_certificates, load_private_key, write_secret_file
from xchange.certificates import member_of_sign_cert, server_of_auth_cert
from xchange.identifiers import ClientId, SecurityServerId
from xchange.ocsp import ocsp_url_of
from xchange_cli.main import main

SERVER = "CLI/GOV/1/ss1"
MEMBER = "CLI/GOV/1"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def ca_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    ca = tmp_path / "ca"
    assert _run(capsys, "ca", "init", str(ca), "--instance", "CLI",
                "--ocsp-url", "http://127.0.0.1:9/")[0] == 0
    return ca


@pytest.fixture
def passphrase(tmp_path: Path) -> Path:
    path = tmp_path / "ss.passphrase"
    write_secret_file(path, b"server passphrase\n")
    return path


@pytest.mark.parametrize(("kind", "ident"), [("auth", SERVER), ("sign", MEMBER)])
def test_generate_issue_import(kind: str, ident: str, ca_dir: Path, passphrase: Path,
                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key, csr, issued, installed = (tmp_path / f"{kind}.{x}" for x in ("key", "csr", "new",
                                                                        "pem"))
    status, out, err = _run(capsys, "ss", "keys", "generate", "--kind", kind, "--id", ident,
                            "--member-name", "Org", "--country", "EE", "--out-key", str(key),
                            "--out-csr", str(csr), "--passphrase-file", str(passphrase))
    assert status == 0, err
    assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
    assert (key.stat().st_mode & 0o777) == 0o600
    assert "C=EE" in out

    status, _, err = _run(capsys, "ca", "issue", str(ca_dir), "--csr", str(csr), "--profile",
                          kind, "--out", str(issued))
    assert status == 0, err

    status, out, err = _run(capsys, "ss", "keys", "import-cert", "--kind", kind, "--key",
                            str(key), "--cert", str(issued), "--out", str(installed),
                            "--passphrase-file", str(passphrase))
    assert status == 0, err
    assert "installed" in out
    cert = load_certificates(installed)[0]
    assert ocsp_url_of(cert) == "http://127.0.0.1:9/"
    if kind == "auth":
        assert server_of_auth_cert(cert) == SecurityServerId.parse(SERVER)
    else:
        assert member_of_sign_cert(cert) == ClientId.parse(MEMBER)
    load_private_key(key, b"server passphrase")  # the key stays encrypted under it

    # Again: an installed certificate is not replaced without --replace.
    status, _, err = _run(capsys, "ss", "keys", "import-cert", "--kind", kind, "--key",
                          str(key), "--cert", str(issued), "--out", str(installed),
                          "--passphrase-file", str(passphrase))
    assert status == 1 and "--replace" in err


def test_a_certificate_for_another_key_is_refused(ca_dir: Path, passphrase: Path,
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    paths = {}
    for name in ("one", "two"):
        key, csr = tmp_path / f"{name}.key", tmp_path / f"{name}.csr"
        assert _run(capsys, "ss", "keys", "generate", "--kind", "sign", "--id", MEMBER,
                    "--member-name", "Org", "--out-key", str(key), "--out-csr", str(csr),
                    "--passphrase-file", str(passphrase))[0] == 0
        paths[name] = key, csr
    issued = tmp_path / "two.new"
    assert _run(capsys, "ca", "issue", str(ca_dir), "--csr", str(paths["two"][1]),
                "--profile", "sign", "--out", str(issued))[0] == 0
    status, _, err = _run(capsys, "ss", "keys", "import-cert", "--kind", "sign", "--key",
                          str(paths["one"][0]), "--cert", str(issued), "--out",
                          str(tmp_path / "sign.pem"), "--passphrase-file", str(passphrase))
    assert status == 1
    assert "is not for the key" in err
    assert not (tmp_path / "sign.pem").exists()


def test_wrong_kind_and_missing_passphrase_are_clear_errors(
        ca_dir: Path, passphrase: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    key, csr, issued = tmp_path / "k", tmp_path / "c", tmp_path / "i"
    status, _, err = _run(capsys, "ss", "keys", "generate", "--kind", "sign", "--id", MEMBER,
                          "--member-name", "Org", "--out-key", str(key), "--out-csr", str(csr))
    assert status == 1 and "--passphrase-file" in err
    assert _run(capsys, "ss", "keys", "generate", "--kind", "sign", "--id", MEMBER,
                "--member-name", "Org", "--out-key", str(key), "--out-csr", str(csr),
                "--passphrase-file", str(passphrase))[0] == 0
    assert _run(capsys, "ca", "issue", str(ca_dir), "--csr", str(csr), "--profile", "sign",
                "--out", str(issued))[0] == 0
    status, _, err = _run(capsys, "ss", "keys", "import-cert", "--kind", "auth", "--key",
                          str(key), "--cert", str(issued), "--out", str(tmp_path / "x.pem"),
                          "--passphrase-file", str(passphrase))
    assert status == 1
    assert "xchange: error" in err and "Traceback" not in err
