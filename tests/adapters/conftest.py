"""Fixtures of the adapter tests."""

from __future__ import annotations

import select
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The spyne service's address, and its WSDL saved to a file."""
    folder = tmp_path_factory.mktemp("legacy")
    # Its log goes to a file: a pipe nobody reads would fill up and stop the service.
    with (folder / "service.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tests.adapters.legacy_soap_service"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            proc.kill()
            proc.communicate(timeout=10)
            raise RuntimeError("the legacy SOAP service did not start: "
                               + (folder / "service.log").read_text()[-2000:])
        url = f"http://127.0.0.1:{int(line)}/"
        wsdl = folder / "population.wsdl"
        with urllib.request.urlopen(url + "?wsdl", timeout=30) as resp:
            wsdl.write_bytes(resp.read())
        yield url, wsdl
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
