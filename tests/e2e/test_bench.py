"""``xchange bench`` in its smallest form: real federation, real wrk, a results file.

Checks that a run completes and writes a complete document; the figures themselves are
not asserted (no timed assertions).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install "
                    "wrk; .ci/run installs it)")
def test_smallest_bench_run_writes_results(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "xchange_cli", "bench", "--quick",
         "--modes", "direct,federated_sqlite", "--connections", "2", "--duration", "1",
         "--warmup", "0", "--large-body-mib", "1", "--verify-records", "10",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    files = list(tmp_path.glob("*-quick.json"))
    assert len(files) == 1
    results = json.loads(files[0].read_text())
    for mode in ("direct", "federated_sqlite"):
        (point,) = results["modes"][mode]["points"]
        assert point["connections"] == 2
        assert point["requests_per_s"] > 0
        assert point["errors"] == 0
    fed = results["modes"]["federated_sqlite"]["points"][0]
    assert set(fed["cpu_s"]) == {"consumer-ss", "provider-ss", "provider-is"}
    assert fed["log_records_per_s"] > 0
    (ratio,) = results["ratios"]["federated_sqlite"]
    assert ratio["connections"] == 2
    assert results["large_body"]["status"] == 200
    assert results["verify_log"]["ok"] is True
    assert "| target | wanted | measured | met |" in done.stdout
