"""``xchange bench``: how fast is a message through the federation, against none?

Starts a federation like the demo's with a minimal provider system, drives it with ``wrk``
directly and through both security servers (message logs on SQLite, then on PostgreSQL),
and reports requests/s, latency percentiles, errors, the security servers' CPU and memory,
message-log records/s and the ratios federated/direct; then a many-connection point, a
large body and ``xchange ss verify-log`` over a large log.  See docs/performance.md.

Modules: :mod:`~xchange_cli.bench.runner` (the run), :mod:`~xchange_cli.bench.wrk` (the load
generator), :mod:`~xchange_cli.bench.stats` (the arithmetic),
:mod:`~xchange_cli.bench.extras` (large body, verify-log), :mod:`~xchange_cli.bench.provider`
(the provider system), :mod:`~xchange_cli.bench.procs` (``/proc``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

__all__ = ["add_bench_command"]

if TYPE_CHECKING:
    from xchange_cli.commands import Command


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("connection counts must be positive")
    return values


def _modes(text: str) -> tuple[str, ...]:
    from xchange_cli.bench.runner import EXTRA_MODES, MODES

    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = set(modes) - set(MODES) - set(EXTRA_MODES)
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"modes are {', '.join(MODES + EXTRA_MODES)}")
    return modes


def _bench(args: argparse.Namespace) -> int:
    from xchange_cli.bench.runner import (
        BenchOptions,
        run_bench,
        summary,
        with_overrides,
        write_results,
    )
    from xchange_cli.bench.wrk import WrkSettings, find_wrk

    wrk = find_wrk()
    if wrk is None and set(args.modes or ()) - {"adapter_lookup"}:
        print("xchange: error: wrk is not installed (Debian: apt-get install wrk; "
              "`make bench` installs it)", file=sys.stderr)
        return 1
    base = BenchOptions.quick_run() if args.quick else BenchOptions.full()
    opts = with_overrides(
        base, modes=args.modes, connections=args.connections, duration_s=args.duration,
        warmup_s=args.warmup, repeats=args.repeats, many_connections=args.many_connections,
        large_body_mib=args.large_body_mib, verify_records=args.verify_records,
        adapter_rows=args.adapter_rows, signing_batch_max=args.signing_batch_max,
        event_loop=args.event_loop,
        work_dir=args.work_dir, profile=args.profile or None,
        wrk=WrkSettings(threads=args.wrk_threads or base.wrk.threads,
                        timeout_s=args.wrk_timeout or base.wrk.timeout_s))
    if args.pg_url is not None:
        opts = with_overrides(opts, pg_url=args.pg_url or "")
    if args.no_write:
        opts = dataclasses.replace(opts, out_dir=None)
    elif args.out is not None:
        opts = with_overrides(opts, out_dir=args.out)
    results = run_bench(opts, wrk)
    print(summary(results))
    if opts.out_dir is not None:
        print(f"results written to {write_results(results, opts.out_dir)}")
    return 0


def add_bench_command(command: Command) -> None:
    """Register ``xchange bench`` with the CLI's ``command(path, func, help)`` helper."""
    p = command(["bench"], "xchange_cli.bench:_bench",
                "measure requests/s and latency through the federation against direct calls")
    p.add_argument("--quick", action="store_true",
                   help="a short run (under two minutes) for quick comparisons")
    p.add_argument("--modes", type=_modes, default=None,
                   help="comma-separated: direct,federated_sqlite,federated_postgresql; "
                        "also adapter_lookup (file adapter key lookups; not in the default "
                        "run)")
    p.add_argument("--connections", type=_ints, default=None,
                   help="comma-separated concurrency levels (default 1,16,64,256)")
    p.add_argument("--duration", type=float, default=None, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=None, help="seconds of warm-up per point")
    p.add_argument("--repeats", type=int, default=None, help="measured runs per point")
    p.add_argument("--many-connections", type=int, default=None,
                   help="connections of the long point (default 1000; 0: none)")
    p.add_argument("--large-body-mib", type=int, default=None,
                   help="size of the large body (default 100; 0: none)")
    p.add_argument("--verify-records", type=int, default=None,
                   help="records in the verify-log run (default 100000; 0: none)")
    p.add_argument("--adapter-rows", type=int, default=None,
                   help="CSV rows of the adapter_lookup mode (default 1000000)")
    p.add_argument("--pg-url", default=None,
                   help="PostgreSQL for the third mode (default "
                        "postgresql://postgres@127.0.0.1:5432/test; empty: skip)")
    p.add_argument("--wrk-threads", type=int, default=None, help="wrk threads (default 1)")
    p.add_argument("--wrk-timeout", type=float, default=None,
                   help="seconds before wrk counts a request as timed out (default 5)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the results file (default bench/results)")
    p.add_argument("--profile", action="store_true",
                   help="also sample both security servers with py-spy at 64 connections")
    p.add_argument("--signing-batch-max", type=int, default=None,
                   help="the servers' [keys] signing_batch_max (1: no batch signing; the "
                        "verify-log log is then signed one message at a time too)")
    p.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"], default=None,
                   help="the servers' [server] event_loop (default: theirs, auto: uvloop "
                        "when installed)")
    p.add_argument("--no-write", action="store_true", help="print the summary only")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="build the federations here and keep them (default: a temp folder)")
