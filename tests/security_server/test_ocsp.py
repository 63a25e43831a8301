"""The security server's own OCSP responses: fetched, verified, cached, stapled; outages and
revocation.  The fetcher seam is served by the real responder in memory."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from certs.ca import DevCA
from certs.ocsp import OcspResponder
from security_server.ocsp import OwnCertificates
from tests.conftest import Clock
from xchange.errors import CertificateValidationError
from xchange.globalconf import ApprovedCA, FederationSettings, GlobalConf
from xchange.identifiers import ClientId

CODE = "server.clientproxy.cert_validation"
URL = "http://ocsp.test/"


class InMemoryFetcher:
    """Answers with the CA's responder at the current test time, or fails while ``down``."""

    def __init__(self, ca: DevCA, clock: Clock) -> None:
        self.responder = OcspResponder(ca)
        self.clock = clock
        self.down = False
        self.urls: list[str] = []

    async def fetch(self, url: str, request: bytes) -> bytes:
        self.urls.append(url)
        if self.down:
            raise OSError("connection refused")
        return self.responder.respond(request, self.clock())


@pytest.fixture
def ca(tmp_path: Path, pki_now: datetime) -> DevCA:
    return DevCA.create(tmp_path / "ca", "TEST", now=pki_now)


@pytest.fixture
def cert(ca: DevCA, tmp_path: Path, pki_now: datetime) -> x509.Certificate:
    return ca.issue_key_and_cert(tmp_path / "m", "sign", ClientId("TEST", "GOV", "1"),
                                 member_name="Member", now=pki_now).certificate


def _conf(ca: DevCA, now: datetime, freshness: int = 600) -> GlobalConf:
    return GlobalConf("TEST", 1, now, now + timedelta(days=1),
                      approved_cas=(ApprovedCA("ca", ca.certificate, URL),),
                      settings=FederationSettings(ocsp_freshness_seconds=freshness))


async def test_fetched_response_is_stapled_while_fresh_and_survives_an_outage(
        ca: DevCA, cert: x509.Certificate, tmp_path: Path, pki_now: datetime) -> None:
    clock = Clock(pki_now)
    fetcher = InMemoryFetcher(ca, clock)
    own = OwnCertificates([("sign", cert)], tmp_path / "state", fetcher, clock)
    conf = _conf(ca, pki_now)
    max_age = timedelta(seconds=600)
    with pytest.raises(CertificateValidationError, match="no OCSP response yet"):
        own.staple(cert, at=clock(), max_age=max_age, code=CODE)
    assert await own.refresh(conf)
    assert fetcher.urls == [URL]
    stapled = own.staple(cert, at=clock(), max_age=max_age, code=CODE)

    fetcher.down = True
    clock.now += timedelta(seconds=300)
    assert not await own.refresh(conf)
    assert own.certs[0].last_error == "connection refused"
    assert own.staple(cert, at=clock(), max_age=max_age, code=CODE) == stapled
    clock.now += timedelta(seconds=301)
    with pytest.raises(CertificateValidationError, match=r"stale.*connection refused") as info:
        own.staple(cert, at=clock(), max_age=max_age, code=CODE)
    assert info.value.code == CODE

    fetcher.down = False
    assert await own.refresh(conf)
    assert own.staple(cert, at=clock(), max_age=max_age, code=CODE) != stapled


async def test_revoked_own_certificate_is_reported_but_never_stapled(
        ca: DevCA, cert: x509.Certificate, tmp_path: Path, pki_now: datetime) -> None:
    clock = Clock(pki_now)
    own = OwnCertificates([("sign", cert)], tmp_path / "state", InMemoryFetcher(ca, clock),
                          clock)
    ca.revoke(cert.serial_number, reason=x509.ReasonFlags.key_compromise, at=pki_now)
    assert await own.refresh(_conf(ca, pki_now))
    max_age = timedelta(minutes=10)
    assert own.current(cert, at=clock(), max_age=max_age, code=CODE).status == "revoked"
    with pytest.raises(CertificateValidationError, match="revoked"):
        own.staple(cert, at=clock(), max_age=max_age, code=CODE)


async def test_cached_responses_are_reused_after_a_restart_if_they_still_verify(
        ca: DevCA, cert: x509.Certificate, tmp_path: Path, pki_now: datetime) -> None:
    clock = Clock(pki_now)
    state = tmp_path / "state"
    first = OwnCertificates([("sign", cert)], state, InMemoryFetcher(ca, clock), clock)
    assert await first.refresh(_conf(ca, pki_now))
    max_age = timedelta(minutes=10)

    again = OwnCertificates([("sign", cert)], state, InMemoryFetcher(ca, clock), clock)
    again.load_cached(_conf(ca, pki_now))
    assert again.staple(cert, at=clock(), max_age=max_age, code=CODE) == \
        first.staple(cert, at=clock(), max_age=max_age, code=CODE)

    # Too old by the time of the restart: not taken.
    clock.now += timedelta(hours=1)
    late = OwnCertificates([("sign", cert)], state, InMemoryFetcher(ca, clock), clock)
    late.load_cached(_conf(ca, pki_now))
    assert late.certs[0].status is None

    # Altered on disk: not taken.
    [cached] = (state / "ocsp").glob("*.der")
    cached.write_bytes(cached.read_bytes()[:-1] + b"\x00")
    clock.now = pki_now
    broken = OwnCertificates([("sign", cert)], state, InMemoryFetcher(ca, clock), clock)
    broken.load_cached(_conf(ca, pki_now))
    assert broken.certs[0].status is None


async def test_a_certificate_of_an_unapproved_ca_gets_no_response(
        ca: DevCA, cert: x509.Certificate, tmp_path: Path, pki_now: datetime) -> None:
    other = DevCA.create(tmp_path / "other", "OTHER", now=pki_now)
    clock = Clock(pki_now)
    fetcher = InMemoryFetcher(ca, clock)
    own = OwnCertificates([("sign", cert)], tmp_path / "state", fetcher, clock)
    assert not await own.refresh(_conf(other, pki_now))
    assert fetcher.urls == []
    assert "not issued by an approved CA" in (own.certs[0].last_error or "")
