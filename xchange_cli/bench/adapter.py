"""The ``adapter_lookup`` point: key lookups in the file adapter over a large CSV.

:func:`adapter_lookup` writes a CSV of ``rows`` records (cp1252, ``;``-separated, four typed
columns), starts :class:`adapters.files.FileBackend` on it (timing the index build and the
memory the index takes), then times ``lookups`` calls of ``Backend.run`` for random keys
present in the file, and a tenth as many for keys that are not.  The time is the backend's
alone ("adapter time"): no HTTP, no JSON, measured around each ``run`` with
``perf_counter``, in this process.  Both the wall time and the thread's
CPU time of each lookup are reported: on a shared machine the wall time's tail is mostly
other processes holding the CPU.  Not part of the default run (writing and indexing a
million rows takes tens of seconds): ``xchange bench --modes adapter_lookup``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import time
from pathlib import Path
from typing import Any

from adapters.base import Query
from adapters.files import from_config
from xchange_cli.bench import procs
from xchange_cli.bench.stats import MIB

__all__ = ["adapter_lookup", "write_csv"]


def write_csv(path: Path, rows: int) -> None:
    """``rows`` records of ``code;name;born;children`` (cp1252), codes ``%011d``."""
    with path.open("w", encoding="cp1252", newline="") as f:
        f.write("code;name;born;children\r\n")
        for start in range(0, rows, 10_000):
            f.write("".join(
                f"{i:011d};Šimon Ääremaa {i};{1 + i % 28:02d}.{1 + i % 12:02d}.19{i % 100:02d};"
                f"{i % 7}\r\n" for i in range(start, min(rows, start + 10_000))))


def _percentile(sorted_values: list[float], share: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * share))]


async def _measure(path: Path, rows: int, lookups: int, seed: int) -> dict[str, Any]:
    backend = from_config("bench", {
        "path": str(path), "key": "code", "encoding": "cp1252", "csv": {"delimiter": ";"},
        "fields": [{"name": "code"}, {"name": "name"},
                   {"name": "born", "type": "date", "format": "%d.%m.%Y"},
                   {"name": "children", "type": "integer"}]}, path.parent)
    gc.collect()
    before = procs.sample(os.getpid()).rss_bytes
    started = time.perf_counter()
    await backend.start()
    build_s = time.perf_counter() - started
    gc.collect()
    rss_growth = procs.sample(os.getpid()).rss_bytes - before
    try:
        index = backend.index
        assert index is not None
        operation = backend.operations()[0]
        rng = random.Random(seed)  # noqa: S311 (which keys to look up)
        hits: list[float] = []
        misses: list[float] = []
        cpu_hits: list[float] = []
        wrong = 0
        for n in range(lookups + lookups // 10):
            hit = n < lookups
            key = f"{rng.randrange(rows):011d}" if hit else f"x{rng.randrange(rows):010d}"
            query = Query(operation, {"code": key})
            c0, t0 = time.thread_time(), time.perf_counter()
            result = await backend.run(query)
            took, cpu = time.perf_counter() - t0, time.thread_time() - c0
            (hits if hit else misses).append(took)
            if hit:
                cpu_hits.append(cpu)
            found = [r["code"] for r in result.records]
            wrong += found != ([key] if hit else [])
        hits.sort()
        misses.sort()
        cpu_hits.sort()
        return {
            "rows": rows,
            "file_mib": path.stat().st_size / MIB,
            "index_build_s": build_s,
            "index_bytes": index.nbytes,
            "index_bytes_per_row": index.nbytes / rows if rows else 0.0,
            "rss_growth_mib": rss_growth / MIB,
            "lookups": len(hits),
            "median_us": _percentile(hits, 0.5) * 1e6,
            "p99_us": _percentile(hits, 0.99) * 1e6,
            "max_us": hits[-1] * 1e6,
            "cpu_median_us": _percentile(cpu_hits, 0.5) * 1e6,
            "cpu_p99_us": _percentile(cpu_hits, 0.99) * 1e6,
            "miss_median_us": _percentile(misses, 0.5) * 1e6 if misses else None,
            "wrong_answers": wrong,
            "under_1ms_p99": _percentile(hits, 0.99) < 0.001,
            "note": "adapter time: Backend.run alone, in-process, page cache warm; wall "
                    "time (*_us) and this thread's CPU time (cpu_*_us), which leaves out "
                    "the time other processes held the CPU",
        }
    finally:
        await backend.close()


def adapter_lookup(work: Path, rows: int, *, lookups: int = 20_000,
                   seed: int = 9) -> dict[str, Any]:
    """Measure key lookups of the file adapter over a CSV of ``rows`` rows in ``work``."""
    path = work / f"adapter-{rows}.csv"
    started = time.perf_counter()
    write_csv(path, rows)
    write_s = time.perf_counter() - started
    try:
        result = asyncio.run(_measure(path, rows, lookups, seed))
    finally:
        path.unlink(missing_ok=True)
    return {**result, "write_csv_s": write_s}


def summary_line(result: dict[str, Any]) -> str:
    return (f"adapter lookup ({result['rows']} CSV rows, {result['file_mib']:.0f} MiB): "
            f"median {result['median_us']:.0f} us, p99 {result['p99_us']:.0f} us (CPU: "
            f"{result['cpu_median_us']:.0f} / {result['cpu_p99_us']:.0f} us) over "
            f"{result['lookups']} lookups ({result['wrong_answers']} wrong); index "
            f"{result['index_bytes'] / MIB:.1f} MiB ({result['index_bytes_per_row']:.1f} "
            f"B/row) built in {result['index_build_s']:.1f} s")
