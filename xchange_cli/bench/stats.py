"""The benchmark's arithmetic: process figures, medians, ratios, targets, the summary table.

Pure functions over numbers and text (``/proc`` files are read by the caller), so every
figure the harness prints can be checked by a unit test.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from xchange_cli.bench.wrk import WrkResult

__all__ = [
    "MODE_TITLES",
    "PointSummary",
    "ProcSample",
    "Ratio",
    "RepeatSample",
    "ServerFigures",
    "TargetCheck",
    "check_targets",
    "markdown_summary",
    "parse_machine_busy",
    "parse_proc_stat",
    "parse_proc_status",
    "ratios",
    "server_figures",
    "summarize_point",
    "summarize_profile",
]

MIB: Final = 1024 * 1024
MODE_TITLES: Final = {
    "direct": "direct (wrk -> provider)",
    "federated_sqlite": "federated, SQLite logs",
    "federated_postgresql": "federated, PostgreSQL logs",
}


# -- /proc --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcSample:
    """What ``/proc/PID/stat`` and ``/proc/PID/status`` say at one moment."""

    cpu_ticks: int
    """utime + stime, in clock ticks."""
    rss_bytes: int
    hwm_bytes: int
    """Peak RSS since the process started or since the peak was last reset."""


def parse_proc_stat(text: str) -> int:
    """utime + stime (clock ticks) from the one line of ``/proc/PID/stat``.

    The command name (field 2) is in parentheses and may hold spaces or parentheses, so
    fields are counted from the last ``)``: utime and stime are fields 14 and 15.
    """
    rest = text[text.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])


def parse_machine_busy(text: str) -> int:
    """Clock ticks all CPUs spent busy, from the ``cpu`` line of ``/proc/stat``: user, nice,
    system, irq, softirq and steal (not idle or iowait; guest time is inside user)."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = (
                int(v) for v in line.split()[1:9])
            return user + nice + system + irq + softirq + steal
    raise ValueError("no cpu line in /proc/stat")


def parse_proc_status(text: str) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes from ``/proc/PID/status``."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            number, unit = value.split()
            if unit != "kB":
                raise ValueError(f"unexpected unit in {line!r}")
            values[name] = int(number) * 1024
    return values["VmRSS"], values["VmHWM"]


@dataclass(frozen=True, slots=True)
class ServerFigures:
    cpu_s: float
    """CPU seconds (user + system) spent during the measured interval."""
    peak_rss_mib: float
    rss_growth_mib: float
    """Peak RSS during the interval minus RSS at its start."""


def server_figures(before: ProcSample, after: ProcSample, clk_tck: int) -> ServerFigures:
    """One process's figures for the interval between two samples; the peak was reset when
    ``before`` was taken, so ``after.hwm_bytes`` is the interval's peak."""
    return ServerFigures(
        cpu_s=(after.cpu_ticks - before.cpu_ticks) / clk_tck,
        peak_rss_mib=after.hwm_bytes / MIB,
        rss_growth_mib=max(0, after.hwm_bytes - before.rss_bytes) / MIB,
    )


# -- points -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RepeatSample:
    """One measured wrk run of a point, with what the processes and logs did meanwhile."""

    wrk: WrkResult
    servers: Mapping[str, ServerFigures]
    log_records: int
    """Records added to all message logs during the run."""
    wrk_cpu_s: float = 0.0
    """CPU seconds of the load generator."""
    machine_cpu_s: float = 0.0
    """CPU seconds all processes of the machine spent during the run."""

    @property
    def other_cpu_s(self) -> float:
        """CPU seconds of everything else on the machine: neither a measured process nor
        the load generator.  Well above zero means the run shared its cores."""
        return max(0.0, self.machine_cpu_s - self.wrk_cpu_s
                   - sum(f.cpu_s for f in self.servers.values()))


@dataclass(frozen=True, slots=True)
class PointSummary:
    """One (mode, connections) point: the median of its repeats."""

    connections: int
    repeats: int
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    """Summed over all repeats: an error is never averaged away."""
    log_records_per_s: float
    cpu_s: dict[str, float]
    """Median CPU seconds per process over one repeat."""
    cpu_per_request_ms: dict[str, float]
    peak_rss_mib: dict[str, float]
    """Highest peak RSS per process over all repeats."""
    wrk_cpu_s: float = 0.0
    other_cpu_s: float = 0.0
    """Median CPU seconds per repeat of the load generator and of everything else."""
    runs: list[dict[str, Any]] = field(default_factory=list)
    """Each repeat's raw figures, for the JSON file."""


def summarize_point(connections: int, samples: Sequence[RepeatSample]) -> PointSummary:
    """Medians of the repeats (each figure on its own), errors summed, RSS peaks maxed."""
    if not samples:
        raise ValueError("a point needs at least one repeat")
    med = statistics.median
    names = sorted({n for s in samples for n in s.servers})
    rps = med(s.wrk.requests_per_s for s in samples)
    cpu = {n: med(s.servers[n].cpu_s for s in samples if n in s.servers) for n in names}
    per_request = {
        n: med(s.servers[n].cpu_s / s.wrk.requests * 1000 for s in samples
               if n in s.servers and s.wrk.requests) if any(s.wrk.requests for s in samples)
        else 0.0
        for n in names
    }
    return PointSummary(
        connections=connections,
        repeats=len(samples),
        requests_per_s=rps,
        p50_ms=med(s.wrk.p50_ms for s in samples),
        p90_ms=med(s.wrk.p90_ms for s in samples),
        p99_ms=med(s.wrk.p99_ms for s in samples),
        errors=sum(s.wrk.errors for s in samples),
        log_records_per_s=med(s.log_records / s.wrk.duration_s for s in samples),
        cpu_s=cpu,
        cpu_per_request_ms=per_request,
        peak_rss_mib={n: max(s.servers[n].peak_rss_mib for s in samples if n in s.servers)
                      for n in names},
        wrk_cpu_s=med(s.wrk_cpu_s for s in samples),
        other_cpu_s=med(s.other_cpu_s for s in samples),
        runs=[{"requests": s.wrk.requests, "duration_s": s.wrk.duration_s,
               "requests_per_s": s.wrk.requests_per_s, "p50_ms": s.wrk.p50_ms,
               "p90_ms": s.wrk.p90_ms, "p99_ms": s.wrk.p99_ms, "p999_ms": s.wrk.p999_ms,
               "max_ms": s.wrk.max_ms, "errors": s.wrk.error_detail,
               "log_records": s.log_records, "wrk_cpu_s": s.wrk_cpu_s,
               "other_cpu_s": s.other_cpu_s,
               "servers": {n: {"cpu_s": f.cpu_s, "peak_rss_mib": f.peak_rss_mib}
                           for n, f in s.servers.items()}}
              for s in samples],
    )


@dataclass(frozen=True, slots=True)
class Ratio:
    """A federated point against the direct point of the same concurrency."""

    connections: int
    throughput_ratio: float
    """federated requests/s divided by direct requests/s."""
    added_p50_ms: float
    added_p99_ms: float


def ratios(direct: Sequence[PointSummary], federated: Sequence[PointSummary]) -> list[Ratio]:
    """One ratio per concurrency measured in both modes, in the federated order."""
    by_connections = {p.connections: p for p in direct}
    out = []
    for f in federated:
        d = by_connections.get(f.connections)
        if d is None or d.requests_per_s <= 0:
            continue
        out.append(Ratio(connections=f.connections,
                         throughput_ratio=f.requests_per_s / d.requests_per_s,
                         added_p50_ms=f.p50_ms - d.p50_ms,
                         added_p99_ms=f.p99_ms - d.p99_ms))
    return out


# -- targets ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TargetCheck:
    name: str
    target: str
    value: str
    met: bool | None
    """None: not measured in this run."""


def _point(points: Sequence[PointSummary], connections: int) -> PointSummary | None:
    return next((p for p in points if p.connections == connections), None)


def _ratio(rs: Sequence[Ratio], connections: int) -> Ratio | None:
    return next((r for r in rs if r.connections == connections), None)


def check_targets(
    *,
    direct: Sequence[PointSummary],
    federated: Sequence[PointSummary],
    many_connections: PointSummary | None,
    large_body: Mapping[str, Any] | None,
    verify_records_per_s: float | None,
) -> list[TargetCheck]:
    """The issue's targets against the federated SQLite figures of one run."""
    rs = ratios(direct, federated)
    checks: list[TargetCheck] = []
    p64, r64, r1 = _point(federated, 64), _ratio(rs, 64), _ratio(rs, 1)
    checks.append(TargetCheck(
        "throughput at 64 connections", ">= 1000 req/s",
        f"{p64.requests_per_s:.0f} req/s" if p64 else "not measured",
        None if p64 is None else p64.requests_per_s >= 1000 and p64.errors == 0))
    checks.append(TargetCheck(
        "throughput at 64 connections / direct", ">= 25 %",
        f"{r64.throughput_ratio:.1%}" if r64 else "not measured",
        None if r64 is None else r64.throughput_ratio >= 0.25))
    checks.append(TargetCheck(
        "added p50 latency at 1 connection", "<= 2 ms",
        f"{r1.added_p50_ms:.2f} ms" if r1 else "not measured",
        None if r1 is None else r1.added_p50_ms <= 2))
    checks.append(TargetCheck(
        "added p99 latency at 1 connection", "<= 10 ms",
        f"{r1.added_p99_ms:.2f} ms" if r1 else "not measured",
        None if r1 is None else r1.added_p99_ms <= 10))
    mc = many_connections
    checks.append(TargetCheck(
        f"{mc.connections if mc else 1000} connections held", "zero errors",
        f"{mc.errors} errors, {mc.requests_per_s:.0f} req/s" if mc else "not measured",
        None if mc is None else mc.errors == 0))
    if large_body is None:
        checks.append(TargetCheck("100 MiB body", "passes; RSS growth < 64 MiB per server",
                                  "not measured", None))
    else:
        growth = large_body.get("rss_growth_mib", {})
        worst = max(growth.values()) if growth else float("nan")
        passed = large_body.get("status") == 200
        checks.append(TargetCheck(
            "100 MiB body", "passes; RSS growth < 64 MiB per server",
            f"HTTP {large_body.get('status')}, worst RSS growth {worst:.0f} MiB",
            passed and bool(growth) and worst < 64))
    checks.append(TargetCheck(
        "verify-log speed", ">= 20000 records/s",
        f"{verify_records_per_s:.0f} records/s" if verify_records_per_s is not None
        else "not measured",
        None if verify_records_per_s is None else verify_records_per_s >= 20000))
    return checks


# -- profiles -----------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


_WRAPPERS: Final = ("(asyncio/", "runpy>)", "(threading.py)", "(futures/thread.py)",
                    "(xchange_cli/__main__.py)", "(xchange_cli/main.py)",
                    "(security_server/app.py)", "Thread (", "MainThread (", "process ")
"""Frames on (nearly) every stack -- the loop, the thread, the entry point -- left out of
the ``total`` ranking, where they would crowd out the functions that do the work."""


def _frame_name(frame: str) -> str:
    """``handle (security_server/x.py:12)`` -> ``handle (x.py)``: one name per function."""
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip()
    file = m["file"].replace("\\", "/")
    return f"{m['func']} ({'/'.join(file.split('/')[-2:])})"


def summarize_profile(collapsed: str, *, top: int = 12) -> dict[str, Any]:
    """Top functions of a sampling profile in collapsed-stack form (``a;b;c 42`` per line,
    root first, as ``py-spy record --format raw`` writes it): share of samples spent in the
    function itself (``self``) and with it anywhere on the stack (``total``)."""
    self_counts: dict[str, int] = {}
    total_counts: dict[str, int] = {}
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        samples += count
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for name in set(frames):
            total_counts[name] = total_counts.get(name, 0) + count

    def ranked(counts: dict[str, int], *, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        kept = [kv for kv in counts.items() if not any(g in kv[0] for g in skip)]
        best = sorted(kept, key=lambda kv: (-kv[1], kv[0]))[:top]
        return [{"function": name, "share": n / samples} for name, n in best]

    if samples == 0:
        return {"samples": 0, "self": [], "total": []}
    return {"samples": samples, "self": ranked(self_counts),
            "total": ranked(total_counts, skip=_WRAPPERS)}


# -- the printed summary ----------------------------------------------------------------------


def _fmt_cpu(point: PointSummary) -> str:
    return ", ".join(f"{n} {v:.2f}" for n, v in point.cpu_per_request_ms.items()
                     if v >= 0.005) or "-"


def _fmt_rss(point: PointSummary) -> str:
    return ", ".join(f"{n} {v:.0f}" for n, v in point.peak_rss_mib.items()) or "-"


def _fmt_latencies(point: PointSummary) -> str:
    if point.p50_ms == 0 and point.errors:
        # wrk records no latency for an answer later than its timeout: all were too late.
        return "timeout | timeout | timeout"
    return f"{point.p50_ms:.2f} | {point.p90_ms:.2f} | {point.p99_ms:.2f}"


def markdown_summary(results: Mapping[str, Any]) -> str:
    """The Markdown tables printed at the end of a run (and pasted into the docs)."""
    out = [f"### xchange benchmark, {results['date']}, commit {results['commit']}", ""]
    s = results["settings"]
    out.append(f"wrk {s['wrk_threads']} thread(s), {s['duration_s']:g} s per run after "
               f"{s['warmup_s']:g} s warm-up, median of {s['repeats']}; "
               f"{results['machine']['cpus']} CPUs.")
    out.append("")
    out.append("| mode | conns | req/s | p50 ms | p90 ms | p99 ms | errors | log rec/s "
               "| CPU ms per request | peak RSS MiB | wrk / other CPU s per run |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
    for mode, data in results["modes"].items():
        if "skipped" in data:
            out.append(f"| {MODE_TITLES.get(mode, mode)} | - | skipped: {data['skipped']} "
                       "| | | | | | | | |")
            continue
        for p in data["points"]:
            point = p if isinstance(p, PointSummary) else PointSummary(**p)
            out.append(
                f"| {MODE_TITLES.get(mode, mode)} | {point.connections} | "
                f"{point.requests_per_s:.0f} | {_fmt_latencies(point)} | "
                f"{point.errors} | {point.log_records_per_s:.0f} | "
                f"{_fmt_cpu(point)} | {_fmt_rss(point)} | "
                f"{point.wrk_cpu_s:.1f} / {point.other_cpu_s:.1f} |")
    out.append("")
    if any(results.get("ratios", {}).values()):
        out.append("| mode | conns | throughput / direct | added p50 ms | added p99 ms |")
        out.append("|---|---:|---:|---:|---:|")
        for mode, rs in results["ratios"].items():
            for r in rs:
                rr = r if isinstance(r, Ratio) else Ratio(**r)
                out.append(f"| {MODE_TITLES.get(mode, mode)} | {rr.connections} | "
                           f"{rr.throughput_ratio:.1%} | {rr.added_p50_ms:.2f} | "
                           f"{rr.added_p99_ms:.2f} |")
        out.append("")
    if results.get("targets"):
        out.append("| target | wanted | measured | met |")
        out.append("|---|---|---|---|")
        for t in results["targets"]:
            tc = t if isinstance(t, TargetCheck) else TargetCheck(**t)
            met = {True: "yes", False: "**no**", None: "-"}[tc.met]
            out.append(f"| {tc.name} | {tc.target} | {tc.value} | {met} |")
        out.append("")
    for note in results.get("notes", []):
        out.append(f"* {note}")
    return "\n".join(out).rstrip() + "\n"
