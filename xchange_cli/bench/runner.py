"""One benchmark run: federations up, every point measured, results written and printed.

A run measures, with the same wrk settings throughout:

1. **direct**: wrk -> the benchmark provider (:mod:`xchange_cli.bench.provider`);
2. **federated_sqlite**: wrk -> consumer client proxy -> provider server proxy -> provider,
   in the federation :func:`xchange_cli.federation.build_federation` builds (so whatever
   the servers do per message -- signing, verification, certificate checks, durable
   logging -- is measured as deployed), both message logs on SQLite;
3. **federated_postgresql**: the same with both logs on PostgreSQL, each in a fresh schema
   dropped afterwards (skipped, with the reason, when PostgreSQL cannot be reached).

Each (mode, connections) point has a warm-up run, then ``repeats`` measured runs; the
median of each figure is reported.  Then, on the SQLite federation: a point with many
connections held for a long time, one large body, and ``xchange ss verify-log`` over a
large log.  Results go to ``bench/results/<date>-<commit>[-quick].json``; a Markdown
summary is printed.
"""

from __future__ import annotations

import contextlib
import json
import platform
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, cast

import sqlalchemy as sa

from security_server.db import create_db_engine
from xchange_cli.bench import procs
from xchange_cli.bench.adapter import adapter_lookup
from xchange_cli.bench.adapter import summary_line as adapter_summary_line
from xchange_cli.bench.extras import (
    LOG_SIGNING_BATCH,
    large_body,
    signature_batches,
    verify_log_speed,
)
from xchange_cli.bench.stats import (
    PointSummary,
    RepeatSample,
    check_targets,
    markdown_summary,
    ratios,
    server_figures,
    summarize_point,
    summarize_profile,
)
from xchange_cli.bench.wrk import WrkSettings, lua_script, run_wrk
from xchange_cli.federation import (
    Federation,
    ManagedProcess,
    RunningFederation,
    build_federation,
)

__all__ = ["BenchOptions", "run_bench"]

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
PERSON_PATH: Final = "/persons/38001010001"
MODES: Final = ("direct", "federated_sqlite", "federated_postgresql")
EXTRA_MODES: Final = ("adapter_lookup",)
"""Modes measured only when ``--modes`` names them."""
DEFAULT_PG_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
LARGE_BODY_LIMIT: Final = 256 * 1024 * 1024
"""The bench federation's max_body_bytes: above the large body, so that it can pass."""


@dataclass(frozen=True)
class BenchOptions:
    """What one run measures.  :meth:`full` and :meth:`quick` are the two standard runs."""

    quick: bool = False
    modes: tuple[str, ...] = MODES
    connections: tuple[int, ...] = (1, 16, 64, 256)
    duration_s: float = 10.0
    warmup_s: float = 3.0
    repeats: int = 3
    many_connections: int = 1000
    """0: no many-connections point."""
    many_duration_s: float = 30.0
    large_body_mib: int = 100
    """0: no large-body run."""
    verify_records: int = 100_000
    """0: no verify-log run."""
    adapter_rows: int = 1_000_000
    """Rows of the CSV in the ``adapter_lookup`` mode."""
    pg_url: str | None = DEFAULT_PG_URL
    wrk: WrkSettings = field(default_factory=WrkSettings)
    out_dir: Path | None = REPO_ROOT / "bench" / "results"
    """None: write no results file."""
    work_dir: Path | None = None
    """Where federations are built; None: a temporary folder, removed afterwards."""
    profile: bool = False
    """Sample both security servers with py-spy during one federated point."""
    signing_batch_max: int | None = None
    """The servers' ``[keys] signing_batch_max`` (None: their default; 1: no batch
    signing)."""
    event_loop: str | None = None
    """The servers' ``[server] event_loop`` (None: their default, ``auto``)."""

    @classmethod
    def full(cls) -> BenchOptions:
        return cls()

    @classmethod
    def quick_run(cls) -> BenchOptions:
        """Under two minutes: two concurrencies, 3 s each, one repeat, a smaller log."""
        return cls(quick=True, connections=(1, 64), duration_s=3.0, warmup_s=1.0, repeats=1,
                   many_connections=0, verify_records=20_000)


# -- processes and logs --------------------------------------------------------------------


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (loopback http)
        return bool(resp.status == 200)


class BenchFederation(RunningFederation):
    """The demo federation with the benchmark's provider system in place of the demo's."""

    def start_provider(self, *, wait: bool = True) -> ManagedProcess:
        port = self.federation.provider_port
        return self._launch(
            "provider-system",
            [sys.executable, "-m", "xchange_cli.bench.provider", "--port", str(port)],
            lambda: _http_ok(f"http://127.0.0.1:{port}/persons"), wait=wait)

    def pids(self) -> dict[str, int]:
        """Process ids by role: both security servers and the provider system."""
        names = {"ss-insurance": "consumer-ss", "ss-population": "provider-ss",
                 "provider-system": "provider-is"}
        return {names[n]: p.process.pid for n, p in self.processes.items() if n in names}


def _log_counter(url: str) -> tuple[Callable[[], int], Callable[[], None]]:
    """A function counting a message log's records (its highest sequence), and a closer."""
    engine = create_db_engine(url)

    def count() -> int:
        with engine.connect() as connection:
            value = connection.execute(sa.text("SELECT max(sequence) FROM message_log")).scalar()
            return int(value or 0)

    return count, engine.dispose


@contextlib.contextmanager
def _pg_schemas(base: str, count: int) -> Iterator[list[str]]:
    """``count`` database URLs on ``base``, each searching a fresh schema dropped on exit."""
    admin = create_db_engine(base)
    schemas = [f"bench_{secrets.token_hex(6)}" for _ in range(count)]
    try:
        with admin.begin() as connection:
            for schema in schemas:
                connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
        url = sa.make_url(base)
        yield [url.update_query_dict({"options": f"-csearch_path={s}"})
               .render_as_string(hide_password=False) for s in schemas]
    finally:
        with contextlib.suppress(sa.exc.SQLAlchemyError), admin.begin() as connection:
            for schema in schemas:
                connection.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def _pg_unreachable(url: str | None) -> str | None:
    """Why PostgreSQL cannot be used, or None if it can."""
    if not url:
        return "no PostgreSQL URL given"
    try:
        engine = create_db_engine(url)
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
    except (sa.exc.SQLAlchemyError, ValueError) as exc:
        return f"PostgreSQL at {sa.make_url(url).render_as_string()} is unreachable: " + \
            str(exc).splitlines()[0]
    return None


# -- measuring ----------------------------------------------------------------------------


@dataclass
class _Target:
    """Where wrk sends its load, and what to watch meanwhile."""

    base_url: str
    script: str
    pids: Mapping[str, int]
    counters: Sequence[Callable[[], int]] = ()


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def measure_point(wrk: str, target: _Target, connections: int, opts: BenchOptions, *,
                  duration_s: float | None = None, repeats: int | None = None) -> PointSummary:
    """Warm up, then measure ``repeats`` runs of one point; return their medians."""
    duration = duration_s or opts.duration_s
    if opts.warmup_s > 0:
        run_wrk(wrk, target.base_url, target.script, connections=connections,
                duration_s=opts.warmup_s, settings=opts.wrk)
    samples = []
    for _ in range(repeats or opts.repeats):
        before = {}
        for name, pid in target.pids.items():
            procs.reset_peak(pid)
            before[name] = procs.sample(pid)
        rows = sum(c() for c in target.counters)
        machine, children = procs.machine_cpu_s(), procs.children_cpu_s()
        result = run_wrk(wrk, target.base_url, target.script, connections=connections,
                         duration_s=duration, settings=opts.wrk)
        machine, children = procs.machine_cpu_s() - machine, procs.children_cpu_s() - children
        after = {name: procs.sample(pid) for name, pid in target.pids.items()}
        rows = sum(c() for c in target.counters) - rows
        samples.append(RepeatSample(
            wrk=result,
            servers={n: server_figures(before[n], after[n], procs.CLK_TCK) for n in before},
            log_records=rows, wrk_cpu_s=children, machine_cpu_s=machine))
    point = summarize_point(connections, samples)
    _log(f"  {connections:>5} connections: {point.requests_per_s:8.0f} req/s, "
         f"p50 {point.p50_ms:.2f} ms, p99 {point.p99_ms:.2f} ms, {point.errors} errors, "
         f"other processes {point.other_cpu_s:.1f} CPU s")
    return point


def _federated_target(fed: Federation, running: BenchFederation,
                      counters: Sequence[Callable[[], int]]) -> _Target:
    consumer = fed.servers[1]
    path = f"/r1/{fed.services['persons']}{PERSON_PATH}"
    return _Target(consumer.client_proxy_url, lua_script(path, str(fed.allowed_client)),
                   running.pids(), counters)


@contextlib.contextmanager
def _running(root: Path, database_urls: Sequence[str] | None = None, *,
             signing_batch_max: int | None = None, event_loop: str | None = None
             ) -> Iterator[tuple[Federation, BenchFederation, list[Callable[[], int]]]]:
    fed = build_federation(root, database_urls=database_urls, max_body_bytes=LARGE_BODY_LIMIT,
                           signing_batch_max=signing_batch_max, event_loop=event_loop)
    closers: list[Callable[[], None]] = []
    running = BenchFederation(fed)
    with running:
        try:
            counters = []
            for i, server in enumerate(fed.servers):
                url = database_urls[i] if database_urls else f"sqlite:///{server.database}"
                count, close = _log_counter(url)
                counters.append(count)
                closers.append(close)
            yield fed, running, counters
        finally:
            for close in closers:
                close()


def profile_point(wrk: str, target: _Target, opts: BenchOptions,
                  work: Path) -> dict[str, Any]:
    """Sample each security server with py-spy while wrk loads the federation (at 64
    connections, or the nearest measured level below); summarize the hottest functions.
    Only the thread holding the interpreter is sampled (``--gil``): CPU, not waits.
    The raw collapsed stacks stay in ``work`` (kept with ``--work-dir``)."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        return {"skipped": "py-spy is not installed (it is in the dev extras)"}
    connections = max([c for c in opts.connections if c <= 64] or [min(opts.connections)])
    duration = max(3, round(opts.duration_s))
    _log(f"profiling both security servers at {connections} connections for {duration} s")
    spies = {}
    for role in ("consumer-ss", "provider-ss"):
        out = work / f"profile-{role}.txt"
        spies[role] = (out, subprocess.Popen(
            [pyspy, "record", "--pid", str(target.pids[role]), "--duration", str(duration),
             "--rate", "200", "--gil", "--format", "raw", "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    result = run_wrk(wrk, target.base_url, target.script, connections=connections,
                     duration_s=duration, settings=opts.wrk)
    profiles: dict[str, Any] = {"connections": connections, "duration_s": duration,
                                "requests_per_s": result.requests_per_s}
    for role, (out, spy) in spies.items():
        _, err = spy.communicate(timeout=duration + 60)
        if spy.returncode != 0 or not out.exists():
            profiles[role] = {"skipped": f"py-spy failed: {err.strip()[-300:]}"}
        else:
            profiles[role] = summarize_profile(out.read_text(errors="replace"))
    return profiles


# -- the run --------------------------------------------------------------------------------


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=False, timeout=10)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


def _wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).splitlines()[0] if done.stdout + done.stderr else "?"


def run_bench(opts: BenchOptions, wrk: str | None) -> dict[str, Any]:
    """Measure everything ``opts`` asks for; write and return the results document.
    ``wrk`` may be None only when no federation mode is asked for."""
    notes: list[str] = []
    fd_limit = _raise_fd_limit(65536)
    many = opts.many_connections
    if many and fd_limit < 4 * many:
        notes.append(f"{many}-connection point skipped: open-file limit {fd_limit} "
                     f"(needs about {4 * many}; raise `ulimit -n`)")
        many = 0
    modes: dict[str, dict[str, Any]] = {}
    extras: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if opts.work_dir is None:
            work = Path(tempfile.mkdtemp(prefix="xchange-bench-"))
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        else:
            work = opts.work_dir
            work.mkdir(parents=True, exist_ok=True)
        if "adapter_lookup" in opts.modes:
            _log(f"file adapter: key lookups over {opts.adapter_rows} CSV rows")
            extras["adapter_lookup"] = adapter_lookup(work, opts.adapter_rows)
            _log("  " + adapter_summary_line(extras["adapter_lookup"]))
        federation_wanted = bool(set(opts.modes) & set(MODES))
        want_sqlite = federation_wanted and ({"direct", "federated_sqlite"} & set(opts.modes) or (
            many or opts.large_body_mib or opts.verify_records))
        if federation_wanted and wrk is None:
            raise ValueError("wrk is needed for the federation modes")
        if want_sqlite:
            assert wrk is not None
            _log("federation with SQLite message logs: starting")
            with _running(work / "sqlite", signing_batch_max=opts.signing_batch_max,
                          event_loop=opts.event_loop) as (
                    fed, running, counters):
                if "direct" in opts.modes:
                    _log("direct (wrk -> provider system)")
                    target = _Target(f"http://127.0.0.1:{fed.provider_port}",
                                     lua_script(PERSON_PATH, str(fed.allowed_client)),
                                     {"provider-is": running.pids()["provider-is"]})
                    modes["direct"] = {"points": [measure_point(wrk, target, c, opts)
                                                  for c in opts.connections]}
                fed_target = _federated_target(fed, running, counters)
                if "federated_sqlite" in opts.modes:
                    _log("federated, SQLite message logs")
                    points, batches = [], {}
                    for c in opts.connections:
                        after = counters[1]()
                        points.append(measure_point(wrk, fed_target, c, opts))
                        batches[str(c)] = signature_batches(fed.servers[1], after)
                        _log(f"  {c:>5} connections: messages per signature "
                             f"{_batch_line(batches[str(c)])}")
                    modes["federated_sqlite"] = {"points": points,
                                                 "signature_batches": batches}
                if opts.profile:
                    extras["profile"] = profile_point(wrk, fed_target, opts, work)
                if many:
                    _log(f"federated, SQLite message logs, {many} connections "
                         f"for {opts.many_duration_s:g} s")
                    extras["many_connections"] = measure_point(
                        wrk, fed_target, many, opts, duration_s=opts.many_duration_s,
                        repeats=1)
                if opts.large_body_mib:
                    _log(f"a {opts.large_body_mib} MiB body through the federation")
                    extras["large_body"] = large_body(fed, running.pids(),
                                                      size_mib=opts.large_body_mib)
                    extras["large_body"]["max_body_bytes"] = LARGE_BODY_LIMIT
                    _log(f"  HTTP {extras['large_body']['status']} "
                         f"in {extras['large_body']['seconds']:.1f} s")
                if opts.verify_records:
                    _log(f"xchange ss verify-log over {opts.verify_records} records")
                    # Signed as the servers sign: in batches, unless batching is off.
                    batch = min(LOG_SIGNING_BATCH, opts.signing_batch_max or LOG_SIGNING_BATCH)
                    extras["verify_log"] = verify_log_speed(fed, work, opts.verify_records,
                                                            batch)
                    _log(f"  {extras['verify_log']['seconds']:.1f} s")
        if "federated_postgresql" in opts.modes:
            why = _pg_unreachable(opts.pg_url)
            if why is not None:
                modes["federated_postgresql"] = {"skipped": why}
                notes.append(f"federated_postgresql skipped: {why}")
            else:
                assert opts.pg_url is not None and wrk is not None
                _log("federation with PostgreSQL message logs: starting")
                with _pg_schemas(opts.pg_url, 2) as urls, \
                        _running(work / "postgresql", urls,
                                 signing_batch_max=opts.signing_batch_max,
                                 event_loop=opts.event_loop) as (
                            fed, running, counters):
                    target = _federated_target(fed, running, counters)
                    modes["federated_postgresql"] = {"points": [
                        measure_point(wrk, target, c, opts) for c in opts.connections]}
    return _results(opts, wrk, modes, extras, notes)


def _batch_line(figures: dict[str, Any]) -> str:
    return ", ".join(f"{kind}s {f['mean_batch'] or 0:.2f} (largest {f['largest_batch']})"
                     for kind, f in figures.items())


def _results(opts: BenchOptions, wrk: str | None, modes: dict[str, dict[str, Any]],
             extras: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    direct = modes.get("direct", {}).get("points", [])
    rs = {m: ratios(direct, d["points"]) for m, d in modes.items()
          if m != "direct" and "points" in d}
    verify = extras.get("verify_log")
    targets = check_targets(
        direct=direct, federated=modes.get("federated_sqlite", {}).get("points", []),
        many_connections=extras.get("many_connections"), large_body=extras.get("large_body"),
        verify_records_per_s=verify["records_per_s"] if verify else None)
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".",
                      ":(exclude)*.egg-info/*"))
    now = datetime.now(UTC)
    results: dict[str, Any] = {
        "date": now.strftime("%Y-%m-%d"),
        "time": now.isoformat(timespec="seconds"),
        "commit": commit + ("-dirty" if dirty else ""),
        "quick": opts.quick,
        "machine": {"cpus": _cpus(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "wrk": _wrk_version(wrk) if wrk else "not used"},
        "settings": {"connections": list(opts.connections), "duration_s": opts.duration_s,
                     "warmup_s": opts.warmup_s, "repeats": opts.repeats,
                     "wrk_threads": opts.wrk.threads, "wrk_timeout_s": opts.wrk.timeout_s,
                     "many_connections": opts.many_connections,
                     "many_duration_s": opts.many_duration_s,
                     "large_body_mib": opts.large_body_mib,
                     "verify_records": opts.verify_records,
                     "adapter_rows": opts.adapter_rows,
                     "signing_batch_max": opts.signing_batch_max,
                     "event_loop": opts.event_loop or "auto"},
        "modes": modes,
        "ratios": rs,
        **extras,
        "targets": targets,
        "notes": notes,
    }
    return cast(dict[str, Any], _jsonable(results))


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def results_path(results: Mapping[str, Any], out_dir: Path) -> Path:
    suffix = "-quick" if results["quick"] else ""
    return out_dir / f"{results['date']}-{results['commit']}{suffix}.json"


def write_results(results: Mapping[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = results_path(results, out_dir)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return path


def summary(results: Mapping[str, Any]) -> str:
    text = markdown_summary(results)
    extra = []
    if lb := results.get("large_body"):
        extra.append(
            f"Large body: {lb['size_mib']} MiB, HTTP {lb['status']}"
            f"{' ' + lb['error'] if lb.get('error') else ''} in {lb['seconds']:.1f} s; "
            "RSS growth MiB: " + ", ".join(f"{n} {v:.0f}" for n, v in
                                           lb["rss_growth_mib"].items()))
    if al := results.get("adapter_lookup"):
        extra.append(adapter_summary_line(al))
    if vl := results.get("verify_log"):
        rate = f"{vl['records_per_s']:.0f} records/s" if vl["records_per_s"] else "FAILED"
        extra.append(f"verify-log: {vl['records']} records in {vl['seconds']:.1f} s = {rate}")
    text += "\n" + "\n".join(f"* {e}" for e in extra) + "\n" if extra else ""
    if prof := results.get("profile"):
        for role in ("consumer-ss", "provider-ss"):
            p = prof.get(role, {})
            if "self" not in p:
                continue
            text += (f"\nProfile of {role} at {prof['connections']} connections "
                     f"({p['samples']} samples): share of samples, self / with callees\n\n")
            text += "\n".join(f"    {e['share']:6.1%}  {e['function']}" for e in p["self"][:8])
            text += "\n    --\n"
            text += "\n".join(f"    {e['share']:6.1%}  {e['function']}" for e in p["total"][:12])
            text += "\n"
    return text


def with_overrides(opts: BenchOptions, **changes: Any) -> BenchOptions:
    return replace(opts, **{k: v for k, v in changes.items() if v is not None})
