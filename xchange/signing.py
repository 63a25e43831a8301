"""Message signatures: detached JWS over a message's digest payload.

A JWS (RFC 7515) in compact serialization with the payload detached (appendix F) and not
base64url-encoded (RFC 7797: ``"b64": false``, ``"crit": ["b64"]``), so the signing input is
``BASE64URL(protected header) || "." || payload`` with the raw payload bytes.

The signed payload is :func:`xchange.rest.digest_payload` -- ``SHA-512(header part)`` followed
by ``SHA-512(body)`` when there is a body.  On the wire the token is
``<protected>..<signature>``; the protected header carries

* ``alg``: ``ES256`` for EC P-256 keys (the default), ``PS256`` for RSA keys (``RS256`` is
  accepted on input for RSA signers that cannot do PSS);
* ``x5c``: the signer's certificate chain, leaf first (RFC 7515 section 4.1.6);
* ``typ``: ``xchange-msg+jws`` (checked: a JWS made for another purpose is refused);
* ``b64``: ``false`` and ``crit``: ``["b64"]`` (RFC 7797, checked);
* ``iat`` and ``jti`` (RFC 7519 section 5.3, claims replicated as header parameters): when the
  message was signed (seconds since the epoch) and a random one-time value.  Requests carry
  both; the provider refuses a request signed too long ago or whose ``jti`` it has seen
  (replay protection, :mod:`xchange.replay`).

Verification (:func:`verify_message`) follows a fixed plan and raises
:class:`~xchange.errors.InvalidSignatureError` (with the caller's code) at the first failure;
it never returns a bool.  No clock is read: the verification time is passed in.

**Batch form.**  :func:`sign_batch` signs several messages that wait for the same key with
one signature: a JWS of type ``xchange-batch+jws`` over the root of a Merkle tree
(:mod:`xchange.merkle`, RFC 6962 hashing) of ``n`` leaves (``n`` in its protected header),
whose leaves are the messages' own signing inputs ``BASE64URL(leaf header) || "." ||
payload``, the leaf header holding that message's index ``i``, ``iat`` and ``jti``.  Each
message carries ``JWS "~" leaf header "~" audit path`` (docs/protocol.md, "Batch
signature"); the index and the size are signed, so no field of the form is left unsigned but
the audit path, which the root fixes.  :func:`verify_payload` reads both forms: for a batch
it recomputes the root from the message's own payload and path, then checks the JWS over the
root -- remembered, once it verified, by the exact signed bytes and signature value
(:class:`_VerifiedRoots`), so the other messages of a batch cost a few hashes rather than an ECDSA
verification.  The certificate path, the signer's member and the freshness values are
checked for every message as for a single signature; a batch's protected header is read and
checked once per distinct text, and the certificate path check that last passed for it is
remembered with its anchors and the window in which it holds (:class:`_BatchHeader`), so a
message of a known signer at a time inside that window costs a few lookups.

Tokens are written and read here, with pyca/cryptography for the signature values: a
general JWS library spent most of each message's signing and verification time on JSON and
base64 work that this one fixed token form does not need (docs/performance.md).  The tests
check every token against PyJWT, an independent implementation.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeGuard

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from xchange.body import BodyDigest, MessageBody
from xchange.canonical import parse_json
from xchange.certificates import (
    VerifiedPathCache,
    cert_from_b64der,
    cert_to_b64der,
    member_of_sign_cert,
)
from xchange.errors import BadRequestError, InvalidSignatureError
from xchange.identifiers import ClientId
from xchange.memo import IdentityMemo
from xchange.merkle import HASH_SIZE, merkle_tree, root_from_path
from xchange.rest import digest_payload

__all__ = [
    "ALLOWED_ALGORITHMS",
    "BATCH_JWS_TYPE",
    "JWS_TYPE",
    "MAX_BATCH_SIZE",
    "SigningIdentity",
    "ToSign",
    "VerifiedSignature",
    "sign_batch",
    "sign_message",
    "sign_payload",
    "verify_message",
    "verify_payload",
]

JWS_TYPE = "xchange-msg+jws"
BATCH_JWS_TYPE = "xchange-batch+jws"
"""The ``typ`` of a JWS over a batch's Merkle root: never valid as a message's own JWS, nor
the other way round."""
ALLOWED_ALGORITHMS = frozenset({"ES256", "PS256", "RS256"})
MAX_BATCH_SIZE: Final = 1024
"""The most messages one batch signature may cover (so an audit path has at most 10 hashes)."""
_MAX_PATH_HASHES: Final = (MAX_BATCH_SIZE - 1).bit_length()
_MAX_PATH_CHARS: Final = (_MAX_PATH_HASHES * 32 * 4 + 2) // 3
"""The BASE64URL length of the longest audit path."""
_MAX_JWS_LENGTH = 64 * 1024
_MAX_NONCE_LENGTH = 128
_BATCH_SEPARATOR: Final = "~"

_PATHS = VerifiedPathCache()
"""Signers' certificate paths that verified: one member signs many messages with one chain.
Process-wide and bounded; see :class:`~xchange.certificates.VerifiedPathCache` for why a
remembered path is as good as a new validation."""


_SIGNER_OF: Final = IdentityMemo(member_of_sign_cert)
"""The member named in a signing certificate, read once per parsed certificate."""


@functools.lru_cache(maxsize=256)
def _parse_x5c(x5c: tuple[str, ...]) -> tuple[x509.Certificate, ...]:
    """The certificates of an x5c header, parsed once per distinct chain (certificates are
    immutable; a failure is not cached)."""
    return tuple(cert_from_b64der(c) for c in x5c)


_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=hashes.SHA256.digest_size)
"""PS256 (RFC 7518 section 3.5): MGF1 with SHA-256, a salt as long as the hash."""


@dataclass(frozen=True, slots=True)
class SigningIdentity:
    """A member's signing key and its certificate chain (leaf first)."""

    member: ClientId
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    chain: tuple[x509.Certificate, ...]
    x5c: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """The chain as a JWS ``x5c`` value, encoded once rather than for every message."""

    def __post_init__(self) -> None:
        if isinstance(self.key, ec.EllipticCurvePrivateKey) and not isinstance(
                self.key.curve, ec.SECP256R1):
            raise ValueError("EC signing keys must be P-256 (ES256)")
        object.__setattr__(self, "x5c", tuple(cert_to_b64der(c) for c in self.chain))

    @property
    def algorithm(self) -> str:
        return "ES256" if isinstance(self.key, ec.EllipticCurvePrivateKey) else "PS256"


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    """What a successful verification established."""

    signer: ClientId
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    algorithm: str
    signed_at: datetime | None = None
    """The signer's ``iat``, if it gave one."""
    nonce: str | None = None
    """The signer's ``jti``, if it gave one."""
    batch_size: int | None = None
    """For a batch signature, how many messages its root covers (None: a single one)."""


@dataclass(frozen=True, slots=True)
class ToSign:
    """One message's part in a batch: its digest payload and its own ``iat`` and ``jti``."""

    payload: bytes
    signed_at: datetime | None = None
    nonce: str | None = None


def sign_message(
    identity: SigningIdentity,
    header_part: bytes,
    body: bytes,
    *,
    signed_at: datetime | None = None,
    nonce: str | None = None,
) -> str:
    """Sign a message; return the compact detached JWS.

    ``signed_at`` and ``nonce`` become the protected ``iat`` and ``jti`` parameters.
    """
    return sign_payload(identity, digest_payload(header_part, body), signed_at=signed_at,
                        nonce=nonce)


def sign_payload(
    identity: SigningIdentity,
    payload: bytes,
    *,
    signed_at: datetime | None = None,
    nonce: str | None = None,
) -> str:
    """:func:`sign_message` for a digest payload the caller has already computed (the
    security servers need it for the request hash too, and hash a body only once)."""
    headers = _freshness_members(signed_at, nonce)
    headers.update({"alg": identity.algorithm, "typ": JWS_TYPE, "b64": False,
                    "crit": ["b64"], "x5c": list(identity.x5c)})
    protected = _encode_header(headers)
    signing_input = protected.encode("ascii") + b"." + payload  # RFC 7797: b64 false
    return f"{protected}..{_b64url_encode(_sign_raw(identity, signing_input))}"


def sign_batch(identity: SigningIdentity, messages: Sequence[ToSign]) -> list[str]:
    """Sign ``messages`` with one signature; return each message's signature, in order.

    One message gets the plain form (:func:`sign_payload`); two or more (at most
    :data:`MAX_BATCH_SIZE`) the batch form: a ``xchange-batch+jws`` JWS over the Merkle root
    of the messages' signing inputs, followed by the message's leaf header and its audit path
    (docs/protocol.md, "Batch signature").
    """
    if not 1 <= len(messages) <= MAX_BATCH_SIZE:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH_SIZE} messages")
    if len(messages) == 1:
        m = messages[0]
        return [sign_payload(identity, m.payload, signed_at=m.signed_at, nonce=m.nonce)]
    leaf_headers = [_encode_header({"i": i, **_freshness_members(m.signed_at, m.nonce)})
                    for i, m in enumerate(messages)]
    root, paths = merkle_tree([_leaf(h, m.payload) for h, m in zip(leaf_headers, messages,
                                                                        strict=True)])
    protected = _encode_header({"alg": identity.algorithm, "typ": BATCH_JWS_TYPE, "b64": False,
                                "crit": ["b64"], "n": len(messages), "x5c": list(identity.x5c)})
    raw = _sign_raw(identity, protected.encode("ascii") + b"." + root)
    jws = f"{protected}..{_b64url_encode(raw)}"
    return [_BATCH_SEPARATOR.join((jws, h, _b64url_encode(b"".join(p))))
            for h, p in zip(leaf_headers, paths, strict=True)]


def _freshness_members(signed_at: datetime | None, nonce: str | None) -> dict[str, object]:
    members: dict[str, object] = {}
    if signed_at is not None:
        members["iat"] = int(signed_at.timestamp())
    if nonce is not None:
        if not 16 <= len(nonce) <= _MAX_NONCE_LENGTH or not nonce.isascii():
            raise ValueError("nonce must be 16 to 128 ASCII characters")
        members["jti"] = nonce
    return members


def _encode_header(members: dict[str, object]) -> str:
    # JSON with ASCII escapes only and sorted keys, so the header is ASCII before encoding.
    return _b64url_encode(json.dumps(members, separators=(",", ":"),
                                     sort_keys=True).encode("ascii"))


def _leaf(leaf_header: str, payload: bytes) -> bytes:
    """A batch leaf: the message's signing input as a single signature would have it."""
    return leaf_header.encode("ascii") + b"." + payload


def _sign_raw(identity: SigningIdentity, signing_input: bytes) -> bytes:
    key = identity.key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # RFC 7518 section 3.4
    return key.sign(signing_input, _PSS, hashes.SHA256())


def verify_message(
    signature: str,
    header_part: bytes,
    body: MessageBody | BodyDigest,
    *,
    expected_signer: ClientId,
    anchors: Sequence[x509.Certificate],
    at: datetime,
    code: str,
) -> VerifiedSignature:
    """Verify a detached message signature made by ``expected_signer``'s member
    (see :func:`verify_payload`)."""
    return verify_payload(signature, digest_payload(header_part, body),
                          expected_signer=expected_signer, anchors=anchors, at=at, code=code)


def verify_payload(
    signature: str,
    payload: bytes,
    *,
    expected_signer: ClientId,
    anchors: Sequence[x509.Certificate],
    at: datetime,
    code: str,
) -> VerifiedSignature:
    """Verify a detached signature over a digest payload, made by ``expected_signer``'s member.

    ``signature`` is the single form or the batch form (docs/protocol.md).  Plan:
      1. parse the signature: for the single form, the protected header (``typ``
         ``xchange-msg+jws``, ``iat``/``jti`` in it); for the batch form, the protected header
         (``typ`` ``xchange-batch+jws``, the size ``n``, no ``iat``/``jti``), the leaf header
         (the index ``i``, ``iat``/``jti``) and the audit path, and the root they lead to
         from this payload; then for both: ``b64``/``crit`` as required, ``alg`` allowed,
         ``x5c`` present;
      2. the leaf certificate must chain to one of ``anchors`` at time ``at`` and have the
         signing profile (for the batch form, the last path that verified for that protected
         header is remembered with its anchors and validity window, :class:`_BatchHeader`);
      3. the member named in the leaf must be ``expected_signer``'s member;
      4. the JWS must verify with the leaf's key over the recomputed signing input: the
         digest payload, or the batch's root (a root whose JWS verified before is
         remembered by its exact signed bytes and signature value).
    Every failure raises InvalidSignatureError with ``code``.
    """
    # 1.
    if not isinstance(signature, str) or len(signature) > _MAX_JWS_LENGTH:
        raise InvalidSignatureError("signature missing or too long", code=code)
    if _BATCH_SEPARATOR in signature:
        known, root, raw_signature, leaf_header = _parse_batch(signature, payload, code)
        signed_at, nonce = _freshness(leaf_header, code)
        alg, chain, size, signing_prefix = known.alg, known.chain, known.size, known.prefix
        # 2. and 3. (the member named in the leaf), remembered for the path's window
        signer = known.signer_at(anchors, at, code)
    else:
        header, signing_prefix, raw_signature = _split_detached(signature, code)
        if header.get("typ") != JWS_TYPE:
            raise InvalidSignatureError(f"signature is not of type {JWS_TYPE}", code=code)
        root, size = None, None
        signed_at, nonce = _freshness(header, code)
        alg, chain = _checked_header(header, code)
        # 2. and 3. (the member named in the leaf)
        signer = _signer_at(chain, anchors, at, code)[0]
    # 3.
    if signer != expected_signer.member:
        raise InvalidSignatureError(
            f"signed by {signer}, but the message names {expected_signer.member}", code=code
        )

    # 4.
    leaf = chain[0]
    if root is None:
        _check_leaf_signature(leaf, alg, signing_prefix + payload, raw_signature, code)
    else:
        _ROOTS.check(leaf, alg, signing_prefix, root, raw_signature, code)
    return VerifiedSignature(signer=signer, certificate=leaf, chain=chain, algorithm=alg,
                             signed_at=signed_at, nonce=nonce, batch_size=size)


def _checked_header(header: dict[str, Any], code: str) -> tuple[str, tuple[x509.Certificate, ...]]:
    """Step 1's checks common to both forms: ``b64``/``crit`` as required, ``alg`` allowed,
    ``x5c`` present and readable; return the algorithm and the parsed chain."""
    if header.get("b64") is not False or header.get("crit") != ["b64"]:
        raise InvalidSignatureError("signature must use an unencoded detached payload "
                                    '("b64": false, "crit": ["b64"])', code=code)
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise InvalidSignatureError(f"signature algorithm {alg!r} is not allowed", code=code)
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not x5c or not all(isinstance(c, str) for c in x5c):
        raise InvalidSignatureError("signature has no x5c certificate chain", code=code)
    try:
        chain = _parse_x5c(tuple(x5c))
    except Exception as exc:  # any decoding failure of peer data is a bad signature
        raise InvalidSignatureError("x5c holds an unreadable certificate", code=code) from exc
    return alg, chain


def _signer_at(chain: tuple[x509.Certificate, ...], anchors: Sequence[x509.Certificate],
               at: datetime, code: str) -> tuple[ClientId, list[x509.Certificate]]:
    """Steps 2 and 3 but the comparison: the leaf must chain to one of ``anchors`` at ``at``
    with the signing profile; return the member it names and the path that verified."""
    leaf = chain[0]
    # 2.
    try:
        path = _PATHS.verify(leaf, chain[1:], anchors, at=at, purpose="sign")
    except InvalidSignatureError as exc:
        raise InvalidSignatureError(f"signing certificate: {exc.message}", code=code) from exc
    # 3.
    try:
        return _SIGNER_OF(leaf), path
    except InvalidSignatureError as exc:
        raise InvalidSignatureError(exc.message, code=code) from exc


class _BatchHeader:
    """What a batch's protected header text establishes, whatever the message: checked
    (step 1: ``typ``, no ``iat``/``jti``, ``n``, ``b64``/``crit``, ``alg``, ``x5c``) and read
    once per distinct text (:func:`_batch_header`) -- it holds no ``iat`` or ``jti``, so it is
    the same for every message of a batch and of every batch of that size by that key.

    It also remembers the last certificate path check that passed for it (steps 2 and 3):
    the anchors (the very objects), the window in which every certificate of the path that
    verified is valid, and the member the leaf names.  As in
    :class:`~xchange.certificates.VerifiedPathCache`, a path that verified at one time
    verifies at any time inside that window with the same certificates and anchors, so a
    message at such a time with the same anchors is answered from memory; any other time or
    anchors are checked in full (and remembered in turn).  Failures are never remembered.
    The remembered check is one tuple, replaced whole, so threads may share the object."""

    __slots__ = ("_trusted", "alg", "chain", "prefix", "size")

    def __init__(self, alg: str, chain: tuple[x509.Certificate, ...], prefix: bytes,
                 size: int) -> None:
        self.alg = alg
        self.chain = chain
        self.prefix = prefix
        self.size = size
        self._trusted: tuple[tuple[x509.Certificate, ...], datetime, datetime, ClientId] | None
        self._trusted = None

    def signer_at(self, anchors: Sequence[x509.Certificate], at: datetime,
                  code: str) -> ClientId:
        """Exactly :func:`_signer_at` for this header's chain, from memory when it can be."""
        trusted = self._trusted
        if trusted is not None:
            known_anchors, valid_from, valid_until, signer = trusted
            if (at.utcoffset() is not None and valid_from <= at <= valid_until
                    and (anchors is known_anchors or (
                        len(anchors) == len(known_anchors)
                        and all(a is b for a, b in zip(anchors, known_anchors, strict=True))))):
                return signer
        signer, path = _signer_at(self.chain, anchors, at, code)
        kept = anchors if type(anchors) is tuple else tuple(anchors)  # the caller's, if it can
        self._trusted = (kept, max(c.not_valid_before_utc for c in path),
                         min(c.not_valid_after_utc for c in path), signer)
        return signer


def _parse_batch(signature: str, payload: bytes, code: str
                 ) -> tuple[_BatchHeader, bytes, bytes, dict[str, Any]]:
    """Read a batch-form signature (docs/protocol.md, "Batch signature") for ``payload``:
    the root JWS's protected header (checked, :func:`_batch_header`), the root this
    payload's leaf leads to (the JWS's signing input is the header's prefix and the root),
    its signature value and the leaf header.  Strict:
    exactly three fields; ``n`` an integer, ``2 <= n <= MAX_BATCH_SIZE``; ``i`` an integer
    below ``n``; an audit path in canonical BASE64URL of exactly as many hashes as ``i`` and
    ``n`` call for.
    """
    known, sig, leaf_field, path_field = (_split_recent(signature)
                                          or _split_batch(signature, code))
    size = known.size
    if len(path_field) > _MAX_PATH_CHARS:
        raise InvalidSignatureError("batch signature's audit path is too long", code=code)
    try:
        raw_signature = _b64url_decode(sig)
    except ValueError as exc:
        raise InvalidSignatureError(f"signature is not a JWS: {exc}", code=code) from exc
    try:
        leaf_header = parse_json(_b64url_decode(leaf_field))
        path_bytes = _b64url_decode(path_field)
    except (ValueError, BadRequestError) as exc:
        raise InvalidSignatureError(f"batch signature is malformed: {exc}", code=code) from exc
    if not isinstance(leaf_header, dict) or not leaf_header.keys() <= {"i", "iat", "jti"}:
        raise InvalidSignatureError("batch signature's leaf header holds only i, iat and jti",
                                    code=code)
    index = leaf_header.get("i")
    if not _is_int(index) or not 0 <= index < size:
        raise InvalidSignatureError(
            f"batch signature's leaf index must be 0 to {size - 1}, not {index!r}", code=code)
    if len(path_bytes) % HASH_SIZE or _b64url_encode(path_bytes) != path_field:
        raise InvalidSignatureError("batch signature's audit path is not canonical BASE64URL "
                                    "of whole hashes", code=code)
    path = [path_bytes[i:i + HASH_SIZE] for i in range(0, len(path_bytes), HASH_SIZE)]
    try:
        root = root_from_path(_leaf(leaf_field, payload), index, size, path)
    except ValueError as exc:
        raise InvalidSignatureError(f"batch signature's audit path: {exc}", code=code) from exc
    return known, root, raw_signature, leaf_header


def _split_recent(signature: str) -> tuple[_BatchHeader, str, str, str] | None:
    """:func:`_split_batch` for a signature under a header read lately (as most messages'
    are): only the rest is split, not the 2 KiB header copied twice.  ``None`` for any
    other, and for one that would not split as there (which goes the long way)."""
    for start, known in _recent_headers:
        if signature.startswith(start):
            fields = signature[len(start):].split(_BATCH_SEPARATOR)
            if len(fields) == 3 and "." not in fields[0]:
                return known, fields[0], fields[1], fields[2]
    return None


def _split_batch(signature: str, code: str) -> tuple[_BatchHeader, str, str, str]:
    """The batch form's three fields, its JWS's protected header read and checked
    (:func:`_batch_header`) and signature segment; strict: exactly three fields, a JWS in
    compact form with an empty payload segment."""
    global _recent_headers
    fields = signature.split(_BATCH_SEPARATOR)
    if len(fields) != 3:
        raise InvalidSignatureError("batch signature does not have three fields", code=code)
    jws, leaf_field, path_field = fields
    parts = jws.split(".")
    if len(parts) != 3:
        raise InvalidSignatureError("signature is not a JWS in compact form", code=code)
    protected, attached, sig = parts
    known = _batch_header(protected, code)
    if attached:
        raise InvalidSignatureError("signature must use an unencoded detached payload "
                                    '(the payload segment must be empty)', code=code)
    # A checked header holds neither "." nor "~" (base64url), so a signature that starts
    # with it and "..", and whose rest splits into three fields the first of which holds no
    # ".", splits exactly as above, into this header.
    start = protected + ".."
    _recent_headers = ((start, known), *(
        (s, k) for s, k in _recent_headers if s != start))[:_RECENT_HEADERS]
    return known, sig, leaf_field, path_field


_RECENT_HEADERS: Final = 4
_recent_headers: tuple[tuple[str, _BatchHeader], ...] = ()
"""The batch headers read last, each with the text a signature under it starts with
(``BASE64URL(header) || ".."``), newest first: tried before a signature is split.  Replaced
whole, so threads may share it."""


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_leaf_signature(leaf: x509.Certificate, alg: str, signing_input: bytes, raw: bytes,
                          code: str) -> None:
    _check_signature(leaf.public_key(), alg, signing_input, raw, code)


class _VerifiedRoots:
    """Batch roots whose JWS verified, keyed by the exact signed bytes and signature value.

    The signed bytes are the batch's protected header -- ``alg`` and the whole ``x5c`` chain,
    hence the key that verified -- and its root, so an entry only ever answers for exactly
    those bytes, that key and that signature value: a mathematical fact that does not
    expire.  They are kept as the signing-input prefix (``BASE64URL(header) || "."``) and
    the 32-byte root, not joined: the prefix is the same bytes object for every message of
    a header (:class:`_BatchHeader`), whose hash Python keeps, so a lookup hashes the root
    and the signature value only, not 2 KiB of header.  What depends on the time and the
    trust anchors (the certificate path, the signer's member) is checked for every message
    before this is asked.  Failures are not remembered.  Bounded: the oldest entry goes
    first.  Safe to share between threads (at worst two threads verify the same root)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._known: dict[tuple[bytes, bytes, bytes], None] = {}
        self._lock = threading.Lock()

    def check(self, leaf: x509.Certificate, alg: str, prefix: bytes, root: bytes, raw: bytes,
              code: str) -> None:
        """That ``raw`` is the signature of ``prefix || root`` by ``leaf``'s key."""
        if len(root) != HASH_SIZE:  # the key's parts must join into one signing input only
            raise ValueError("a batch root is one hash")
        key = (prefix, root, raw)
        if key in self._known:
            return
        _check_signature(leaf.public_key(), alg, prefix + root, raw, code)
        with self._lock:
            if len(self._known) >= self._size:
                del self._known[next(iter(self._known))]
            self._known[key] = None

    def __len__(self) -> int:
        return len(self._known)


_ROOTS: Final = _VerifiedRoots(1024)


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_TO_STANDARD_B64: Final = bytes.maketrans(b"-_", b"+/")


def _b64url_decode(segment: str) -> bytes:
    # Strict: base64url without padding.  The alphabet is checked by binascii's strict mode
    # once "-_" are mapped to "+/", so "+", "/" and "=" are refused first; a regular
    # expression over the x5c-laden header cost as much as the decoding itself.
    if len(segment) % 4 == 1 or "+" in segment or "/" in segment or "=" in segment:
        raise ValueError("not unpadded base64url")
    try:
        standard = segment.encode("ascii").translate(_TO_STANDARD_B64)
        return binascii.a2b_base64(standard + b"=" * (-len(segment) % 4), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError("not unpadded base64url") from exc


def _parse_header(protected: str) -> Any:
    return parse_json(_b64url_decode(protected))


_BATCH_HEADERS: Final[dict[str, _BatchHeader]] = {}
_BATCH_HEADERS_SIZE: Final = 256
_BATCH_HEADERS_LOCK: Final = threading.Lock()


def _batch_header(protected: str, code: str) -> _BatchHeader:
    """The batch protected header ``protected`` read and checked (:class:`_BatchHeader`),
    once per distinct text: decoding it (a 2 KiB x5c chain) and checking it was most of a
    batch message's cost once its root verified.  A header that fails is not remembered;
    bounded, the oldest entry going first (a lost entry is read again)."""
    known = _BATCH_HEADERS.get(protected)
    if known is not None:
        return known
    try:
        header = _parse_header(protected)
    except (ValueError, BadRequestError) as exc:
        raise InvalidSignatureError(f"signature is not a JWS: {exc}", code=code) from exc
    if not isinstance(header, dict):
        raise InvalidSignatureError("signature is not a JWS: header is not an object", code=code)
    if header.get("typ") != BATCH_JWS_TYPE:
        raise InvalidSignatureError(f"batch signature is not of type {BATCH_JWS_TYPE}",
                                    code=code)
    if "iat" in header or "jti" in header:
        raise InvalidSignatureError("a batch signature's iat and jti belong in its leaf header",
                                    code=code)
    size = header.get("n")
    if not _is_int(size) or not 2 <= size <= MAX_BATCH_SIZE:
        raise InvalidSignatureError(
            f"batch signature's n must be 2 to {MAX_BATCH_SIZE}, not {size!r}", code=code)
    alg, chain = _checked_header(header, code)
    known = _BatchHeader(alg, chain, protected.encode("ascii") + b".", size)
    with _BATCH_HEADERS_LOCK:
        while len(_BATCH_HEADERS) >= _BATCH_HEADERS_SIZE:
            del _BATCH_HEADERS[next(iter(_BATCH_HEADERS))]
        _BATCH_HEADERS[protected] = known
    return known


def _split_detached(signature: str, code: str) -> tuple[dict[str, Any], bytes, bytes]:
    """Split a compact JWS with a detached payload (RFC 7515 section 7.1, appendix F) into
    its protected header, the signing-input prefix
    ``BASE64URL(header) || "."`` and the signature bytes.  (Done here rather than by PyJWT,
    whose character-by-character base64 check cost over half of a verification, the x5c
    chain being in the header.)"""
    parts = signature.split(".")
    if len(parts) != 3:
        raise InvalidSignatureError("signature is not a JWS in compact form", code=code)
    protected, attached, sig = parts
    try:
        header = _parse_header(protected)
        raw_signature = _b64url_decode(sig)
    except (ValueError, BadRequestError) as exc:
        raise InvalidSignatureError(f"signature is not a JWS: {exc}", code=code) from exc
    if not isinstance(header, dict):
        raise InvalidSignatureError("signature is not a JWS: header is not an object", code=code)
    if attached:
        raise InvalidSignatureError("signature must use an unencoded detached payload "
                                    '(the payload segment must be empty)', code=code)
    return header, protected.encode("ascii") + b".", raw_signature


def _check_signature(public_key: object, alg: str, signing_input: bytes, raw: bytes,
                     code: str) -> None:
    """Verify the JWS signature value (RFC 7518 section 3) with the leaf's key; raise
    InvalidSignatureError unless it verifies and the key fits ``alg``."""
    try:
        if alg == "ES256":
            if not (isinstance(public_key, ec.EllipticCurvePublicKey)
                    and isinstance(public_key.curve, ec.SECP256R1)):
                raise InvalidSignatureError(f"{alg} does not match the certificate's key",
                                            code=code)
            if len(raw) != 64:  # R || S, 32 bytes each (RFC 7518 section 3.4)
                raise InvalidSignature
            der = encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                       int.from_bytes(raw[32:], "big"))
            public_key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
            return
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise InvalidSignatureError(f"{alg} does not match the certificate's key", code=code)
        pad: padding.AsymmetricPadding = _PSS if alg == "PS256" else padding.PKCS1v15()
        public_key.verify(raw, signing_input, pad, hashes.SHA256())
    except InvalidSignature as exc:
        raise InvalidSignatureError("signature does not verify", code=code) from exc


def _freshness(header: dict[str, object], code: str) -> tuple[datetime | None, str | None]:
    iat, jti = header.get("iat"), header.get("jti")
    signed_at = None
    if iat is not None:
        if isinstance(iat, bool) or not isinstance(iat, int) or not 0 < iat < 2**40:
            raise InvalidSignatureError("signature has a malformed iat", code=code)
        signed_at = datetime.fromtimestamp(iat, UTC)
    if jti is not None and (
        not isinstance(jti, str) or not 16 <= len(jti) <= _MAX_NONCE_LENGTH or not jti.isascii()
    ):
        raise InvalidSignatureError("signature has a malformed jti", code=code)
    return signed_at, jti

