"""Tests of certs.ca: the development CA, its certificate profile, CSRs and key files."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from certs.ca import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CA_PASSPHRASE_FILE,
    DevCA,
    IssuedCredentials,
    make_csr,
)
from certs.keys import (
    ProtectedKeyError,
    generate_private_key,
    load_certificates,
    load_private_key,
    read_secret_file,
)
from certs.pkcs8 import PEM_BEGIN
from xchange.certificates import (
    EKU_DOCUMENT_SIGNING,
    auth_cert_subject,
    member_of_sign_cert,
    server_of_auth_cert,
    sign_cert_subject,
    verify_chain,
)
from xchange.errors import BadRequestError
from xchange.identifiers import ClientId, SecurityServerId

MEMBER = ClientId("TEST", "GOV", "1234")
SERVER = SecurityServerId(MEMBER, "ss1")
SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


_E = TypeVar("_E", bound=x509.ExtensionType)


def _ext(cert: x509.Certificate, kind: type[_E]) -> x509.Extension[_E]:
    return cert.extensions.get_extension_for_class(kind)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the root -----------------------------------------------------------------------------------


def test_root_profile(dev_ca: DevCA, pki_now: datetime) -> None:
    root = dev_ca.certificate
    assert root.subject.rfc4514_string() == "O=TEST,CN=TEST Root CA"
    assert root.issuer == root.subject
    root.verify_directly_issued_by(root)
    bc = _ext(root, x509.BasicConstraints)
    assert bc.critical
    assert bc.value == x509.BasicConstraints(ca=True, path_length=0)
    usage = _ext(root, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    assert _ext(root, x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(root.public_key())
    )
    assert root.not_valid_before_utc == pki_now
    assert root.not_valid_after_utc == pki_now + timedelta(days=3650)


def test_root_files(dev_ca: DevCA) -> None:
    assert _mode(dev_ca.directory / CA_KEY_FILE) == 0o600
    assert dev_ca.cert_path == dev_ca.directory / CA_CERT_FILE
    assert load_certificates(dev_ca.cert_path) == [dev_ca.certificate]


def test_load_round_trip(dev_ca: DevCA, pki_now: datetime, tmp_path: Path) -> None:
    loaded = DevCA.load(dev_ca.directory)
    assert loaded.certificate == dev_ca.certificate
    cert = loaded.issue_sign_cert(MEMBER, "Org", generate_private_key().public_key(), now=pki_now)
    verify_chain(cert, [], [dev_ca.certificate], at=pki_now, purpose="sign")


def test_ca_keys_are_encrypted_under_a_passphrase_kept_beside_them(dev_ca: DevCA) -> None:
    assert (dev_ca.directory / CA_KEY_FILE).read_bytes().startswith(
        PEM_BEGIN.encode())
    assert _mode(dev_ca.directory / CA_PASSPHRASE_FILE) == 0o600
    assert read_secret_file(dev_ca.directory / CA_PASSPHRASE_FILE) == dev_ca.key_passphrase
    with pytest.raises(ProtectedKeyError, match="wrong passphrase"):
        DevCA.load(dev_ca.directory, b"not the passphrase")


def test_a_given_passphrase_is_not_written_down(tmp_path: Path, pki_now: datetime) -> None:
    ca = DevCA.create(tmp_path, "TEST", now=pki_now, key_passphrase=b"kept elsewhere")
    assert not (tmp_path / CA_PASSPHRASE_FILE).exists()
    assert DevCA.load(tmp_path, b"kept elsewhere").certificate == ca.certificate
    creds = ca.issue_key_and_cert(tmp_path, "sign", MEMBER, member_name="Org", now=pki_now)
    assert creds.key_passphrase == b"kept elsewhere"
    assert load_private_key(creds.key_path, b"kept elsewhere").public_key() == \
        creds.key.public_key()


def test_create_refuses_to_replace_a_ca(dev_ca: DevCA, pki_now: datetime) -> None:
    with pytest.raises(FileExistsError):
        DevCA.create(dev_ca.directory, "TEST", now=pki_now)


def test_load_refuses_a_key_of_another_ca(dev_ca: DevCA, pki_now: datetime, tmp_path: Path) -> None:
    DevCA.create(tmp_path, "TEST", now=pki_now)
    (tmp_path / CA_CERT_FILE).write_bytes(dev_ca.cert_path.read_bytes())
    with pytest.raises(ValueError, match="does not belong"):
        DevCA.load(tmp_path)


def test_rsa_root(tmp_path: Path, pki_now: datetime) -> None:
    ca = DevCA.create(tmp_path, "RSA", now=pki_now, validity_days=10, key_kind="rsa")
    creds = ca.issue_key_and_cert(tmp_path, "auth", SERVER, member_name="Org", now=pki_now)
    verify_chain(creds.certificate, [], [ca.certificate], at=pki_now, purpose="auth")
    # Leaves never outlive their CA.
    assert creds.certificate.not_valid_after_utc == ca.certificate.not_valid_after_utc


@pytest.mark.parametrize(
    ("instance", "validity_days", "error"),
    [("", 10, BadRequestError), ("A/B", 10, BadRequestError), ("TEST", 0, ValueError)],
)
def test_create_refuses_bad_input(
    tmp_path: Path, pki_now: datetime, instance: str, validity_days: int, error: type[Exception]
) -> None:
    with pytest.raises(error):
        DevCA.create(tmp_path, instance, now=pki_now, validity_days=validity_days)
    assert not (tmp_path / CA_KEY_FILE).exists()


# -- the leaf profiles --------------------------------------------------------------------------


def _common_leaf_checks(
    cert: x509.Certificate, ca: DevCA, now: datetime, *, days: int = 730
) -> None:
    assert cert.issuer == ca.certificate.subject
    cert.verify_directly_issued_by(ca.certificate)
    assert 0 < cert.serial_number < 2**159
    assert _ext(cert, x509.BasicConstraints).critical
    assert not _ext(cert, x509.BasicConstraints).value.ca
    ca_ski = _ext(ca.certificate, x509.SubjectKeyIdentifier).value
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert _ext(cert, x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    )
    assert cert.not_valid_before_utc == now
    assert cert.not_valid_after_utc == now + timedelta(days=days)


def test_sign_cert_profile(dev_ca: DevCA, pki_now: datetime) -> None:
    cert = dev_ca.issue_sign_cert(
        MEMBER,
        "Ministry of Tests",
        generate_private_key().public_key(),
        now=pki_now,
        country="EE",
    )
    _common_leaf_checks(cert, dev_ca, pki_now)
    assert cert.subject == sign_cert_subject(MEMBER, "Ministry of Tests", country="EE")
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert usage.value.content_commitment
    assert not usage.value.key_encipherment
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [EKU_DOCUMENT_SIGNING]
    with pytest.raises(x509.ExtensionNotFound):
        _ext(cert, x509.SubjectAlternativeName)
    with pytest.raises(x509.ExtensionNotFound):
        _ext(cert, x509.AuthorityInformationAccess)
    assert member_of_sign_cert(cert) == MEMBER


@pytest.mark.parametrize(
    ("dns", "ips"),
    [
        (("localhost",), ("127.0.0.1",)),
        (("ss1.example", "ss1"), ("10.0.0.1", "::1")),
        ((), ("192.0.2.7",)),
    ],
)
def test_auth_cert_profile(
    dev_ca: DevCA, pki_now: datetime, dns: tuple[str, ...], ips: tuple[str, ...]
) -> None:
    cert = dev_ca.issue_auth_cert(
        SERVER,
        "Ministry of Tests",
        generate_private_key().public_key(),
        now=pki_now,
        dns_names=dns,
        ip_addresses=ips,
    )
    _common_leaf_checks(cert, dev_ca, pki_now)
    assert cert.subject == auth_cert_subject(SERVER, "Ministry of Tests")
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert usage.value.key_encipherment
    assert not usage.value.content_commitment
    assert set(_ext(cert, x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == list(dns)
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(i) for i in ips]
    assert server_of_auth_cert(cert) == SERVER


def test_tls_cert_profile(dev_ca: DevCA, pki_now: datetime) -> None:
    cert = dev_ca.issue_tls_cert(
        "is.example",
        generate_private_key().public_key(),
        now=pki_now,
        dns_names=("is.example",),
        ip_addresses=(),
    )
    _common_leaf_checks(cert, dev_ca, pki_now)
    assert cert.subject.rfc4514_string() == "CN=is.example"
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["is.example"]


@pytest.mark.parametrize("profile", ["sign", "auth"])
def test_ocsp_url_adds_authority_information_access(
    dev_ca: DevCA, pki_now: datetime, profile: str
) -> None:
    url = "http://ocsp.test.example/"
    public_key = generate_private_key().public_key()
    if profile == "sign":
        cert = dev_ca.issue_sign_cert(MEMBER, "Org", public_key, now=pki_now, ocsp_url=url)
    else:
        cert = dev_ca.issue_auth_cert(SERVER, "Org", public_key, now=pki_now, ocsp_url=url)
    [access] = _ext(cert, x509.AuthorityInformationAccess).value
    assert access.access_method == AuthorityInformationAccessOID.OCSP
    assert access.access_location == x509.UniformResourceIdentifier(url)


def test_serial_numbers_are_random(dev_ca: DevCA, pki_now: datetime) -> None:
    public_key = generate_private_key().public_key()
    serials = {
        dev_ca.issue_sign_cert(MEMBER, "Org", public_key, now=pki_now).serial_number
        for _ in range(5)
    }
    assert len(serials) == 5


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"ip_addresses": ("localhost",)}, BadRequestError, "not an IP address"),
        ({"dns_names": (), "ip_addresses": ()}, BadRequestError, "at least one"),
        ({"dns_names": "localhost"}, TypeError, "sequences"),
        ({"days": 0}, ValueError, "positive"),
    ],
)
def test_auth_cert_refuses_bad_input(
    dev_ca: DevCA,
    pki_now: datetime,
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        dev_ca.issue_auth_cert(
            SERVER,
            "Org",
            generate_private_key().public_key(),
            now=pki_now,
            **kwargs,
        )


def test_naive_now_is_a_programming_error(dev_ca: DevCA, pki_now: datetime) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        dev_ca.issue_sign_cert(
            MEMBER, "Org", generate_private_key().public_key(), now=pki_now.replace(tzinfo=None)
        )


# -- certificate signing requests ----------------------------------------------------------------


@pytest.mark.parametrize("profile", ["sign", "auth"])
def test_issue_from_csr(dev_ca: DevCA, pki_now: datetime, profile: str) -> None:
    key = generate_private_key()
    if profile == "sign":
        subject = sign_cert_subject(MEMBER, "Org")
        cert = dev_ca.issue_from_csr(make_csr(key, subject), "sign", now=pki_now)
        verify_chain(cert, [], [dev_ca.certificate], at=pki_now, purpose="sign")
        assert member_of_sign_cert(cert) == MEMBER
    else:
        subject = auth_cert_subject(SERVER, "Org")
        cert = dev_ca.issue_from_csr(
            make_csr(key, subject), "auth", now=pki_now, dns_names=("ss1.example",)
        )
        verify_chain(cert, [], [dev_ca.certificate], at=pki_now, purpose="auth")
        san = _ext(cert, x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["ss1.example"]
    assert cert.subject == subject
    assert cert.public_key().public_bytes(*SPKI) == key.public_key().public_bytes(*SPKI)


def test_csr_extensions_are_ignored(dev_ca: DevCA, pki_now: datetime) -> None:
    # A request asking to be a CA gets the profile, not what it asked for.
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(sign_cert_subject(MEMBER, "Org"))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(generate_private_key(), hashes.SHA256())
    )
    pem = csr.public_bytes(serialization.Encoding.PEM)
    cert = dev_ca.issue_from_csr(pem, "sign", now=pki_now)
    assert not _ext(cert, x509.BasicConstraints).value.ca


def _tampered_csr() -> bytes:
    csr = x509.load_pem_x509_csr(make_csr(generate_private_key(), sign_cert_subject(MEMBER, "Org")))
    der = csr.public_bytes(serialization.Encoding.DER)
    # The subject is inside the signed part: changing it breaks the signature, not the syntax.
    der = der.replace(b"TEST/GOV/1234", b"TEST/GOV/9999")
    return x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM)


def _csr_for(subject: x509.Name) -> Callable[[], bytes]:
    return lambda: make_csr(generate_private_key(), subject)


@pytest.mark.parametrize(
    ("make", "profile", "message"),
    [
        (lambda: b"not a csr", "sign", "not a PEM certificate signing request"),
        (_tampered_csr, "sign", "signature does not verify"),
        (_csr_for(auth_cert_subject(SERVER, "Org")), "sign", "does not fit the sign profile"),
        (_csr_for(sign_cert_subject(MEMBER, "Org")), "auth", "does not fit the auth profile"),
        (_csr_for(x509.Name.from_rfc4514_string("CN=x")), "sign", "does not fit the sign"),
    ],
    ids=["garbage", "bad-signature", "auth-subject-as-sign", "sign-subject-as-auth", "no-id"],
)
def test_bad_csr_is_refused(
    dev_ca: DevCA,
    pki_now: datetime,
    make: Callable[[], bytes],
    profile: Literal["sign", "auth"],
    message: str,
) -> None:
    with pytest.raises(BadRequestError, match=message):
        dev_ca.issue_from_csr(make(), profile, now=pki_now)


# -- key and certificate files ---------------------------------------------------------------------


def test_issue_key_and_cert_writes_0600_key_and_chain(
    dev_ca: DevCA, pki_now: datetime, tmp_path: Path
) -> None:
    creds = dev_ca.issue_key_and_cert(
        tmp_path / "ss1", "sign", MEMBER, member_name="Org", now=pki_now, stem="member"
    )
    assert creds.key_path == tmp_path / "ss1" / "member.key"
    assert creds.cert_path == tmp_path / "ss1" / "member.pem"
    assert _mode(creds.key_path) == 0o600
    assert load_certificates(creds.cert_path) == [creds.certificate, dev_ca.certificate]
    assert creds.chain == (creds.certificate, dev_ca.certificate)
    loaded = load_private_key(creds.key_path, creds.key_passphrase)
    assert loaded.public_key().public_bytes(*SPKI) == (
        creds.certificate.public_key().public_bytes(*SPKI)
    )


def test_issue_key_and_cert_refuses_to_replace_files(
    dev_ca: DevCA, pki_now: datetime, tmp_path: Path
) -> None:
    dev_ca.issue_key_and_cert(tmp_path, "tls", "is.example", now=pki_now)
    before = (tmp_path / "tls.key").read_bytes()
    with pytest.raises(FileExistsError):
        dev_ca.issue_key_and_cert(tmp_path, "tls", "is.example", now=pki_now)
    assert (tmp_path / "tls.key").read_bytes() == before


def test_issue_key_and_cert_refuses_a_holder_of_another_profile(
    dev_ca: DevCA, pki_now: datetime, tmp_path: Path
) -> None:
    with pytest.raises(TypeError, match="do not fit profile 'sign'"):
        dev_ca.issue_key_and_cert(
            tmp_path,
            "sign",
            SERVER,
            member_name="Org",
            now=pki_now,  # type: ignore[call-overload]
        )
    assert list(tmp_path.iterdir()) == []


# -- the auth profile works for mutual TLS in OpenSSL --------------------------------------------


def _context(*, server: bool, creds: IssuedCredentials, ca: DevCA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_cert_chain(creds.cert_path, creds.key_path, password=creds.key_passphrase)
    context.load_verify_locations(cafile=ca.cert_path)
    return context


def test_auth_certificates_do_mutual_tls(
    issue_server_auth: Callable[..., IssuedCredentials], dev_ca: DevCA
) -> None:
    client_creds = issue_server_auth("TEST/GOV/1234/client-ss")
    server_creds = issue_server_auth("TEST/COM/5678/server-ss")
    client_ctx = _context(server=False, creds=client_creds, ca=dev_ca)
    server_ctx = _context(server=True, creds=server_creds, ca=dev_ca)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    peer = server.getpeercert(binary_form=True)
    assert peer is not None
    assert server_of_auth_cert(x509.load_der_x509_certificate(peer)) == SecurityServerId.parse(
        "TEST/GOV/1234/client-ss"
    )


# -- the CA's OCSP URL, its record of issued certificates, revocation ------------------------


@pytest.fixture(scope="module")
def ocsp_ca(tmp_path_factory: pytest.TempPathFactory, pki_now: datetime) -> DevCA:
    return DevCA.create(tmp_path_factory.mktemp("ocsp-ca"), "TEST", now=pki_now,
                        ocsp_url="http://127.0.0.1:8888/ocsp")


def _aia_urls(cert: x509.Certificate) -> list[str]:
    try:
        aia = _ext(cert, x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [str(a.access_location.value) for a in aia]


def test_ca_ocsp_url_goes_into_sign_and_auth_certificates(
    ocsp_ca: DevCA, pki_now: datetime, tmp_path: Path
) -> None:
    assert DevCA.load(ocsp_ca.directory).ocsp_url == "http://127.0.0.1:8888/ocsp"
    sign = ocsp_ca.issue_key_and_cert(tmp_path, "sign", MEMBER, member_name="Org", now=pki_now)
    auth = ocsp_ca.issue_key_and_cert(tmp_path, "auth", SERVER, member_name="Org", now=pki_now)
    tls = ocsp_ca.issue_key_and_cert(tmp_path, "tls", "is.example", now=pki_now)
    assert _aia_urls(sign.certificate) == ["http://127.0.0.1:8888/ocsp"]
    assert _aia_urls(auth.certificate) == ["http://127.0.0.1:8888/ocsp"]
    assert _aia_urls(tls.certificate) == []
    csr = make_csr(generate_private_key(), sign_cert_subject(MEMBER, "Org"))
    from_csr = ocsp_ca.issue_from_csr(csr, "sign", now=pki_now)
    assert _aia_urls(from_csr) == ["http://127.0.0.1:8888/ocsp"]
    override = ocsp_ca.issue_sign_cert(MEMBER, "Org", generate_private_key().public_key(),
                                       now=pki_now, ocsp_url="https://ocsp.example/")
    assert _aia_urls(override) == ["https://ocsp.example/"]


def test_a_ca_without_ocsp_url_issues_without_aia(dev_ca: DevCA, pki_now: datetime) -> None:
    assert dev_ca.ocsp_url is None
    cert = dev_ca.issue_sign_cert(MEMBER, "Org", generate_private_key().public_key(), now=pki_now)
    assert _aia_urls(cert) == []


@pytest.mark.parametrize("url", ["ftp://ocsp.example/", "ocsp.example", "http:///path", ""])
def test_ocsp_url_must_be_http(tmp_path: Path, pki_now: datetime, url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        DevCA.create(tmp_path, "TEST", now=pki_now, ocsp_url=url)
    assert not (tmp_path / CA_KEY_FILE).exists()


def test_every_issued_certificate_is_recorded(
    ocsp_ca: DevCA, pki_now: datetime, tmp_path: Path
) -> None:
    before = {r.serial for r in ocsp_ca.issued()}
    creds = ocsp_ca.issue_key_and_cert(tmp_path, "auth", SERVER, member_name="Org", now=pki_now)
    csr = make_csr(generate_private_key(), auth_cert_subject(SERVER, "Org"))
    from_csr = ocsp_ca.issue_from_csr(csr, "auth", now=pki_now)
    responder = ocsp_ca.issue_ocsp_responder_cert(generate_private_key().public_key(),
                                                  now=pki_now)
    new = [r for r in ocsp_ca.issued() if r.serial not in before]
    assert [(r.serial, r.profile) for r in new] == [
        (creds.certificate.serial_number, "auth"),
        (from_csr.serial_number, "auth"),
        (responder.serial_number, "ocsp"),
    ]
    record = ocsp_ca.status_of(from_csr.serial_number)
    assert record is not None
    assert record.certificate == from_csr
    assert record.subject == "serialNumber=TEST/GOV/1234/ss1,CN=ss1,OU=GOV,O=Org,C=XX"
    assert (record.not_before, record.not_after) == (
        from_csr.not_valid_before_utc, from_csr.not_valid_after_utc)
    assert not record.revoked and record.reason is None
    assert ocsp_ca.status_of(12345) is None


def test_revoke(ocsp_ca: DevCA, pki_now: datetime) -> None:
    cert = ocsp_ca.issue_sign_cert(MEMBER, "Org", generate_private_key().public_key(),
                                   now=pki_now)
    at = pki_now + timedelta(hours=1, microseconds=500)
    ocsp_ca.revoke(cert.serial_number, reason=x509.ReasonFlags.key_compromise, at=at)
    # Another process's view: a fresh load of the same directory.
    record = DevCA.load(ocsp_ca.directory).status_of(cert.serial_number)
    assert record is not None and record.revoked
    assert record.revoked_at == pki_now + timedelta(hours=1)
    assert record.reason is x509.ReasonFlags.key_compromise
    with pytest.raises(ValueError, match=r"already revoked since .* \(keyCompromise\)"):
        ocsp_ca.revoke(cert.serial_number, reason=x509.ReasonFlags.superseded, at=at)
    record = ocsp_ca.status_of(cert.serial_number)
    assert record is not None and record.reason is x509.ReasonFlags.key_compromise


@pytest.mark.parametrize(
    ("serial", "kwargs", "message"),
    [
        (0x1234, {}, "serial 1234 was not issued by this CA"),
        (None, {"reason": x509.ReasonFlags.remove_from_crl}, "not a revocation reason"),
    ],
)
def test_revoke_refuses(
    ocsp_ca: DevCA, pki_now: datetime, serial: int | None, kwargs: dict[str, Any], message: str
) -> None:
    if serial is None:
        serial = ocsp_ca.issue_sign_cert(MEMBER, "Org", generate_private_key().public_key(),
                                         now=pki_now).serial_number
    with pytest.raises(ValueError, match=message):
        ocsp_ca.revoke(serial, at=pki_now, **kwargs)


def test_ocsp_responder_certificate_profile(ocsp_ca: DevCA, pki_now: datetime) -> None:
    key = generate_private_key()
    cert = ocsp_ca.issue_ocsp_responder_cert(key.public_key(), now=pki_now)
    _common_leaf_checks(cert, ocsp_ca, pki_now, days=30)
    assert cert.subject.rfc4514_string() == "O=TEST,CN=TEST OCSP Responder"
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    assert _ext(cert, x509.OCSPNoCheck).value == x509.OCSPNoCheck()
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.content_commitment and not usage.value.key_encipherment
    assert _aia_urls(cert) == []
