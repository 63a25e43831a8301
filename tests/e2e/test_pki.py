"""Certificate status end to end: a real OCSP responder process, revocation with the CA's
command line, and two real security servers stapling and checking OCSP responses.

Each test builds its own federation (revocation cannot be undone) with OCSP refreshed every
second, so "within one OCSP refresh" is seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.cli import run_xchange
from tests.e2e.conftest import read_records
from xchange_cli.demo import Answer, query
from xchange_cli.federation import Federation, RunningFederation, build_federation

pytestmark = pytest.mark.e2e

PERSON = "/persons/38001010001"
CLIENT_CERT = "server.clientproxy.cert_validation"
SERVER_CERT = "server.serverproxy.cert_validation"


def _ask(fed: Federation) -> Answer:
    return query(fed.servers[1].client_proxy_url, str(fed.services["persons"]), PERSON,
                 str(fed.allowed_client))


def _error(answer: Answer) -> str | None:
    return answer.headers.get("X-Road-Error")


def _wait_for(predicate: Callable[[], bool], timeout: float) -> float:
    """Poll until ``predicate`` holds; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"condition not reached within {timeout} s")


def _revoke(fed: Federation, cert: Path) -> None:
    done = run_xchange("ca", "revoke", str(fed.ca.directory), "--cert", str(cert),
                       "--reason", "keyCompromise",
                       "--passphrase-file", str(fed.key_passphrase_file))
    assert done.returncode == 0, done.stderr


def _log_size(fed: Federation, server: int) -> int:
    return len(asyncio.run(read_records(fed.servers[server])))


@pytest.fixture
def pki_federation(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RunningFederation]:
    settings = getattr(request, "param", {})
    fed = build_federation(tmp_path / "fed", ocsp_refresh_seconds=1, ocsp_retry_seconds=0.5,
                           **settings)
    with RunningFederation(fed) as running:
        yield running


def test_revoked_provider_auth_certificate_is_refused_within_one_refresh(
        pki_federation: RunningFederation) -> None:
    fed = pki_federation.federation
    assert _ask(fed).status == 200
    _revoke(fed, fed.servers[0].directory / "auth.pem")
    # The consumer learns it from the provider's own OCSP response within a refresh or two,
    # and from then on refuses without sending anything.
    _wait_for(lambda: _error(_ask(fed)) == CLIENT_CERT, timeout=10)
    before = _log_size(fed, 0)
    answer = _ask(fed)
    assert (answer.status, _error(answer)) == (502, CLIENT_CERT)
    assert b"revoked" in answer.body and b"keyCompromise" in answer.body
    assert _log_size(fed, 0) == before, "a request reached the revoked provider"
    status = run_xchange("ss", "status", "--config", str(fed.servers[0].config))
    assert status.returncode == 1
    assert "OCSP says revoked" in status.stdout


def test_revoked_member_signing_certificate_stops_its_messages(
        pki_federation: RunningFederation) -> None:
    fed = pki_federation.federation
    assert _ask(fed).status == 200
    _revoke(fed, fed.servers[1].directory / "sign.pem")
    _wait_for(lambda: _error(_ask(fed)) == CLIENT_CERT, timeout=10)
    answer = _ask(fed)
    assert (answer.status, _error(answer)) == (502, CLIENT_CERT)
    assert b"revoked" in answer.body


def test_revoked_provider_signing_certificate_stops_its_answers(
        pki_federation: RunningFederation) -> None:
    fed = pki_federation.federation
    assert _ask(fed).status == 200
    _revoke(fed, fed.servers[0].directory / "sign.pem")
    _wait_for(lambda: _error(_ask(fed)) == SERVER_CERT, timeout=10)


@pytest.mark.parametrize("pki_federation", [{"ocsp_freshness_seconds": 70}], indirect=True)
def test_a_minute_long_responder_outage_is_survived_while_responses_are_fresh(
        pki_federation: RunningFederation) -> None:
    fed = pki_federation.federation
    assert _ask(fed).status == 200
    # Operators see each certificate with its OCSP status and age.
    done = run_xchange("ss", "status", "--config", str(fed.servers[0].config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "auth: " in done.stdout and str(fed.servers[0].agency.member) in done.stdout
    assert done.stdout.count("OCSP: good") == 2
    pki_federation.stop_process("ocsp-responder")
    stopped = time.monotonic()
    # Responses were at most ~1 s old at the stop: a minute of traffic goes on regardless.
    while time.monotonic() - stopped < 60:
        answer = _ask(fed)
        assert answer.status == 200, answer.body
        time.sleep(5)
    # Once they are older than the federation's limit, the servers refuse to send.
    _wait_for(lambda: _error(_ask(fed)) == CLIENT_CERT, timeout=20)
    answer = _ask(fed)
    assert b"stale" in answer.body
    # The responder comes back: the next refresh restores traffic.
    pki_federation.start_ocsp_responder()
    _wait_for(lambda: _ask(fed).status == 200, timeout=10)
