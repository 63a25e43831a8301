"""Reading a process's CPU time and memory from ``/proc`` (Linux only).

The parsing is in :mod:`xchange_cli.bench.stats`; this module only reads the files and
resets the peak-RSS counter (``/proc/PID/clear_refs``, value 5, Linux 4.0+) so that each
measured interval gets a peak of its own.  Where the reset is refused, the peak is the
process's lifetime peak, and the run says so.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from xchange_cli.bench.stats import (
    ProcSample,
    parse_machine_busy,
    parse_proc_stat,
    parse_proc_status,
)

__all__ = ["CLK_TCK", "children_cpu_s", "machine_cpu_s", "reset_peak", "sample"]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def sample(pid: int) -> ProcSample:
    proc = Path("/proc") / str(pid)
    ticks = parse_proc_stat((proc / "stat").read_text())
    rss, hwm = parse_proc_status((proc / "status").read_text())
    return ProcSample(cpu_ticks=ticks, rss_bytes=rss, hwm_bytes=hwm)


def reset_peak(pid: int) -> bool:
    """Reset the process's peak RSS to its current RSS; False if the kernel refused."""
    try:
        (Path("/proc") / str(pid) / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot."""
    return parse_machine_busy(Path("/proc/stat").read_text()) / CLK_TCK


def children_cpu_s() -> float:
    """CPU seconds of this process's finished (waited-for) children, such as wrk runs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
