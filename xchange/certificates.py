"""Certificates of xchange members and security servers: naming, identity, chain checks.

What it does:

* names the subjects of the two xchange certificate kinds (:func:`sign_cert_subject`,
  :func:`auth_cert_subject`) and reads the identity back out of them
  (:func:`member_of_sign_cert`, :func:`server_of_auth_cert`): the subject's ``serialNumber``
  attribute (X.520, RFC 5280 section 4.1.2.6) holds the REST form of the member or security
  server identifier, which is how a signature or a TLS peer is tied to a member;
* verifies a certificate path from a leaf to a trust anchor at a time passed in
  (:func:`verify_chain`, RFC 5280 section 6 through pyca/cryptography's verifier) and checks
  that the leaf fits the purpose it is used for (signing or security-server authentication);
  :class:`VerifiedPathCache` remembers paths that verified, so that the same signer's next
  message costs no path validation;
* converts certificates to and from the forms they travel in: PEM bundles and the base64 DER
  of a JWS ``x5c`` header (RFC 7515 section 4.1.6), and the SHA-256 hash by which global
  configuration registers an authentication certificate.

What it does not: read files or the clock, check revocation (OCSP is the security server's
business), or decide whether a member may use a certificate (global configuration does).
The certificate profile itself is documented in :mod:`certs.ca`, which issues such certificates.

Failures of verification raise :class:`~xchange.errors.InvalidSignatureError`; malformed
encodings raise :class:`~xchange.errors.BadRequestError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import string
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

# The ASN.1 string type of a name attribute can only be chosen through this private enum.
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from xchange.errors import BadRequestError, InvalidSignatureError
from xchange.identifiers import ClientId, SecurityServerId
from xchange.memo import IdentityMemo

__all__ = [
    "EKU_CLIENT_AUTH",
    "EKU_DOCUMENT_SIGNING",
    "EKU_SERVER_AUTH",
    "OID_SERIAL_NUMBER",
    "CertPurpose",
    "VerifiedPathCache",
    "auth_cert_subject",
    "cert_from_b64der",
    "cert_sha256",
    "cert_to_b64der",
    "load_pem_chain",
    "member_of_sign_cert",
    "server_of_auth_cert",
    "sign_cert_subject",
    "verify_chain",
]

OID_SERIAL_NUMBER = NameOID.SERIAL_NUMBER
"""X.520 serialNumber (2.5.4.5): carries the member or security server identifier."""
EKU_DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")
"""id-kp-documentSigning (RFC 9336): the extended key usage of an xchange signing certificate."""
EKU_CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
EKU_SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH

CertPurpose = Literal["sign", "auth"]
"""``sign``: a member's message-signing certificate; ``auth``: a security server's TLS one."""

_PRINTABLE = frozenset(string.ascii_letters + string.digits + " '()+,-./:=?")
_COUNTRY = frozenset(string.ascii_uppercase)

# The web-PKI end-entity defaults, except that a SAN is not required (signing certificates
# name a member, not a host) and the EKU is not checked against a TLS purpose:
# verify_chain checks key usages against our own profile instead.
_RFC4514_NAMES = {OID_SERIAL_NUMBER: "serialNumber"}

_EE_POLICY = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
)

_E = TypeVar("_E", bound=x509.ExtensionType)


# -- subjects and identities ------------------------------------------------------------------


def _attribute(oid: x509.ObjectIdentifier, value: str, what: str) -> x509.NameAttribute[str]:
    try:
        return x509.NameAttribute(oid, value)
    except ValueError as exc:  # cryptography enforces the X.520 length bounds
        raise BadRequestError(f"{what} {value!r} cannot go into a certificate: {exc}") from exc


def _identity_attribute(value: str) -> x509.NameAttribute[str]:
    # X.520 wants a PrintableString, which cannot hold '_' or the '%' of percent-encoding;
    # identifiers that need them go in as UTF8String rather than being refused.
    if set(value) <= _PRINTABLE:
        return x509.NameAttribute(OID_SERIAL_NUMBER, value)
    return x509.NameAttribute(OID_SERIAL_NUMBER, value, _type=_ASN1Type.UTF8String)


def _subject(
    country: str, member_name: str, member: ClientId, common_name: str, identity: str
) -> x509.Name:
    if len(country) != 2 or not set(country) <= _COUNTRY:
        raise BadRequestError(f"country {country!r} is not a two-letter upper-case code")
    if not member_name.strip():
        raise BadRequestError("member name must not be empty")
    return x509.Name(
        [
            _attribute(NameOID.COUNTRY_NAME, country, "country"),
            _attribute(NameOID.ORGANIZATION_NAME, member_name, "member name"),
            _attribute(NameOID.ORGANIZATIONAL_UNIT_NAME, member.member_class, "member class"),
            _attribute(NameOID.COMMON_NAME, common_name, "code"),
            _identity_attribute(identity),
        ]
    )


def sign_cert_subject(member: ClientId, member_name: str, *, country: str = "XX") -> x509.Name:
    """``C, O=<member name>, OU=<class>, CN=<code>, serialNumber=<INSTANCE/CLASS/CODE>``."""
    if member.subsystem is not None:
        raise BadRequestError(f"{member} is a subsystem; signing certificates belong to members")
    return _subject(country, member_name, member, member.member_code, str(member))


def auth_cert_subject(
    server: SecurityServerId, member_name: str, *, country: str = "XX"
) -> x509.Name:
    """``C, O=<owner name>, OU=<class>, CN=<server code>, serialNumber=<INSTANCE/.../SERVER>``."""
    return _subject(country, member_name, server.owner, server.server_code, str(server))


def _identity_text(holder: x509.Certificate | x509.CertificateSigningRequest, kind: str) -> str:
    try:
        values = [a.value for a in holder.subject.get_attributes_for_oid(OID_SERIAL_NUMBER)]
    except ValueError as exc:
        raise InvalidSignatureError(f"{kind} certificate has a malformed subject") from exc
    if len(values) != 1 or not isinstance(values[0], str):
        subject = holder.subject.rfc4514_string(_RFC4514_NAMES)
        raise InvalidSignatureError(
            f"{kind} certificate subject {subject!r} must have exactly one serialNumber "
            "attribute holding an xchange identifier"
        )
    return values[0]


def member_of_sign_cert(cert: x509.Certificate | x509.CertificateSigningRequest) -> ClientId:
    """The member a signing certificate (or a request for one) belongs to."""
    text = _identity_text(cert, "signing")
    try:
        member = ClientId.parse(text)
    except BadRequestError as exc:
        raise InvalidSignatureError(
            f"signing certificate serialNumber {text!r} is not a member identifier: {exc.message}"
        ) from exc
    if member.subsystem is not None:
        raise InvalidSignatureError(
            f"signing certificate serialNumber {text!r} is not a member identifier "
            "(INSTANCE/CLASS/CODE)"
        )
    return member


def server_of_auth_cert(
    cert: x509.Certificate | x509.CertificateSigningRequest,
) -> SecurityServerId:
    """The security server an authentication certificate (or a request for one) belongs to."""
    text = _identity_text(cert, "authentication")
    try:
        return SecurityServerId.parse(text)
    except BadRequestError as exc:
        raise InvalidSignatureError(
            f"authentication certificate serialNumber {text!r} is not a security server "
            f"identifier (INSTANCE/CLASS/CODE/SERVER): {exc.message}"
        ) from exc


# -- verification -----------------------------------------------------------------------------


def _as_utc(at: datetime) -> datetime:
    # The verifier would read a naive time as UTC; a local naive time would silently be wrong.
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("verification time must be timezone-aware")
    return at.astimezone(UTC)


def _describe(cert: x509.Certificate) -> str:
    try:
        return repr(cert.subject.rfc4514_string(_RFC4514_NAMES))
    except ValueError:
        return f"with serial {cert.serial_number:x}"


def _extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except (ValueError, x509.DuplicateExtension) as exc:
        raise InvalidSignatureError(
            f"certificate {_describe(cert)} has malformed extensions: {exc}"
        ) from exc


def _check_validity(cert: x509.Certificate, at: datetime) -> None:
    if at < cert.not_valid_before_utc:
        raise InvalidSignatureError(
            f"certificate {_describe(cert)} is not yet valid at {at.isoformat()} "
            f"(valid from {cert.not_valid_before_utc.isoformat()})"
        )
    if at > cert.not_valid_after_utc:
        raise InvalidSignatureError(
            f"certificate {_describe(cert)} expired at {cert.not_valid_after_utc.isoformat()} "
            f"(checked at {at.isoformat()})"
        )


def _check_purpose(cert: x509.Certificate, purpose: CertPurpose) -> None:
    usage = _extension(cert, x509.KeyUsage)
    eku = _extension(cert, x509.ExtendedKeyUsage)
    who = _describe(cert)
    if purpose == "sign":
        if usage is None or not (usage.digital_signature or usage.content_commitment):
            raise InvalidSignatureError(
                f"certificate {who} has the wrong key usage for signing: "
                "digitalSignature or nonRepudiation required"
            )
        # No EKU is accepted (CAs outside xchange often omit it); a TLS-only EKU is not, so an
        # authentication certificate cannot pass for a signing one.
        if eku is not None and EKU_DOCUMENT_SIGNING not in eku:
            raise InvalidSignatureError(
                f"certificate {who} has the wrong extended key usage for signing: "
                "documentSigning required when an extended key usage is present"
            )
    else:
        if eku is None or EKU_CLIENT_AUTH not in eku:
            raise InvalidSignatureError(
                f"certificate {who} has the wrong key usage for security server "
                "authentication: extended key usage clientAuth required"
            )
        if usage is not None and not usage.digital_signature:
            raise InvalidSignatureError(
                f"certificate {who} has the wrong key usage for security server "
                "authentication: digitalSignature required"
            )


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    *,
    at: datetime,
    purpose: CertPurpose,
) -> list[x509.Certificate]:
    """Verify ``leaf`` up to one of ``anchors`` at time ``at``; return the chain, leaf first.

    Implements RFC 5280 section 6 path validation (pyca/cryptography's verifier with the web-PKI
    CA rules) plus the xchange profile for ``purpose``.  Raises
    :class:`~xchange.errors.InvalidSignatureError` saying what failed; the caller may re-raise
    it with the error code of its own side.  ``at`` must be timezone-aware.
    """
    # 1. The leaf's own validity and purpose first, so the usual failures read plainly.
    when = _as_utc(at)
    _check_validity(leaf, when)
    _check_purpose(leaf, purpose)
    if not anchors:
        raise InvalidSignatureError("no trust anchors to verify the certificate against")
    # 2. Path building, signatures, validity of every CA certificate, CA extensions.
    verifier = (
        PolicyBuilder()
        .store(Store(list(anchors)))
        .time(when)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_EE_POLICY)
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, list(intermediates))
    except VerificationError as exc:
        raise InvalidSignatureError(
            f"certificate {_describe(leaf)} does not chain to a trusted CA at "
            f"{when.isoformat()} (unknown issuer or invalid CA certificate): {exc}"
        ) from exc
    return list(verified.chain)


@dataclass(frozen=True, slots=True)
class _VerifiedPath:
    chain: tuple[x509.Certificate, ...]
    valid_from: datetime
    valid_until: datetime
    certs: tuple[x509.Certificate | None, ...]
    """What was verified: leaf, intermediates, ``None``, anchors (the key's objects)."""


class VerifiedPathCache:
    """:func:`verify_chain` with a memory of the paths that verified.

    Path validation without revocation checking depends on the time only through the
    validity periods of the certificates on the path: a path that verified at one time
    verifies at any other time at which every certificate on it -- leaf, intermediates and
    anchor -- is within its validity period.  So a hit is accepted only for a time inside
    that window (the intersection of the periods, bounds included as in RFC 5280 4.1.2.5),
    and for the very same leaf, intermediates and anchors objects (the message path shares
    parsed certificates) and purpose; anything else is verified in full.  Failures are never
    remembered.  Holds at most ``size`` paths, least recently used dropped first; safe to
    share between threads.
    """

    def __init__(self, size: int = 1024) -> None:
        if size < 1:
            raise ValueError("size must be positive")
        self._size = size
        self._paths: OrderedDict[tuple[tuple[int, ...], str], _VerifiedPath] = OrderedDict()
        self._lock = threading.Lock()

    def verify(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        anchors: Sequence[x509.Certificate],
        *,
        at: datetime,
        purpose: CertPurpose,
    ) -> list[x509.Certificate]:
        """Exactly :func:`verify_chain`, faster for a path seen before."""
        when = _as_utc(at)
        # Keyed by the certificate objects' identities (a certificate hashes and compares
        # its DER, microseconds each); the entry holds the objects, so no id is reused
        # while it lives, and a hit must be the very same objects.
        certs = (leaf, *intermediates, None, *anchors)
        key = (tuple(map(id, certs)), purpose)
        with self._lock:
            hit = self._paths.get(key)
            if hit is not None:
                self._paths.move_to_end(key)
        if (hit is not None and hit.valid_from <= when <= hit.valid_until
                and all(a is b for a, b in zip(hit.certs, certs, strict=True))):
            return list(hit.chain)
        chain = verify_chain(leaf, intermediates, anchors, at=when, purpose=purpose)
        path = _VerifiedPath(tuple(chain), max(c.not_valid_before_utc for c in chain),
                             min(c.not_valid_after_utc for c in chain), certs)
        with self._lock:
            self._paths[key] = path
            self._paths.move_to_end(key)
            while len(self._paths) > self._size:
                self._paths.popitem(last=False)
        return chain

    def __len__(self) -> int:
        return len(self._paths)


# -- encodings --------------------------------------------------------------------------------


def cert_sha256(cert: x509.Certificate) -> str:
    """Lower-case hex SHA-256 of the DER: how global configuration registers an auth
    certificate, and the ``keyid`` of a configuration signer.  Remembered per certificate
    object (the message path asks about the same few objects for every message)."""
    return _CERT_SHA256(cert)


def _sha256_of_der(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


_CERT_SHA256: Final = IdentityMemo(_sha256_of_der)


def load_pem_chain(data: bytes) -> list[x509.Certificate]:
    """All certificates of a PEM bundle, in file order; at least one."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise BadRequestError(f"not a PEM certificate chain: {exc}") from exc
    return certs


def cert_to_b64der(cert: x509.Certificate) -> str:
    """Standard (not URL-safe) base64 of the DER, as a JWS ``x5c`` entry (RFC 7515 4.1.6)."""
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


def cert_from_b64der(text: str) -> x509.Certificate:
    """Inverse of :func:`cert_to_b64der`; refuses anything but strict base64 of one DER cert."""
    try:
        der = base64.b64decode(text, validate=True)
        return x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError) as exc:
        raise BadRequestError(f"x5c entry is not a base64 DER certificate: {exc}") from exc
