"""Batch signatures between two running security servers.

Concurrent requests through the consumer's security server wait for its member's key
together and are signed with one signature over a Merkle root; the provider's answers are
batched the same way.  Every record of both logs keeps its message's own signature (batch
form included) and verifies offline with ``xchange audit verify``, and a batched message's
evidence container verifies on its own.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.cli import run_xchange
from tests.e2e.conftest import read_records
from xchange.messagelog import StoredRecord
from xchange_cli.audit import check_log
from xchange_cli.demo import query
from xchange_cli.federation import Federation, RunningFederation, build_federation

pytestmark = pytest.mark.e2e

CONNECTIONS = 48
REQUESTS = 480
"""Ten rounds of CONNECTIONS."""


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = build_federation(tmp_path_factory.mktemp("batch"),
                                  timestamping_interval_seconds=1)
    with RunningFederation(federation):
        yield federation


def _roots(records: list[StoredRecord]) -> Counter[str]:
    """How many records each batch signature's shared JWS covers."""
    return Counter(r.entry.signature.split("~")[0] for r in records
                   if "~" in r.entry.signature)


def test_concurrent_requests_share_signatures_and_every_record_verifies(
        fed: Federation, tmp_path: Path) -> None:
    provider, consumer = fed.servers
    service, client = str(fed.services["persons"]), str(fed.allowed_client)

    # Rounds of CONNECTIONS requests that leave together: whether two of them reach the
    # consumer's server in one turn of its loop must not depend on how the test's threads
    # happen to drift apart.
    together = threading.Barrier(CONNECTIONS)

    def ask(_: int) -> int:
        together.wait(timeout=60)
        return query(consumer.client_proxy_url, service, "/persons/38001010001",
                     client).status

    with ThreadPoolExecutor(CONNECTIONS) as pool:
        statuses = list(pool.map(ask, range(REQUESTS)))
    assert statuses == [200] * REQUESTS

    consumer_records = asyncio.run(read_records(consumer))
    provider_records = asyncio.run(read_records(provider))
    requests = [r for r in consumer_records if r.entry.kind == "request"]
    assert len(requests) == REQUESTS
    roots = _roots(requests)
    assert roots and max(roots.values()) > 1, "no request batch formed under concurrency"
    # The provider received the same signatures, batch form included, and logged them.
    received = {r.entry.query_id: r.entry.signature for r in provider_records
                if r.entry.kind == "request"}
    assert {r.entry.query_id: r.entry.signature for r in requests} == received
    assert all(r.entry.status == "ok" for r in consumer_records + provider_records)

    deadline = time.monotonic() + 60
    while any(check_log(s.config).unstamped for s in fed.servers):
        assert time.monotonic() < deadline, "records were not time-stamped in time"
        time.sleep(0.5)
    for server in fed.servers:
        done = run_xchange("audit", "verify", "--config", server.config)
        assert done.returncode == 0 and "OK: everything verifies" in done.stdout, done.stdout

    # One batched request's evidence, exported and verified with the CA and TSA alone.
    batched = next(r for r in requests if roots.get(r.entry.signature.split("~")[0], 0) > 1)
    export = tmp_path / "batched.asice"
    done = run_xchange("audit", "export", "--config", consumer.config, "--query-id",
                        batched.entry.query_id, "--out", export)
    assert done.returncode == 0, done.stderr
    done = run_xchange("audit", "verify", export, "--ca", fed.ca.cert_path, "--tsa", fed.tsa_cert)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "signatures verified: 2" in done.stdout
