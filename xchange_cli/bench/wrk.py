"""Driving ``wrk``, the load generator, and reading what it measured.

``wrk`` (a C program, Debian package ``wrk``) keeps N connections busy from one or two
threads and costs far less CPU per request than anything written in Python, so on a 2-core
machine it leaves the cores to the servers being measured.  A Lua script (:func:`lua_script`)
sets the request -- method, path, the ``X-Road-Client`` header -- and, in ``done()``, prints
one line ``XCHANGE-BENCH {json}`` with the request count, duration, error counts and latency
percentiles in microseconds.  :func:`parse_wrk_output` reads that line back.

Errors: connect, read, write and timeout errors, and answers with a status of 400 or more, all
as wrk counts them.  That is every non-2xx answer here: the benchmark's provider always
answers 200 and a security server answers 200 or an error status, never 1xx or 3xx.  A Lua
``response()`` hook could count non-2xx itself, but wrk then hands every response to Lua and
loses a quarter of its throughput (measured: 84,000 -> 61,000 requests/s against the
benchmark's provider), which would make the load generator the bottleneck of the direct run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = [
    "MARKER",
    "WrkResult",
    "WrkSettings",
    "find_wrk",
    "lua_script",
    "parse_wrk_output",
    "run_wrk",
]

MARKER: Final = "XCHANGE-BENCH "

_LUA: Final = """\
wrk.method = "{method}"
wrk.path = "{path}"
wrk.headers["X-Road-Client"] = "{client}"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}},' ..
    '"latency_us":{{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
"""


def lua_script(path: str, client: str, method: str = "GET") -> str:
    """The wrk script for one request shape.  Values are checked, not escaped: they come
    from the harness, and a quote or backslash would be a harness bug."""
    for value in (path, client, method):
        if any(c in value for c in '"\\\n\r') or not value.isprintable():
            raise ValueError(f"not a safe Lua string literal: {value!r}")
    return _LUA.format(method=method, path=path, client=client, marker=MARKER)


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run.  Latencies in milliseconds."""

    requests: int
    duration_s: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    errors: int
    """Every failed request: connect, read, write, timeout, and error statuses."""
    error_detail: dict[str, int]
    """wrk's counts by kind: connect, read, write, status (answers >= 400), timeout."""


def parse_wrk_output(stdout: str) -> WrkResult:
    """Read the ``XCHANGE-BENCH`` line our script prints.  Raises :class:`ValueError` if
    there is none (wrk failed before ``done()``) or it is malformed."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith(MARKER)]
    if len(lines) != 1:
        raise ValueError(f"expected one {MARKER.strip()} line in wrk's output, "
                         f"found {len(lines)}: {stdout[-500:]!r}")
    try:
        doc: dict[str, Any] = json.loads(lines[0][len(MARKER):])
        errors = {k: int(doc["errors"][k]) for k in ("connect", "read", "write", "status",
                                                      "timeout")}
        lat = {k: float(doc["latency_us"][k]) / 1000 for k in ("mean", "max", "p50", "p90",
                                                                "p99", "p999")}
        requests, duration_s = int(doc["requests"]), int(doc["duration_us"]) / 1e6
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed wrk result line: {lines[0]!r}") from exc
    if duration_s <= 0:
        raise ValueError("wrk reported a duration of zero")
    return WrkResult(
        requests=requests,
        duration_s=duration_s,
        requests_per_s=requests / duration_s,
        p50_ms=lat["p50"],
        p90_ms=lat["p90"],
        p99_ms=lat["p99"],
        p999_ms=lat["p999"],
        max_ms=lat["max"],
        mean_ms=lat["mean"],
        errors=sum(errors.values()),
        error_detail=errors,
    )


@dataclass(frozen=True, slots=True)
class WrkSettings:
    """The load generator's settings, the same for every mode of one run."""

    threads: int = 1
    timeout_s: float = 5.0
    """A request unanswered this long counts as an error.  It must be well below the run's
    duration: wrk ignores requests still unanswered when the run ends, so only this
    timeout makes a stalled connection show."""

    def threads_for(self, connections: int) -> int:
        return max(1, min(self.threads, connections))


def find_wrk() -> str | None:
    return shutil.which("wrk")


def run_wrk(wrk: str, base_url: str, script: str, *, connections: int, duration_s: float,
            settings: WrkSettings) -> WrkResult:
    """Run wrk once against ``base_url`` (path and headers come from ``script``)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        script_path = Path(f.name)
    try:
        argv = [wrk, "-t", str(settings.threads_for(connections)), "-c", str(connections),
                "-d", f"{max(1, round(duration_s))}s", "--timeout", f"{settings.timeout_s:g}s",
                "-s", str(script_path), base_url]
        done = subprocess.run(argv, capture_output=True, text=True, check=False,
                              timeout=duration_s + settings.timeout_s + 30)
    finally:
        script_path.unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed with status {done.returncode}: {done.stderr.strip()}")
    return parse_wrk_output(done.stdout)
