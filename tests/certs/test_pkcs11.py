"""Signing keys in a PKCS#11 token (certs.pkcs11) on a real SoftHSM2 token: generated inside,
never extractable, signing through cryptography's key interfaces so that message signatures
and certificate requests verify exactly as with keys in memory."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

from certs.ca import DevCA
from tests.conftest import SoftHsm
from xchange.errors import InvalidSignatureError
from xchange.identifiers import ClientId
from xchange.signing import SigningIdentity, sign_message, verify_message
from xchange_cli.main import main

pkcs11 = pytest.importorskip("pkcs11", reason="python-pkcs11 not installed: pip install "
                                              "xchange[hsm]")
from certs.pkcs11 import (  # noqa: E402 (after the skip)
    Token,
    TokenEcKey,
    TokenError,
    TokenRsaKey,
    generate_sign_key_and_csr,
)

MEMBER = ClientId("TEST", "GOV", "7007")
HEADER, BODY = b'{"id": "m-1"}', b'{"person": "38001010001"}'
CODE = "server.serverproxy.invalid_signature"


def _label() -> str:
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def token(softhsm: SoftHsm) -> Iterator[Token]:
    with Token.open(softhsm.module, softhsm.token_label, softhsm.pin, rw=True) as opened:
        yield opened


def test_generated_key_is_sensitive_and_never_extractable(token: Token,
                                                          softhsm: SoftHsm) -> None:
    label = _label()
    key = token.generate_key(label)
    # Ask the token itself, in a session of our own (logged in already: the login is the
    # process's, not the session's).
    session = pkcs11.lib(str(softhsm.module)).get_token(token_label=softhsm.token_label).open()
    try:
        private = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=label)
        attribute = pkcs11.Attribute
        assert private[attribute.SENSITIVE] is True
        assert private[attribute.EXTRACTABLE] is False
        assert private[attribute.NEVER_EXTRACTABLE] is True
        assert private[attribute.LOCAL] is True  # generated on the token, not imported
        with pytest.raises(pkcs11.AttributeSensitive):
            private[attribute.VALUE]
    finally:
        session.close()
    with pytest.raises(TypeError, match="cannot be exported"):
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    with pytest.raises(TypeError, match="cannot be exported"):
        key.private_numbers()


@pytest.mark.parametrize(("kind", "algorithm"), [("ec", "ES256"), ("rsa", "PS256")])
def test_message_signed_through_the_token_verifies(
    token: Token, dev_ca: DevCA, pki_now: datetime, kind: str, algorithm: str
) -> None:
    """The CSR is signed through the token too (PKCS#1 v1.5 for RSA); the CA checks it."""
    key, csr = generate_sign_key_and_csr(token, _label(), MEMBER, "Token Agency",
                                         kind=kind)  # type: ignore[arg-type]
    cert = dev_ca.issue_from_csr(csr, "sign", now=pki_now)
    identity = SigningIdentity(MEMBER, key, (cert, dev_ca.certificate))
    assert identity.algorithm == algorithm
    signature = sign_message(identity, HEADER, BODY, signed_at=pki_now, nonce=uuid.uuid4().hex)
    verified = verify_message(signature, HEADER, BODY, expected_signer=MEMBER,
                              anchors=[dev_ca.certificate], at=pki_now, code=CODE)
    assert (verified.algorithm, verified.certificate) == (algorithm, cert)
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        verify_message(signature, HEADER, b"another body", expected_signer=MEMBER,
                       anchors=[dev_ca.certificate], at=pki_now, code=CODE)


def test_ecdsa_over_a_prehashed_digest(token: Token) -> None:
    key = token.generate_key(_label())
    assert isinstance(key, TokenEcKey)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(BODY)
    signature = key.sign(digest.finalize(), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    key.public_key().verify(signature, BODY, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        key.public_key().verify(signature, HEADER, ec.ECDSA(hashes.SHA256()))


@pytest.fixture(scope="module")
def rsa_key(softhsm: SoftHsm) -> Iterator[TokenRsaKey]:
    """RSA 3072 generation takes a second or two: one key for the padding tests."""
    with Token.open(softhsm.module, softhsm.token_label, softhsm.pin, rw=True) as opened:
        key = opened.generate_key(_label(), "rsa")
        assert isinstance(key, TokenRsaKey)
        yield key


@pytest.mark.parametrize("salt", [32, padding.PSS.DIGEST_LENGTH, padding.PSS.MAX_LENGTH])
def test_rsa_pss_salt_lengths(rsa_key: TokenRsaKey, salt: int) -> None:
    mgf = padding.MGF1(hashes.SHA256())
    signature = rsa_key.sign(BODY, padding.PSS(mgf, salt), hashes.SHA256())
    rsa_key.public_key().verify(signature, BODY, padding.PSS(mgf, padding.PSS.AUTO),
                                hashes.SHA256())
    with pytest.raises(InvalidSignature):
        rsa_key.public_key().verify(signature, HEADER, padding.PSS(mgf, padding.PSS.AUTO),
                                    hashes.SHA256())


def test_rsa_refuses_what_the_token_mechanisms_do_not_cover(rsa_key: TokenRsaKey) -> None:
    with pytest.raises(UnsupportedAlgorithm, match="MGF1 over the signing hash"):
        rsa_key.sign(BODY, padding.PSS(padding.MGF1(hashes.SHA384()), 32), hashes.SHA256())
    with pytest.raises(UnsupportedAlgorithm, match="SHA-256"):
        rsa_key.sign(BODY, padding.PKCS1v15(), hashes.SHA224())
    with pytest.raises(UnsupportedAlgorithm, match="does not decrypt"):
        rsa_key.decrypt(b"x", padding.PKCS1v15())


def test_signing_from_many_threads_is_serialised_safely(token: Token) -> None:
    key = token.generate_key(_label())
    assert isinstance(key, TokenEcKey)
    public_key = key.public_key()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(25):
                signature = key.sign(BODY, ec.ECDSA(hashes.SHA256()))
                public_key.verify(signature, BODY, ec.ECDSA(hashes.SHA256()))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_refusals_name_token_and_key(softhsm: SoftHsm, token: Token) -> None:
    with pytest.raises(TokenError, match="wrong PIN"):  # checked against the open session's
        Token.open(softhsm.module, softhsm.token_label, b"000000")
    with pytest.raises(TokenError, match=r"'no-such-token'.*no such token"):
        Token.open(softhsm.module, "no-such-token", softhsm.pin)
    with pytest.raises(TokenError, match="cannot"):
        Token.open(Path("/nonexistent/libpkcs11.so"), softhsm.token_label, softhsm.pin)
    with pytest.raises(TokenError, match=r"'absent'.*NoSuchKey"):
        token.private_key("absent")
    label = _label()
    token.generate_key(label)
    with pytest.raises(TokenError, match="already holds an object labelled"):
        token.generate_key(label)


def test_one_login_per_token_and_a_closed_token_refuses_to_sign(softhsm: SoftHsm) -> None:
    """Both share the process's session: the second open logs in no second time (PKCS#11
    would refuse), and the first close does not log the second out."""
    first = Token.open(softhsm.module, softhsm.token_label, softhsm.pin, rw=True)
    second = Token.open(softhsm.module, softhsm.token_label, softhsm.pin)
    label = _label()
    first_key = first.generate_key(label)
    second_key = second.private_key(label)
    first.close()
    first.close()  # twice does nothing
    assert isinstance(second_key, TokenEcKey)
    second_key.sign(BODY, ec.ECDSA(hashes.SHA256()))
    assert isinstance(first_key, TokenEcKey)
    with pytest.raises(TokenError, match="session is closed"):
        first_key.sign(BODY, ec.ECDSA(hashes.SHA256()))
    second.close()
    with pytest.raises(TokenError, match="session is closed"):
        second_key.sign(BODY, ec.ECDSA(hashes.SHA256()))


def test_cli_generates_a_key_in_the_token_and_a_csr_the_ca_issues_from(
    softhsm: SoftHsm, dev_ca: DevCA, pki_now: datetime, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("XCHANGE_TEST_PIN", softhsm.pin.decode())
    label, out = _label(), tmp_path / "sign.csr"
    argv = ["ss", "keys", "generate-pkcs11", "--module", str(softhsm.module),
            "--token-label", softhsm.token_label, "--key-label", label,
            "--pin-env", "XCHANGE_TEST_PIN", "--member", str(MEMBER),
            "--member-name", "Token Agency", "--out-csr", str(out)]
    assert main(argv) == 0
    assert f"generated EC P-256 key {label!r}" in capsys.readouterr().out
    cert = dev_ca.issue_from_csr(out.read_bytes(), "sign", now=pki_now)
    with Token.open(softhsm.module, softhsm.token_label, softhsm.pin) as opened:
        assert opened.private_key(label).public_key() == cert.public_key()
    # the same label again, or a PIN that is not there, is one clear line
    out.unlink()
    assert main(argv) == 1
    assert "already holds an object labelled" in capsys.readouterr().err
    monkeypatch.delenv("XCHANGE_TEST_PIN")
    assert main(argv) == 1
    assert "XCHANGE_TEST_PIN is not set" in capsys.readouterr().err
