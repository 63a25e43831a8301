"""The development CA: issues xchange certificates for test and demo federations.

What it does: keeps one self-signed root per instance in a directory (``ca.key``, mode 0600,
``ca.pem``, and ``index.db``: every certificate issued, revocations, the OCSP URL -- see
:mod:`certs.index`), issues the certificates of the profile below directly or from PKCS#10
requests (RFC 2986), revokes them, and makes keys plus certificates for demos and tests in one
call.  This module reads and writes files; the pure rules for reading these certificates back
are in :mod:`xchange.certificates`.

What it does not: answer OCSP requests (:mod:`certs.ocsp`), CRLs, time-stamping, key escrow, or
anything a production CA needs (HSMs, audit, policies).  Real deployments use a real CA that
issues certificates of the same profile.

Certificate profile of xchange (RFC 5280 terms; all certificates X.509 v3, serial numbers random
159-bit positive integers, signed with SHA-256, validity capped at the CA's own):

* **Instance root CA** -- self-signed; subject ``CN=<instance> Root CA, O=<instance>``;
  basicConstraints cA=TRUE, pathLen 0 (critical); keyUsage keyCertSign, cRLSign (critical);
  subjectKeyIdentifier.
* **Signing certificate** of a member -- subject ``C=<country>, O=<member name>,
  OU=<member class>, CN=<member code>, serialNumber=<INSTANCE/CLASS/CODE>``: the serialNumber
  attribute holds the member's REST-form identifier and ties a signature to the member;
  keyUsage digitalSignature, nonRepudiation (critical); extendedKeyUsage id-kp-documentSigning
  (RFC 9336; verifiers also accept none); basicConstraints cA=FALSE (critical); AKI/SKI.
* **Authentication (TLS) certificate** of a security server -- subject ``C, O=<owner name>,
  OU=<member class>, CN=<server code>, serialNumber=<INSTANCE/CLASS/CODE/SERVERCODE>``;
  keyUsage digitalSignature, keyEncipherment (critical); extendedKeyUsage serverAuth,
  clientAuth (the same certificate serves both ends of mutual TLS); subjectAltName with the
  DNS names and IP addresses given (default ``localhost``, ``127.0.0.1``);
  basicConstraints cA=FALSE (critical); AKI/SKI.
* **Internal TLS certificate** (the IS-facing HTTPS of a security server) -- subject
  ``CN=<name>``; keyUsage digitalSignature, keyEncipherment (critical); extendedKeyUsage
  serverAuth; subjectAltName; basicConstraints cA=FALSE (critical); AKI/SKI.
* **Delegated OCSP responder certificate** -- subject ``CN=<instance> OCSP Responder,
  O=<instance>``; keyUsage digitalSignature (critical); extendedKeyUsage id-kp-OCSPSigning
  (RFC 6960 4.2.2.2); id-pkix-ocsp-nocheck (4.2.2.2.1: a responder's own status is not asked
  for, so its validity is short, 30 days by default); basicConstraints cA=FALSE (critical);
  AKI/SKI.
* Signing and authentication certificates get an authorityInfoAccess extension with the OCSP
  URL (RFC 5280 4.2.2.1) given when issuing, or else the CA's own (:meth:`DevCA.create`
  ``ocsp_url``), for the OCSP responder (RFC 6960).

The serialNumber value is a PrintableString as X.520 asks, or a UTF8String when the identifier
holds characters PrintableString cannot (``_``, ``%``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, overload
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from certs.index import INDEX_FILE, CertificateIndex, IssuedCertificate, Profile
from certs.keys import (
    KeyKind,
    PrivateKey,
    generate_private_key,
    load_certificate,
    load_private_key,
    random_passphrase,
    read_secret_file,
    write_certificate,
    write_private_key,
    write_secret_file,
)
from xchange.certificates import (
    EKU_CLIENT_AUTH,
    EKU_DOCUMENT_SIGNING,
    EKU_SERVER_AUTH,
    auth_cert_subject,
    member_of_sign_cert,
    server_of_auth_cert,
    sign_cert_subject,
)
from xchange.errors import BadRequestError, InvalidSignatureError
from xchange.identifiers import ClientId, SecurityServerId, check_part

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CA_PASSPHRASE_FILE",
    "OCSP_RESPONDER_DAYS",
    "DevCA",
    "IssuedCredentials",
    "PublicKey",
    "make_csr",
]

CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.pem"
OCSP_RESPONDER_DAYS = 30
"""Default validity of a delegated OCSP responder certificate: nobody asks for its status."""
_OCSP_URL_SETTING = "ocsp_url"
CA_PASSPHRASE_FILE = "ca.passphrase"  # noqa: S105 (a file name)

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_Extensions = list[tuple[x509.ExtensionType, bool]]  # (extension, critical)


def _key_usage(
    *, cert_sign: bool = False, non_repudiation: bool = False, key_encipherment: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=non_repudiation,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _alt_names(
    dns_names: Sequence[str], ip_addresses: Sequence[str]
) -> x509.SubjectAlternativeName:
    # A bare string is a Sequence[str] too and would become one name per character.
    if isinstance(dns_names, str) or isinstance(ip_addresses, str):
        raise TypeError("dns_names and ip_addresses must be sequences of strings")
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    for text in ip_addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError as exc:
            raise BadRequestError(f"{text!r} is not an IP address") from exc
    if not names:
        raise BadRequestError("a TLS certificate needs at least one DNS name or IP address")
    return x509.SubjectAlternativeName(names)


def _sign_extensions() -> _Extensions:
    return [
        (_key_usage(non_repudiation=True), True),
        (x509.ExtendedKeyUsage([EKU_DOCUMENT_SIGNING]), False),
    ]


def _auth_extensions(dns_names: Sequence[str], ip_addresses: Sequence[str]) -> _Extensions:
    return [
        (_key_usage(key_encipherment=True), True),
        (x509.ExtendedKeyUsage([EKU_SERVER_AUTH, EKU_CLIENT_AUTH]), False),
        (_alt_names(dns_names, ip_addresses), False),
    ]


def _tls_extensions(dns_names: Sequence[str], ip_addresses: Sequence[str]) -> _Extensions:
    return [
        (_key_usage(key_encipherment=True), True),
        (x509.ExtendedKeyUsage([EKU_SERVER_AUTH]), False),
        (_alt_names(dns_names, ip_addresses), False),
    ]


def _check_ocsp_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # RFC 6960 Appendix A: OCSP over HTTP; anything else no verifier here can reach.
        raise ValueError(f"OCSP URL {url!r} is not an http(s) URL with a host")
    return url


def _start(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    # X.509 times have whole seconds; truncating here keeps not_valid_before == now exactly.
    return now.astimezone(UTC).replace(microsecond=0)


def _public_key_of(key: object, what: str) -> PublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise BadRequestError(f"{what} has a {type(key).__name__}; only EC and RSA are supported")
    return key


def make_csr(key: PrivateKey, subject: x509.Name) -> bytes:
    """A PEM PKCS#10 request for ``subject``, signed by ``key`` (RFC 2986).

    Build the subject with :func:`xchange.certificates.sign_cert_subject` or
    :func:`~xchange.certificates.auth_cert_subject`.
    """
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True, slots=True)
class IssuedCredentials:
    """A fresh private key and its certificate, and the files they were written to."""

    key: PrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    """Leaf first, then the CA: what ``cert_path`` holds and what TLS presents."""
    key_path: Path
    cert_path: Path
    key_passphrase: bytes = field(repr=False)
    """What ``key_path`` is encrypted under: the CA's :attr:`DevCA.key_passphrase`."""


class DevCA:
    """One instance's development root CA, kept in a directory.

    Build with :meth:`create` or :meth:`load`.  Every ``issue_*`` method takes the issuing
    time ``now`` (timezone-aware) instead of reading the clock.  ``ca.key`` and every key
    that :meth:`issue_key_and_cert` writes are encrypted under :attr:`key_passphrase`.
    """

    def __init__(self, directory: Path, key: PrivateKey, certificate: x509.Certificate,
                 key_passphrase: bytes | None = None) -> None:
        self._directory = directory
        self._key = key
        self._certificate = certificate
        self._index = CertificateIndex(directory / INDEX_FILE)
        # A CA built in memory (tests) still writes encrypted keys, under a fresh passphrase.
        self._passphrase = key_passphrase or random_passphrase()

    @classmethod
    def create(
        cls,
        directory: Path,
        instance: str,
        *,
        now: datetime,
        validity_days: int = 3650,
        key_kind: KeyKind = "ec",
        ocsp_url: str | None = None,
        key_passphrase: bytes | None = None,
    ) -> DevCA:
        """Make a new root key and self-signed certificate in ``directory``.

        ``ocsp_url`` is the CA's OCSP responder: signing and authentication certificates carry
        it in their authorityInfoAccess.  Keys are encrypted under ``key_passphrase``.  Without
        one, a random passphrase is made and kept in ``ca.passphrase`` (mode 0600) beside the
        key, where :meth:`load` finds it: a throwaway CA keeps its own secret, in the same key
        format as a real deployment.
        Refuses to overwrite an existing CA (``FileExistsError``).
        """
        check_part(instance, "instance")
        if ocsp_url is not None:
            _check_ocsp_url(ocsp_url)
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
        for path in (key_path, cert_path, directory / INDEX_FILE):
            if path.exists():
                raise FileExistsError(f"{path} exists; refusing to replace a CA")
        if validity_days <= 0:
            raise ValueError("validity_days must be positive")
        start = _start(now)
        key = generate_private_key(key_kind)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, f"{instance} Root CA"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, instance),
            ]
        )
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=validity_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        if key_passphrase is None:
            key_passphrase = random_passphrase()
            write_secret_file(directory / CA_PASSPHRASE_FILE, key_passphrase + b"\n")
        write_private_key(key_path, key, key_passphrase)
        write_certificate(cert_path, certificate)
        ca = cls(directory, key, certificate, key_passphrase)
        ca._index.set_setting(_OCSP_URL_SETTING, ocsp_url)
        return ca

    @classmethod
    def load(cls, directory: Path, key_passphrase: bytes | None = None) -> DevCA:
        """Load a CA made by :meth:`create`; refuses a key that does not match the certificate.

        Without ``key_passphrase``, the one in ``ca.passphrase`` is used."""
        if key_passphrase is None:
            key_passphrase = read_secret_file(directory / CA_PASSPHRASE_FILE)
        key = load_private_key(directory / CA_KEY_FILE, key_passphrase)
        certificate = load_certificate(directory / CA_CERT_FILE)
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if key.public_key().public_bytes(der, spki) != certificate.public_key().public_bytes(
            der, spki
        ):
            raise ValueError(f"{directory}: {CA_KEY_FILE} does not belong to {CA_CERT_FILE}")
        return cls(directory, key, certificate, key_passphrase)

    @property
    def certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def key(self) -> PrivateKey:
        """The CA's private key: for an OCSP responder that signs as the CA itself."""
        return self._key

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def ocsp_url(self) -> str | None:
        """The CA's OCSP responder URL, written into signing and authentication certificates."""
        return self._index.setting(_OCSP_URL_SETTING)

    @property
    def key_passphrase(self) -> bytes:
        """The passphrase of ``ca.key`` and of the keys :meth:`issue_key_and_cert` writes."""
        return self._passphrase

    @property
    def cert_path(self) -> Path:
        """The CA certificate's PEM file: the trust anchor to give to verifiers."""
        return self._directory / CA_CERT_FILE

    # -- issuing ---------------------------------------------------------------------------

    def _issue(
        self,
        profile: Profile,
        subject: x509.Name,
        public_key: PublicKey,
        extensions: _Extensions,
        *,
        now: datetime,
        days: int,
        ocsp_url: str | None = None,
    ) -> x509.Certificate:
        if days <= 0:
            raise ValueError("days must be positive")
        start = _start(now)
        # A leaf outliving its CA would only fail later and less clearly.
        end = min(start + timedelta(days=days), self._certificate.not_valid_after_utc)
        ca_ski = self._certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
                critical=False,
            )
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        if ocsp_url is not None:
            ocsp = x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
            )
            builder = builder.add_extension(x509.AuthorityInformationAccess([ocsp]), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        # Recorded before anyone sees it: the responder answers "good" only for what is here.
        self._index.record(cert, profile)
        return cert

    def _aia_url(self, ocsp_url: str | None) -> str | None:
        return self.ocsp_url if ocsp_url is None else _check_ocsp_url(ocsp_url)

    def issue_sign_cert(
        self,
        member: ClientId,
        member_name: str,
        public_key: PublicKey,
        *,
        now: datetime,
        days: int = 730,
        country: str = "XX",
        ocsp_url: str | None = None,
    ) -> x509.Certificate:
        """A member's signing certificate (see the profile above).  ``ocsp_url`` defaults to
        the CA's own."""
        subject = sign_cert_subject(member, member_name, country=country)
        return self._issue(
            "sign", subject, public_key, _sign_extensions(), now=now, days=days,
            ocsp_url=self._aia_url(ocsp_url),
        )

    def issue_auth_cert(
        self,
        server: SecurityServerId,
        member_name: str,
        public_key: PublicKey,
        *,
        now: datetime,
        days: int = 730,
        dns_names: Sequence[str] = ("localhost",),
        ip_addresses: Sequence[str] = ("127.0.0.1",),
        country: str = "XX",
        ocsp_url: str | None = None,
    ) -> x509.Certificate:
        """A security server's authentication (mutual TLS) certificate.  ``ocsp_url``
        defaults to the CA's own."""
        subject = auth_cert_subject(server, member_name, country=country)
        extensions = _auth_extensions(dns_names, ip_addresses)
        return self._issue(
            "auth", subject, public_key, extensions, now=now, days=days,
            ocsp_url=self._aia_url(ocsp_url),
        )

    def issue_tls_cert(
        self,
        common_name: str,
        public_key: PublicKey,
        *,
        now: datetime,
        days: int = 730,
        dns_names: Sequence[str] = ("localhost",),
        ip_addresses: Sequence[str] = ("127.0.0.1",),
    ) -> x509.Certificate:
        """An internal TLS server certificate (the IS-facing HTTPS of a security server)."""
        try:
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        except ValueError as exc:
            raise BadRequestError(f"common name {common_name!r}: {exc}") from exc
        extensions = _tls_extensions(dns_names, ip_addresses)
        return self._issue("tls", subject, public_key, extensions, now=now, days=days)

    def issue_ocsp_responder_cert(
        self,
        public_key: PublicKey,
        *,
        now: datetime,
        days: int = OCSP_RESPONDER_DAYS,
    ) -> x509.Certificate:
        """A delegated OCSP responder certificate (RFC 6960 4.2.2.2; profile above).

        Its holder signs OCSP responses for this CA's certificates; verifiers accept it
        because this CA issued it with id-kp-OCSPSigning.
        """
        instance = self._certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        org = str(instance[0].value) if instance else "xchange"
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, f"{org} OCSP Responder"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            ]
        )
        extensions: _Extensions = [
            (_key_usage(), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), False),
            (x509.OCSPNoCheck(), False),
        ]
        return self._issue("ocsp", subject, public_key, extensions, now=now, days=days)

    def issue_tsa_cert(
        self,
        name: str,
        *,
        key: PrivateKey | None = None,
        now: datetime,
        days: int = 730,
        key_kind: KeyKind = "ec",
    ) -> tuple[PrivateKey, x509.Certificate]:
        """A time-stamping authority's key and certificate (RFC 3161 section 2.3).

        Subject ``CN=<name>``; extendedKeyUsage id-kp-timeStamping only, critical, as RFC 3161
        requires; keyUsage digitalSignature, nonRepudiation (critical); basicConstraints
        cA=FALSE (critical); AKI/SKI.  A new key of ``key_kind`` is made unless ``key`` is
        given.  Nothing is written: the caller stores the key (``certs.keys``).
        """
        try:
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        except ValueError as exc:
            raise BadRequestError(f"TSA name {name!r}: {exc}") from exc
        key = key if key is not None else generate_private_key(key_kind)
        extensions: _Extensions = [
            (_key_usage(non_repudiation=True), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), True),
        ]
        public_key = _public_key_of(key.public_key(), "the TSA key")
        return key, self._issue("tsa", subject, public_key, extensions, now=now, days=days)

    def issue_from_csr(
        self,
        csr_pem: bytes,
        profile: Literal["sign", "auth"],
        *,
        now: datetime,
        days: int = 730,
        dns_names: Sequence[str] = ("localhost",),
        ip_addresses: Sequence[str] = ("127.0.0.1",),
        ocsp_url: str | None = None,
    ) -> x509.Certificate:
        """Issue a ``profile`` certificate for a PKCS#10 request (RFC 2986).

        The subject is taken from the request and must name a member (``sign``) or a security
        server (``auth``) in its serialNumber; the extensions are the profile's, never the
        request's.  ``dns_names`` and ``ip_addresses`` apply to ``auth`` only.  A request that
        is malformed, not signed by its own key, or names the wrong kind of holder raises
        :class:`~xchange.errors.BadRequestError`.
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise BadRequestError(f"not a PEM certificate signing request: {exc}") from exc
        # Proof of possession: only the holder of the private key can have signed the request.
        if not csr.is_signature_valid:
            raise BadRequestError("the certificate signing request's signature does not verify")
        public_key = _public_key_of(csr.public_key(), "the certificate signing request")
        try:
            if profile == "sign":
                member_of_sign_cert(csr)
                extensions = _sign_extensions()
            else:
                server_of_auth_cert(csr)
                extensions = _auth_extensions(dns_names, ip_addresses)
        except InvalidSignatureError as exc:
            raise BadRequestError(f"the request does not fit the {profile} profile: {exc}") from exc
        return self._issue(
            profile, csr.subject, public_key, extensions, now=now, days=days,
            ocsp_url=self._aia_url(ocsp_url),
        )

    # -- revocation ------------------------------------------------------------------------

    def revoke(
        self,
        serial: int,
        *,
        reason: x509.ReasonFlags = x509.ReasonFlags.unspecified,
        at: datetime,
    ) -> None:
        """Revoke the certificate with ``serial`` as of ``at``, for ``reason``.

        Takes effect at once for the OCSP responder, in this process or another.  Raises
        ``ValueError`` for a serial this CA did not issue, one already revoked, or
        ``removeFromCRL`` (not a reason to revoke).
        """
        self._index.revoke(serial, reason=reason, at=at)

    def status_of(self, serial: int) -> IssuedCertificate | None:
        """What this CA knows of ``serial``: the issued certificate and its revocation, or
        ``None`` when it never issued that serial."""
        return self._index.get(serial)

    def issued(self) -> list[IssuedCertificate]:
        """Every certificate this CA issued, oldest first."""
        return self._index.all()

    # -- key and certificate in one go (demos and tests) --------------------------------------

    @overload
    def issue_key_and_cert(
        self,
        directory: Path,
        profile: Literal["sign"],
        holder: ClientId,
        *,
        member_name: str,
        now: datetime,
        days: int = ...,
        key_kind: KeyKind = ...,
        stem: str | None = ...,
    ) -> IssuedCredentials: ...

    @overload
    def issue_key_and_cert(
        self,
        directory: Path,
        profile: Literal["auth"],
        holder: SecurityServerId,
        *,
        member_name: str,
        now: datetime,
        days: int = ...,
        key_kind: KeyKind = ...,
        stem: str | None = ...,
        dns_names: Sequence[str] = ...,
        ip_addresses: Sequence[str] = ...,
    ) -> IssuedCredentials: ...

    @overload
    def issue_key_and_cert(
        self,
        directory: Path,
        profile: Literal["tls"],
        holder: str,
        *,
        now: datetime,
        days: int = ...,
        key_kind: KeyKind = ...,
        stem: str | None = ...,
        dns_names: Sequence[str] = ...,
        ip_addresses: Sequence[str] = ...,
    ) -> IssuedCredentials: ...

    def issue_key_and_cert(
        self,
        directory: Path,
        profile: Literal["sign", "auth", "tls"],
        holder: ClientId | SecurityServerId | str,
        *,
        member_name: str | None = None,
        now: datetime,
        days: int = 730,
        key_kind: KeyKind = "ec",
        stem: str | None = None,
        dns_names: Sequence[str] = ("localhost",),
        ip_addresses: Sequence[str] = ("127.0.0.1",),
    ) -> IssuedCredentials:
        """Generate a key, issue its ``profile`` certificate, write both into ``directory``.

        ``holder`` is the member (``sign``), the security server (``auth``) or the common name
        (``tls``).  Files are ``<stem>.key`` (0600, encrypted under :attr:`key_passphrase`)
        and ``<stem>.pem`` (leaf, then the CA);
        ``stem`` defaults to the profile name.  Existing files are not replaced
        (``FileExistsError``).
        """
        name = stem or profile
        key_path, cert_path = directory / f"{name}.key", directory / f"{name}.pem"
        for path in (key_path, cert_path):
            if path.exists():
                raise FileExistsError(f"{path} exists; refusing to replace it")
        key = generate_private_key(key_kind)
        public_key = key.public_key()
        if profile == "sign" and isinstance(holder, ClientId) and member_name is not None:
            cert = self.issue_sign_cert(holder, member_name, public_key, now=now, days=days)
        elif profile == "auth" and isinstance(holder, SecurityServerId) and member_name is not None:
            cert = self.issue_auth_cert(
                holder,
                member_name,
                public_key,
                now=now,
                days=days,
                dns_names=dns_names,
                ip_addresses=ip_addresses,
            )
        elif profile == "tls" and isinstance(holder, str):
            cert = self.issue_tls_cert(
                holder,
                public_key,
                now=now,
                days=days,
                dns_names=dns_names,
                ip_addresses=ip_addresses,
            )
        else:
            raise TypeError(f"holder {holder!r} and member_name do not fit profile {profile!r}")
        write_private_key(key_path, key, self._passphrase)
        chain = (cert, self._certificate)
        write_certificate(cert_path, *chain)
        return IssuedCredentials(key, cert, chain, key_path, cert_path, self._passphrase)
