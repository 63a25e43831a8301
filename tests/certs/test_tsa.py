"""certs.tsa and DevCA.issue_tsa_cert: the TSA certificate profile, granted tokens and the
RFC 3161 rejections."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import pytest
from asn1crypto import cms, tsp
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs.ca import DevCA, IssuedCredentials
from certs.keys import PrivateKey, generate_private_key
from certs.tsa import DEV_TSA_POLICY, TimeStampAuthority
from xchange.errors import BadRequestError, TimestampingFailedError
from xchange.timestamp import TimeStampResp, parse_timestamp_response, timestamp_request

DATA_HASH = hashlib.sha256(b"data").digest()
_DER = Encoding.DER


def _request(**changes: Any) -> bytes:
    """A TimeStampReq built field by field, so that tests can send what the client never would."""
    fields: dict[str, Any] = {
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"},
                            "hashed_message": DATA_HASH},
        "nonce": 42,
        "cert_req": True,
    }
    fields.update(changes)
    return bytes(tsp.TimeStampReq(fields).dump())


def _status(response: bytes) -> tuple[str, set[str], list[str]]:
    status = TimeStampResp.load(response)["status"]
    return (status["status"].native, status["fail_info"].native or set(),
            status["status_string"].native or [])


def _tst_info(response: bytes) -> tsp.TSTInfo:
    token = TimeStampResp.load(response)["time_stamp_token"]
    return token["content"]["encap_content_info"]["content"].parsed


# -- the certificate ---------------------------------------------------------------------------


def test_the_tsa_certificate_has_the_rfc_3161_profile(dev_ca: DevCA, pki_now: datetime) -> None:
    key, cert = dev_ca.issue_tsa_cert("Agency TSA", now=pki_now, days=30)
    assert cert.subject.rfc4514_string() == "CN=Agency TSA"
    assert cert.issuer == dev_ca.certificate.subject
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.content_commitment
    assert not usage.value.key_cert_sign
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30)
    cert.verify_directly_issued_by(dev_ca.certificate)
    assert cert.public_key() == key.public_key()


def test_the_tsa_certificate_can_be_for_a_given_key(dev_ca: DevCA, pki_now: datetime) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    same, cert = dev_ca.issue_tsa_cert("P-384 TSA", key=key, now=pki_now)
    assert same is key and cert.public_key() == key.public_key()
    with pytest.raises(BadRequestError, match="TSA name"):
        dev_ca.issue_tsa_cert("", now=pki_now)


# -- the authority ----------------------------------------------------------------------------


def test_the_authority_refuses_a_wrong_key_or_certificate(
    dev_ca: DevCA, tsa_credentials: tuple[PrivateKey, x509.Certificate],
    issue_member_sign: Any, pki_now: datetime,
) -> None:
    key, cert = tsa_credentials
    with pytest.raises(ValueError, match="does not belong"):
        TimeStampAuthority(generate_private_key(), [cert])
    with pytest.raises(ValueError, match="must hold the TSA certificate"):
        TimeStampAuthority(key, [])
    signer: IssuedCredentials = issue_member_sign("TEST/GOV/1234")
    with pytest.raises(ValueError, match="not a TSA certificate"):
        TimeStampAuthority(signer.key, [signer.certificate])
    with pytest.raises(ValueError, match="not a dotted OID"):
        TimeStampAuthority(key, [cert], policy_oid="policy-one")
    with pytest.raises(ValueError, match="accuracy"):
        TimeStampAuthority(key, [cert], accuracy_seconds=0)
    tsa = TimeStampAuthority(key, [cert])
    with pytest.raises(ValueError, match="timezone-aware"):
        tsa.respond(_request(), pki_now.replace(tzinfo=None), 1)
    with pytest.raises(ValueError, match="positive"):
        tsa.respond(_request(), pki_now, 0)


def test_a_granted_token_echoes_the_request(
    tsa: TimeStampAuthority, dev_ca: DevCA, pki_now: datetime
) -> None:
    at = pki_now + timedelta(seconds=30, microseconds=999_999)
    response = tsa.respond(_request(), at, 2**128 - 1)
    assert _status(response) == ("granted", set(), [])
    tst = _tst_info(response)
    request = tsp.TimeStampReq.load(_request())
    assert tst["message_imprint"].dump() == request["message_imprint"].dump()
    assert tst["nonce"].native == 42
    assert tst["serial_number"].native == 2**128 - 1
    assert tst["gen_time"].native == at.replace(microsecond=0)
    assert tst["policy"].dotted == DEV_TSA_POLICY
    assert tst["accuracy"]["seconds"].native == 1
    token = TimeStampResp.load(response)["time_stamp_token"]
    signed_data = token["content"]
    assert signed_data["version"].native == "v3"
    carried = {c.chosen.dump() for c in signed_data["certificates"]}
    assert carried == {tsa.certificate.public_bytes(_DER), dev_ca.certificate.public_bytes(_DER)}
    attrs = {a["type"].native for a in signed_data["signer_infos"][0]["signed_attrs"]}
    assert attrs == {"content_type", "signing_time", "message_digest", "signing_certificate_v2"}


def test_no_certificates_unless_asked_and_no_accuracy_unless_claimed(
    tsa_credentials: tuple[PrivateKey, x509.Certificate], pki_now: datetime
) -> None:
    key, cert = tsa_credentials
    tsa = TimeStampAuthority(key, [cert], accuracy_seconds=None, policy_oid="1.2.3.4")
    response = tsa.respond(_request(cert_req=False, nonce=None), pki_now, 1)
    signed_data = TimeStampResp.load(response)["time_stamp_token"]["content"]
    assert signed_data["certificates"].native is None
    tst = _tst_info(response)
    assert tst["accuracy"].native is None and tst["nonce"].native is None
    assert tst["policy"].dotted == "1.2.3.4"


def test_the_requested_policy_is_granted_when_it_is_the_tsas(
    tsa: TimeStampAuthority, pki_now: datetime
) -> None:
    response = tsa.respond(_request(req_policy=DEV_TSA_POLICY), pki_now, 1)
    assert _status(response)[0] == "granted"


@pytest.mark.parametrize(
    ("request_der", "fail_info", "text"),
    [
        (b"", "bad_data_format", "not a DER TimeStampReq"),
        (b"\x30\x03\x02\x01\x01", "bad_data_format", "not a DER TimeStampReq"),
        (_request() + b"\x00", "bad_data_format", "not a DER TimeStampReq"),
        (_request(version=2), "bad_request", "version 1"),
        (_request(message_imprint={"hash_algorithm": {"algorithm": "sha1"},
                                   "hashed_message": b"\x00" * 20}), "bad_alg", "sha1"),
        (_request(message_imprint={"hash_algorithm": {"algorithm": "md5"},
                                   "hashed_message": b"\x00" * 16}), "bad_alg", "md5"),
        (_request(message_imprint={"hash_algorithm": {"algorithm": "sha384"},
                                   "hashed_message": DATA_HASH}),
         "bad_data_format", "not a sha384 hash"),
        (_request(req_policy="1.2.3.4.5"), "unaccepted_policy", DEV_TSA_POLICY),
        (_request(extensions=[{"extn_id": "1.2.3", "extn_value": b"x"}]),
         "unaccepted_extensions", "extensions"),
    ],
)
def test_bad_requests_are_rejected_with_the_rfc_3161_failure(
    tsa: TimeStampAuthority, pki_now: datetime, request_der: bytes, fail_info: str, text: str
) -> None:
    response = tsa.respond(request_der, pki_now, 1)
    status, failures, texts = _status(response)
    assert (status, failures) == ("rejection", {fail_info})
    assert text in texts[0]
    with pytest.raises(TimestampingFailedError, match=f"rejection \\({fail_info}\\)"):
        parse_timestamp_response(response, data_hash=DATA_HASH, nonce=42)


def test_client_requests_are_granted(tsa: TimeStampAuthority, pki_now: datetime) -> None:
    request = timestamp_request(DATA_HASH, nonce=7, cert_req=False)
    token = parse_timestamp_response(tsa.respond(request, pki_now, 1), data_hash=DATA_HASH,
                                     nonce=7)
    assert cms.ContentInfo.load(token)["content_type"].native == "signed_data"
