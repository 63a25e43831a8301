"""Tests of xchange.canonical and xchange.globalconf: model, envelope, anchor, trust rules."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from certs.keys import self_signed_certificate
from xchange.canonical import canonical_json, parse_json
from xchange.certificates import cert_sha256
from xchange.errors import BadRequestError, GlobalConfOutdatedError
from xchange.globalconf import (
    ApprovedCA,
    ApprovedTSA,
    ConfigurationAnchor,
    FederationSettings,
    GlobalConf,
    GlobalGroupInfo,
    InvalidGlobalConfError,
    MemberInfo,
    SecurityServerInfo,
    TrustedGlobalConf,
    sign_envelope,
    sign_envelope_by,
    verify_envelope,
)
from xchange.identifiers import ClientId, GlobalGroupId, SecurityServerId

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
Signer = tuple[Key, x509.Certificate]


def self_signed(key: Key, cn: str) -> x509.Certificate:
    return self_signed_certificate(key, cn, now=T0)


@pytest.fixture(scope="session")
def signer() -> Signer:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, self_signed(key, "DEV configuration signer")


@pytest.fixture(scope="session")
def rsa_signer() -> Signer:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, self_signed(key, "DEV RSA configuration signer")


@pytest.fixture(scope="session")
def stranger() -> Signer:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, self_signed(key, "not the registry")


@pytest.fixture(scope="session")
def ca_cert() -> x509.Certificate:
    return self_signed(ec.generate_private_key(ec.SECP256R1()), "DEV CA")


@pytest.fixture(scope="session")
def auth_cert() -> x509.Certificate:
    return self_signed(ec.generate_private_key(ec.SECP256R1()), "ss1 auth")


ORG = ClientId("DEV", "GOV", "1234")
SUB = ORG.subsystem_of("REGISTRY")
OTHER = ClientId("DEV", "COM", "5678")
OTHER_SUB = OTHER.subsystem_of("CLIENT")
SS1 = SecurityServerId(ORG, "ss1")
SS2 = SecurityServerId(OTHER, "ss2")
GROUP = GlobalGroupId("DEV", "security-server-owners")


@pytest.fixture(scope="session")
def make_conf(
    ca_cert: x509.Certificate, auth_cert: x509.Certificate
) -> Callable[..., GlobalConf]:
    def make(
        version: int = 1,
        *,
        instance: str = "DEV",
        generated_at: datetime = T0,
        expiry_seconds: int = 600,
        name: str = "Ministry of Tests",
    ) -> GlobalConf:
        return GlobalConf(
            instance=instance,
            version=version,
            generated_at=generated_at,
            expires_at=generated_at + timedelta(seconds=expiry_seconds),
            members=(
                MemberInfo(ClientId.parse(f"{instance}/GOV/1234"), name, ("REGISTRY",)),
                MemberInfo(ClientId.parse(f"{instance}/COM/5678"), "Test Company", ("CLIENT",)),
            ),
            security_servers=(
                SecurityServerInfo(
                    SecurityServerId.parse(f"{instance}/GOV/1234/ss1"),
                    "ss1.example.org:5500",
                    (cert_sha256(auth_cert),),
                    (ClientId.parse(f"{instance}/GOV/1234/REGISTRY"),),
                ),
                SecurityServerInfo(
                    SecurityServerId.parse(f"{instance}/COM/5678/ss2"),
                    "[::1]:5501",
                    ("ab" * 32,),
                    (
                        ClientId.parse(f"{instance}/COM/5678/CLIENT"),
                        ClientId.parse(f"{instance}/GOV/1234/REGISTRY"),
                    ),
                ),
            ),
            global_groups=(
                GlobalGroupInfo(
                    GlobalGroupId(instance, "security-server-owners"),
                    "Owners of security servers",
                    (
                        ClientId.parse(f"{instance}/GOV/1234"),
                        ClientId.parse(f"{instance}/COM/5678"),
                    ),
                ),
            ),
            approved_cas=(ApprovedCA("DEV CA", ca_cert, "http://ocsp.dev.test:8888"),),
            approved_tsas=(ApprovedTSA("DEV TSA", "http://tsa.dev.test:3180", ca_cert),),
            settings=FederationSettings(conf_expiry_seconds=expiry_seconds),
        )

    return make


@pytest.fixture
def anchor(signer: Signer) -> ConfigurationAnchor:
    return ConfigurationAnchor("DEV", (signer[1],), "http://registry.dev.test:4400/globalconf", T0)


def signed(conf: GlobalConf, who: Signer) -> bytes:
    return sign_envelope(conf.to_payload(), who[0], who[1])


# -- canonical JSON --------------------------------------------------------------------------


def test_canonical_json_is_sorted_compact_utf8() -> None:
    value = {"b": [1, True, None], "a": {"z": "é", "y": -3}, "ä": ""}
    assert canonical_json(value) == '{"a":{"y":-3,"z":"é"},"b":[1,true,null],"ä":""}'.encode()


@pytest.mark.parametrize(
    "value",
    [1.0, math.nan, math.inf, {"a": [0.5]}, {1: "x"}, {"a": {1, 2}}, b"bytes", "\ud800"],
    ids=["float", "nan", "inf", "nested-float", "int-key", "set", "bytes", "lone-surrogate"],
)
def test_canonical_json_refuses_ambiguous_values(value: object) -> None:
    with pytest.raises(BadRequestError):
        canonical_json(value)


@pytest.mark.parametrize(
    "data",
    [b'{"a":1,"a":2}', b'{"a":NaN}', b'[Infinity]', b'\xff{}', b'{"a":', b""],
    ids=["duplicate-key", "nan", "infinity", "not-utf8", "truncated", "empty"],
)
def test_parse_json_is_strict(data: bytes) -> None:
    with pytest.raises(BadRequestError):
        parse_json(data)


# -- the model -------------------------------------------------------------------------------


def test_payload_round_trip(make_conf: Callable[..., GlobalConf]) -> None:
    conf = make_conf()
    payload = conf.to_payload()
    assert payload["generated_at"] == "2025-03-01T12:00:00Z"
    assert GlobalConf.from_payload(payload) == conf
    assert GlobalConf.from_payload(payload).to_payload() == payload


def test_queries(make_conf: Callable[..., GlobalConf], auth_cert: x509.Certificate,
                 ca_cert: x509.Certificate) -> None:
    conf = GlobalConf.from_payload(make_conf().to_payload())
    assert conf.is_registered(ORG)
    assert conf.is_registered(SUB)
    assert not conf.is_registered(ORG.subsystem_of("NOPE"))
    assert not conf.is_registered(ClientId("DEV", "GOV", "9999"))
    assert [s.id for s in conf.servers_hosting(SUB)] == [SS1, SS2]
    assert [s.id for s in conf.servers_hosting(OTHER_SUB)] == [SS2]
    # a server's owner member is implicitly its client
    assert {s.id for s in conf.servers_hosting(ORG)} == {s for s in (SS1, SS2) if s.owner == ORG}
    assert conf.is_hosted_on(SUB, SS1) and conf.is_hosted_on(OTHER_SUB, SS2)
    assert not conf.is_hosted_on(OTHER_SUB, SS1)
    ss1 = conf.server(SS1)
    assert ss1 is not None and (ss1.host, ss1.port) == ("ss1.example.org", 5500)
    ss2 = conf.server(SS2)
    assert ss2 is not None and (ss2.host, ss2.port) == ("::1", 5501)
    assert conf.server(SecurityServerId(ORG, "ss9")) is None
    assert conf.server_by_auth_cert_hash(cert_sha256(auth_cert)) == ss1
    assert conf.server_by_auth_cert_hash(cert_sha256(auth_cert).upper()) == ss1
    assert conf.server_by_auth_cert_hash("00" * 32) is None
    assert conf.trust_anchors() == (ca_cert,)
    assert conf.members_of_group(GROUP) == frozenset({ORG, OTHER})
    assert conf.members_of_group(GlobalGroupId("DEV", "nobody")) == frozenset()
    assert conf.member_name(SUB) == "Ministry of Tests"
    assert conf.member_name(OTHER) == "Test Company"
    assert conf.member_name(ClientId("DEV", "GOV", "9999")) is None


_DELETE = object()


def _set(payload: dict[str, Any], path: str, value: object) -> None:
    *parents, last = path.split(".")
    target: Any = payload
    for p in parents:
        target = target[int(p)] if p.isdigit() else target[p]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("extra", 1),
        ("members", _DELETE),
        ("type", "something-else"),
        ("spec_version", 2),
        ("version", 0),
        ("version", 1.0),
        ("version", "1"),
        ("generated_at", "2025-03-01 12:00:00"),
        ("generated_at", "2025-03-01T12:00:00.5Z"),
        ("expires_at", "2025-13-01T12:00:00Z"),
        ("instance", "DE/V"),
        ("members.0.id", "DEV/GOV"),
        ("members.0.id", "DEV/GOV/1234/SUB"),
        ("members.0.extra", True),
        ("members.0.subsystems", ["A", "A"]),
        ("security_servers.0.id", "DEV/GOV/1234"),
        ("security_servers.0.address", "no-port"),
        ("security_servers.0.address", "host:99999"),
        ("security_servers.0.auth_cert_hashes", ["AB" * 32]),
        ("security_servers.0.auth_cert_hashes", []),
        ("security_servers.0.clients", ["DEV/GOV/1234/REGISTRY/x/y"]),
        ("global_groups.0.id", "DEV"),
        ("approved_cas.0.certificate", "bm90IGEgY2VydA=="),
        ("approved_cas.0.certificate", "%%%"),
        ("approved_cas.0.ocsp_url", "ftp://x"),
        ("approved_tsas.0.url", None),
        ("settings.conf_expiry_seconds", 0),
        ("settings.unknown", 1),
        ("settings", {}),
    ],
)
def test_schema_violations_are_refused(
    make_conf: Callable[..., GlobalConf], path: str, value: object
) -> None:
    payload = make_conf().to_payload()
    _set(payload, path, value)
    with pytest.raises(InvalidGlobalConfError) as err:
        GlobalConf.from_payload(payload)
    assert err.value.code == "server.clientproxy.invalid_global_conf"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p["members"].append(copy.deepcopy(p["members"][0])), "listed twice"),
        (lambda p: p["security_servers"][0]["clients"].append("DEV/GOV/1234/NOPE"),
         "not registered"),
        (lambda p: p["global_groups"][0]["members"].append("DEV/GOV/0000"), "not registered"),
        (lambda p: p["security_servers"][1]["auth_cert_hashes"].append(
            p["security_servers"][0]["auth_cert_hashes"][0]), "registered twice"),
        (lambda p: p["members"][0].update(id="XX/GOV/1234"), "not of instance"),
        (lambda p: p.update(expires_at=p["generated_at"]), "not after"),
    ],
    ids=["duplicate-member", "unregistered-client", "unregistered-group-member",
         "shared-auth-cert", "foreign-instance", "expires-before-made"],
)
def test_inconsistent_documents_are_refused(
    make_conf: Callable[..., GlobalConf], mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    payload = make_conf().to_payload()
    mutate(payload)
    with pytest.raises(InvalidGlobalConfError, match=message):
        GlobalConf.from_payload(payload)


# -- the envelope ----------------------------------------------------------------------------


@pytest.mark.parametrize(("who", "alg"), [("signer", "ES256"), ("rsa_signer", "PS256")])
def test_sign_and_verify(
    make_conf: Callable[..., GlobalConf], request: pytest.FixtureRequest, who: str, alg: str
) -> None:
    key, cert = request.getfixturevalue(who)
    payload = make_conf().to_payload()
    data = sign_envelope(payload, key, cert)
    envelope = json.loads(data)
    [sig] = envelope["signatures"]
    assert sig["keyid"] == cert_sha256(cert) and sig["alg"] == alg
    if alg == "ES256":  # raw r||s, not DER
        assert len(base64.urlsafe_b64decode(sig["sig"] + "==")) == 64
    assert verify_envelope(data, [cert]) == payload


def test_verification_does_not_depend_on_wire_formatting(
    make_conf: Callable[..., GlobalConf], signer: Signer
) -> None:
    data = signed(make_conf(), signer)
    reformatted = json.dumps(json.loads(data), indent=4, sort_keys=False).encode()
    assert reformatted != data
    assert verify_envelope(reformatted, [signer[1]]) == json.loads(data)["signed"]


def _tamper_payload(data: bytes) -> bytes:
    assert data.count(b"Ministry of Tests") == 1
    return data.replace(b"Ministry of Tests", b"Ministry of Tesst")


def _tamper_signature(data: bytes) -> bytes:
    envelope = json.loads(data)
    sig = envelope["signatures"][0]["sig"]
    envelope["signatures"][0]["sig"] = ("A" if sig[10] != "A" else "B").join(
        (sig[:10], sig[11:])
    )
    return json.dumps(envelope).encode()


def _tamper_version(data: bytes) -> bytes:
    envelope = json.loads(data)
    envelope["signed"]["version"] += 1
    return json.dumps(envelope).encode()


def _relabel_alg(data: bytes) -> bytes:
    envelope = json.loads(data)
    envelope["signatures"][0]["alg"] = "PS256"
    return json.dumps(envelope).encode()


@pytest.mark.parametrize(
    "tamper", [_tamper_payload, _tamper_signature, _tamper_version, _relabel_alg]
)
def test_tampering_is_detected(
    make_conf: Callable[..., GlobalConf], signer: Signer, tamper: Callable[[bytes], bytes]
) -> None:
    data = tamper(signed(make_conf(), signer))
    with pytest.raises(InvalidGlobalConfError, match="does not verify"):
        verify_envelope(data, [signer[1]])


def test_unknown_key_is_refused(
    make_conf: Callable[..., GlobalConf], signer: Signer, stranger: Signer
) -> None:
    with pytest.raises(InvalidGlobalConfError, match="not signed by a trusted key"):
        verify_envelope(signed(make_conf(), stranger), [signer[1]])


def test_signature_by_another_key_under_a_trusted_keyid_is_refused(
    make_conf: Callable[..., GlobalConf], signer: Signer, stranger: Signer
) -> None:
    envelope = json.loads(signed(make_conf(), stranger))
    envelope["signatures"][0]["keyid"] = cert_sha256(signer[1])
    with pytest.raises(InvalidGlobalConfError, match="does not verify"):
        verify_envelope(json.dumps(envelope).encode(), [signer[1]])


def test_one_trusted_valid_signature_is_enough(
    make_conf: Callable[..., GlobalConf], signer: Signer, stranger: Signer
) -> None:
    # Room for key rotation: signatures by keys the verifier does not know are ignored.
    mine = json.loads(signed(make_conf(), signer))
    theirs = json.loads(signed(make_conf(), stranger))
    mine["signatures"] = theirs["signatures"] + mine["signatures"]
    verify_envelope(json.dumps(mine).encode(), [signer[1]])


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"signed": {}}',
        b'{"signed": {}, "signatures": []}',
        b'{"signed": {}, "signatures": [{"keyid": "x", "alg": "ES256", "sig": "AA"}]}',
        b'{"signed": {}, "signatures": [], "extra": 1}',
        b'{"signed": {"version": 1.5}, "signatures": [{"keyid": "' + b"a" * 64
        + b'", "alg": "ES256", "sig": "AA"}]}',
    ],
    ids=["not-json", "array", "no-signatures", "empty-signatures", "bad-keyid", "extra-key",
         "float-in-payload"],
)
def test_malformed_envelopes_are_refused(signer: Signer, data: bytes) -> None:
    with pytest.raises(InvalidGlobalConfError):
        verify_envelope(data, [signer[1]])


def test_verify_needs_trusted_certificates(
    make_conf: Callable[..., GlobalConf], signer: Signer
) -> None:
    with pytest.raises(ValueError, match="no trusted certificates"):
        verify_envelope(signed(make_conf(), signer), [])


def test_signed_payload_must_match_schema(signer: Signer) -> None:
    # A correctly signed but schema-invalid payload: sign the bytes by hand.
    key, cert = signer
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    payload = {"type": "xchange-global-conf"}
    r, s = decode_dss_signature(key.sign(canonical_json(payload), ec.ECDSA(hashes.SHA256())))
    sig = base64.urlsafe_b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    envelope = {"signed": payload, "signatures": [
        {"keyid": cert_sha256(cert), "alg": "ES256", "sig": sig.rstrip(b"=").decode()}]}
    data = json.dumps(envelope).encode()
    with pytest.raises(InvalidGlobalConfError, match="schema"):
        verify_envelope(data, [cert])


def test_sign_refuses_mismatched_key_and_invalid_payload(
    make_conf: Callable[..., GlobalConf], signer: Signer, stranger: Signer
) -> None:
    payload = make_conf().to_payload()
    with pytest.raises(ValueError, match="does not match"):
        sign_envelope(payload, signer[0], stranger[1])
    payload["version"] = 0
    with pytest.raises(InvalidGlobalConfError):
        sign_envelope(payload, signer[0], signer[1])


# -- the anchor ------------------------------------------------------------------------------


def test_anchor_round_trip(anchor: ConfigurationAnchor) -> None:
    assert ConfigurationAnchor.from_json(anchor.to_json()) == anchor


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(certificates=[]),
        lambda d: d.update(certificates=["bm90IGEgY2VydA=="]),
        lambda d: d.update(download_url="file:///etc/passwd"),
        lambda d: d.pop("instance"),
        lambda d: d.update(type="xchange-global-conf"),
    ],
    ids=["no-certs", "bad-cert", "bad-url", "no-instance", "wrong-type"],
)
def test_bad_anchors_are_refused(
    anchor: ConfigurationAnchor, mutate: Callable[[dict[str, Any]], None]
) -> None:
    doc = json.loads(anchor.to_json())
    mutate(doc)
    with pytest.raises(InvalidGlobalConfError):
        ConfigurationAnchor.from_json(json.dumps(doc).encode())


# -- the trusted state machine ---------------------------------------------------------------


def test_nothing_loaded_is_outdated(anchor: ConfigurationAnchor) -> None:
    trusted = TrustedGlobalConf(anchor)
    assert trusted.expires_at is None
    with pytest.raises(GlobalConfOutdatedError) as err:
        trusted.current(now=T0)
    assert err.value.code == "server.clientproxy.global_conf_outdated"


def test_update_then_expire(
    anchor: ConfigurationAnchor, make_conf: Callable[..., GlobalConf], signer: Signer
) -> None:
    trusted = TrustedGlobalConf(anchor)
    conf = trusted.update(signed(make_conf(), signer), now=T0)
    assert conf.version == 1
    assert trusted.expires_at == T0 + timedelta(seconds=600)
    assert trusted.current(now=T0 + timedelta(seconds=599)) == conf
    with pytest.raises(GlobalConfOutdatedError, match="expired"):
        trusted.current(now=T0 + timedelta(seconds=600))


def test_newer_versions_replace_older(
    anchor: ConfigurationAnchor, make_conf: Callable[..., GlobalConf], signer: Signer
) -> None:
    trusted = TrustedGlobalConf(anchor)
    trusted.update(signed(make_conf(1), signer), now=T0)
    later = T0 + timedelta(seconds=60)
    conf = trusted.update(signed(make_conf(2, generated_at=later), signer), now=later)
    assert trusted.current(now=later) == conf and conf.version == 2
    assert trusted.expires_at == later + timedelta(seconds=600)


def test_equal_version_identical_is_a_no_op(
    anchor: ConfigurationAnchor, make_conf: Callable[..., GlobalConf], signer: Signer
) -> None:
    trusted = TrustedGlobalConf(anchor)
    first = trusted.update(signed(make_conf(3), signer), now=T0)
    # A fresh ECDSA signature makes different wire bytes over the same payload.
    again = trusted.update(signed(make_conf(3), signer), now=T0 + timedelta(seconds=1))
    assert again is first


_LATER = T0 + timedelta(seconds=10)
Offer = Callable[[Callable[..., GlobalConf], Signer, Signer], bytes]


@pytest.mark.parametrize(
    ("offer", "message"),
    [
        (lambda make, me, _: signed(make(4), me), "rollback"),
        (lambda make, me, _: signed(make(5, name="Changed"), me), "differs"),
        (lambda make, me, _: signed(make(6, generated_at=T0 - timedelta(seconds=700)), me),
         "expired"),
        (lambda make, me, _: signed(make(6, instance="PROD"), me), "instance"),
        (lambda make, _, other: signed(make(6), other), "trusted key"),
        (lambda make, me, _: _tamper_payload(signed(make(6), me)), "does not verify"),
        (lambda *_: b"\x00garbage", "JSON"),
    ],
    ids=["rollback", "same-version-other-content", "expired", "other-instance", "stranger",
         "tampered", "garbage"],
)
def test_refused_updates_keep_the_last_good_copy(
    anchor: ConfigurationAnchor,
    make_conf: Callable[..., GlobalConf],
    signer: Signer,
    stranger: Signer,
    offer: Offer,
    message: str,
) -> None:
    trusted = TrustedGlobalConf(anchor)
    good = trusted.update(signed(make_conf(5), signer), now=T0)
    with pytest.raises(InvalidGlobalConfError, match=message):
        trusted.update(offer(make_conf, signer, stranger), now=_LATER)
    assert trusted.current(now=_LATER) is good
    assert trusted.expires_at == good.expires_at


def test_naive_time_is_a_programming_error(anchor: ConfigurationAnchor) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        TrustedGlobalConf(anchor).current(now=datetime(2025, 1, 1))


# -- configuration-signing key rotation -------------------------------------------------------


def _with_keys(conf: GlobalConf, *keys: Signer) -> GlobalConf:
    return dataclasses.replace(conf, signing_keys=tuple(k[1] for k in keys))


def test_rotation_new_key_announced_by_the_old_one(
    anchor: ConfigurationAnchor, make_conf: Callable[..., GlobalConf], signer: Signer,
    stranger: Signer,
) -> None:
    """old signs v1; old announces new in v2; both sign v3; new alone signs v4 and drops old."""
    new = stranger  # a key nobody trusts yet
    trusted = TrustedGlobalConf(anchor)
    trusted.update(signed(make_conf(1), signer), now=T0)
    with pytest.raises(InvalidGlobalConfError, match="trusted key"):
        trusted.update(signed(make_conf(2), new), now=T0)  # not announced: unknown key

    trusted.update(signed(_with_keys(make_conf(2), signer, new), signer), now=T0)
    assert {cert_sha256(c) for c in trusted.trusted_keys} == {
        cert_sha256(signer[1]), cert_sha256(new[1])}
    both = sign_envelope_by(_with_keys(make_conf(3), signer, new).to_payload(), [signer, new])
    assert trusted.update(both, now=T0).version == 3
    assert trusted.update(signed(_with_keys(make_conf(4), new), new), now=T0).version == 4
    assert [cert_sha256(c) for c in trusted.trusted_keys] == [cert_sha256(new[1])]

    # The retired key is not trusted any more, even for a newer version.
    with pytest.raises(InvalidGlobalConfError, match="trusted key"):
        trusted.update(signed(_with_keys(make_conf(9), signer), signer), now=T0)
    # Rollback refusal still holds after a rotation.
    with pytest.raises(InvalidGlobalConfError, match="rollback"):
        trusted.update(signed(_with_keys(make_conf(3), new), new), now=T0)


def test_learned_keys_survive_a_restart(
    anchor: ConfigurationAnchor, make_conf: Callable[..., GlobalConf], signer: Signer,
    stranger: Signer,
) -> None:
    restarted = TrustedGlobalConf(anchor, learned_keys=[stranger[1]])
    conf = restarted.update(signed(_with_keys(make_conf(7), stranger), stranger), now=T0)
    assert conf.signing_keys == (stranger[1],)


def test_signing_keys_round_trip_and_stay_optional(
    make_conf: Callable[..., GlobalConf], signer: Signer, stranger: Signer
) -> None:
    plain = make_conf()
    assert "signing_keys" not in plain.to_payload()
    rotated = _with_keys(plain, signer, stranger)
    assert GlobalConf.from_payload(rotated.to_payload()) == rotated
    with pytest.raises(InvalidGlobalConfError, match="listed twice"):
        _with_keys(plain, signer, signer)
    with pytest.raises(ValueError, match="1 to 16 signers"):
        sign_envelope_by(plain.to_payload(), [])
