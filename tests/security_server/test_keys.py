"""A security server's keys at start (security_server.keys) and its signing (Runtime.sign):
encrypted key files, the unsafe plaintext switch, passphrase sources, keys in a SoftHSM2
token signing in a thread, and what a failing token answers."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from certs.ca import DevCA
from certs.keys import unsafe_write_plaintext_key, write_certificate, write_secret_file
from security_server.confclient import GlobalConfClient
from security_server.config import ConfigError, SecurityServerConfig
from security_server.db import create_db_engine, create_tables
from security_server.keys import ServerKeys, load_keys
from security_server.logstamper import LogStamper
from security_server.messagelog import MessageLog
from security_server.ocsp import OwnCertificates
from security_server.runtime import Runtime
from security_server.timestamper import TsaClient
from tests.conftest import SoftHsm
from tests.security_server.test_config import MINIMAL
from xchange.errors import XRoadError
from xchange.globalconf import ConfigurationAnchor
from xchange.identifiers import ClientId, SecurityServerId
from xchange.rest import digest_payload
from xchange.signing import verify_payload

MEMBER = ClientId("TEST", "GOV", "4242")
SERVER = SecurityServerId(MEMBER, "ss-keys")
VARIABLE = "XCHANGE_TEST_KEY_PASSPHRASE"


@dataclass
class Files:
    folder: Path
    ca: DevCA

    def config(self, keys: str = f'passphrase_env = "{VARIABLE}"', signing: str = "") -> Path:
        signing = signing or 'member = "TEST/GOV/4242"\nkey = "sign.key"\ncert = "sign.pem"'
        text = MINIMAL.replace('id = "TEST/GOV/1234/ss1"', f'id = "{SERVER}"').replace(
            "signing = []\n", f"{keys}\n[[keys.signing]]\n{signing}\n")
        path = self.folder / "security-server.toml"
        path.write_text(text)
        return path

    @property
    def environ(self) -> dict[str, str]:
        return {VARIABLE: self.ca.key_passphrase.decode()}


@pytest.fixture
def files(tmp_path: Path, dev_ca: DevCA, pki_now: datetime) -> Files:
    dev_ca.issue_key_and_cert(tmp_path, "auth", SERVER, member_name="Keys", now=pki_now)
    dev_ca.issue_key_and_cert(tmp_path, "sign", MEMBER, member_name="Keys", now=pki_now)
    return Files(tmp_path, dev_ca)


def _load(path: Path, environ: dict[str, str]) -> ServerKeys:
    return load_keys(SecurityServerConfig.from_file(path).from_env(environ))


# -- key files ----------------------------------------------------------------------------------


def test_encrypted_keys_load_with_the_passphrase_from_a_variable(files: Files) -> None:
    keys = _load(files.config(), files.environ)
    assert set(keys.identities) == {MEMBER}
    assert keys.in_token == frozenset()


def test_passphrase_file_works_and_must_be_owner_only(files: Files) -> None:
    secret = files.folder / "passphrase"
    write_secret_file(secret, files.ca.key_passphrase + b"\n")
    path = files.config('passphrase_file = "passphrase"')
    assert set(_load(path, {}).identities) == {MEMBER}
    secret.chmod(0o640)
    with pytest.raises(ConfigError, match="readable by its owner only"):
        SecurityServerConfig.from_file(path).from_env({})


def test_missing_variable_is_refused_at_from_env(files: Files) -> None:
    with pytest.raises(ConfigError, match=f"{VARIABLE} is not set"):
        SecurityServerConfig.from_file(files.config()).from_env({})


def test_wrong_passphrase_names_the_key(files: Files) -> None:
    with pytest.raises(ConfigError, match=r"keys.auth_key: .*wrong passphrase"):
        _load(files.config(), {VARIABLE: "not the passphrase"})


def test_keys_need_a_passphrase_source(files: Files) -> None:
    with pytest.raises(ConfigError, match=r"keys.auth_key: .*encrypted, but no passphrase"):
        _load(files.config(keys=""), {})


def test_plaintext_keys_are_refused_unless_unsafe(files: Files, pki_now: datetime,
                                                  tmp_path: Path) -> None:
    for name in ("auth", "sign"):
        (files.folder / f"{name}.key").unlink()
    plain = files.ca.issue_key_and_cert(tmp_path / "plain", "auth", SERVER, member_name="Keys",
                                        now=pki_now)
    unsafe_write_plaintext_key(files.folder / "auth.key", plain.key)
    (files.folder / "auth.pem").write_bytes(plain.cert_path.read_bytes())
    signing = files.ca.issue_key_and_cert(tmp_path / "plain", "sign", MEMBER,
                                          member_name="Keys", now=pki_now)
    unsafe_write_plaintext_key(files.folder / "sign.key", signing.key)
    (files.folder / "sign.pem").write_bytes(signing.cert_path.read_bytes())

    with pytest.raises(ConfigError, match=r"keys.auth_key: .*not encrypted"):
        _load(files.config(keys=""), {})
    keys = _load(files.config(keys="unsafe_plaintext_keys = true"), {})
    assert set(keys.identities) == {MEMBER}


def test_a_key_that_does_not_belong_to_its_certificate_is_refused(files: Files) -> None:
    (files.folder / "sign.pem").write_bytes((files.folder / "auth.pem").read_bytes())
    with pytest.raises(ConfigError, match="does not belong to the certificate"):
        _load(files.config(), files.environ)


def test_secrets_are_not_read_without_from_env(files: Files) -> None:
    with pytest.raises(ConfigError, match="from_env"):
        load_keys(SecurityServerConfig.from_file(files.config()))


# -- keys in a token --------------------------------------------------------------------------


@dataclass
class TokenSetup:
    config: Path
    environ: dict[str, str]
    key_label: str


@pytest.fixture
def token_setup(files: Files, softhsm: SoftHsm, pki_now: datetime) -> TokenSetup:
    from certs.pkcs11 import Token, generate_sign_key_and_csr

    label = f"ss-test-{uuid.uuid4().hex}"
    with Token.open(softhsm.module, softhsm.token_label, softhsm.pin, rw=True) as token:
        _key, csr = generate_sign_key_and_csr(token, label, MEMBER, "Keys")
    (files.folder / "sign.key").unlink()
    cert = files.ca.issue_from_csr(csr, "sign", now=pki_now)
    write_certificate(files.folder / "sign.pem", cert, files.ca.certificate)
    signing = (f'member = "{MEMBER}"\ncert = "sign.pem"\n'
               f'pkcs11 = {{ module = "{softhsm.module}", token_label = "{softhsm.token_label}", '
               f'key_label = "{label}", pin_env = "XCHANGE_TEST_PIN" }}')
    return TokenSetup(files.config(signing=signing),
                      {**files.environ, "XCHANGE_TEST_PIN": softhsm.pin.decode()}, label)


def test_token_key_is_found_by_label_and_marked_as_in_token(token_setup: TokenSetup) -> None:
    from certs.pkcs11 import TokenEcKey

    keys = _load(token_setup.config, token_setup.environ)
    try:
        key = keys.identities[MEMBER].key
        assert isinstance(key, TokenEcKey) and key.label == token_setup.key_label
        assert keys.in_token == frozenset({MEMBER})
        assert len(keys.tokens) == 1
    finally:
        keys.close()


def test_wrong_pin_and_unknown_label_are_refused(token_setup: TokenSetup) -> None:
    with pytest.raises(ConfigError, match="wrong PIN"):
        _load(token_setup.config, {**token_setup.environ, "XCHANGE_TEST_PIN": "0000"})
    text = token_setup.config.read_text().replace(token_setup.key_label, "no-such-key")
    token_setup.config.write_text(text)
    with pytest.raises(ConfigError, match=r"'no-such-key'.*NoSuchKey"):
        _load(token_setup.config, token_setup.environ)


class _Offline:
    async def fetch(self, url: str) -> bytes:
        raise OSError("no registry in this test")


class _NoOcsp:
    async def fetch(self, url: str, request: bytes) -> bytes:
        raise OSError("no OCSP responder in this test")


@contextlib.asynccontextmanager
async def offline_runtime(config: SecurityServerConfig, keys: ServerKeys, dev_ca: DevCA,
                          now: datetime) -> AsyncIterator[Runtime]:
    """A runtime over ``keys`` and a message log in ``config``'s database; its configuration
    client, OCSP fetcher and time-stamper are never asked."""
    engine = create_db_engine(config.database_url)
    create_tables(engine)
    log = MessageLog(engine)
    anchor = ConfigurationAnchor("TEST", (dev_ca.certificate,), "http://127.0.0.1:9/", now)
    conf = GlobalConfClient(anchor, config.state_dir, _Offline(), lambda: now)
    own = OwnCertificates([], config.state_dir, _NoOcsp(), lambda: now)
    stamper = LogStamper(log, TsaClient(lambda: ()), clock=lambda: now)
    rt = Runtime(config, conf, log, keys.identities, own, stamper, in_token=keys.in_token)
    try:
        yield rt
    finally:
        await rt.close()
        log.close()
        engine.dispose()


@pytest.fixture
async def runtime(token_setup: TokenSetup, dev_ca: DevCA,
                  pki_now: datetime) -> AsyncIterator[tuple[Runtime, ServerKeys]]:
    """A runtime over real keys, log and configuration client (the latter two unused)."""
    config = SecurityServerConfig.from_file(token_setup.config).from_env(token_setup.environ)
    keys = load_keys(config)
    try:
        async with offline_runtime(config, keys, dev_ca, pki_now) as rt:
            yield rt, keys
    finally:
        keys.close()


async def test_runtime_signs_through_the_token_and_the_signature_verifies(
    runtime: tuple[Runtime, ServerKeys], dev_ca: DevCA, pki_now: datetime
) -> None:
    rt, _keys = runtime
    payload = digest_payload(b'{"id": "m1"}', b"body")
    signature = await rt.sign(rt.identities[MEMBER], payload, side="client", signed_at=pki_now,
                              nonce=uuid.uuid4().hex)
    verified = verify_payload(signature, payload, expected_signer=MEMBER,
                              anchors=[dev_ca.certificate], at=pki_now,
                              code="server.serverproxy.invalid_signature")
    assert verified.signer == MEMBER and verified.algorithm == "ES256"


@pytest.mark.parametrize("side", ["client", "server"])
async def test_a_failing_token_is_cannot_create_signature(
    runtime: tuple[Runtime, ServerKeys], side: str
) -> None:
    rt, keys = runtime
    keys.close()  # the token is gone: every signature fails
    with pytest.raises(XRoadError) as info:
        await rt.sign(rt.identities[MEMBER], b"x" * 64, side=side)  # type: ignore[arg-type]
    assert info.value.code == f"server.{side}proxy.cannot_create_signature"
    assert "could not sign as TEST/GOV/4242" in info.value.message
