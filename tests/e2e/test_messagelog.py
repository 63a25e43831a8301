"""The message log across real processes: time-stamping by the federation's TSA, a TSA
outage that stops traffic and the backlog stamped after it, and a security server killed
with SIGKILL under load without losing an acknowledged record."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import read_records, wait_for
from xchange_cli.audit import AuditReport, check_log
from xchange_cli.demo import Answer, query
from xchange_cli.federation import Federation, RunningFederation, build_federation

pytestmark = pytest.mark.e2e

PERSON = "/persons/38001010001"
ACCEPTABLE_FAILURE_SECONDS = 3


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFederation]:
    """Stamping every second; refusal after 3 s of failure."""
    fed = build_federation(tmp_path_factory.mktemp("msglog"), timestamping_interval_seconds=1,
                           timestamping_max_failure_seconds=ACCEPTABLE_FAILURE_SECONDS)
    with RunningFederation(fed) as running:
        yield running


def _ask(fed: Federation) -> Answer:
    return query(fed.servers[1].client_proxy_url, str(fed.services["persons"]), PERSON,
                 str(fed.allowed_client))


def _all_stamped(fed: Federation) -> bool:
    return all(check_log(s.config).unstamped == 0 for s in fed.servers)


def _verified(fed: Federation) -> list[AuditReport]:
    results = [check_log(s.config) for s in fed.servers]
    for result in results:
        assert result.ok, result.failures
    return results


def test_records_are_stamped_by_the_federation_tsa(running: RunningFederation) -> None:
    fed = running.federation
    for _ in range(3):
        assert _ask(fed).status == 200
    wait_for(lambda: _all_stamped(fed))
    for result in _verified(fed):
        assert result.chain is not None
        assert result.stamps_verified == result.chain.count >= 6
        assert result.batches_verified >= 1


def test_tsa_outage_stops_traffic_then_the_backlog_is_stamped(
    running: RunningFederation
) -> None:
    fed = running.federation
    assert _ask(fed).status == 200
    running.stop_process("tsa")
    refused = "server.clientproxy.timestamping_failed"

    def refused_now() -> bool:
        answer = _ask(fed)
        return answer.status == 503 and answer.headers.get("X-Road-Error") == refused

    # traffic goes on within the acceptable period (records wait for their stamp) ...
    wait_for(lambda: not _all_stamped(fed), timeout=10)
    # ... and stops once stamping has failed for longer
    wait_for(refused_now, timeout=ACCEPTABLE_FAILURE_SECONDS + 10)
    answer = _ask(fed)
    assert (answer.status, answer.headers.get("X-Road-Error")) == (503, refused)
    assert b"Mari" not in answer.body

    running.start_tsa()
    wait_for(lambda: _ask(fed).status == 200)
    wait_for(lambda: _all_stamped(fed))
    for result in _verified(fed):
        assert result.unstamped == 0 and result.chain is not None
        assert result.stamps_verified == result.chain.count


@pytest.mark.parametrize("victim", [0, 1], ids=["provider", "consumer"])
def test_sigkill_under_load_loses_no_acknowledged_record(
    running: RunningFederation, victim: int
) -> None:
    fed = running.federation
    acknowledged: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                answer = _ask(fed)
            except OSError:  # the consumer's server is down: nothing acknowledged
                time.sleep(0.05)
                continue
            if answer.status == 200:
                acknowledged.append(answer.headers["X-Road-Id"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(acknowledged) >= 20)
        running.kill_process(fed.servers[victim].agency.server_code)
        before_restart = len(acknowledged)
        running.start_server(victim)
        wait_for(lambda: len(acknowledged) >= before_restart + 20)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    for server in fed.servers:
        records = asyncio.run(read_records(server))
        logged = {(r.entry.query_id, r.entry.kind) for r in records if r.entry.status == "ok"}
        missing = [q for q in acknowledged
                   if (q, "request") not in logged or (q, "response") not in logged]
        assert missing == [], f"{server.agency.server_code} lost acknowledged records"
    _verified(fed)  # chains intact (and every signature and stamp that exists verifies)


def test_sync_mode_stamps_each_message_before_it_passes(tmp_path: Path) -> None:
    # a batch interval of an hour: only the per-message stamps can stamp anything
    fed = build_federation(tmp_path / "fed", timestamping="sync",
                           timestamping_interval_seconds=3600)
    with RunningFederation(fed) as running:
        assert _ask(fed).status == 200
        for result in _verified(fed):  # no waiting: stamped before the answer came back
            assert (result.unstamped, result.stamps_verified) == (0, 2)
        running.stop_process("tsa")
        answer = _ask(fed)
        assert (answer.status, answer.headers.get("X-Road-Error")) == (
            503, "server.clientproxy.timestamping_failed")
