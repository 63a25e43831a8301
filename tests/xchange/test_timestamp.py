"""xchange.timestamp: requests, responses and token verification, with real tokens of the
test TSA (certs.tsa) and real keys."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import cms, tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.ca import DevCA
from certs.keys import PrivateKey, generate_private_key
from certs.tsa import TimeStampAuthority
from xchange.errors import TimestampingFailedError
from xchange.timestamp import (
    TimeStampResp,
    check_tsa_certificate,
    hash_data,
    parse_timestamp_response,
    timestamp_request,
    verify_timestamp_token,
)

DATA_HASH = hashlib.sha256(b"the root of a batch").digest()
NONCE = 0x1234_5678_9ABC_DEF0

TsaCredentials = tuple[PrivateKey, x509.Certificate]


def _token(tsa: TimeStampAuthority, at: datetime, *, data_hash: bytes = DATA_HASH,
           hash_alg: str = "sha256", cert_req: bool = True, serial: int = 7) -> bytes:
    request = timestamp_request(data_hash, hash_alg=hash_alg, nonce=NONCE, cert_req=cert_req)
    return parse_timestamp_response(tsa.respond(request, at, serial), data_hash=data_hash,
                                    nonce=NONCE, hash_alg=hash_alg)


def _tsa_cert(key: PrivateKey, *, critical: bool = True, serial: int = 1000,
              purposes: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.TIME_STAMPING,),
              not_before: datetime | None = None) -> x509.Certificate:
    """A self-signed certificate with the given EKU.  Two of these with the same key and
    serial share an issuer-and-serial, so a token by one names the other as well: that is
    how the tests reach the checks that come after the signer is found."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Self-made TSA")])
    start = not_before or datetime(2020, 1, 1, tzinfo=UTC)
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(serial)
        .not_valid_before(start).not_valid_after(start + timedelta(days=3650))
        .add_extension(x509.ExtendedKeyUsage(list(purposes)), critical=critical)
        .sign(key, hashes.SHA256())
    )


# -- good tokens ------------------------------------------------------------------------------


def test_a_granted_token_verifies_and_says_what_it_stamps(
    tsa: TimeStampAuthority, tsa_credentials: TsaCredentials, pki_now: datetime
) -> None:
    at = pki_now + timedelta(minutes=5, microseconds=123)
    token = _token(tsa, at, serial=2**127 + 5)
    stamped = verify_timestamp_token(token, data_hash=DATA_HASH,
                                     tsa_certs=[tsa_credentials[1]], at=at)
    assert stamped.der == token
    assert stamped.gen_time == at.replace(microsecond=0)
    assert stamped.serial == 2**127 + 5
    assert stamped.message_imprint == DATA_HASH
    assert stamped.hash_alg == "sha256"
    assert stamped.tsa_certificate == tsa_credentials[1]
    assert stamped.policy == tsa.policy
    assert "der=" not in repr(stamped)


def test_the_token_is_returned_as_the_tsa_encoded_it(
    tsa: TimeStampAuthority, pki_now: datetime
) -> None:
    response = tsa.respond(timestamp_request(DATA_HASH, nonce=NONCE), pki_now, 9)
    token = parse_timestamp_response(response, data_hash=DATA_HASH, nonce=NONCE)
    # the trailing bytes of the response, untouched (not decoded and encoded again)
    assert len(token) > 1000 and response.endswith(token)


@pytest.mark.parametrize("hash_alg", ["sha256", "sha384", "sha512"])
def test_each_accepted_hash_algorithm(
    tsa: TimeStampAuthority, tsa_credentials: TsaCredentials, pki_now: datetime, hash_alg: str
) -> None:
    data_hash = hash_data(b"records", hash_alg)
    token = _token(tsa, pki_now, data_hash=data_hash, hash_alg=hash_alg)
    stamped = verify_timestamp_token(token, data_hash=data_hash, hash_alg=hash_alg,
                                     tsa_certs=[tsa_credentials[1]])
    assert stamped.hash_alg == hash_alg


@pytest.mark.parametrize(
    ("key_kind", "curve", "rsa_padding"),
    [("ec", ec.SECP384R1(), "pkcs1v15"), ("rsa", None, "pkcs1v15"), ("rsa", None, "pss")],
)
def test_other_tsa_keys_and_signature_schemes(
    dev_ca: DevCA, pki_now: datetime, key_kind: str, curve: ec.EllipticCurve | None,
    rsa_padding: str,
) -> None:
    key = ec.generate_private_key(curve) if curve else generate_private_key("rsa")
    _, cert = dev_ca.issue_tsa_cert("Other TSA", key=key, now=pki_now)
    tsa = TimeStampAuthority(key, [cert], rsa_padding="pss" if rsa_padding == "pss"
                             else "pkcs1v15")
    stamped = verify_timestamp_token(_token(tsa, pki_now), data_hash=DATA_HASH,
                                     tsa_certs=[cert])
    assert stamped.tsa_certificate == cert


def test_a_token_without_certificates_verifies_by_the_approved_certificate(
    tsa: TimeStampAuthority, tsa_credentials: TsaCredentials, pki_now: datetime
) -> None:
    token = _token(tsa, pki_now, cert_req=False)
    signed_data = cms.ContentInfo.load(token)["content"]
    assert signed_data["certificates"].native is None
    verify_timestamp_token(token, data_hash=DATA_HASH, tsa_certs=[tsa_credentials[1]])


def test_the_request_is_der_with_the_fields_given() -> None:
    request = tsp.TimeStampReq.load(timestamp_request(DATA_HASH, nonce=NONCE))
    assert request["version"].native == "v1"
    assert request["message_imprint"]["hashed_message"].native == DATA_HASH
    assert request["nonce"].native == NONCE
    assert request["cert_req"].native is True
    bare = tsp.TimeStampReq.load(timestamp_request(DATA_HASH, nonce=None, cert_req=False))
    assert bare["nonce"].native is None and bare["cert_req"].native is False


@pytest.mark.parametrize(
    ("data_hash", "hash_alg", "nonce"),
    [(DATA_HASH, "md5", 1), (DATA_HASH, "sha1", 1), (DATA_HASH[:20], "sha256", 1),
     (DATA_HASH, "sha384", 1), (DATA_HASH, "sha256", 0), (DATA_HASH, "sha256", -3)],
)
def test_requests_refuse_the_callers_mistakes(data_hash: bytes, hash_alg: str,
                                              nonce: int) -> None:
    with pytest.raises(ValueError, match=r"hash|nonce"):
        timestamp_request(data_hash, hash_alg=hash_alg, nonce=nonce)


# -- tokens that must not verify ------------------------------------------------------------


def test_a_token_for_other_data_is_refused(
    tsa: TimeStampAuthority, tsa_credentials: TsaCredentials, pki_now: datetime
) -> None:
    token = _token(tsa, pki_now)
    other = hashlib.sha256(b"other data").digest()
    with pytest.raises(TimestampingFailedError, match="for other data") as caught:
        verify_timestamp_token(token, data_hash=other, tsa_certs=[tsa_credentials[1]])
    assert caught.value.code == "server.clientproxy.timestamping_failed"
    with pytest.raises(TimestampingFailedError, match="not sha384"):
        verify_timestamp_token(token, data_hash=hash_data(b"x", "sha384"), hash_alg="sha384",
                               tsa_certs=[tsa_credentials[1]])


def test_the_callers_code_is_kept(
    tsa: TimeStampAuthority, tsa_credentials: TsaCredentials, pki_now: datetime
) -> None:
    code = "server.serverproxy.timestamping_failed"
    with pytest.raises(TimestampingFailedError) as caught:
        verify_timestamp_token(_token(tsa, pki_now), data_hash=hashlib.sha256().digest(),
                               tsa_certs=[tsa_credentials[1]], code=code)
    assert caught.value.code == code


def _replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and data.count(old) == 1
    return data.replace(old, new)


def test_an_altered_tstinfo_is_refused(
    tsa: TimeStampAuthority, tsa_credentials: TsaCredentials, pki_now: datetime
) -> None:
    token = _token(tsa, pki_now)
    gen_time = pki_now.strftime("%Y%m%d%H%M%SZ").encode()
    later = (pki_now + timedelta(hours=1)).strftime("%Y%m%d%H%M%SZ").encode()
    with pytest.raises(TimestampingFailedError, match=r"message-digest .* altered"):
        verify_timestamp_token(_replace_once(token, gen_time, later), data_hash=DATA_HASH,
                               tsa_certs=[tsa_credentials[1]])


def test_an_altered_signed_attribute_or_signature_is_refused(
    tsa: TimeStampAuthority, tsa_credentials: TsaCredentials, pki_now: datetime
) -> None:
    at = pki_now + timedelta(minutes=1)  # not the certificates' times
    token = _token(tsa, at)
    # The signing-time attribute is the token's one UTCTime (tag 0x17, 13 bytes) at `at`.
    signing_time = b"\x17\x0d" + at.strftime("%y%m%d%H%M%SZ").encode()
    later = b"\x17\x0d" + (at + timedelta(hours=1)).strftime("%y%m%d%H%M%SZ").encode()
    for altered in (_replace_once(token, signing_time, later),
                    token[:-1] + bytes([token[-1] ^ 1])):
        with pytest.raises(TimestampingFailedError, match="signature does not verify"):
            verify_timestamp_token(altered, data_hash=DATA_HASH, tsa_certs=[tsa_credentials[1]])


def test_a_token_without_signed_attributes_is_refused(
    tsa: TimeStampAuthority, tsa_credentials: TsaCredentials, pki_now: datetime
) -> None:
    info = cms.ContentInfo.load(_token(tsa, pki_now))
    signer = info["content"]["signer_infos"][0]
    kept = ("version", "sid", "digest_algorithm", "signature_algorithm", "signature")
    info["content"]["signer_infos"] = cms.SignerInfos(
        [cms.SignerInfo({name: signer[name] for name in kept})])
    with pytest.raises(TimestampingFailedError, match="no signed attributes"):
        verify_timestamp_token(info.dump(force=True), data_hash=DATA_HASH,
                               tsa_certs=[tsa_credentials[1]])


@pytest.mark.parametrize("garbage", [b"", b"garbage", b"\x30\x03\x02\x01\x01", b"\x30" * 40])
def test_garbage_is_refused(garbage: bytes, tsa_credentials: TsaCredentials) -> None:
    with pytest.raises(TimestampingFailedError, match="not a DER"):
        verify_timestamp_token(garbage, data_hash=DATA_HASH, tsa_certs=[tsa_credentials[1]])
    with pytest.raises(TimestampingFailedError, match="not a DER"):
        parse_timestamp_response(garbage, data_hash=DATA_HASH, nonce=None)


def test_trailing_bytes_and_other_cms_contents_are_refused(
    tsa: TimeStampAuthority, tsa_credentials: TsaCredentials, pki_now: datetime
) -> None:
    cert = tsa_credentials[1]
    token = _token(tsa, pki_now)
    with pytest.raises(TimestampingFailedError, match="not a DER"):
        verify_timestamp_token(token + b"\x00", data_hash=DATA_HASH, tsa_certs=[cert])
    data = cms.ContentInfo({"content_type": "data", "content": b"x"}).dump()
    with pytest.raises(TimestampingFailedError, match="CMS data, not signed-data"):
        verify_timestamp_token(data, data_hash=DATA_HASH, tsa_certs=[cert])
    # A SignedData over plain data (eContentType id-data) is no time-stamp.
    signed_data = cms.ContentInfo.load(token)["content"]
    signed_data["encap_content_info"] = {"content_type": "data", "content": b"x"}
    relabelled = cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()
    with pytest.raises(TimestampingFailedError, match="not id-ct-TSTInfo"):
        verify_timestamp_token(relabelled, data_hash=DATA_HASH, tsa_certs=[cert])


def test_a_token_from_a_tsa_that_is_not_approved_is_refused(
    dev_ca: DevCA, tsa_credentials: TsaCredentials, pki_now: datetime
) -> None:
    key, cert = dev_ca.issue_tsa_cert("Rogue TSA", now=pki_now)
    rogue = TimeStampAuthority(key, [cert])
    approved = [tsa_credentials[1]]
    with pytest.raises(TimestampingFailedError, match="'CN=Rogue TSA', which is not an approved"):
        verify_timestamp_token(_token(rogue, pki_now), data_hash=DATA_HASH, tsa_certs=approved)
    with pytest.raises(TimestampingFailedError, match="not signed by an approved TSA"):
        verify_timestamp_token(_token(rogue, pki_now, cert_req=False), data_hash=DATA_HASH,
                               tsa_certs=approved)
    with pytest.raises(TimestampingFailedError, match="no approved TSA certificates"):
        verify_timestamp_token(_token(rogue, pki_now), data_hash=DATA_HASH, tsa_certs=[])


@pytest.mark.parametrize(
    ("critical", "purposes"),
    [(False, (ExtendedKeyUsageOID.TIME_STAMPING,)),
     (True, (ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.SERVER_AUTH)),
     (True, (ExtendedKeyUsageOID.CODE_SIGNING,))],
)
def test_a_signer_certificate_without_the_critical_timestamping_eku_is_refused(
    pki_now: datetime, critical: bool, purposes: tuple[x509.ObjectIdentifier, ...]
) -> None:
    key = generate_private_key()
    tsa = TimeStampAuthority(key, [_tsa_cert(key)])
    weak = _tsa_cert(key, critical=critical, purposes=purposes)
    with pytest.raises(TimestampingFailedError, match="not a TSA certificate"):
        verify_timestamp_token(_token(tsa, pki_now), data_hash=DATA_HASH, tsa_certs=[weak])
    with pytest.raises(TimestampingFailedError, match="critical extended key usage"):
        check_tsa_certificate(weak)


def test_a_key_usage_that_does_not_allow_signing_is_refused(
    dev_ca: DevCA, pki_now: datetime
) -> None:
    key = generate_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Encryption only")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(pki_now).not_valid_after(pki_now + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=True,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(TimestampingFailedError, match="key usage without digitalSignature"):
        check_tsa_certificate(cert)


def test_the_ess_signing_certificate_must_name_the_signer(pki_now: datetime) -> None:
    key = generate_private_key()
    tsa = TimeStampAuthority(key, [_tsa_cert(key)])
    # Same key, issuer and serial: the sid matches, but it is another certificate.
    twin = _tsa_cert(key, not_before=datetime(2021, 1, 1, tzinfo=UTC))
    with pytest.raises(TimestampingFailedError, match="names another certificate"):
        verify_timestamp_token(_token(tsa, pki_now), data_hash=DATA_HASH, tsa_certs=[twin])


def test_gen_time_and_at_must_lie_within_the_certificate_validity(
    tsa: TimeStampAuthority, tsa_credentials: TsaCredentials, pki_now: datetime
) -> None:
    cert = tsa_credentials[1]
    early = _token(tsa, pki_now - timedelta(days=1))
    with pytest.raises(TimestampingFailedError, match=r"genTime .* outside the validity"):
        verify_timestamp_token(early, data_hash=DATA_HASH, tsa_certs=[cert])
    token = _token(tsa, pki_now)
    after_expiry = cert.not_valid_after_utc + timedelta(seconds=1)
    with pytest.raises(TimestampingFailedError, match=r"verification time .* outside"):
        verify_timestamp_token(token, data_hash=DATA_HASH, tsa_certs=[cert], at=after_expiry)
    # Without `at`, an old token still verifies after its TSA certificate has expired.
    verify_timestamp_token(token, data_hash=DATA_HASH, tsa_certs=[cert])
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_timestamp_token(token, data_hash=DATA_HASH, tsa_certs=[cert],
                               at=datetime(2030, 1, 1))


# -- responses --------------------------------------------------------------------------------


def test_a_response_with_another_nonce_or_imprint_is_refused(
    tsa: TimeStampAuthority, pki_now: datetime
) -> None:
    response = tsa.respond(timestamp_request(DATA_HASH, nonce=NONCE), pki_now, 1)
    with pytest.raises(TimestampingFailedError, match="nonce"):
        parse_timestamp_response(response, data_hash=DATA_HASH, nonce=NONCE + 1)
    with pytest.raises(TimestampingFailedError, match="for other data"):
        parse_timestamp_response(response, data_hash=hashlib.sha256().digest(), nonce=NONCE)
    unasked = tsa.respond(timestamp_request(DATA_HASH, nonce=None), pki_now, 2)
    with pytest.raises(TimestampingFailedError, match="nonce"):
        parse_timestamp_response(unasked, data_hash=DATA_HASH, nonce=NONCE)
    assert parse_timestamp_response(unasked, data_hash=DATA_HASH, nonce=None)


@pytest.mark.parametrize(
    ("status", "fail_info", "text", "expected"),
    [("rejection", {"bad_alg"}, ["no md5 here"],
      "refused the request: rejection \\(bad_alg\\): no md5 here"),
     ("rejection", {"unaccepted_policy"}, None, "rejection \\(unaccepted_policy\\)$"),
     ("waiting", None, None, "waiting \\(no failure info\\)"),
     ("granted", None, None, "granted without a time-stamp token")],
)
def test_refusals_are_reported_with_status_failure_and_text(
    status: str, fail_info: set[str] | None, text: list[str] | None, expected: str
) -> None:
    info: dict[str, object] = {"status": status}
    if fail_info:
        info["fail_info"] = fail_info
    if text:
        info["status_string"] = text
    response = TimeStampResp({"status": info}).dump()
    with pytest.raises(TimestampingFailedError, match=expected):
        parse_timestamp_response(response, data_hash=DATA_HASH, nonce=None)
