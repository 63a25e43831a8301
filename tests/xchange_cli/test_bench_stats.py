"""The benchmark's arithmetic: /proc parsing, medians, ratios, targets, the summary."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import pytest

from xchange_cli.bench.stats import (
    MIB,
    PointSummary,
    ProcSample,
    RepeatSample,
    ServerFigures,
    check_targets,
    markdown_summary,
    parse_machine_busy,
    parse_proc_stat,
    parse_proc_status,
    ratios,
    server_figures,
    summarize_point,
    summarize_profile,
)
from xchange_cli.bench.wrk import WrkResult

# Field 2 holds spaces and a parenthesis; utime (14) = 1234, stime (15) = 56.
STAT = ("4242 (python -m x) y) S 1 4242 4242 0 -1 4194560 9000 0 0 0 1234 56 0 0 20 0 3 0 "
        "100 300000000 20000 18446744073709551615 1 1 0 0 0 0 0 16781312 17642 0 0 0 17 1 0 0")

STATUS = """\
Name:\tpython
VmPeak:\t  400000 kB
VmHWM:\t  150000 kB
VmRSS:\t  100000 kB
Threads:\t3
"""


def test_cpu_ticks_are_read_after_the_command_name() -> None:
    assert parse_proc_stat(STAT) == 1234 + 56


def test_machine_busy_time_leaves_out_idle_and_iowait() -> None:
    text = ("cpu  100 2 30 5000 40 5 6 7 0 0\n"
            "cpu0 50 1 15 2500 20 2 3 3 0 0\nintr 1 2 3\n")
    assert parse_machine_busy(text) == 100 + 2 + 30 + 5 + 6 + 7
    with pytest.raises(ValueError):
        parse_machine_busy("intr 1 2 3\n")


def test_other_cpu_is_what_the_machine_spent_beyond_the_measured_processes() -> None:
    sample = replace(_sample(100, 1.0, cpu=3.0), wrk_cpu_s=1.5, machine_cpu_s=7.0)
    assert sample.other_cpu_s == pytest.approx(2.5)
    assert replace(sample, machine_cpu_s=4.0).other_cpu_s == 0.0  # never negative


def test_rss_and_peak_are_read_in_bytes() -> None:
    assert parse_proc_status(STATUS) == (100000 * 1024, 150000 * 1024)


@pytest.mark.parametrize("text", ["Name:\tx\n", "VmRSS:\t1 MB\nVmHWM:\t1 kB\n"])
def test_status_without_figures_in_kb_is_refused(text: str) -> None:
    with pytest.raises((KeyError, ValueError)):
        parse_proc_status(text)


def test_server_figures_of_an_interval() -> None:
    before = ProcSample(cpu_ticks=1000, rss_bytes=80 * MIB, hwm_bytes=80 * MIB)
    after = ProcSample(cpu_ticks=1250, rss_bytes=90 * MIB, hwm_bytes=300 * MIB)
    figures = server_figures(before, after, clk_tck=100)
    assert figures == ServerFigures(cpu_s=2.5, peak_rss_mib=300.0, rss_growth_mib=220.0)


def _wrk(rps: float, p50: float, *, errors: int = 0, duration: float = 10.0) -> WrkResult:
    return WrkResult(requests=int(rps * duration), duration_s=duration, requests_per_s=rps,
                     p50_ms=p50, p90_ms=p50 * 2, p99_ms=p50 * 4, p999_ms=p50 * 8,
                     max_ms=p50 * 10, mean_ms=p50, errors=errors,
                     error_detail={"connect": 0, "read": 0, "write": 0, "status": errors,
                                   "timeout": 0})


def _sample(rps: float, p50: float, *, errors: int = 0, cpu: float = 1.0, peak: float = 100,
            records: int = 0) -> RepeatSample:
    return RepeatSample(_wrk(rps, p50, errors=errors),
                        {"ss": ServerFigures(cpu_s=cpu, peak_rss_mib=peak, rss_growth_mib=0)},
                        log_records=records)


def test_a_point_is_the_median_of_its_repeats_figure_by_figure() -> None:
    point = summarize_point(64, [
        _sample(100, 9.0, errors=1, cpu=3.0, peak=120, records=4000),
        _sample(300, 1.0, cpu=1.0, peak=100, records=12000),
        _sample(200, 5.0, errors=2, cpu=2.0, peak=110, records=8000),
    ])
    assert point.connections == 64
    assert point.repeats == 3
    assert point.requests_per_s == 200
    assert (point.p50_ms, point.p90_ms, point.p99_ms) == (5.0, 10.0, 20.0)
    assert point.errors == 3  # summed, never averaged away
    assert point.log_records_per_s == 800  # median of 400, 1200, 800 per second
    assert point.cpu_s == {"ss": 2.0}
    assert point.cpu_per_request_ms == {"ss": pytest.approx(1.0)}  # 2 s / 2000 requests
    assert point.peak_rss_mib == {"ss": 120}  # the highest peak
    assert len(point.runs) == 3


def test_an_even_number_of_repeats_averages_the_middle_two() -> None:
    point = summarize_point(1, [_sample(100, 1.0), _sample(200, 3.0)])
    assert point.requests_per_s == 150
    assert point.p50_ms == 2.0


def test_a_point_needs_a_repeat() -> None:
    with pytest.raises(ValueError):
        summarize_point(1, [])


def _point(connections: int, rps: float, p50: float, p99: float,
           errors: int = 0) -> PointSummary:
    return PointSummary(connections=connections, repeats=1, requests_per_s=rps, p50_ms=p50,
                        p90_ms=p50, p99_ms=p99, errors=errors, log_records_per_s=0, cpu_s={},
                        cpu_per_request_ms={}, peak_rss_mib={})


def test_ratios_pair_points_of_the_same_concurrency() -> None:
    direct = [_point(1, 10000, 0.1, 0.5), _point(64, 40000, 1.0, 5.0)]
    federated = [_point(1, 500, 1.6, 6.5), _point(16, 900, 9, 20), _point(64, 1200, 50, 90)]
    rs = ratios(direct, federated)
    assert [r.connections for r in rs] == [1, 64]  # 16 has no direct point
    assert rs[0].throughput_ratio == pytest.approx(0.05)
    assert rs[0].added_p50_ms == pytest.approx(1.5)
    assert rs[0].added_p99_ms == pytest.approx(6.0)
    assert rs[1].throughput_ratio == pytest.approx(0.03)


def _targets(**changes: Any) -> dict[str, bool | None]:
    args: dict[str, Any] = {
        "direct": [_point(1, 10000, 0.1, 0.5), _point(64, 3000, 1.0, 5.0)],
        "federated": [_point(1, 800, 1.9, 9.0), _point(64, 1000, 30, 60)],
        "many_connections": _point(1000, 900, 900, 2000),
        "large_body": {"status": 200, "rss_growth_mib": {"a": 10.0, "b": 63.0}},
        "verify_records_per_s": 20000.0,
    }
    args.update(changes)
    return {t.name: t.met for t in check_targets(**args)}


def test_targets_met_exactly_at_their_limits() -> None:
    assert set(_targets().values()) == {True}


def test_each_target_can_fail() -> None:
    failed = _targets(
        direct=[_point(1, 10000, 0.1, 0.5), _point(64, 5000, 1.0, 5.0)],
        federated=[_point(1, 800, 2.2, 11.0), _point(64, 999, 30, 60)],
        many_connections=_point(1000, 900, 900, 2000, errors=1),
        large_body={"status": 200, "rss_growth_mib": {"a": 10.0, "b": 64.0}},
        verify_records_per_s=19999.0,
    )
    assert set(failed.values()) == {False}


def test_errors_at_64_connections_fail_the_throughput_target() -> None:
    met = _targets(federated=[_point(1, 800, 1.9, 9.0), _point(64, 5000, 30, 60, errors=1)])
    assert met["throughput at 64 connections"] is False


def test_a_refused_large_body_fails_its_target() -> None:
    met = _targets(large_body={"status": 413, "rss_growth_mib": {"a": 1.0}})
    assert met["100 MiB body"] is False


def test_unmeasured_targets_are_neither_met_nor_failed() -> None:
    met = _targets(direct=[], federated=[], many_connections=None, large_body=None,
                   verify_records_per_s=None)
    assert set(met.values()) == {None}


def test_summary_lists_every_point_ratio_target_and_skip() -> None:
    direct = [_point(64, 40000, 1.0, 5.0)]
    federated = [replace(_point(64, 1200, 50, 90, errors=2), cpu_s={"consumer-ss": 9.5},
                         cpu_per_request_ms={"consumer-ss": 0.79, "provider-is": 0.001},
                         peak_rss_mib={"consumer-ss": 120.0})]
    results = {
        "date": "2026-01-15", "commit": "abc1234",
        "settings": {"wrk_threads": 1, "duration_s": 10, "warmup_s": 3, "repeats": 3},
        "machine": {"cpus": 2},
        "modes": {"direct": {"points": [asdict(p) for p in direct]},
                  "federated_sqlite": {"points": federated},
                  "federated_postgresql": {"skipped": "PostgreSQL is unreachable"}},
        "ratios": {"federated_sqlite": ratios(direct, federated)},
        "targets": check_targets(direct=direct, federated=federated, many_connections=None,
                                 large_body=None, verify_records_per_s=None),
        "notes": ["a note"],
    }
    text = markdown_summary(results)
    assert "2026-01-15, commit abc1234" in text
    assert "| direct (wrk -> provider) | 64 | 40000 | 1.00 |" in text
    assert "| federated, SQLite logs | 64 | 1200 | 50.00 | 50.00 | 90.00 | 2 |" in text
    assert "| consumer-ss 0.79 | consumer-ss 120 |" in text  # idle processes left out
    assert "skipped: PostgreSQL is unreachable" in text
    assert "| federated, SQLite logs | 64 | 3.0% | 49.00 | 85.00 |" in text
    assert "| throughput at 64 connections | >= 1000 req/s | 1200 req/s | **no** |" in text
    assert "* a note" in text


def test_points_whose_every_answer_came_too_late_show_timeouts() -> None:
    late = _point(1000, 59, 0.0, 0.0, errors=1889)
    results = {"date": "d", "commit": "c", "machine": {"cpus": 2},
               "settings": {"wrk_threads": 1, "duration_s": 30, "warmup_s": 3, "repeats": 1},
               "modes": {"federated_sqlite": {"points": [late]}}}
    assert "| 1000 | 59 | timeout | timeout | timeout | 1889 |" in markdown_summary(results)


def test_profile_summary_ranks_functions_by_self_and_total_share() -> None:
    collapsed = "\n".join([
        "MainThread (1);run (asyncio/base_events.py:600);handle (ss/proxy.py:10);"
        "sign (x/signing.py:5) 6",
        "MainThread (1);run (asyncio/base_events.py:600);handle (ss/proxy.py:12) 2",
        "MainThread (1);run (asyncio/base_events.py:610);select (selectors.py:4) 2",
        "garbage line",
    ])
    summary = summarize_profile(collapsed, top=2)
    assert summary["samples"] == 10
    assert summary["self"] == [{"function": "sign (x/signing.py)", "share": 0.6},
                               {"function": "handle (ss/proxy.py)", "share": 0.2}]
    # lines of one function are merged; the thread and the event loop are left out
    assert summarize_profile(collapsed)["total"] == [
        {"function": "handle (ss/proxy.py)", "share": 0.8},
        {"function": "sign (x/signing.py)", "share": 0.6},
        {"function": "select (selectors.py)", "share": 0.2}]


def test_an_empty_profile_has_no_functions() -> None:
    assert summarize_profile("") == {"samples": 0, "self": [], "total": []}
