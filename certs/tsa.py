"""A time-stamping authority (RFC 3161) for test and demo federations.

:class:`TimeStampAuthority` answers one DER ``TimeStampReq`` with one DER ``TimeStampResp``:
either *granted*, with a time-stamp token -- a CMS SignedData (RFC 5652) whose encapsulated
content is a ``TSTInfo`` and whose single signer is the TSA key -- or *rejection* with the
RFC 3161 failure bit that says why.  It takes the time and the serial number from its caller
and does no I/O; the HTTP server around it is :mod:`certs.tsa_server`.

What a granted token holds (RFC 3161 2.4.2, RFC 5816, RFC 5652 5):

* TSTInfo: version 1, the TSA's policy, the request's message imprint as sent, the serial
  number, ``genTime`` in whole seconds (UTC), ``accuracy`` when configured, and the request's
  nonce when it had one;
* SignedData version 3 (the content is not id-data), the digest algorithm of the signature,
  the TSA's certificate chain when the request asked for it (``certReq``);
* one SignerInfo identified by issuer and serial number, with the signed attributes
  content-type (id-ct-TSTInfo), signing-time, message-digest and signing-certificate-v2
  (RFC 5035: an ESSCertIDv2 with the SHA-256 of the TSA certificate and its issuer and serial),
  signed with ECDSA (SHA-256 for P-256, SHA-384 for P-384, SHA-512 for P-521) or RSA PKCS#1 v1.5
  with SHA-256 (RSASSA-PSS on request).

Requests are refused (status rejection) with

* ``badDataFormat``: not a DER TimeStampReq, or an imprint of the wrong length;
* ``badRequest``: a version other than 1;
* ``badAlg``: a hash algorithm other than SHA-256, SHA-384 or SHA-512, or with parameters;
* ``unacceptedPolicy``: a requested policy that is not the TSA's;
* ``unacceptedExtension``: any request extension (none is supported).

What it does not: keep time (the caller's clock is its source; a real TSA needs a trusted,
audited one), persist serial numbers (the server draws random 128-bit ones), or implement
the ``ordering`` or ``tsa`` name fields.  Real deployments use a real TSA; security servers
speak the same protocol to either.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from certs.keys import PrivateKey
from xchange.errors import TimestampingFailedError
from xchange.timestamp import (
    HASH_ALGORITHMS,
    TimeStampResp,
    check_tsa_certificate,
    signed_attributes_der,
)

__all__ = ["DEV_TSA_POLICY", "FailInfo", "TimeStampAuthority", "rejection_response"]

DEV_TSA_POLICY: Final = "2.25.37812320523924485716550692077495309477"
"""The TSA policy of the development TSA: a UUID-based OID (ITU-T X.667), which anyone may
make without registering an arc.  It promises nothing beyond "xchange development TSA"."""

FailInfo = Literal[
    "bad_alg",
    "bad_request",
    "bad_data_format",
    "unaccepted_policy",
    "unaccepted_extensions",
    "system_failure",
]
"""RFC 3161 PKIFailureInfo bits this TSA uses (asn1crypto names)."""

_EC_HASHES: Final = {256: "sha256", 384: "sha384", 521: "sha512"}
_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class _Rejected(Exception):
    def __init__(self, fail_info: FailInfo, text: str) -> None:
        super().__init__(text)
        self.fail_info = fail_info
        self.text = text


def rejection_response(fail_info: FailInfo, text: str) -> bytes:
    """A DER TimeStampResp with status rejection, one failure bit and a free text."""
    status = {"status": "rejection", "status_string": [text], "fail_info": {fail_info}}
    return bytes(TimeStampResp({"status": status}).dump())


class TimeStampAuthority:
    """Answers time-stamp requests with tokens signed by ``key``.

    ``cert_chain`` is the TSA certificate first, then its CA certificates (what a token
    carries when the request sets ``certReq``).  The certificate must be a TSA certificate
    (critical extended key usage id-kp-timeStamping only) for ``key``; otherwise
    ``ValueError``.  ``accuracy_seconds`` is what the TSA claims for its clock (None: no
    claim).  ``rsa_padding`` applies to RSA keys.
    """

    def __init__(
        self,
        key: PrivateKey,
        cert_chain: Sequence[x509.Certificate],
        *,
        policy_oid: str = DEV_TSA_POLICY,
        accuracy_seconds: int | None = 1,
        rsa_padding: Literal["pkcs1v15", "pss"] = "pkcs1v15",
    ) -> None:
        if not cert_chain:
            raise ValueError("cert_chain must hold the TSA certificate")
        cert = cert_chain[0]
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
            raise ValueError("the TSA key does not belong to the TSA certificate")
        try:
            check_tsa_certificate(cert)
        except TimestampingFailedError as exc:
            raise ValueError(exc.message) from exc
        try:
            self._policy = core.ObjectIdentifier(policy_oid)
        except ValueError as exc:
            raise ValueError(f"policy {policy_oid!r} is not a dotted OID") from exc
        if accuracy_seconds is not None and accuracy_seconds < 1:
            raise ValueError("accuracy_seconds must be positive")
        self._key = key
        self._chain = [asn1_x509.Certificate.load(c.public_bytes(der)) for c in cert_chain]
        self._certificate = cert
        self._accuracy = accuracy_seconds
        self._rsa_pss = rsa_padding == "pss"
        if isinstance(key, ec.EllipticCurvePrivateKey):
            self._digest = _EC_HASHES.get(key.curve.key_size, "sha256")
        else:
            self._digest = "sha256"
        cert_hash = hashes.Hash(hashes.SHA256())
        cert_hash.update(cert.public_bytes(der))
        self._signing_certificate = {
            # hashAlgorithm is SHA-256, the DEFAULT, so DER leaves it out.
            "certs": [{
                "cert_hash": cert_hash.finalize(),
                "issuer_serial": {
                    "issuer": [asn1_x509.GeneralName({"directory_name": self._chain[0].issuer})],
                    "serial_number": cert.serial_number,
                },
            }],
        }

    @property
    def certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def policy(self) -> str:
        return str(self._policy.dotted)

    def respond(self, request_der: bytes, now: datetime, serial: int) -> bytes:
        """The DER TimeStampResp for ``request_der``, stamped at ``now`` (aware) with
        ``serial`` (a positive integer, unique per token).  Bad requests get a rejection
        response, never an exception."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        if serial <= 0:
            raise ValueError("serial must be a positive integer")
        try:
            request = self._check_request(request_der)
        except _Rejected as exc:
            return rejection_response(exc.fail_info, exc.text)
        token = self._token(request, now.astimezone(UTC).replace(microsecond=0), serial)
        return bytes(
            TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token}).dump()
        )

    # -- requests ---------------------------------------------------------------------------

    def _check_request(self, request_der: bytes) -> tsp.TimeStampReq:
        try:
            request = tsp.TimeStampReq.load(request_der, strict=True)
            request.native  # noqa: B018 (decodes every field now, inside this try)
        except Exception as exc:  # whatever the parser says, the answer is the same
            raise _Rejected("bad_data_format", "not a DER TimeStampReq") from exc
        if request["version"].native != "v1":
            raise _Rejected("bad_request", "only version 1 requests are supported")
        alg = request["message_imprint"]["hash_algorithm"]
        name = alg["algorithm"].native
        if name not in HASH_ALGORITHMS or alg["parameters"].dump() not in (b"", b"\x05\x00"):
            accepted = ", ".join(sorted(HASH_ALGORITHMS))
            raise _Rejected("bad_alg", f"hash algorithm {name} is not accepted ({accepted} are)")
        imprint = request["message_imprint"]["hashed_message"].native
        if len(imprint) != _HASHES[name]().digest_size:
            raise _Rejected("bad_data_format", f"the message imprint is not a {name} hash")
        policy = request["req_policy"]
        if policy.native is not None and policy.dotted != self._policy.dotted:
            raise _Rejected("unaccepted_policy", f"this TSA issues under policy {self.policy} only")
        if request["extensions"].native is not None:
            raise _Rejected("unaccepted_extensions", "request extensions are not supported")
        return request

    # -- tokens -----------------------------------------------------------------------------

    def _token(self, request: tsp.TimeStampReq, gen_time: datetime, serial: int) -> cms.ContentInfo:
        tst: dict[str, Any] = {
            "version": "v1",
            "policy": self._policy,
            "message_imprint": request["message_imprint"],
            "serial_number": serial,
            "gen_time": gen_time,
        }
        if self._accuracy is not None:
            tst["accuracy"] = {"seconds": self._accuracy}
        if request["nonce"].native is not None:
            tst["nonce"] = request["nonce"]
        tst_info = tsp.TSTInfo(tst)
        econtent = bytes(tst_info.dump())
        digest = hashes.Hash(_HASHES[self._digest]())
        digest.update(econtent)
        signed_attrs = cms.CMSAttributes([
            cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}),
            cms.CMSAttribute({"type": "signing_time", "values": [_cms_time(gen_time)]}),
            cms.CMSAttribute({"type": "message_digest", "values": [digest.finalize()]}),
            cms.CMSAttribute({"type": "signing_certificate_v2",
                              "values": [self._signing_certificate]}),
        ])
        signed_attrs.dump()  # encodes (and sorts, as DER wants) the SET OF now
        signature_algorithm, signature = self._sign(signed_attributes_der(signed_attrs))
        signer_info = cms.SignerInfo({
            "version": "v1",
            "sid": cms.SignerIdentifier({"issuer_and_serial_number": {
                "issuer": self._chain[0].issuer,
                "serial_number": self._chain[0].serial_number,
            }}),
            "digest_algorithm": {"algorithm": self._digest},
            "signed_attrs": signed_attrs,
            "signature_algorithm": signature_algorithm,
            "signature": signature,
        })
        signed_data: dict[str, Any] = {
            "version": "v3",
            "digest_algorithms": [{"algorithm": self._digest}],
            "encap_content_info": {"content_type": "tst_info", "content": tst_info},
            "signer_infos": [signer_info],
        }
        if request["cert_req"].native:
            signed_data["certificates"] = self._chain
        return cms.ContentInfo({"content_type": "signed_data", "content": signed_data})

    def _sign(self, data: bytes) -> tuple[algos.SignedDigestAlgorithm, bytes]:
        h = _HASHES[self._digest]()
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            algorithm: dict[str, Any] = {"algorithm": f"{self._digest}_ecdsa"}
            signature = key.sign(data, ec.ECDSA(h))
        elif not self._rsa_pss:
            algorithm = {"algorithm": f"{self._digest}_rsa"}
            signature = key.sign(data, padding.PKCS1v15(), h)
        else:
            algorithm = {
                "algorithm": "rsassa_pss",
                "parameters": {
                    "hash_algorithm": {"algorithm": self._digest},
                    "mask_gen_algorithm": {"algorithm": "mgf1",
                                           "parameters": {"algorithm": self._digest}},
                    "salt_length": h.digest_size,
                },
            }
            pss = padding.PSS(mgf=padding.MGF1(_HASHES[self._digest]()),
                              salt_length=h.digest_size)
            signature = key.sign(data, pss, h)
        return algos.SignedDigestAlgorithm(algorithm), signature


def _cms_time(t: datetime) -> cms.Time:
    # RFC 5652 11.3: UTCTime for 1950-2049, GeneralizedTime otherwise.
    if 1950 <= t.year <= 2049:
        return cms.Time({"utc_time": t})
    return cms.Time({"generalized_time": t})
