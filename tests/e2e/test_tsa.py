"""The development TSA as a real process, checked with the OpenSSL command-line client.

``xchange ca issue-tsa`` makes the TSA's key and certificate, ``xchange tsa serve`` runs it on
a free port; ``openssl ts -query`` asks it and ``openssl ts -verify`` checks the answers, as
well as a token that the security server's own client got.  And the other way round: a token
made by OpenSSL's TSA verifies with xchange.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from certs.ca import CA_PASSPHRASE_FILE, DevCA
from certs.keys import load_certificates
from security_server.timestamper import TsaClient
from tests.e2e.cli import run_xchange
from xchange.globalconf import ApprovedTSA
from xchange.timestamp import (
    QUERY_TYPE,
    parse_timestamp_response,
    timestamp_request,
    verify_timestamp_token,
)
from xchange_cli.federation import ManagedProcess, free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("openssl") is None,
                       reason="the openssl command-line client is not installed"),
]


@dataclass(frozen=True)
class RunningTsa:
    url: str
    ca_pem: Path
    tsa_key: Path
    tsa_pem: Path
    """The TSA certificate, then the CA's (what ``xchange ca issue-tsa`` writes)."""
    directory: Path


def _openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, check=False)


def _ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


@pytest.fixture(scope="module")
def running_tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTsa]:
    directory = tmp_path_factory.mktemp("tsa")
    ca = DevCA.create(directory / "ca", "TEST", now=datetime.now(UTC))
    key, pem = directory / "tsa.key", directory / "tsa.pem"
    issued = run_xchange("ca", "issue-tsa", str(ca.directory), "--out-key", str(key),
                         "--out-cert", str(pem), "--name", "E2E TSA")
    assert issued.returncode == 0, issued.stderr
    port = free_port()
    process = ManagedProcess(
        "tsa", [sys.executable, "-m", "xchange_cli", "tsa", "serve", "--key", str(key),
                "--cert", str(pem), "--port", str(port),
                "--passphrase-file", str(ca.directory / CA_PASSPHRASE_FILE)], directory / "logs")
    try:
        process.wait_until(lambda: _ok(f"http://127.0.0.1:{port}/health"))
        yield RunningTsa(f"http://127.0.0.1:{port}/", ca.cert_path, key, pem, directory)
    finally:
        process.stop()
    assert "Traceback" not in process.log_path.read_text()


def _post(url: str, query: Path, reply: Path) -> None:
    request = urllib.request.Request(url, data=query.read_bytes(), method="POST",
                                     headers={"Content-Type": QUERY_TYPE})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/timestamp-reply"
        reply.write_bytes(resp.read())


def test_openssl_query_gets_a_reply_that_openssl_verifies(
    running_tsa: RunningTsa, tmp_path: Path
) -> None:
    data, query, reply = tmp_path / "data.txt", tmp_path / "req.tsq", tmp_path / "reply.tsr"
    data.write_text("a record of the message log\n")
    made = _openssl("ts", "-query", "-data", data, "-sha256", "-cert", "-out", query)
    assert made.returncode == 0, made.stderr
    _post(running_tsa.url, query, reply)

    trust = ("-CAfile", running_tsa.ca_pem, "-untrusted", running_tsa.tsa_pem)
    verified = _openssl("ts", "-verify", "-data", data, "-in", reply, *trust)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Verification: OK" in verified.stdout
    # Checked against the query too: its nonce and imprint.
    verified = _openssl("ts", "-verify", "-queryfile", query, "-in", reply, *trust)
    assert "Verification: OK" in verified.stdout, verified.stderr

    data.write_text("other data\n")
    refused = _openssl("ts", "-verify", "-data", data, "-in", reply, *trust)
    assert refused.returncode != 0
    assert "Verification: FAILED" in refused.stdout
    assert "message imprint mismatch" in refused.stderr


def test_openssl_sees_the_rejection_of_an_unknown_policy(
    running_tsa: RunningTsa, tmp_path: Path
) -> None:
    data, query, reply = tmp_path / "data.txt", tmp_path / "req.tsq", tmp_path / "reply.tsr"
    data.write_text("x")
    made = _openssl("ts", "-query", "-data", data, "-sha256", "-tspolicy", "1.2.3.4", "-out",
                    query)
    assert made.returncode == 0, made.stderr
    _post(running_tsa.url, query, reply)
    shown = _openssl("ts", "-reply", "-in", reply, "-text")
    assert "Status: Rejected" in shown.stdout
    assert "Failure info: the requested TSA policy is not supported" in shown.stdout


async def test_a_token_of_the_security_servers_client_verifies_with_openssl(
    running_tsa: RunningTsa, tmp_path: Path
) -> None:
    tsa_cert = load_certificates(running_tsa.tsa_pem)[0]
    data_hash = hashlib.sha256(b"merkle root of a batch").digest()
    approved = [ApprovedTSA("e2e", running_tsa.url, tsa_cert)]
    async with TsaClient(lambda: approved) as client:
        token = await client.timestamp(data_hash)
    path = tmp_path / "token.der"
    path.write_bytes(token.der)
    verified = _openssl("ts", "-verify", "-digest", data_hash.hex(), "-token_in", "-in", path,
                        "-CAfile", running_tsa.ca_pem, "-untrusted", running_tsa.tsa_pem)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Verification: OK" in verified.stdout


def test_a_token_of_openssls_tsa_verifies_with_xchange(
    running_tsa: RunningTsa, tmp_path: Path
) -> None:
    """Interoperability the other way: OpenSSL as the TSA (RSA key, its own encoding)."""
    ca = DevCA.load(running_tsa.ca_pem.parent)
    key, pem = tmp_path / "openssl-tsa.key", tmp_path / "openssl-tsa.pem"
    issued = run_xchange("ca", "issue-tsa", str(ca.directory), "--out-key", str(key),
                         "--out-cert", str(pem), "--name", "OpenSSL TSA")
    assert issued.returncode == 0, issued.stderr
    (tmp_path / "serial").write_text("01\n")
    config = tmp_path / "tsa.cnf"
    config.write_text(
        "[ tsa ]\ndefault_tsa = tsa_config\n"
        "[ tsa_config ]\n"
        f"serial = {tmp_path / 'serial'}\nsigner_cert = {pem}\nsigner_key = {key}\n"
        "signer_digest = sha256\ndefault_policy = 1.2.3.4.1\ndigests = sha256\n"
        "ess_cert_id_alg = sha256\naccuracy = secs:1\n"
    )
    data_hash = hashlib.sha256(b"stamped by OpenSSL").digest()
    query, reply = tmp_path / "req.tsq", tmp_path / "reply.tsr"
    query.write_bytes(timestamp_request(data_hash, nonce=77))
    made = _openssl("ts", "-reply", "-config", config, "-queryfile", query, "-out", reply,
                    "-passin", f"file:{ca.directory / CA_PASSPHRASE_FILE}")
    assert made.returncode == 0, made.stderr
    token = parse_timestamp_response(reply.read_bytes(), data_hash=data_hash, nonce=77)
    stamped = verify_timestamp_token(token, data_hash=data_hash,
                                     tsa_certs=[load_certificates(pem)[0]])
    assert stamped.policy == "1.2.3.4.1" and stamped.tsa_certificate == load_certificates(pem)[0]


def test_issue_tsa_refuses_to_overwrite(running_tsa: RunningTsa) -> None:
    done = run_xchange("ca", "issue-tsa", str(running_tsa.ca_pem.parent), "--out-key",
                       str(running_tsa.tsa_key),
                       "--out-cert", str(running_tsa.directory / "x.pem"))
    assert done.returncode == 1
    assert done.stderr.startswith("xchange: error: ") and "exists" in done.stderr
    assert "Traceback" not in done.stderr
