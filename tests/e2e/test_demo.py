"""``xchange demo`` as a user runs it: a separate process, its output and exit status."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xchange_cli.demo import query

pytestmark = pytest.mark.e2e


def test_demo_runs_queries_and_exits_zero() -> None:
    done = subprocess.run([sys.executable, "-m", "xchange_cli", "demo"], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "server.serverproxy.access_denied" in out
    assert "Mari Maasikas" in out
    assert "hash chain intact" in out
    assert "demo succeeded" in out
    assert "Traceback" not in out + done.stderr


def test_demo_serve_describes_a_running_federation(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "xchange_cli", "demo", "--serve", "--dir",
                             str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True)
    try:
        described = tmp_path / "demo.json"
        deadline = time.monotonic() + 60
        while not described.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "demo.json was not written"
            time.sleep(0.1)
        demo = json.loads(described.read_text())
        assert demo["instance"] == "DEMO"
        assert demo["registry_url"].startswith("http://127.0.0.1:")
        consumer = demo["security_servers"][demo["consumer"]["security_server"]]
        service = demo["provider_service"]
        answer = query(consumer["client_proxy_url"], service["id"], service["example_path"],
                       demo["consumer"]["client"])
        assert answer.status == 200
        assert answer.headers["X-Road-Service"] == service["id"]
        denied = demo["denied_client"]
        at = demo["security_servers"][denied["security_server"]]["client_proxy_url"]
        answer = query(at, service["id"], service["example_path"], denied["client"])
        assert answer.headers["X-Road-Error"] == "server.serverproxy.access_denied"
    finally:
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert status == 0
