"""The ``xchange`` command line run as a separate process, as an operator runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_xchange(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``xchange ARGS`` with this interpreter; no standard input, output captured, the exit
    status left to the caller to assert."""
    return subprocess.run([sys.executable, "-m", "xchange_cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)
