"""The wrk script and the reading of its result line."""

from __future__ import annotations

import json
from typing import Any

import pytest

from xchange_cli.bench.wrk import MARKER, WrkSettings, lua_script, parse_wrk_output

WRK_TEXT = """\
Running 10s test @ http://127.0.0.1:4000
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.08ms    0.80ms  11.15ms   85.84%
  184396 requests in 10.00s, 31.65MB read
Requests/sec:  18439.60
Transfer/sec:      3.17MB
"""


def _line(**changes: Any) -> str:
    doc: dict[str, Any] = {
        "requests": 184396, "duration_us": 10_000_000, "bytes": 33_000_000,
        "errors": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0},
        "latency_us": {"min": 90, "mean": 1079.5, "max": 11155, "p50": 788, "p90": 1470,
                       "p99": 5898, "p999": 9464},
    }
    doc.update(changes)
    return MARKER + json.dumps(doc)


def test_result_line_is_read_into_rates_and_milliseconds() -> None:
    result = parse_wrk_output(WRK_TEXT + _line() + "\n")
    assert result.requests == 184396
    assert result.duration_s == 10.0
    assert result.requests_per_s == pytest.approx(18439.6)
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (0.788, 1.47, 5.898)
    assert result.p999_ms == 9.464
    assert result.max_ms == 11.155
    assert result.mean_ms == pytest.approx(1.0795)
    assert result.errors == 0


def test_every_kind_of_error_counts() -> None:
    errors = {"connect": 1, "read": 2, "write": 3, "status": 4, "timeout": 5}
    result = parse_wrk_output(_line(errors=errors))
    assert result.errors == 15
    assert result.error_detail == errors


@pytest.mark.parametrize("text", [
    WRK_TEXT,                                    # wrk died before done()
    _line() + "\n" + _line(),                    # two results: not one run
    MARKER + "{not json",
    MARKER + json.dumps({"requests": 1}),        # fields missing
    _line(errors={"connect": 0}),                # error kinds missing
    _line(latency_us={"p50": "x"}),
    _line(duration_us=0),
])
def test_missing_or_malformed_results_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_wrk_output(text)


def test_script_sets_the_request_and_prints_the_marker() -> None:
    script = lua_script("/r1/DEMO/GOV/1/sub/svc/x", "DEMO/GOV/2/benefits")
    assert 'wrk.path = "/r1/DEMO/GOV/1/sub/svc/x"' in script
    assert 'wrk.headers["X-Road-Client"] = "DEMO/GOV/2/benefits"' in script
    assert 'wrk.method = "GET"' in script
    assert MARKER in script
    for p in ("percentile(50)", "percentile(90)", "percentile(99)"):
        assert p in script


@pytest.mark.parametrize("path", ['/x"y', "/x\\y", "/x\ny", "/x\x00"])
def test_script_refuses_values_that_are_not_plain_strings(path: str) -> None:
    with pytest.raises(ValueError):
        lua_script(path, "DEMO/GOV/2/benefits")


@pytest.mark.parametrize(("threads", "connections", "expected"),
                         [(1, 64, 1), (2, 64, 2), (2, 1, 1), (4, 3, 3)])
def test_wrk_never_gets_more_threads_than_connections(threads: int, connections: int,
                                                      expected: int) -> None:
    assert WrkSettings(threads=threads).threads_for(connections) == expected
