"""The batch form of message signatures: one JWS over a Merkle root (xchange/signing.py)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certs.ca import DevCA, IssuedCredentials
from xchange.certificates import cert_to_b64der
from xchange.errors import InvalidSignatureError
from xchange.identifiers import ClientId
from xchange.merkle import leaf_hash, merkle_root, node_hash
from xchange.signing import (
    _ROOTS,
    BATCH_JWS_TYPE,
    JWS_TYPE,
    MAX_BATCH_SIZE,
    SigningIdentity,
    ToSign,
    VerifiedSignature,
    sign_batch,
    verify_payload,
)

MEMBER = ClientId("TEST", "GOV", "1234")
CLIENT = MEMBER.subsystem_of("benefits")
OTHER_MEMBER = ClientId("TEST", "GOV", "5678")
CODE = "server.serverproxy.invalid_signature"


@dataclass(frozen=True)
class Keys:
    now: datetime
    anchors: list[x509.Certificate]
    ec: SigningIdentity
    rsa: SigningIdentity
    other: SigningIdentity


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory, dev_ca: DevCA, pki_now: datetime,
         issue_member_sign: Callable[..., IssuedCredentials]) -> Keys:
    ec_creds = issue_member_sign(str(MEMBER))
    rsa_creds = dev_ca.issue_key_and_cert(
        tmp_path_factory.mktemp("batch-rsa"), "sign", MEMBER, member_name="Test Member",
        now=pki_now, key_kind="rsa")
    other = issue_member_sign(str(OTHER_MEMBER))
    return Keys(now=pki_now, anchors=[dev_ca.certificate],
                ec=SigningIdentity(MEMBER, ec_creds.key, ec_creds.chain),
                rsa=SigningIdentity(MEMBER, rsa_creds.key, rsa_creds.chain),
                other=SigningIdentity(OTHER_MEMBER, other.key, other.chain))


def messages(n: int, now: datetime, tag: str = "m") -> list[ToSign]:
    """``n`` distinct digest payloads (64 or 128 bytes, as real ones are), each with its
    own signing time and one-time value."""
    return [ToSign(payload=bytes([i % 256]) * (64 if i % 2 else 128),
                   signed_at=now - timedelta(seconds=i), nonce=f"{tag}{i:031d}")
            for i in range(n)]


def verify(keys: Keys, signature: str, payload: bytes, *, expected: ClientId = CLIENT,
           at: datetime | None = None, code: str = CODE,
           anchors: Sequence[x509.Certificate] | None = None) -> VerifiedSignature:
    return verify_payload(signature, payload, expected_signer=expected,
                          anchors=keys.anchors if anchors is None else anchors,
                          at=keys.now if at is None else at, code=code)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fields(signature: str) -> list[str]:
    parts = signature.split("~")
    assert len(parts) == 3
    return parts


def with_field(signature: str, index: int, value: str) -> str:
    parts = fields(signature)
    parts[index] = value
    return "~".join(parts)


def header_of(jws: str) -> dict[str, object]:
    header: dict[str, object] = json.loads(b64url_decode(jws.split(".")[0]))
    return header


# -- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 13, 64])
def test_every_message_of_a_batch_verifies_with_its_own_freshness_values(keys: Keys,
                                                                         n: int) -> None:
    batch = messages(n, keys.now)
    signatures = sign_batch(keys.ec, batch)
    assert len(signatures) == n
    for message, signature in zip(batch, signatures, strict=True):
        result = verify(keys, signature, message.payload)
        assert result.signer == MEMBER
        assert result.algorithm == "ES256"
        assert result.nonce == message.nonce
        assert message.signed_at is not None
        assert result.signed_at == message.signed_at.replace(microsecond=0)
        assert result.batch_size == (None if n == 1 else n)
    if n == 1:
        assert "~" not in signatures[0], "a batch of one is the single form"
        assert header_of(signatures[0])["typ"] == JWS_TYPE
    else:
        assert len({fields(s)[0] for s in signatures}) == 1, "one JWS shared by the batch"


def test_rsa_batches_and_responses_without_freshness_values(keys: Keys) -> None:
    batch = [ToSign(payload=bytes([i]) * 128) for i in range(3)]
    signatures = sign_batch(keys.rsa, batch)
    for message, signature in zip(batch, signatures, strict=True):
        result = verify(keys, signature, message.payload)
        assert (result.algorithm, result.nonce, result.signed_at) == ("PS256", None, None)
        assert json.loads(b64url_decode(fields(signature)[1])) == {"i": batch.index(message)}


@pytest.mark.parametrize("which", ["ec", "rsa"])
def test_the_root_jws_verifies_with_another_jws_implementation(keys: Keys, which: str) -> None:
    """The JWS over the root is an ordinary detached RFC 7797 JWS: PyJWT, given the root
    recomputed from every leaf, accepts it."""
    identity: SigningIdentity = getattr(keys, which)
    batch = messages(5, keys.now)
    signatures = sign_batch(identity, batch)
    leaves = [fields(s)[1].encode("ascii") + b"." + m.payload
              for s, m in zip(signatures, batch, strict=True)]
    jws = fields(signatures[0])[0]
    decoded = jwt.PyJWS().decode_complete(
        jws, key=identity.chain[0].public_key(),  # type: ignore[arg-type]
        algorithms=[identity.algorithm], detached_payload=merkle_root(leaves))
    header = decoded["header"]
    assert header["typ"] == BATCH_JWS_TYPE
    assert header["x5c"] == [cert_to_b64der(c) for c in identity.chain]
    assert "iat" not in header and "jti" not in header


def test_batch_size_is_bounded(keys: Keys) -> None:
    with pytest.raises(ValueError, match="1 to 1024"):
        sign_batch(keys.ec, [])
    with pytest.raises(ValueError, match="1 to 1024"):
        sign_batch(keys.ec, [ToSign(b"x" * 64)] * (MAX_BATCH_SIZE + 1))


# -- tampering -----------------------------------------------------------------------------------

Tamper = Callable[[Keys, list[str], list[ToSign]], tuple[str, bytes]]


def _flip_path_byte(keys: Keys, sigs: list[str], batch: list[ToSign]) -> tuple[str, bytes]:
    path = bytearray(b64url_decode(fields(sigs[2])[2]))
    path[5] ^= 1
    return with_field(sigs[2], 2, b64url(bytes(path))), batch[2].payload


def _root_of_another_batch(keys: Keys, sigs: list[str], batch: list[ToSign]) -> tuple[str, bytes]:
    other = sign_batch(keys.ec, messages(5, keys.now, tag="o"))
    return with_field(sigs[2], 0, fields(other[2])[0]), batch[2].payload


def _swap_jti(keys: Keys, sigs: list[str], batch: list[ToSign]) -> tuple[str, bytes]:
    # message 2 claims message 3's leaf header (its iat and jti)
    return with_field(sigs[2], 1, fields(sigs[3])[1]), batch[2].payload


def _flip_signature(keys: Keys, sigs: list[str], batch: list[ToSign]) -> tuple[str, bytes]:
    protected, _, value = fields(sigs[2])[0].split(".")
    raw = bytearray(b64url_decode(value))
    raw[10] ^= 1
    return with_field(sigs[2], 0, f"{protected}..{b64url(bytes(raw))}"), batch[2].payload


def _root_header(change: dict[str, object]) -> Tamper:
    def tamper(keys: Keys, sigs: list[str], batch: list[ToSign]) -> tuple[str, bytes]:
        protected, _, value = fields(sigs[2])[0].split(".")
        header = json.loads(b64url_decode(protected))
        header.update(change)
        new = b64url(json.dumps(header).encode())
        return with_field(sigs[2], 0, f"{new}..{value}"), batch[2].payload
    return tamper


def _leaf_header(value: object) -> Tamper:
    def tamper(keys: Keys, sigs: list[str], batch: list[ToSign]) -> tuple[str, bytes]:
        return with_field(sigs[2], 1, b64url(json.dumps(value).encode())), batch[2].payload
    return tamper


def _field(index: int, value: str) -> Tamper:
    return lambda keys, sigs, batch: (with_field(sigs[2], index, value), batch[2].payload)


def _longer_path(keys: Keys, sigs: list[str], batch: list[ToSign]) -> tuple[str, bytes]:
    path = b64url_decode(fields(sigs[2])[2])
    return with_field(sigs[2], 2, b64url(path + path[:32])), batch[2].payload


def _shorter_path(keys: Keys, sigs: list[str], batch: list[ToSign]) -> tuple[str, bytes]:
    path = b64url_decode(fields(sigs[2])[2])
    return with_field(sigs[2], 2, b64url(path[:-32])), batch[2].payload


def _inner_node_as_leaf(keys: Keys, sigs: list[str], batch: list[ToSign]) -> tuple[str, bytes]:
    """A second-preimage attempt: the tree of 5 read as a tree of 3 whose leaf 1 is the inner
    node over leaves 2 and 3.  The leaf and node prefixes keep the two apart."""
    path = b64url_decode(fields(sigs[2])[2])
    leaf2 = leaf_hash(fields(sigs[2])[1].encode("ascii") + b"." + batch[2].payload)
    sig, _ = _root_header({"n": 3})(keys, sigs, batch)
    sig = with_field(sig, 1, b64url(b'{"i":1}'))
    return with_field(sig, 2, b64url(path[32:])), leaf2 + path[:32]


def _leaf_of(index: int) -> Tamper:
    """Message 2 presented with the leaf header of message ``index``, keeping its own path."""
    return lambda keys, sigs, batch: (with_field(sigs[2], 1, fields(sigs[index])[1]),
                                      batch[2].payload)


TAMPERING: list[tuple[str, Tamper, str]] = [
    ("payload of another message", lambda k, s, b: (s[2], b[3].payload),
     "signature does not verify"),
    ("changed payload", lambda k, s, b: (s[2], b[2].payload[:-1] + b"\x00"),
     "signature does not verify"),
    ("path element", _flip_path_byte, "signature does not verify"),
    ("root of another batch", _root_of_another_batch, "signature does not verify"),
    ("jti swapped within the batch", _swap_jti, "signature does not verify"),
    ("leaf header of another message", _leaf_of(3), "signature does not verify"),
    ("leaf header changed", _leaf_header({"i": 2, "iat": 1, "jti": "x" * 32}),
     "signature does not verify"),
    ("index", _leaf_header({"i": 3}), "signature does not verify"),
    ("size", _root_header({"n": 6}), "signature does not verify"),
    ("signature value", _flip_signature, "signature does not verify"),
    ("x5c of another member", lambda k, s, b: _root_header(
        {"x5c": [cert_to_b64der(c) for c in k.other.chain]})(k, s, b), "signed by TEST/GOV/5678"),
    ("path one hash too long", _longer_path, "longer than the tree is high"),
    ("path one hash too short", _shorter_path, "shorter than the tree is high"),
    ("inner node as a leaf", _inner_node_as_leaf, "signature does not verify"),
    ("path far too long", _field(2, "A" * 428), "audit path is too long"),
    ("path not whole hashes", _field(2, b64url(b"x" * 33)), "not canonical"),
    ("path not canonical", _field(2, b64url(b"x" * 32)[:-1] + "z"), "not canonical"),
    ("path not base64url", _field(2, "AAAA+AAA"), "malformed"),
    ("index out of range", _leaf_header({"i": 5}), "leaf index must be 0 to 4, not 5"),
    ("negative index", _leaf_header({"i": -1}), "leaf index must be 0 to 4"),
    ("index not an integer", _leaf_header({"i": True}), "leaf index must be 0 to 4"),
    ("no index", _leaf_header({"jti": "x" * 32}), "leaf index must be 0 to 4, not None"),
    ("size of one", _root_header({"n": 1}), "n must be 2 to 1024"),
    ("size over the bound", _root_header({"n": MAX_BATCH_SIZE + 1}), "n must be 2 to 1024"),
    ("size not an integer", _root_header({"n": "5"}), "n must be 2 to 1024"),
    ("no size", _root_header({"n": None}), "n must be 2 to 1024"),
    ("two fields", lambda k, s, b: (s[2].rsplit("~", 1)[0], b[2].payload), "three fields"),
    ("four fields", lambda k, s, b: (s[2] + "~", b[2].payload), "three fields"),
    ("leaf header with another member", _leaf_header({"i": 2, "alg": "none"}),
     "only i, iat and jti"),
    ("leaf header not an object", _leaf_header(["jti"]), "only i, iat and jti"),
    ("leaf header not JSON", _field(1, b64url(b"{jti")), "malformed"),
    ("malformed jti in the leaf", _leaf_header({"i": 2, "jti": "short"}), "malformed jti"),
    ("malformed iat in the leaf", _leaf_header({"i": 2, "iat": "now"}), "malformed iat"),
    ("iat in the root header", _root_header({"iat": 1}), "belong in its leaf header"),
    ("jti in the root header", _root_header({"jti": "x" * 32}), "belong in its leaf header"),
    ("root header of a single signature", _root_header({"typ": JWS_TYPE}),
     re.escape(f"not of type {BATCH_JWS_TYPE}")),
    ("root header b64 true", _root_header({"b64": True}), "unencoded detached payload"),
    ("root header alg none", _root_header({"alg": "none"}), "not allowed"),
    ("root header without x5c", _root_header({"x5c": []}), "no x5c"),
    ("attached payload", lambda k, s, b: (s[2].replace("..", ".eA.", 1), b[2].payload),
     "payload segment must be empty"),
    # Under a header just read (the split that skips it): what follows must split alike.
    ("a fourth JWS segment", lambda k, s, b: (s[2].replace("~", ".eA~", 1), b[2].payload),
     "not a JWS in compact form"),
    ("a dot for the signature value", lambda k, s, b: (
        s[2].split("~")[0].rsplit(".", 1)[0] + ".~" + s[2].split("~", 1)[1], b[2].payload),
     "signature does not verify"),
    ("no signature value", lambda k, s, b: (
        s[2].split("~")[0].rsplit(".", 1)[0] + "~" + s[2].split("~", 1)[1], b[2].payload),
     "not a JWS in compact form"),
    ("a field more after the header", lambda k, s, b: (
        s[2].replace("..", "..~", 1), b[2].payload), "three fields"),
    ("too long in all", lambda k, s, b: (s[2] + "A" * 65536, b[2].payload), "too long"),
]


@pytest.mark.parametrize(("tamper", "message"), [(t, m) for _, t, m in TAMPERING],
                         ids=[name for name, _, _ in TAMPERING])
def test_every_tampering_is_refused_with_the_callers_code(keys: Keys, tamper: Tamper,
                                                           message: str) -> None:
    batch = messages(5, keys.now)
    sigs = sign_batch(keys.ec, batch)
    for m, s in zip(batch, sigs, strict=True):  # the untouched batch verifies (and is cached)
        verify(keys, s, m.payload)
    signature, payload = tamper(keys, sigs, batch)
    with pytest.raises(InvalidSignatureError, match=message) as info:
        verify(keys, signature, payload, code="server.clientproxy.invalid_signature")
    assert info.value.code == "server.clientproxy.invalid_signature"


def test_a_root_jws_is_not_a_message_signature_nor_the_other_way_round(keys: Keys) -> None:
    batch = messages(2, keys.now)
    sigs = sign_batch(keys.ec, batch)
    jws, leaf, path = fields(sigs[0])
    root = node_hash(leaf_hash(leaf.encode("ascii") + b"." + batch[0].payload),
                     b64url_decode(path))
    with pytest.raises(InvalidSignatureError, match=re.escape(f"not of type {JWS_TYPE}")):
        verify(keys, jws, root)
    single = sign_batch(keys.ec, batch[:1])[0]
    with pytest.raises(InvalidSignatureError, match=re.escape(f"not of type {BATCH_JWS_TYPE}")):
        verify(keys, "~".join((single, leaf, path)), batch[0].payload)


# -- the cache of verified roots -----------------------------------------------------------------


def test_a_remembered_root_never_accepts_what_it_did_not_verify(
        keys: Keys, issue_member_sign: Callable[..., IssuedCredentials]) -> None:
    batch = messages(4, keys.now)
    sigs = sign_batch(keys.ec, batch)
    before = len(_ROOTS)
    verify(keys, sigs[0], batch[0].payload)
    assert len(_ROOTS) == before + 1
    verify(keys, sigs[1], batch[1].payload)
    assert len(_ROOTS) == before + 1, "the second message of the batch costs no verification"

    # Another message under the remembered root: its leaf leads elsewhere.
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        verify(keys, sigs[0], batch[1].payload)
    # What depends on time, trust anchors and the expected signer is checked every time.
    with pytest.raises(InvalidSignatureError, match="signing certificate"):
        verify(keys, sigs[2], batch[2].payload, at=keys.now + timedelta(days=3650))
    with pytest.raises(InvalidSignatureError, match="signing certificate"):
        verify(keys, sigs[2], batch[2].payload, anchors=[keys.other.chain[0]])
    with pytest.raises(InvalidSignatureError, match="signed by TEST/GOV/1234"):
        verify(keys, sigs[2], batch[2].payload, expected=OTHER_MEMBER)
    # The same root and signature value under another signer's x5c: other signed bytes.
    other_x5c = _root_header({"x5c": [cert_to_b64der(c) for c in keys.other.chain]})
    forged, payload = other_x5c(keys, sigs, batch)
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        verify(keys, forged, payload, expected=OTHER_MEMBER)
    # A failure is not remembered as a success.
    flipped, payload = _flip_signature(keys, sigs, batch)
    for _ in range(2):
        with pytest.raises(InvalidSignatureError, match="does not verify"):
            verify(keys, flipped, payload)
    assert len(_ROOTS) == before + 1
    # And the real messages still verify.
    for m, s in zip(batch, sigs, strict=True):
        assert verify(keys, s, m.payload).nonce == m.nonce


# -- the remembered batch header and its certificate path ---------------------------------------


def _window(keys: Keys) -> tuple[datetime, datetime]:
    """Where every certificate of the EC signer's path (its chain and the anchor) is valid."""
    path = [*keys.ec.chain, *keys.anchors]
    return (max(c.not_valid_before_utc for c in path), min(c.not_valid_after_utc for c in path))


def test_a_remembered_path_holds_only_inside_its_window(keys: Keys) -> None:
    batch = messages(6, keys.now, tag="w")
    sigs = sign_batch(keys.ec, batch)
    verify(keys, sigs[0], batch[0].payload)  # header read and path remembered at "now"
    valid_from, valid_until = _window(keys)
    # Inside the window, at its very edges too, as the uncached check would accept.
    verify(keys, sigs[1], batch[1].payload, at=valid_until)
    verify(keys, sigs[1], batch[1].payload, at=valid_from)
    # A second outside it is checked in full, and refused; whichever order the times come in.
    code = "server.clientproxy.invalid_signature"
    for at, message in ((valid_until + timedelta(seconds=1), "expired"),
                        (valid_from - timedelta(seconds=1), "not yet valid")):
        verify(keys, sigs[2], batch[2].payload)
        for _ in range(2):
            with pytest.raises(InvalidSignatureError, match=message) as info:
                verify(keys, sigs[2], batch[2].payload, at=at, code=code)
            assert info.value.code == code
    # A naive time is a programming error, remembered path or not.
    verify(keys, sigs[3], batch[3].payload)
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(keys, sigs[3], batch[3].payload, at=keys.now.replace(tzinfo=None))
    for m, s in zip(batch, sigs, strict=True):
        assert verify(keys, s, m.payload).signer == MEMBER


def test_a_remembered_path_holds_only_for_the_same_anchors(
        keys: Keys, tmp_path_factory: pytest.TempPathFactory, dev_ca: DevCA,
        pki_now: datetime) -> None:
    batch = messages(4, keys.now, tag="a")
    sigs = sign_batch(keys.ec, batch)
    verify(keys, sigs[0], batch[0].payload)
    # A CA of the same name with another key: not the anchor the path verified with.
    impostor = DevCA.create(tmp_path_factory.mktemp("impostor-ca"), "TEST", now=pki_now)
    assert impostor.certificate.subject == dev_ca.certificate.subject
    for anchors in ([impostor.certificate], [keys.other.chain[0]], []):
        with pytest.raises(InvalidSignatureError, match="signing certificate"):
            verify(keys, sigs[1], batch[1].payload, anchors=anchors)
        verify(keys, sigs[1], batch[1].payload)  # back to the anchors that hold
    # The same CA among others, or a copy of it parsed again: checked in full, accepted.
    copy = x509.load_der_x509_certificate(dev_ca.certificate.public_bytes(Encoding.DER))
    for anchors in ([impostor.certificate, dev_ca.certificate], [copy]):
        assert verify(keys, sigs[2], batch[2].payload, anchors=anchors).signer == MEMBER
    # and after them, an anchor list without it is refused again.
    with pytest.raises(InvalidSignatureError, match="signing certificate"):
        verify(keys, sigs[3], batch[3].payload, anchors=[impostor.certificate])
    # A tuple of anchors is remembered as given (an audit passes the same one for every
    # record); another tuple, or the same certificates in a new one, is compared as above.
    trusted, untrusted = (dev_ca.certificate,), (impostor.certificate,)
    for given in (trusted, trusted, (dev_ca.certificate,)):
        assert verify(keys, sigs[0], batch[0].payload, anchors=given).signer == MEMBER
    with pytest.raises(InvalidSignatureError, match="signing certificate"):
        verify(keys, sigs[1], batch[1].payload, anchors=untrusted)
    assert verify(keys, sigs[1], batch[1].payload, anchors=trusted).signer == MEMBER


def test_a_remembered_path_still_names_its_member(keys: Keys) -> None:
    batch = messages(3, keys.now, tag="o")
    sigs = sign_batch(keys.ec, batch)
    other_batch = messages(3, keys.now, tag="p")
    others = sign_batch(keys.other, other_batch)
    verify(keys, sigs[0], batch[0].payload)
    with pytest.raises(InvalidSignatureError, match="signed by TEST/GOV/1234"):
        verify(keys, sigs[1], batch[1].payload, expected=OTHER_MEMBER)
    # Another signer's batch, its header remembered too, is that signer's only.
    verify(keys, others[0], other_batch[0].payload, expected=OTHER_MEMBER)
    with pytest.raises(InvalidSignatureError, match="signed by TEST/GOV/5678"):
        verify(keys, others[1], other_batch[1].payload)
    assert verify(keys, sigs[2], batch[2].payload).signer == MEMBER


def test_a_header_that_fails_is_not_remembered(keys: Keys) -> None:
    batch = messages(3, keys.now, tag="f")
    sigs = sign_batch(keys.ec, batch)
    bad_alg, payload = _root_header({"alg": "none"})(keys, sigs, batch)
    unreadable, _ = _root_header({"x5c": ["AAAA"]})(keys, sigs, batch)
    for _ in range(2):
        with pytest.raises(InvalidSignatureError, match="not allowed"):
            verify(keys, bad_alg, payload)
        with pytest.raises(InvalidSignatureError, match="unreadable certificate"):
            verify(keys, unreadable, payload)
    assert verify(keys, sigs[2], batch[2].payload).signer == MEMBER


def test_a_remembered_root_is_one_hash(keys: Keys) -> None:
    # The memory keeps the signing input's header prefix and root apart; they must join
    # into one signing input only.
    batch = messages(2, keys.now)
    sigs = sign_batch(keys.ec, batch)
    verify(keys, sigs[0], batch[0].payload)
    for root in (b"", b"\x00" * 31, b"\x00" * 33):
        with pytest.raises(ValueError, match="one hash"):
            _ROOTS.check(keys.ec.chain[0], "ES256", b"prefix.", root, b"\x00" * 64, "code")
