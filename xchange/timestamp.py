"""RFC 3161 time-stamps: requests, responses, and the verification of time-stamp tokens.

A security server proves *when* it logged a message by having a time-stamping authority (TSA)
sign the hash of it (the message log stamps the root of a Merkle tree over a batch of
signature hashes, so one token covers many records).  This module is the pure part of that:

* :func:`timestamp_request` builds a ``TimeStampReq`` (RFC 3161 section 2.4.1);
* :func:`parse_timestamp_response` reads a ``TimeStampResp`` (2.4.2): the status, and the
  token's binding to the request (message imprint, nonce); it returns the token's DER;
* :func:`verify_timestamp_token` verifies a ``TimeStampToken`` -- a CMS SignedData (RFC 5652)
  over a ``TSTInfo`` -- against the federation's approved TSA certificates and returns what
  it established as a :class:`TimestampToken`.  It is what a security server runs on a fresh
  token, and what an auditor runs years later on an archived one.

Trust is by exact certificate, as in X-Road: the token's signer must be one of the TSA
certificates that global configuration approves (``GlobalConf.approved_tsas``); certificates
carried inside the token are never trusted for that, and no path to a CA is built.  The signer
certificate must have the critical extended key usage id-kp-timeStamping and nothing else
(RFC 3161 section 2.3), and the token must name it in an ESS signing-certificate attribute
(RFC 2634 ``SigningCertificate`` or RFC 5035 ``SigningCertificateV2``, RFC 5816).

Hash algorithms: SHA-256, SHA-384 and SHA-512, for message imprints and for the CMS digests.
Signatures: ECDSA, RSA PKCS#1 v1.5 and RSASSA-PSS.

What is not here: sending requests (``security_server.timestamper``), answering them
(``certs.tsa``), reading the clock or making nonces.  ASN.1 is encoded and decoded with
asn1crypto (see docs/decisions.md); its exceptions never leave this module.  Every failure
raises :class:`~xchange.errors.TimestampingFailedError` with the caller's ``code``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from xchange.errors import TimestampingFailedError

__all__ = [
    "EKU_TIME_STAMPING",
    "HASH_ALGORITHMS",
    "MAX_RESPONSE_BYTES",
    "OID_TST_INFO",
    "QUERY_TYPE",
    "REPLY_TYPE",
    "TimeStampResp",
    "TimestampToken",
    "check_tsa_certificate",
    "hash_data",
    "parse_timestamp_response",
    "signed_attributes_der",
    "timestamp_request",
    "verify_timestamp_token",
]

EKU_TIME_STAMPING: Final = ExtendedKeyUsageOID.TIME_STAMPING
"""id-kp-timeStamping (1.3.6.1.5.5.7.3.8): the one key purpose of a TSA certificate."""
OID_TST_INFO: Final = "1.2.840.113549.1.9.16.1.4"
"""id-ct-TSTInfo: the eContentType of a time-stamp token."""
HASH_ALGORITHMS: Final = frozenset({"sha256", "sha384", "sha512"})
"""Accepted for message imprints and CMS digests (asn1crypto and hashlib names)."""
QUERY_TYPE: Final = "application/timestamp-query"
"""Media type of a DER TimeStampReq sent over HTTP (RFC 3161 3.4)."""
REPLY_TYPE: Final = "application/timestamp-reply"
"""Media type of a DER TimeStampResp sent over HTTP (RFC 3161 3.4)."""
MAX_RESPONSE_BYTES: Final = 256 * 1024
"""Largest ``TimeStampResp`` or token accepted (a real one is a few kilobytes)."""

_DEFAULT_CODE: Final = TimestampingFailedError.default_code
_CRYPTO_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "sha1": hashes.SHA1,  # only for the ESSCertID of RFC 2634, which identifies a certificate
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_GRANTED: Final = frozenset({"granted", "granted_with_mods"})


class TimeStampResp(core.Sequence):  # type: ignore[misc]  # asn1crypto has no types
    """RFC 3161 2.4.2 ``TimeStampResp``.  asn1crypto's own ``tsp.TimeStampResp`` makes the
    token mandatory, so it can neither read nor write a rejection."""

    _fields = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


@dataclass(frozen=True, slots=True)
class TimestampToken:
    """A verified time-stamp token and what it says."""

    der: bytes = field(repr=False)
    """The TimeStampToken (a CMS ContentInfo), DER as received: what logs and archives keep."""
    gen_time: datetime
    """When the TSA says it stamped (``genTime``, UTC)."""
    serial: int
    """The TSA's serial number of the token."""
    message_imprint: bytes
    """The hash that was stamped."""
    hash_alg: str
    tsa_certificate: x509.Certificate
    """The approved TSA certificate whose key signed the token."""
    policy: str
    """The TSA policy the token was issued under (dotted OID)."""


def hash_data(data: bytes, hash_alg: str = "sha256") -> bytes:
    """The message imprint of ``data`` (``hash_alg`` one of :data:`HASH_ALGORITHMS`)."""
    _check_hash_alg(hash_alg)
    return hashlib.new(hash_alg, data).digest()


def timestamp_request(
    data_hash: bytes, *, hash_alg: str = "sha256", nonce: int | None, cert_req: bool = True
) -> bytes:
    """A DER ``TimeStampReq`` (RFC 3161 2.4.1) for ``data_hash``.

    ``nonce`` (a positive integer, 64 random bits are plenty) binds the answer to this
    request; ``cert_req`` asks the TSA to include its certificate in the token, so that the
    token can be read without global configuration at hand.
    """
    _check_imprint(data_hash, hash_alg)
    if nonce is not None and nonce <= 0:
        raise ValueError("nonce must be a positive integer")
    fields: dict[str, Any] = {
        "version": "v1",
        "message_imprint": _message_imprint(data_hash, hash_alg),
        "cert_req": cert_req,
    }
    if nonce is not None:
        fields["nonce"] = nonce
    return bytes(tsp.TimeStampReq(fields).dump())


def parse_timestamp_response(
    resp_der: bytes,
    *,
    data_hash: bytes,
    nonce: int | None,
    hash_alg: str = "sha256",
    code: str = _DEFAULT_CODE,
) -> bytes:
    """Read a ``TimeStampResp`` (RFC 3161 2.4.2) answering a request for ``data_hash``.

    Returns the token's DER when the TSA granted it, for this imprint and (if one was sent)
    this ``nonce``.  Raises :class:`TimestampingFailedError` when the TSA refused (the message
    names its status, failure bits and text) or when the answer is malformed or for another
    request.  The token's signature is *not* checked here: pass the result to
    :func:`verify_timestamp_token`.
    """
    _check_imprint(data_hash, hash_alg)
    if len(resp_der) > MAX_RESPONSE_BYTES:
        raise TimestampingFailedError("time-stamp response too large", code=code)
    try:
        resp = TimeStampResp.load(resp_der, strict=True)
        status = resp["status"]
        status_name = status["status"].native
        fail_info = status["fail_info"].native or set()
        texts = status["status_string"].native or []
        token = resp["time_stamp_token"]
        # The token's bytes as received (never .native first: decoding the whole token
        # marks its algorithm identifiers changed, and dump() then re-encodes it all,
        # about 75 ms of CPU for a 1.4 KB token).  _open decodes it below.
        token_der = None if isinstance(token, core.Void) else bytes(token.dump())
    except Exception as exc:  # any decoding failure of the TSA's bytes is a failure
        raise TimestampingFailedError(
            "time-stamp response is not a DER TimeStampResp", code=code
        ) from exc
    if status_name not in _GRANTED:
        reasons = ", ".join(sorted(fail_info)) or "no failure info"
        text = f": {'; '.join(str(t) for t in texts)}" if texts else ""
        raise TimestampingFailedError(
            f"the TSA refused the request: {status_name} ({reasons}){text}", code=code
        )
    if token_der is None:
        raise TimestampingFailedError(
            f"the TSA answered {status_name} without a time-stamp token", code=code
        )
    tst = _open(token_der, code).tst_info
    _check_tst_imprint(tst, data_hash, hash_alg, code)
    if nonce is not None and tst["nonce"].native != nonce:
        raise TimestampingFailedError(
            "time-stamp token does not echo the request's nonce: it answers another request",
            code=code,
        )
    return token_der


def verify_timestamp_token(
    token_der: bytes,
    *,
    data_hash: bytes,
    tsa_certs: Sequence[x509.Certificate],
    at: datetime | None = None,
    hash_alg: str = "sha256",
    code: str = _DEFAULT_CODE,
) -> TimestampToken:
    """Verify that ``token_der`` is an approved TSA's time-stamp of ``data_hash``.

    ``tsa_certs`` are the federation's approved TSA certificates.  ``at`` (aware), when
    given, is a time at which the TSA certificate must also be valid: a client checking a
    fresh token passes its current time; an auditor of old tokens leaves it out, and then
    only ``genTime`` must lie within the certificate's validity.

    Plan (RFC 3161 2.4.2 and RFC 5652 5):
      1. the token is a CMS SignedData with one SignerInfo, encapsulating a TSTInfo v1;
      2. the TSTInfo's message imprint is ``data_hash`` under ``hash_alg``;
      3. the signer is one of ``tsa_certs`` (matched by the SignerInfo's sid), a proper TSA
         certificate (:func:`check_tsa_certificate`);
      4. signed attributes: content-type is id-ct-TSTInfo, message-digest is the hash of
         the encapsulated TSTInfo, and an ESS signing-certificate(-v2) attribute names the
         signer certificate;
      5. the signature over the signed attributes verifies with the signer's key;
      6. ``genTime`` (and ``at``) lie within the signer certificate's validity.
    Every failure raises :class:`TimestampingFailedError` with ``code``.
    """
    _check_imprint(data_hash, hash_alg)
    if at is not None and (at.tzinfo is None or at.utcoffset() is None):
        raise ValueError("at must be timezone-aware")
    # 1.
    token = _open(token_der, code)
    tst = token.tst_info
    # 2.
    _check_tst_imprint(tst, data_hash, hash_alg, code)
    # 3.
    signer = _signer_certificate(token, tsa_certs, code)
    check_tsa_certificate(signer, code=code)
    # 4.
    digest_alg = _digest_algorithm(token.signer_info["digest_algorithm"], "signer digest", code)
    attrs = _signed_attributes(token.signer_info, code)
    if attrs["content_type"].native != "tst_info":
        raise TimestampingFailedError(
            "the content-type signed attribute is not id-ct-TSTInfo", code=code
        )
    if not hmac.compare_digest(
        bytes(attrs["message_digest"].native), hash_data(token.econtent, digest_alg)
    ):
        raise TimestampingFailedError(
            "the message-digest signed attribute does not match the TSTInfo: "
            "the token was altered",
            code=code,
        )
    _check_signing_certificate(attrs, signer, code)
    # 5.
    _check_signature(signer, token.signer_info, token.signed_attrs, digest_alg, code)
    # 6.
    gen_time = _gen_time(tst, code)
    for what, when in (("genTime", gen_time), ("the verification time", at)):
        if when is not None and not (
            signer.not_valid_before_utc <= when <= signer.not_valid_after_utc
        ):
            raise TimestampingFailedError(
                f"{what} {when.astimezone(UTC).isoformat()} is outside the validity of the "
                f"TSA certificate {_describe(signer)} ({signer.not_valid_before_utc.isoformat()}"
                f" to {signer.not_valid_after_utc.isoformat()})",
                code=code,
            )
    return TimestampToken(
        der=bytes(token_der),
        gen_time=gen_time,
        serial=int(tst["serial_number"].native),
        message_imprint=bytes(data_hash),
        hash_alg=hash_alg,
        tsa_certificate=signer,
        policy=str(tst["policy"].dotted),
    )


def check_tsa_certificate(cert: x509.Certificate, *, code: str = _DEFAULT_CODE) -> None:
    """Refuse a certificate that may not sign time-stamps (RFC 3161 section 2.3).

    It must carry exactly one extended key usage, id-kp-timeStamping, in a critical
    extension; a key usage extension, if present, must allow digitalSignature or
    nonRepudiation.
    """
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        eku = None
    except (ValueError, x509.DuplicateExtension) as exc:
        raise TimestampingFailedError(
            f"TSA certificate {_describe(cert)} has malformed extensions", code=code
        ) from exc
    if eku is None or list(eku.value) != [EKU_TIME_STAMPING] or not eku.critical:
        raise TimestampingFailedError(
            f"certificate {_describe(cert)} is not a TSA certificate: it needs a critical "
            "extended key usage with id-kp-timeStamping only (RFC 3161 2.3)",
            code=code,
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not (usage.digital_signature or usage.content_commitment):
        raise TimestampingFailedError(
            f"TSA certificate {_describe(cert)} has a key usage without digitalSignature or "
            "nonRepudiation",
            code=code,
        )


def signed_attributes_der(signed_attrs: cms.CMSAttributes) -> bytes:
    """The bytes a CMS signature covers: the signed attributes re-tagged as a DER SET OF
    (RFC 5652 5.4), from the encoding they were received or built with."""
    contents = bytes(signed_attrs.contents)
    size = len(contents)
    if size < 0x80:
        length = bytes([size])
    else:
        octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(octets)]) + octets
    return b"\x31" + length + contents


# -- helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    signed_data: cms.SignedData
    signer_info: cms.SignerInfo
    tst_info: tsp.TSTInfo
    econtent: bytes
    """The encapsulated TSTInfo's DER: what the message-digest attribute hashes."""
    signed_attrs: bytes
    """The signed attributes as received, re-tagged as a SET OF: what the signature covers
    (:func:`signed_attributes_der`, taken before anything was decoded)."""


def _check_hash_alg(hash_alg: str) -> None:
    if hash_alg not in HASH_ALGORITHMS:
        raise ValueError(f"hash algorithm {hash_alg!r} is not one of {sorted(HASH_ALGORITHMS)}")


def _check_imprint(data_hash: bytes, hash_alg: str) -> None:
    # The caller's own inputs: a mismatch is a programming error, not bad data.
    _check_hash_alg(hash_alg)
    if len(data_hash) != hashlib.new(hash_alg).digest_size:
        raise ValueError(f"data_hash is {len(data_hash)} bytes, not a {hash_alg} hash")


def _message_imprint(data_hash: bytes, hash_alg: str) -> tsp.MessageImprint:
    return tsp.MessageImprint(
        {"hash_algorithm": {"algorithm": hash_alg}, "hashed_message": data_hash}
    )


def _describe(cert: x509.Certificate) -> str:
    try:
        return repr(cert.subject.rfc4514_string())
    except ValueError:
        return f"with serial {cert.serial_number:x}"


_SIGNER_INFO_FIELDS: Final = tuple(field[0] for field in cms.SignerInfo._fields)


def _open(token_der: bytes, code: str) -> _Token:
    if len(token_der) > MAX_RESPONSE_BYTES:
        raise TimestampingFailedError("time-stamp token too large", code=code)
    try:
        info = cms.ContentInfo.load(token_der, strict=True)
        content_type = info["content_type"].native
        if content_type != "signed_data":
            raise TimestampingFailedError(
                f"time-stamp token is a CMS {content_type}, not signed-data", code=code
            )
        signed_data = info["content"]
        signer_infos = signed_data["signer_infos"]
        econtent_type = signed_data["encap_content_info"]["content_type"].dotted
        if econtent_type != OID_TST_INFO:
            raise TimestampingFailedError(
                f"time-stamp token encapsulates {econtent_type}, not id-ct-TSTInfo", code=code
            )
        content = signed_data["encap_content_info"]["content"]
        if content.native is None:
            raise TimestampingFailedError("time-stamp token has no TSTInfo", code=code)
        econtent = bytes(content.contents)
        tst_info = tsp.TSTInfo.load(econtent, strict=True)
        tst_info.native  # noqa: B018 (decodes every field now, inside this try)
        signed_data["certificates"].native  # noqa: B018
        # The bytes the signature covers, before decoding: decoded, the attributes are
        # re-encoded when their bytes are asked for (3 ms, and not always the TSA's bytes).
        signed = [signed_attributes_der(info["signed_attrs"]) for info in signer_infos]
        for info in signer_infos:  # field by field: the SET OF's own .native also re-sorts
            for name in _SIGNER_INFO_FIELDS:  # and re-encodes its members (4 ms)
                info[name].native  # noqa: B018
    except TimestampingFailedError:
        raise
    except Exception as exc:  # any decoding failure of the TSA's bytes is a failure
        raise TimestampingFailedError(
            "time-stamp token is not a DER CMS SignedData over a TSTInfo", code=code
        ) from exc
    if len(signer_infos) != 1:
        raise TimestampingFailedError(
            f"time-stamp token has {len(signer_infos)} signers, not one", code=code
        )
    if tst_info["version"].native != "v1":
        raise TimestampingFailedError("TSTInfo version is not 1", code=code)
    return _Token(signed_data, signer_infos[0], tst_info, econtent, signed[0])


def _digest_algorithm(alg: algos.DigestAlgorithm, what: str, code: str) -> str:
    name = alg["algorithm"].native
    if name not in HASH_ALGORITHMS:
        raise TimestampingFailedError(f"{what} algorithm {name} is not accepted", code=code)
    if alg["parameters"].dump() not in (b"", b"\x05\x00"):
        raise TimestampingFailedError(f"{what} algorithm {name} has parameters", code=code)
    return str(name)


def _check_tst_imprint(tst: tsp.TSTInfo, data_hash: bytes, hash_alg: str, code: str) -> None:
    imprint = tst["message_imprint"]
    name = _digest_algorithm(imprint["hash_algorithm"], "message imprint", code)
    if name != hash_alg:
        raise TimestampingFailedError(
            f"time-stamp token's message imprint is a {name} hash, not {hash_alg}", code=code
        )
    if not hmac.compare_digest(bytes(imprint["hashed_message"].native), data_hash):
        raise TimestampingFailedError(
            "time-stamp token is for other data: its message imprint is not the hash given",
            code=code,
        )


def _gen_time(tst: tsp.TSTInfo, code: str) -> datetime:
    value = tst["gen_time"].native
    # asn1crypto gives an extended_datetime for year 0; a TSA's genTime is never that.
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise TimestampingFailedError("TSTInfo genTime is not a UTC time", code=code)
    return value.astimezone(UTC)


def _signer_certificate(
    token: _Token, tsa_certs: Sequence[x509.Certificate], code: str
) -> x509.Certificate:
    if not tsa_certs:
        raise TimestampingFailedError("no approved TSA certificates to verify against", code=code)
    sid = token.signer_info["sid"]
    for cert in tsa_certs:
        if _sid_names(sid, cert):
            return cert
    # Say who signed, if the token carries the certificate; it is not trusted for anything.
    carried_certs = token.signed_data["certificates"]
    for choice in () if isinstance(carried_certs, core.Void) else carried_certs:
        if choice.name != "certificate":
            continue
        try:
            carried = x509.load_der_x509_certificate(choice.chosen.dump())
        except ValueError:
            continue
        if _sid_names(sid, carried):
            raise TimestampingFailedError(
                f"time-stamp token is signed by {_describe(carried)}, which is not an "
                "approved TSA",
                code=code,
            )
    raise TimestampingFailedError(
        "time-stamp token is not signed by an approved TSA certificate", code=code
    )


def _sid_names(sid: cms.SignerIdentifier, cert: x509.Certificate) -> bool:
    if sid.name == "issuer_and_serial_number":
        issuer = asn1_x509.Name.load(cert.issuer.public_bytes())
        return bool(
            sid.chosen["serial_number"].native == cert.serial_number
            and sid.chosen["issuer"] == issuer
        )
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return False
    return bool(sid.chosen.native == ski)


def _signed_attributes(signer_info: cms.SignerInfo, code: str) -> dict[str, Any]:
    """The signed attributes by name, each with its one value; refuses repeats (RFC 5652
    5.3: an attribute type appears once, with one value for these attributes)."""
    signed_attrs = signer_info["signed_attrs"]
    if isinstance(signed_attrs, core.Void):
        raise TimestampingFailedError("time-stamp token has no signed attributes", code=code)
    attrs: dict[str, Any] = {}
    for attr in signed_attrs:
        name = attr["type"].native
        values = attr["values"]
        if name in attrs or len(values) != 1:
            raise TimestampingFailedError(
                f"signed attribute {name} is repeated or has several values", code=code
            )
        attrs[name] = values[0]
    for required in ("content_type", "message_digest"):
        if required not in attrs:
            raise TimestampingFailedError(
                f"time-stamp token lacks the {required.replace('_', '-')} signed attribute",
                code=code,
            )
    return attrs


def _check_signing_certificate(
    attrs: dict[str, Any], signer: x509.Certificate, code: str
) -> None:
    """RFC 2634 5.4 / RFC 5035 5.4: the first ESSCertID names the signer's certificate."""
    found = [(name, attrs[name]) for name in ("signing_certificate_v2", "signing_certificate")
             if name in attrs]
    if not found:
        raise TimestampingFailedError(
            "time-stamp token has no ESS signing-certificate attribute naming the TSA "
            "certificate",
            code=code,
        )
    der = signer.public_bytes(serialization.Encoding.DER)
    for name, value in found:
        cert_ids = value["certs"]
        if len(cert_ids) == 0:
            raise TimestampingFailedError(f"{name} names no certificate", code=code)
        cert_id = cert_ids[0]
        if name == "signing_certificate":
            alg = "sha1"
        else:
            alg = _digest_algorithm(cert_id["hash_algorithm"], "ESSCertIDv2 hash", code)
        digest = hashes.Hash(_CRYPTO_HASHES[alg]())
        digest.update(der)
        if not hmac.compare_digest(bytes(cert_id["cert_hash"].native), digest.finalize()):
            raise TimestampingFailedError(
                f"the {name} attribute names another certificate than the signer's", code=code
            )
        issuer_serial = cert_id["issuer_serial"]
        if issuer_serial.native is not None:
            issuer = asn1_x509.Name.load(signer.issuer.public_bytes())
            names = [g.chosen for g in issuer_serial["issuer"] if g.name == "directory_name"]
            if issuer_serial["serial_number"].native != signer.serial_number or issuer not in names:
                raise TimestampingFailedError(
                    f"the {name} attribute's issuer and serial are not the signer's", code=code
                )


def _check_signature(
    cert: x509.Certificate,
    signer_info: cms.SignerInfo,
    signed: bytes,
    digest_alg: str,
    code: str,
) -> None:
    alg = signer_info["signature_algorithm"]
    name = alg["algorithm"].native
    key = cert.public_key()
    signature = bytes(signer_info["signature"].native)
    try:
        kind = alg.signature_algo
        # Bare rsaEncryption means PKCS#1 v1.5 with the SignerInfo's digest algorithm.
        sig_hash = digest_alg if name == "rsassa_pkcs1v15" else alg.hash_algo
    except ValueError as exc:
        raise TimestampingFailedError(f"signature algorithm {name} is not supported",
                                      code=code) from exc
    if sig_hash != digest_alg:
        raise TimestampingFailedError(
            f"signature algorithm {name} does not use the digest algorithm {digest_alg}",
            code=code,
        )
    h = _CRYPTO_HASHES[digest_alg]()
    try:
        if kind == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, signed, ec.ECDSA(h))
        elif kind == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed, padding.PKCS1v15(), h)
        elif kind == "rsassa_pss" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed, _pss_padding(alg["parameters"], digest_alg, code), h)
        else:
            raise TimestampingFailedError(
                f"signature algorithm {name} does not fit the TSA certificate's "
                f"{type(key).__name__}",
                code=code,
            )
    except InvalidSignature as exc:
        raise TimestampingFailedError(
            "the time-stamp token's signature does not verify with the TSA certificate's key",
            code=code,
        ) from exc


def _pss_padding(params: algos.RSASSAPSSParams, digest_alg: str, code: str) -> padding.PSS:
    mgf = params["mask_gen_algorithm"]
    if (
        mgf["algorithm"].native != "mgf1"
        or mgf["parameters"]["algorithm"].native != digest_alg
        or params["trailer_field"].native != "trailer_field_bc"
    ):
        raise TimestampingFailedError("RSASSA-PSS parameters are not supported", code=code)
    salt = params["salt_length"].native
    return padding.PSS(mgf=padding.MGF1(_CRYPTO_HASHES[digest_alg]()), salt_length=salt)
