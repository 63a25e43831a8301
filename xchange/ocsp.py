"""OCSP (RFC 6960) for a relying party: the request for a certificate, and the verification
of a response about it.

What it does:

* :func:`ocsp_request` builds the DER request for one certificate in the RFC 5019 lightweight
  profile (one CertID with SHA-1 hashes, unsigned, no nonce), so that a response can be cached
  and stapled to many messages;
* :func:`verify_ocsp_response` checks a DER response against the certificate and its issuer at
  a time passed in, and returns what it says as an :class:`OcspStatus`;
* :func:`ocsp_url_of` reads the responder URL out of a certificate's authorityInfoAccess.

What it does not: fetch or cache responses (the security server does, over HTTP), read the
clock, or answer requests (:mod:`certs.ocsp`).  A revoked or unknown status is not a failure of
verification -- the response is authentic and says so -- so :func:`verify_ocsp_response`
returns it and :meth:`OcspStatus.require_good` refuses it.

Every failure raises :class:`~xchange.errors.CertificateValidationError` with the caller's
``code`` (which side found it) and a message saying what failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from xchange.errors import CertificateValidationError

__all__ = [
    "CLOCK_SKEW",
    "OcspCertStatus",
    "OcspStatus",
    "issuer_hashes",
    "ocsp_request",
    "ocsp_url_of",
    "verify_ocsp_response",
]

OcspCertStatus = Literal["good", "revoked", "unknown"]

CLOCK_SKEW = timedelta(seconds=60)
"""How far in the future a response's thisUpdate may be: the responder's clock may run ahead."""

_STATUS: dict[ocsp.OCSPCertStatus, OcspCertStatus] = {
    ocsp.OCSPCertStatus.GOOD: "good",
    ocsp.OCSPCertStatus.REVOKED: "revoked",
    ocsp.OCSPCertStatus.UNKNOWN: "unknown",
}
# SHA-1 is fine inside a CertID (a lookup key, RFC 5019 section 2.1.1) but not for signatures.
_SIGNATURE_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)


def _serial(serial: int) -> str:
    return format(serial, "x")


@dataclass(frozen=True, slots=True)
class OcspStatus:
    """A verified OCSP response about one certificate: what it says, and its bytes (to staple
    or to keep as evidence)."""

    serial: int
    status: OcspCertStatus
    produced_at: datetime
    this_update: datetime
    next_update: datetime | None
    revoked_at: datetime | None
    revocation_reason: str | None
    """The RFC 5280 name of the reason (``keyCompromise``), when the response gives one."""
    der: bytes
    """The whole OCSPResponse as received."""

    def check_fresh(self, *, at: datetime, max_age: timedelta, code: str) -> None:
        """Refuse the response, verified earlier, if at ``at`` it is older than ``max_age``,
        past its nextUpdate, or dated in the future."""
        _check_times(self.this_update, self.next_update, at.astimezone(UTC), max_age,
                     f"certificate with serial {_serial(self.serial)}", code)

    def require_good(self, *, code: str) -> None:
        """Refuse a certificate the response says is revoked or unknown to the responder."""
        if self.status == "revoked":
            when = self.revoked_at.isoformat() if self.revoked_at else "an unknown time"
            reason = f" (reason {self.revocation_reason})" if self.revocation_reason else ""
            raise CertificateValidationError(
                f"certificate with serial {_serial(self.serial)} was revoked at {when}{reason}",
                code=code,
            )
        if self.status != "good":
            raise CertificateValidationError(
                f"the OCSP responder does not know the certificate with serial "
                f"{_serial(self.serial)} (status {self.status})",
                code=code,
            )


def issuer_hashes(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """The issuerNameHash and issuerKeyHash of a CertID (RFC 6960 4.1.1) for ``issuer``.

    The key hash is over the subjectPublicKey bits alone; cryptography computes exactly that
    when it builds a request, which spares parsing the SubjectPublicKeyInfo here.
    """
    request = ocsp.OCSPRequestBuilder().add_certificate(issuer, issuer, algorithm).build()
    return request.issuer_name_hash, request.issuer_key_hash


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """The DER OCSPRequest for ``cert`` (RFC 5019 2.1.1: one SHA-1 CertID, no nonce)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())  # noqa: S303
    return builder.build().public_bytes(serialization.Encoding.DER)


def ocsp_url_of(cert: x509.Certificate) -> str | None:
    """The first http(s) OCSP responder URL of ``cert``'s authorityInfoAccess, if any."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    except (ValueError, x509.DuplicateExtension) as exc:
        raise CertificateValidationError(
            f"certificate with serial {_serial(cert.serial_number)} has malformed extensions: "
            f"{exc}"
        ) from exc
    for access in aia:
        location = access.access_location
        if (
            access.access_method == AuthorityInformationAccessOID.OCSP
            and isinstance(location, x509.UniformResourceIdentifier)
            and location.value.lower().startswith(("http://", "https://"))
        ):
            return location.value
    return None


def verify_ocsp_response(
    der: bytes,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    at: datetime,
    max_age: timedelta,
    code: str,
) -> OcspStatus:
    """Verify an OCSP response about ``cert`` (issued by ``issuer``) at time ``at``.

    Implements the client checks of RFC 6960 section 3.2 and 4.2.2.2, with freshness bounded by
    ``max_age`` (the federation's ``ocsp_freshness_seconds``) rather than by the responder's
    nextUpdate alone.  Returns the status, whatever it is; raises
    :class:`~xchange.errors.CertificateValidationError` with ``code`` when the response cannot
    be trusted.  ``at`` must be timezone-aware.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("verification time must be timezone-aware")
    if max_age <= timedelta(0):
        raise ValueError("max_age must be positive")
    when = at.astimezone(UTC)
    what = f"certificate with serial {_serial(cert.serial_number)}"
    if cert.issuer != issuer.subject:
        raise CertificateValidationError(
            f"{what} is not issued by {issuer.subject.rfc4514_string()!r}", code=code
        )
    # 1. A successful response at all (3.2: "unsuccessful responses are not signed").
    response = _parse(der, what, code)
    # 2. Who signed it: the issuer, or a responder the issuer authorised (4.2.2.2).
    signer = _signer(response, issuer, when, code)
    # 3. The signature over tbsResponseData (3.2 item 2).
    _check_signature(response, signer, code)
    # 4. The single response about this certificate (3.2 item 1).
    single = _single_response(response, cert, issuer, what, code)
    # 5. Freshness (3.2 items 4 and 5, with the federation's own limit).
    this_update = single.this_update_utc
    next_update = single.next_update_utc
    _check_times(this_update, next_update, when, max_age, what, code)
    reason = single.revocation_reason
    return OcspStatus(
        serial=cert.serial_number,
        status=_STATUS[single.certificate_status],
        produced_at=response.produced_at_utc,
        this_update=this_update,
        next_update=next_update,
        revoked_at=single.revocation_time_utc,
        revocation_reason=None if reason is None else reason.value,
        der=der,
    )


def _parse(der: bytes, what: str, code: str) -> ocsp.OCSPResponse:
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise CertificateValidationError(
            f"the OCSP response for {what} is not a DER OCSPResponse: {exc}", code=code
        ) from exc
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise CertificateValidationError(
            f"the OCSP responder did not answer for {what}: response status "
            f"{response.response_status.name.lower()}",
            code=code,
        )
    return response


def _identifies(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    """Whether the response's ResponderID (4.2.1: by name, or by SHA-1 of the key bits) names
    ``cert``."""
    key_hash = response.responder_key_hash
    if key_hash is None:
        return response.responder_name == cert.subject
    try:
        # RFC 5280 4.2.1.2 method 1 is the same SHA-1 over the subjectPublicKey bits.
        return key_hash == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False  # a certificate in the response with a key we cannot read signs nothing


def _signer(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, when: datetime, code: str
) -> x509.Certificate:
    if _identifies(response, issuer):
        return issuer
    responder = next((c for c in response.certificates if _identifies(response, c)), None)
    if responder is None:
        raise CertificateValidationError(
            "the OCSP response is signed neither by the certificate's issuer "
            f"{issuer.subject.rfc4514_string()!r} nor by a responder certificate it includes",
            code=code,
        )
    who = f"OCSP responder certificate {responder.subject.rfc4514_string()!r}"
    # RFC 6960 4.2.2.2: issued directly by the CA of the certificate in question ...
    try:
        responder.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
        raise CertificateValidationError(
            f"{who} is not issued by the certificate's issuer "
            f"{issuer.subject.rfc4514_string()!r}",
            code=code,
        ) from exc
    # ... valid now ...
    if not responder.not_valid_before_utc <= when <= responder.not_valid_after_utc:
        raise CertificateValidationError(
            f"{who} is not valid at {when.isoformat()} (valid "
            f"{responder.not_valid_before_utc.isoformat()} to "
            f"{responder.not_valid_after_utc.isoformat()})",
            code=code,
        )
    # ... and authorised to sign OCSP responses by id-kp-OCSPSigning.
    try:
        eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    except (ValueError, x509.DuplicateExtension) as exc:
        raise CertificateValidationError(f"{who} has malformed extensions", code=code) from exc
    if eku is None or ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        raise CertificateValidationError(
            f"{who} is not authorised to sign OCSP responses "
            "(extended key usage id-kp-OCSPSigning required)",
            code=code,
        )
    return responder


def _check_signature(response: ocsp.OCSPResponse, signer: x509.Certificate, code: str) -> None:
    key = signer.public_key()
    signature, data = response.signature, response.tbs_response_bytes
    try:
        algorithm = response.signature_hash_algorithm
        if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
            return
        if not isinstance(algorithm, _SIGNATURE_HASHES):
            name = "none" if algorithm is None else algorithm.name
            raise CertificateValidationError(
                f"the OCSP response is signed with a weak or unsupported hash ({name}); "
                "SHA-256 or stronger is required",
                code=code,
            )
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        else:
            raise CertificateValidationError(
                f"the OCSP responder's {type(key).__name__} is not supported", code=code
            )
    except InvalidSignature as exc:
        raise CertificateValidationError(
            f"the OCSP response's signature does not verify with the key of "
            f"{signer.subject.rfc4514_string()!r}",
            code=code,
        ) from exc
    except UnsupportedAlgorithm as exc:
        raise CertificateValidationError(
            f"the OCSP response's signature algorithm is not supported: {exc}", code=code
        ) from exc


def _single_response(
    response: ocsp.OCSPResponse,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    what: str,
    code: str,
) -> ocsp.OCSPSingleResponse:
    seen: list[str] = []
    for single in response.responses:
        try:
            expected = issuer_hashes(issuer, single.hash_algorithm)
        except (UnsupportedAlgorithm, ValueError):
            seen.append(f"{_serial(single.serial_number)} (unsupported CertID hash)")
            continue
        if (single.issuer_name_hash, single.issuer_key_hash) != expected:
            seen.append(f"{_serial(single.serial_number)} of another issuer")
        elif single.serial_number != cert.serial_number:
            seen.append(_serial(single.serial_number))
        else:
            return single
    raise CertificateValidationError(
        f"the OCSP response is not about {what}: it answers for serial "
        f"{', '.join(seen) or 'nothing'}",
        code=code,
    )


def _check_times(
    this_update: datetime,
    next_update: datetime | None,
    when: datetime,
    max_age: timedelta,
    what: str,
    code: str,
) -> None:
    if this_update > when + CLOCK_SKEW:
        raise CertificateValidationError(
            f"the OCSP response for {what} is from the future: thisUpdate "
            f"{this_update.isoformat()} is more than {CLOCK_SKEW.total_seconds():g} s after "
            f"{when.isoformat()}",
            code=code,
        )
    age = when - this_update
    if age > max_age:
        raise CertificateValidationError(
            f"the OCSP response for {what} is stale: it is {age.total_seconds():g} s old "
            f"(thisUpdate {this_update.isoformat()}), more than the "
            f"{max_age.total_seconds():g} s allowed",
            code=code,
        )
    if next_update is not None and when > next_update:
        raise CertificateValidationError(
            f"the OCSP response for {what} has expired: its nextUpdate "
            f"{next_update.isoformat()} is before {when.isoformat()}",
            code=code,
        )
