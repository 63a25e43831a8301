"""OCSP for a security server's own certificates: fetched on a schedule, cached, stapled.

Each security server keeps, for its TLS authentication certificate and each member signing
certificate it holds, the latest verified OCSP response from the responder global
configuration lists for the issuing CA.  It refreshes them every ``[ocsp] refresh_seconds``
(default 20 minutes; sooner, every ``retry_seconds``, while a fetch is failing), keeps them in
``state_dir/ocsp/`` so a restart during a responder outage still has them, and staples them
to every message it sends.  A response is stapled only while it is ``good`` and fresh by the
federation's ``ocsp_freshness_seconds``: a server whose own certificate is revoked, or whose
responses have gone stale, stops sending (``cert_validation``) rather than sending messages
its peers must refuse anyway.

A responder outage shorter than the freshness limit therefore goes unnoticed by traffic.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import aiohttp
from cryptography import x509

from xchange.certificates import cert_sha256
from xchange.certstatus import approved_ca_of, ocsp_url_for
from xchange.errors import CertificateValidationError, XRoadError
from xchange.globalconf import GlobalConf
from xchange.ocsp import OcspStatus, ocsp_request, verify_ocsp_response

__all__ = ["HttpOcspFetcher", "OcspFetcher", "OwnCertificate", "OwnCertificates"]

log = logging.getLogger(__name__)

OCSP_DIR = "ocsp"
_MAX_RESPONSE = 64 * 1024


class OcspFetcher(Protocol):
    async def fetch(self, url: str, request: bytes) -> bytes: ...


class HttpOcspFetcher:
    """RFC 6960 Appendix A.1 over HTTP POST."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float = 10.0) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def fetch(self, url: str, request: bytes) -> bytes:
        async with self._session.post(
            url, data=request, timeout=self._timeout,
            headers={"Content-Type": "application/ocsp-request"},
        ) as resp:
            if resp.status != 200:
                raise CertificateValidationError(f"OCSP responder {url} answered HTTP "
                                                 f"{resp.status}")
            data = await resp.content.read(_MAX_RESPONSE + 1)
            if len(data) > _MAX_RESPONSE:
                raise CertificateValidationError(f"OCSP responder {url} sent an over-long reply")
            return data


@dataclass(slots=True)
class OwnCertificate:
    """One of this server's certificates and what is known of its status."""

    label: str
    """``auth`` or the signing member's identifier."""
    certificate: x509.Certificate
    status: OcspStatus | None = None
    last_error: str | None = None
    last_attempt: datetime | None = None

    @property
    def sha256(self) -> str:
        return cert_sha256(self.certificate)


class OwnCertificates:
    """The server's own certificates and their OCSP responses (see the module docstring)."""

    CODE = "server.clientproxy.cert_validation"

    def __init__(self, certs: Sequence[tuple[str, x509.Certificate]], state_dir: Path,
                 fetcher: OcspFetcher, clock: Callable[[], datetime]) -> None:
        self.certs = [OwnCertificate(label, cert) for label, cert in certs]
        self._by_hash = {c.sha256: c for c in self.certs}
        self._dir = state_dir / OCSP_DIR
        self._fetcher = fetcher
        self._clock = clock

    def load_cached(self, conf: GlobalConf) -> None:
        """Take the responses kept by an earlier run, if they still verify."""
        for own in self.certs:
            path = self._dir / f"{own.sha256}.der"
            try:
                der = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cached OCSP response %s not readable: %s", path, exc)
                continue
            try:
                own.status = self._verify(own, der, conf)
            except XRoadError as exc:
                log.info("cached OCSP response for %s not usable: %s", own.label, exc.message)

    def _verify(self, own: OwnCertificate, der: bytes, conf: GlobalConf) -> OcspStatus:
        ca = approved_ca_of(own.certificate, conf.approved_cas, code=self.CODE)
        max_age = timedelta(seconds=conf.settings.ocsp_freshness_seconds)
        return verify_ocsp_response(der, own.certificate, ca.certificate, at=self._clock(),
                                    max_age=max_age, code=self.CODE)

    async def refresh(self, conf: GlobalConf) -> bool:
        """Fetch a new response for every certificate; return whether all succeeded.  A
        failure keeps the previous response (it is stapled while it stays fresh)."""
        results = await asyncio.gather(*(self._refresh_one(own, conf) for own in self.certs))
        return all(results)

    async def _refresh_one(self, own: OwnCertificate, conf: GlobalConf) -> bool:
        own.last_attempt = self._clock()
        try:
            ca = approved_ca_of(own.certificate, conf.approved_cas, code=self.CODE)
            url = ocsp_url_for(own.certificate, ca, code=self.CODE)
            der = await self._fetcher.fetch(url, ocsp_request(own.certificate, ca.certificate))
            status = self._verify(own, der, conf)
        except (XRoadError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            own.last_error = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            log.warning("OCSP refresh for %s failed: %s", own.label, own.last_error)
            return False
        if status.status != "good":
            log.error("OCSP responder says certificate %s is %s", own.label, status.status)
        own.status, own.last_error = status, None
        try:
            self._store(own.sha256, der)
        except OSError as exc:
            log.warning("OCSP response for %s not cached on disk: %s", own.label, exc)
        return True

    def _store(self, name: str, der: bytes) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        tmp = self._dir / f"{name}.der.tmp"
        with open(tmp, "wb") as fh:
            fh.write(der)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._dir / f"{name}.der")

    async def run(self, conf_source: Callable[[], GlobalConf | None], interval: float,
                  retry: float) -> None:
        """Refresh forever: every ``interval`` seconds, every ``retry`` while failing."""
        while True:
            ok = False
            try:
                conf = conf_source()
                if conf is not None:
                    ok = await self.refresh(conf)
            except Exception:  # the loop must outlive any one failure, or traffic stops
                log.exception("OCSP refresh failed unexpectedly")
            await asyncio.sleep(interval if ok else min(retry, interval))

    def current(self, cert: x509.Certificate, *, at: datetime, max_age: timedelta,
                code: str) -> OcspStatus:
        """The latest fresh status of one of our certificates, whatever it says."""
        own = self._by_hash.get(cert_sha256(cert))
        if own is None:  # a programming error: only our own certificates are stapled
            raise KeyError(cert.subject.rfc4514_string())
        if own.status is None:
            why = f": {own.last_error}" if own.last_error else ""
            raise CertificateValidationError(
                f"no OCSP response yet for this server's {own.label} certificate{why}",
                code=code)
        try:
            own.status.check_fresh(at=at, max_age=max_age, code=code)
        except CertificateValidationError as exc:
            why = f" (last fetch: {own.last_error})" if own.last_error else ""
            raise CertificateValidationError(
                f"this server's {own.label} certificate: {exc.message}{why}",
                code=code) from exc
        return own.status

    def staple(self, cert: x509.Certificate, *, at: datetime, max_age: timedelta,
               code: str) -> bytes:
        """The response to staple for one of our certificates: it must be good and fresh."""
        status = self.current(cert, at=at, max_age=max_age, code=code)
        status.require_good(code=code)
        return status.der
