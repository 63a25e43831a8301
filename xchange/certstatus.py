"""Certificate status in messages: which OCSP response proves which certificate (pure).

Every signed message carries, stapled to it, the sender's OCSP responses for its signing
certificate and its TLS authentication certificate (docs/protocol.md, "Certificate status").
The receiver finds among the staples the one for each certificate it must trust, verifies it
(:func:`xchange.ocsp.verify_ocsp_response`: right responder, right certificate, fresh), and
requires ``good``.

Verifying an OCSP response costs a signature check; a sender staples the same response to
every message until its next refresh, so :class:`StapleVerifier` remembers responses it has
verified (by their bytes) and re-checks only their age per message.  The memo
holds verified facts only, never a decision that depends on the time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509 import ocsp

from xchange.certificates import cert_sha256
from xchange.errors import CertificateValidationError
from xchange.globalconf import ApprovedCA
from xchange.memo import IdentityMemo
from xchange.ocsp import OcspStatus, ocsp_url_of, verify_ocsp_response

__all__ = ["StapleVerifier", "approved_ca_of", "ocsp_url_for"]



def approved_ca_of(cert: x509.Certificate, cas: Sequence[ApprovedCA], *,
                   code: str) -> ApprovedCA:
    """The approved CA that issued ``cert`` (name match and signature check)."""
    for ca in cas:
        if _issued_by(cert, ca.certificate):
            return ca
    raise CertificateValidationError(
        f"certificate {cert.subject.rfc4514_string()} (serial {cert.serial_number:x}) was "
        "not issued by an approved CA", code=code)


def _directly_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Does ``issuer``'s name and key match ``cert``'s issuer and signature?  A fact about
    the two certificates alone, so it is remembered per pair of objects: the signature
    check costs as much as a message signature's."""
    if issuer.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


_issued_by: Final = IdentityMemo(_directly_issued_by)


def ocsp_url_for(cert: x509.Certificate, ca: ApprovedCA, *, code: str) -> str:
    """Where to ask about ``cert``: the OCSP responder global configuration lists for its CA
    (authoritative: the federation decides whom to trust), else the certificate's own AIA."""
    url = ca.ocsp_url or ocsp_url_of(cert)
    if url is None:
        raise CertificateValidationError(
            f"approved CA {ca.name!r} lists no OCSP responder and certificate "
            f"{cert.subject.rfc4514_string()} names none", code=code)
    return url


class StapleVerifier:
    """Checks stapled OCSP responses, remembering the ones already verified."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._verified: OrderedDict[tuple[bytes, str], OcspStatus] = OrderedDict()
        """Keyed by the staple's bytes themselves (a few hundred; hashing them for the
        dictionary is cheaper than a SHA-256 first) and the certificate's digest."""
        self._not_for: set[tuple[bytes, str]] = set()
        """(staple, certificate) pairs seen not to match: the staple names another one."""
        self._max = max_entries

    def check(self, staples: Sequence[bytes], cert: x509.Certificate,
              issuer: x509.Certificate, *, at: datetime, max_age: timedelta,
              code: str) -> OcspStatus:
        """The ``good``, fresh status of ``cert`` proven by one of ``staples``; raises
        :class:`CertificateValidationError` if none is for ``cert``, or if it does not verify,
        is stale, or says revoked or unknown."""
        status = self.find(staples, cert, issuer, at=at, max_age=max_age, code=code)
        status.require_good(code=code)
        return status

    def find(self, staples: Sequence[bytes], cert: x509.Certificate,
             issuer: x509.Certificate, *, at: datetime, max_age: timedelta,
             code: str) -> OcspStatus:
        """Like :meth:`check`, but return a verified, fresh status whatever it says (the
        caller may want to remember a ``revoked`` before refusing)."""
        cert_key = cert_sha256(cert)
        for der in staples:
            key = (der, cert_key)
            status = self._verified.get(key)
            if status is None:
                if key in self._not_for:
                    continue
                if not _is_for(der, cert):
                    # A fact about the two alone: the other staple of every message from a
                    # peer is looked at, and would be parsed, for each message.
                    if len(self._not_for) >= self._max:
                        self._not_for.clear()
                    self._not_for.add(key)
                    continue
                status = verify_ocsp_response(der, cert, issuer, at=at, max_age=max_age,
                                              code=code)
                self._remember(key, status)
            else:
                self._verified.move_to_end(key)
                status.check_fresh(at=at, max_age=max_age, code=code)
            return status
        raise CertificateValidationError(
            f"no OCSP response is stapled for certificate {cert.subject.rfc4514_string()} "
            f"(serial {cert.serial_number:x})", code=code)

    def _remember(self, key: tuple[bytes, str], status: OcspStatus) -> None:
        self._verified[key] = status
        while len(self._verified) > self._max:
            self._verified.popitem(last=False)


def _is_for(der: bytes, cert: x509.Certificate) -> bool:
    """A cheap pre-filter: does the response's (first) single response name ``cert``'s serial?
    The full CertID match is :func:`verify_ocsp_response`'s job."""
    try:
        resp = ocsp.load_der_ocsp_response(der)
        return (resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
                and resp.serial_number == cert.serial_number)
    except ValueError:
        return False
