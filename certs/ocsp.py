"""The development CA's OCSP responder (RFC 6960): request bytes in, signed response bytes out.

What it does: answers an OCSPRequest about a certificate of one :class:`~certs.ca.DevCA` --
``good`` for a certificate the CA issued and has not revoked, ``revoked`` with the time and
reason, ``unknown`` for a serial the CA never issued -- signed by the CA itself or by a
delegated responder certificate (RFC 6960 4.2.2.2) that is then included in the response.
The CA's index is read on every request, so a revocation made meanwhile by another process is
answered at once.  CertIDs with SHA-1 or any SHA-2 hash are answered in the same hash; a nonce
(4.4.1) is echoed.

What it does not: HTTP (:mod:`certs.ocsp_server`), read the clock (``now`` is passed in), or
answer for other CAs: a CertID of another issuer gets ``unauthorized`` (RFC 6960 2.3, RFC 5019
2.2.3).  A request holds one CertID, as the RFC 5019 profile asks (cryptography parses no
more); a request with several is answered ``malformedRequest``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs.ca import DevCA
from certs.keys import PrivateKey
from xchange.ocsp import issuer_hashes

__all__ = ["DEFAULT_VALIDITY", "OcspResponder", "OcspSigner"]

log = logging.getLogger(__name__)

DEFAULT_VALIDITY = timedelta(hours=24)
"""nextUpdate - thisUpdate of every response.  Security servers bound freshness by their own
``ocsp_freshness_seconds``, so this only has to be longer than that."""

_CERT_ID_HASHES = (hashes.SHA1, hashes.SHA224, hashes.SHA256, hashes.SHA384, hashes.SHA512)
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True, slots=True)
class OcspSigner:
    """The key and certificate responses are signed with: the CA's, or a delegated responder's."""

    key: PrivateKey
    certificate: x509.Certificate


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    response = ocsp.OCSPResponseBuilder.build_unsuccessful(status)
    return response.public_bytes(serialization.Encoding.DER)


class OcspResponder:
    """Answers OCSP requests about ``ca``'s certificates.

    ``signer`` defaults to the CA itself; a delegated responder must be issued by ``ca`` with
    id-kp-OCSPSigning (:meth:`DevCA.issue_ocsp_responder_cert`).  ``validity`` is the time from
    thisUpdate to nextUpdate.
    """

    def __init__(
        self,
        ca: DevCA,
        *,
        signer: OcspSigner | None = None,
        validity: timedelta = DEFAULT_VALIDITY,
    ) -> None:
        if validity <= timedelta(0):
            raise ValueError("validity must be positive")
        signer = signer or OcspSigner(ca.key, ca.certificate)
        cert = signer.certificate
        if signer.key.public_key().public_bytes(*_SPKI) != cert.public_key().public_bytes(*_SPKI):
            raise ValueError("the OCSP signer's key does not belong to its certificate")
        self._delegated = cert != ca.certificate
        if self._delegated:
            # Refuse here what every verifier would refuse later, response after response.
            try:
                cert.verify_directly_issued_by(ca.certificate)
                eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound) as exc:
                raise ValueError(
                    f"the OCSP signer certificate is not a responder certificate of this CA: "
                    f"{exc}"
                ) from exc
            if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
                raise ValueError("the OCSP signer certificate lacks id-kp-OCSPSigning")
        self._ca = ca
        self._signer = signer
        self._validity = validity

    @property
    def signer(self) -> OcspSigner:
        return self._signer

    def respond(self, request_der: bytes, now: datetime) -> bytes:
        """The DER OCSPResponse to ``request_der`` at time ``now`` (timezone-aware)."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        # X.509 times have whole seconds; drop the rest so thisUpdate is exactly ``now``.
        now = now.astimezone(UTC).replace(microsecond=0)
        try:
            request = ocsp.load_der_ocsp_request(request_der)
            algorithm = request.hash_algorithm
            nonce = _nonce(request)
        except (ValueError, NotImplementedError, UnsupportedAlgorithm, x509.DuplicateExtension):
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        if not isinstance(algorithm, _CERT_ID_HASHES):
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        ours = issuer_hashes(self._ca.certificate, algorithm)
        if (request.issuer_name_hash, request.issuer_key_hash) != ours:
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        signer = self._signer.certificate
        if not signer.not_valid_before_utc <= now <= signer.not_valid_after_utc:
            log.error("the OCSP signer certificate is not valid at %s; answering internalError",
                      now.isoformat())
            return _unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR)

        record = self._ca.status_of(request.serial_number)
        revoked_at: datetime | None = None
        reason: x509.ReasonFlags | None = None
        if record is None:
            status = ocsp.OCSPCertStatus.UNKNOWN
        elif record.revoked_at is None:
            status = ocsp.OCSPCertStatus.GOOD
        else:
            status, revoked_at = ocsp.OCSPCertStatus.REVOKED, record.revoked_at
            # RFC 5280 5.3.1: the reason code should be absent rather than "unspecified".
            if record.reason is not x509.ReasonFlags.unspecified:
                reason = record.reason
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                request.issuer_name_hash,
                request.issuer_key_hash,
                request.serial_number,
                algorithm,
                status,
                now,
                now + self._validity,
                revoked_at,
                reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, signer)
        )
        if self._delegated:
            builder = builder.certificates([signer])
        if nonce is not None:
            builder = builder.add_extension(nonce, critical=False)
        response = builder.sign(self._signer.key, hashes.SHA256())
        return response.public_bytes(serialization.Encoding.DER)


def _nonce(request: ocsp.OCSPRequest) -> x509.OCSPNonce | None:
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value
    except x509.ExtensionNotFound:
        return None
