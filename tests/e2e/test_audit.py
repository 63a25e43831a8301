"""Auditing a running federation: its security servers' logs, stamped by the federation's
TSA, archived by ``xchange audit archive`` and verified offline by ``xchange audit verify``
with the federation's anchor and global configuration alone; the archived tokens verify with
``openssl ts -verify`` on their own."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from security_server.config import SecurityServerConfig
from tests.e2e.cli import run_xchange
from xchange.canonical import parse_json
from xchange.evidence import read_bundle
from xchange_cli.audit import check_log
from xchange_cli.demo import query
from xchange_cli.federation import Federation, RunningFederation, build_federation

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = build_federation(tmp_path_factory.mktemp("audit"),
                                  timestamping_interval_seconds=1)
    with RunningFederation(federation):
        yield federation


def _ask(fed: Federation) -> str:
    answer = query(fed.servers[1].client_proxy_url, str(fed.services["persons"]),
                   "/persons/38001010001", str(fed.allowed_client))
    assert answer.status == 200
    return answer.headers["X-Road-Id"]


def _wait_until_stamped(fed: Federation) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(check_log(s.config).unstamped == 0 for s in fed.servers):
            return
        time.sleep(0.2)
    raise AssertionError("records were not time-stamped in time")


def test_archives_of_a_running_server_verify_offline(fed: Federation, tmp_path: Path) -> None:
    ids = [_ask(fed) for _ in range(3)]
    _wait_until_stamped(fed)
    consumer = fed.servers[1]
    done = run_xchange("audit", "archive", "--config", consumer.config)
    assert done.returncode == 0, done.stderr
    assert "1 archive file(s) written" in done.stdout
    archives = SecurityServerConfig.from_file(consumer.config).archive
    assert archives is not None
    [archive] = list(archives.directory.iterdir())

    # The auditor has the federation's anchor and a global configuration file, nothing else.
    publish = fed.registry_config.parent / "publish"
    trust = ("--anchor", publish / "anchor.json", "--globalconf", publish / "globalconf.json")
    done = run_xchange("audit", "verify", archives.directory, *trust)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "archive 1 of DEMO/GOV/70000002/ss-insurance: records 1..6" in done.stdout
    assert "time-stamps verified: 6 records" in done.stdout
    assert "OK: everything verifies" in done.stdout

    # One query's evidence, exported and verified with the CA and TSA certificates only.
    export = tmp_path / "query.asice"
    done = run_xchange("audit", "export", "--config", consumer.config, "--query-id", ids[1],
                        "--out", export)
    assert done.returncode == 0, done.stderr
    done = run_xchange("audit", "verify", export, "--ca", fed.ca.cert_path, "--tsa", fed.tsa_cert)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "signatures verified: 2" in done.stdout

    # The live log verifies with the server's own anchors; ss verify-log is the same command.
    for command in (("audit", "verify", "--config"), ("ss", "verify-log", "--config")):
        done = run_xchange(*command, consumer.config)
        assert done.returncode == 0 and "OK: everything verifies" in done.stdout, done.stdout

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command-line client is not installed")
    with zipfile.ZipFile(io.BytesIO(archive.read_bytes())) as outer:
        inner = outer.read("containers/000000000003.asice")
    with zipfile.ZipFile(io.BytesIO(inner)) as container:
        token = container.read("evidence/timestamp.tst")
        root = parse_json(container.read("evidence/record.json"))["timestamp"]["root"]
    (tmp_path / "timestamp.tst").write_bytes(token)
    done = subprocess.run(
        ["openssl", "ts", "-verify", "-digest", root, "-token_in", "-in",
         str(tmp_path / "timestamp.tst"), "-CAfile", str(fed.ca.cert_path), "-untrusted",
         str(fed.tsa_cert)], capture_output=True, text=True, timeout=60, check=False)
    assert "Verification: OK" in done.stdout, done.stdout + done.stderr


def test_the_audit_api_of_a_running_server(fed: Federation) -> None:
    """An auditor's token (xchange ss admin-token --role auditor) reads the consumer's log
    through its admin listener; the access shows in the admin audit log."""
    consumer = fed.servers[1]
    message_id = _ask(fed)
    done = run_xchange("ss", "admin-token", "--config", consumer.config, "--subject", "audrey",
                        "--role", "auditor")
    assert done.returncode == 0, done.stderr
    headers = {"Authorization": f"Bearer {done.stdout.strip()}"}

    def get(path: str) -> tuple[int, bytes]:
        request = urllib.request.Request(consumer.admin_url + path, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()

    status, body = get(f"/api/v1/messagelog/records?query_id={message_id}")
    assert status == 200
    assert [r["kind"] for r in json.loads(body)] == ["request", "response"]
    status, body = get(f"/api/v1/messagelog/queries/{message_id}/evidence")
    assert status == 200 and len(read_bundle(body)) == 2
    status, body = get("/api/v1/messagelog/verification")
    report = json.loads(body)
    assert status == 200 and report["ok"], report
    status, body = get("/api/v1/audit?limit=1000")
    actions = [(e["actor"], e["action"]) for e in json.loads(body)]
    assert actions[-3:] == [("audrey", "messagelog.search"), ("audrey", "messagelog.export"),
                            ("audrey", "messagelog.verify")]
