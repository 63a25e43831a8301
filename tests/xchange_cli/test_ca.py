"""``xchange ca ...``: the commands in-process, and the OCSP responder as a real process queried
with the OpenSSL client (the acceptance test of the PKI issue)."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certs.ca import DevCA, make_csr
from certs.keys import generate_private_key, load_certificates
from xchange.certificates import sign_cert_subject
from xchange.identifiers import ClientId
from xchange.ocsp import ocsp_request, ocsp_url_of, verify_ocsp_response
from xchange_cli.federation import ManagedProcess, free_port
from xchange_cli.main import main

MEMBER = ClientId("CLI", "GOV", "1")


def _csr(tmp_path: Path) -> Path:
    path = tmp_path / "member.csr"
    path.write_bytes(make_csr(generate_private_key(), sign_cert_subject(MEMBER, "Org")))
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


# -- the commands, in-process --------------------------------------------------------------------


def test_init_issue_revoke_status_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca_dir = tmp_path / "ca"
    status, out, _ = _run(capsys, "ca", "init", str(ca_dir), "--instance", "CLI",
                          "--ocsp-url", "http://127.0.0.1:9/ocsp")
    assert status == 0
    assert f"trust anchor: {ca_dir / 'ca.pem'}" in out

    status, out, _ = _run(capsys, "ca", "issue", str(ca_dir), "--csr", str(_csr(tmp_path)),
                          "--profile", "sign")
    assert status == 0
    leaf, root = x509.load_pem_x509_certificates(out.encode())
    assert root == DevCA.load(ca_dir).certificate
    assert ocsp_url_of(leaf) == "http://127.0.0.1:9/ocsp"
    serial = f"{leaf.serial_number:x}"

    cert_file = tmp_path / "member.pem"
    status, out, _ = _run(capsys, "ca", "issue", str(ca_dir), "--csr", str(_csr(tmp_path)),
                          "--profile", "sign", "--out", str(cert_file), "--days", "10")
    assert status == 0
    second = load_certificates(cert_file)[0]
    assert f"serial {second.serial_number:x} to {cert_file}" in out
    assert second.not_valid_after_utc - second.not_valid_before_utc == timedelta(days=10)

    status, out, _ = _run(capsys, "ca", "status", str(ca_dir), "--serial", serial.upper())
    assert status == 0
    assert "status:    good" in out
    assert "serialNumber=CLI/GOV/1" in out

    status, out, _ = _run(capsys, "ca", "revoke", str(ca_dir), "--cert", str(cert_file),
                          "--reason", "keyCompromise")
    assert status == 0
    assert f"{second.serial_number:x}" in out and "(keyCompromise)" in out

    status, out, _ = _run(capsys, "ca", "status", str(ca_dir), "--cert", str(cert_file))
    assert "status:    revoked at " in out and "(keyCompromise)" in out

    status, out, _ = _run(capsys, "ca", "list", str(ca_dir))
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "# O=CLI,CN=CLI Root CA; OCSP URL: http://127.0.0.1:9/ocsp"
    assert lines[1].startswith(f"{serial}  sign  ") and "  good  " in lines[1]
    assert lines[2].startswith(f"{second.serial_number:x}  sign  ") and "revoked at" in lines[2]


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    DevCA.create(tmp_path / "ca", "CLI", now=datetime.now(UTC))
    return tmp_path / "ca"


def _impostor(ca_dir: Path, tmp_path: Path) -> Path:
    """A certificate with the serial and issuer name of one the CA issued, signed by another
    key: naming it must not revoke the real one."""
    ca = DevCA.load(ca_dir)
    real = ca.issue_sign_cert(MEMBER, "Org", generate_private_key().public_key(),
                              now=datetime.now(UTC))
    key = generate_private_key()
    fake = (x509.CertificateBuilder().subject_name(real.subject).issuer_name(real.issuer)
            .public_key(key.public_key()).serial_number(real.serial_number)
            .not_valid_before(real.not_valid_before_utc)
            .not_valid_after(real.not_valid_after_utc).sign(key, hashes.SHA256()))
    path = tmp_path / "impostor.pem"
    path.write_bytes(fake.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ca", "revoke", "{ca}", "--serial", "1234"], "serial 1234 was not issued by this CA"),
        (["ca", "status", "{ca}", "--serial", "xyz"], "serial 'xyz' is not a hexadecimal"),
        (["ca", "revoke", "{ca}", "--cert", "{impostor}"], "is not the certificate this CA"),
        (["ca", "issue", "{ca}", "--csr", "{garbage}", "--profile", "sign"],
         "[client.bad_request]: not a PEM certificate signing request"),
        (["ca", "init", "{ca}", "--instance", "CLI"], "exists; refusing to replace a CA"),
        (["ca", "list", "{missing}"], "No such file or directory"),
        (["ca", "ocsp-serve", "{ca}", "--responder-key", "{garbage}"],
         "--responder-key needs --responder-cert"),
        (["ca", "ocsp-serve", "{ca}", "--validity-seconds", "0"], "must be positive"),
    ],
)
def test_errors_are_one_line(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
    message: str,
) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"garbage")
    names = {"ca": ca_dir, "garbage": garbage, "missing": tmp_path / "missing",
             "impostor": _impostor(ca_dir, tmp_path) if "{impostor}" in argv else ""}
    status, out, err = _run(capsys, *(a.format(**names) for a in argv))
    assert status == 1
    assert err.startswith("xchange: error") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err + out


def test_double_revocation_is_refused(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert = DevCA.load(ca_dir).issue_sign_cert(MEMBER, "Org", generate_private_key().public_key(),
                                              now=datetime.now(UTC))
    serial = f"{cert.serial_number:x}"
    assert _run(capsys, "ca", "revoke", str(ca_dir), "--serial", serial)[0] == 0
    status, _, err = _run(capsys, "ca", "revoke", str(ca_dir), "--serial", f"0x{serial}",
                          "--reason", "superseded")
    assert status == 1
    assert "already revoked since" in err and "(unspecified)" in err


# -- the acceptance test: a real responder process, the OpenSSL client ---------------------------

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


@dataclass
class Served:
    ca_dir: Path
    ca: DevCA
    url: str
    leaf: Path
    other: Path
    """A second certificate of the CA, for the delegated responder (not revoked by the tests)."""


def _issue_file(ca: DevCA, path: Path) -> Path:
    cert = ca.issue_sign_cert(MEMBER, "Org", generate_private_key().public_key(),
                              now=datetime.now(UTC))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _ready(url: str, ca: DevCA) -> bool:
    request = urllib.request.Request(
        url, data=ocsp_request(ca.certificate, ca.certificate),
        headers={"Content-Type": "application/ocsp-request"})
    with urllib.request.urlopen(request, timeout=2) as response:
        return bool(response.status == 200)


def _serve(tmp: Path, *extra: str) -> Iterator[Served]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/ocsp"
    ca_dir = tmp / "ca"
    assert main(["ca", "init", str(ca_dir), "--instance", "OCSPE2E", "--ocsp-url", url]) == 0
    ca = DevCA.load(ca_dir)
    served = Served(ca_dir, ca, url, _issue_file(ca, tmp / "leaf.pem"),
                    _issue_file(ca, tmp / "other.pem"))
    process = ManagedProcess(
        "ocsp", [sys.executable, "-m", "xchange_cli", "ca", "ocsp-serve", str(ca_dir),
                 "--port", str(port), *extra], tmp / "logs")
    try:
        process.wait_until(lambda: _ready(url, ca))
        yield served
    finally:
        process.stop()
    log = process.log_path.read_text()
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(tmp_path_factory.mktemp("ocsp-serve"))


@pytest.fixture(scope="module")
def served_delegated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(tmp_path_factory.mktemp("ocsp-delegated"), "--delegated")


def _openssl_ocsp(served: Served, *which: str) -> str:
    assert OPENSSL is not None
    ca_pem = str(served.ca.cert_path)
    done = subprocess.run(
        [OPENSSL, "ocsp", "-url", served.url, "-issuer", ca_pem, *which, "-CAfile", ca_pem],
        capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # OpenSSL checked the signature, the signer and the nonce it sent.
    assert "Response verify OK" in done.stderr, done.stderr
    return done.stdout


def _xchange(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xchange_cli", *argv], capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.e2e
@needs_openssl
def test_openssl_good_then_revoked_after_xchange_ca_revoke(served: Served) -> None:
    leaf = str(served.leaf)
    assert f"{leaf}: good" in _openssl_ocsp(served, "-cert", leaf)

    revoke = _xchange("ca", "revoke", str(served.ca_dir), "--cert", leaf,
                      "--reason", "keyCompromise")
    assert revoke.returncode == 0, revoke.stderr

    out = _openssl_ocsp(served, "-cert", leaf)
    assert f"{leaf}: revoked" in out
    assert "Reason: keyCompromise" in out
    assert "Revocation Time:" in out


@pytest.mark.e2e
@needs_openssl
def test_openssl_unknown_serial(served: Served) -> None:
    assert "0x1234: unknown" in _openssl_ocsp(served, "-serial", "0x1234")


@pytest.mark.e2e
@needs_openssl
def test_openssl_delegated_responder(served_delegated: Served) -> None:
    leaf = str(served_delegated.other)
    out = _openssl_ocsp(served_delegated, "-cert", leaf, "-resp_text")
    assert f"{leaf}: good" in out
    # Signed by the responder certificate the response carries, not by the CA.
    assert "Subject: CN=OCSPE2E OCSP Responder, O=OCSPE2E" in out
    assert "OCSP Signing" in out and "OCSP No Check" in out


@pytest.mark.e2e
def test_get_form(served: Served) -> None:
    cert = load_certificates(served.other)[0]
    encoded = quote(base64.b64encode(ocsp_request(cert, served.ca.certificate)).decode(), safe="")
    with urllib.request.urlopen(f"{served.url}/{encoded}", timeout=10) as response:
        assert response.headers["Content-Type"] == "application/ocsp-response"
        der = response.read()
    status = verify_ocsp_response(der, cert, served.ca.certificate, at=datetime.now(UTC),
                                  max_age=timedelta(minutes=5),
                                  code="server.clientproxy.cert_validation")
    assert status.status == "good"
