"""A running adapter against the OpenAPI document it generates: generated requests, bounded.

The adapter (``xchange adapter serve``, a real process over a SQLite register) is called with
requests schemathesis derives from the service's own document -- valid and invalid
parameters, odd strings -- and must never answer 5xx, always answer a documented status and
content type, and always return bodies valid against the documented record schema.
"""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis

from adapters.config import parse_config
from adapters.layer import openapi_document
from tests.adapters.sqlkit import BENEFITS, adapter_toml, database
from xchange_cli.federation import ManagedProcess, free_port

_CONFIG = parse_config(adapter_toml("sqlite:///register.db", "sqlite"), Path("/a.toml"), "toml")
_SERVICE = _CONFIG.services[0]
# The slow operation only ever times out (504, documented): it would cost a second a case.
schema = schemathesis.openapi.from_dict(
    openapi_document(_SERVICE, _SERVICE.backend.operations(), _CONFIG.title)
).exclude(path="/slow/{code}")


@pytest.fixture(scope="module")
def adapter_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("adapter-conformance")
    with database("sqlite", root) as url:
        port = free_port()
        config = root / "adapter.toml"
        config.write_text(adapter_toml(url, "sqlite", port=port))
        process = ManagedProcess("adapter", [sys.executable, "-m", "xchange_cli", "adapter",
                                             "serve", str(config)], root)
        try:
            process.wait_until(lambda: _ok(f"http://127.0.0.1:{port}/health"))
            yield f"http://127.0.0.1:{port}/register"
        finally:
            process.stop()


def _ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


@schema.parametrize()
@hypothesis.settings(max_examples=25, deadline=timedelta(seconds=5), derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck),
                     phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
def test_adapter_conforms_to_its_openapi_document(case: schemathesis.Case[Any],
                                                   adapter_url: str) -> None:
    # Excluded: "positive data acceptance" expects every schema-valid request to succeed, but
    # a code that names nobody is a documented 404, and a string with NUL a documented 400.
    case.call_and_validate(base_url=adapter_url, headers={"X-Road-Client": BENEFITS},
                           excluded_checks=[schemathesis.checks.positive_data_acceptance])
