"""The server raises its own open-file limit: a thousand clients need a thousand descriptors."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

_PROBE = """
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
from security_server.app import raise_open_file_limit
print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


@pytest.mark.skipif(resource.getrlimit(resource.RLIMIT_NOFILE)[1] <= 256,
                    reason="the hard open-file limit leaves nothing to raise")
def test_soft_open_file_limit_is_raised_to_the_hard_limit() -> None:
    # In a child process: the limit is the process's, and the test run's must not change.
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          check=True, timeout=60)
    returned, now = (int(v) for v in done.stdout.split())
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    expected = 65536 if hard == resource.RLIM_INFINITY else hard
    assert returned == now == expected
