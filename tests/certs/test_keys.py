"""Key files (encrypted PKCS#8), secret files and sources, and the self-signed configuration-
signing certificate."""

from __future__ import annotations

import base64
import ssl
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.keys import (
    ProtectedKeyError,
    SecretSource,
    generate_private_key,
    load_private_key,
    random_passphrase,
    read_secret_file,
    self_signed_certificate,
    unsafe_write_plaintext_key,
    write_private_key,
    write_secret_file,
)
from certs.pkcs8 import (
    DEFAULT_SCRYPT_COST,
    PEM_BEGIN,
    PEM_END,
    UNSAFE_TEST_SCRYPT_COST,
    ScryptCost,
    unsafe_scrypt_cost,
)

PASSPHRASE = b"correct horse battery staple"
# DER of the algorithm OIDs that must appear in the file (RFC 8018 A.4, RFC 7914 7, NIST).
OID_PBES2 = bytes.fromhex("06092a864886f70d01050d")
OID_SCRYPT = bytes.fromhex("06092b06010401da47040b")
OID_AES256_CBC = bytes.fromhex("060960864801650304012a")


def _der(path: Path) -> bytes:
    lines = path.read_text().strip().splitlines()
    assert lines[0] == PEM_BEGIN
    return base64.b64decode("".join(lines[1:-1]))


# -- encrypted key files ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_key_file_is_encrypted_owner_only_and_round_trips(tmp_path: Path, kind: str) -> None:
    key = generate_private_key(kind)  # type: ignore[arg-type]
    path = tmp_path / "sub" / "k.key"
    write_private_key(path, key, PASSPHRASE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    der = _der(path)
    assert OID_PBES2 in der and OID_SCRYPT in der and OID_AES256_CBC in der
    plain = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    assert plain not in der
    assert load_private_key(path, PASSPHRASE).public_key() == key.public_key()


def _scrypt_params(cost: ScryptCost) -> bytes:
    """The DER of scrypt's n, r and p (RFC 7914 section 7), as a key file carries them."""
    def integer(value: int) -> bytes:
        content = value.to_bytes(value.bit_length() // 8 + 1, "big")
        return bytes([0x02, len(content)]) + content
    return integer(cost.n) + integer(cost.r) + integer(cost.p)


def test_a_new_process_writes_keys_at_the_default_scrypt_cost(tmp_path: Path) -> None:
    """The suite writes its throwaway keys at a cheap cost (tests/conftest.py); nothing else
    does: a process of its own, as every real ``xchange`` command is, uses the default."""
    assert ScryptCost(2**14, 8, 1) == DEFAULT_SCRYPT_COST
    path = tmp_path / "k.key"
    subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; from certs.keys import "
         "generate_private_key, write_private_key; "
         "write_private_key(Path(sys.argv[1]), generate_private_key(), sys.argv[2].encode())",
         str(path), PASSPHRASE.decode()], check=True, timeout=60)
    der = _der(path)
    assert _scrypt_params(DEFAULT_SCRYPT_COST) in der
    assert _scrypt_params(UNSAFE_TEST_SCRYPT_COST) not in der
    load_private_key(path, PASSPHRASE)


def test_a_cheaper_scrypt_cost_is_written_only_inside_its_block_and_loads(
    tmp_path: Path,
) -> None:
    key = generate_private_key()
    cheap, default = tmp_path / "cheap.key", tmp_path / "default.key"
    with unsafe_scrypt_cost(DEFAULT_SCRYPT_COST):
        with unsafe_scrypt_cost(ScryptCost(2**6, 8, 1)):
            write_private_key(cheap, key, PASSPHRASE)
        write_private_key(default, key, PASSPHRASE)
    assert _scrypt_params(ScryptCost(2**6, 8, 1)) in _der(cheap)
    assert _scrypt_params(DEFAULT_SCRYPT_COST) in _der(default)
    # Both load, in cryptography and in OpenSSL through Python's ssl (the TLS key's reader).
    cert = tmp_path / "cert.pem"
    cert.write_bytes(self_signed_certificate(key, "k", now=datetime.now(UTC)).public_bytes(
        serialization.Encoding.PEM))
    for path in (cheap, default):
        assert load_private_key(path, PASSPHRASE).public_key() == key.public_key()
        ssl.create_default_context().load_cert_chain(cert, path, PASSPHRASE)


@pytest.mark.parametrize("n, r, p", [(0, 8, 1), (1, 8, 1), (1000, 8, 1), (1024, 0, 1),
                                     (1024, 8, 0)])
def test_an_invalid_scrypt_cost_is_refused(n: int, r: int, p: int) -> None:
    with pytest.raises(ValueError, match="not a valid scrypt cost"):
        ScryptCost(n, r, p)


def test_wrong_passphrase_is_a_clear_error_without_the_secret(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_private_key(path, generate_private_key(), PASSPHRASE)
    with pytest.raises(ProtectedKeyError, match="wrong passphrase") as info:
        load_private_key(path, b"Tr0ub4dor&3")
    assert str(path) in str(info.value)
    assert "Tr0ub4dor" not in str(info.value)


def test_missing_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_private_key(path, generate_private_key(), PASSPHRASE)
    with pytest.raises(ProtectedKeyError, match="encrypted, but no passphrase"):
        load_private_key(path, None)


def test_plaintext_key_is_refused_unless_unsafe(tmp_path: Path) -> None:
    key = generate_private_key()
    path = tmp_path / "k.key"
    unsafe_write_plaintext_key(path, key)
    for passphrase in (None, PASSPHRASE):
        with pytest.raises(ProtectedKeyError, match=r"not encrypted.*unsafe_plaintext_keys"):
            load_private_key(path, passphrase)
    assert load_private_key(path, None, unsafe_plaintext=True).public_key() == key.public_key()


def test_keys_encrypted_by_other_tools_load(tmp_path: Path) -> None:
    """cryptography's own PBKDF2 encryption (what ``openssl pkcs8 -topk8`` also writes)."""
    key = generate_private_key()
    path = tmp_path / "k.key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(PASSPHRASE)))
    assert load_private_key(path, PASSPHRASE).public_key() == key.public_key()


def test_damaged_or_foreign_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    path.write_text(f"{PEM_BEGIN}\nAAAA\n{PEM_END}\n")
    with pytest.raises(ProtectedKeyError, match="cannot read"):
        load_private_key(path, PASSPHRASE)
    path.write_text("hello")
    with pytest.raises(ProtectedKeyError, match="not a PEM private key"):
        load_private_key(path, None, unsafe_plaintext=True)


def test_an_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty passphrase"):
        write_private_key(tmp_path / "k.key", generate_private_key(), b"")


def test_existing_file_is_narrowed_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    path.write_text("old")
    path.chmod(0o644)
    write_private_key(path, generate_private_key(), PASSPHRASE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_random_passphrases_are_long_and_distinct() -> None:
    first, second = random_passphrase(), random_passphrase()
    assert first != second
    assert len(first) >= 43 and first.isascii()


# -- secret files and sources -----------------------------------------------------------------


def test_secret_file_drops_one_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_secret_file(path, b"s3cret \r\n")
    assert read_secret_file(path) == b"s3cret "


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602])
def test_secret_file_others_can_use_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret"
    write_secret_file(path, b"s3cret")
    path.chmod(mode)
    with pytest.raises(ProtectedKeyError, match=f"owner only \\(mode {mode:04o}"):
        read_secret_file(path)


@pytest.mark.parametrize(("content", "message"), [(b"", "empty"), (b"\n", "empty")])
def test_empty_secret_file_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "secret"
    write_secret_file(path, content)
    with pytest.raises(ProtectedKeyError, match=message):
        read_secret_file(path)


def test_missing_secret_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProtectedKeyError, match="cannot read"):
        read_secret_file(tmp_path / "absent")
    folder = tmp_path / "dir"
    folder.mkdir(mode=0o700)
    with pytest.raises(ProtectedKeyError, match=r"Is a directory|regular file"):
        read_secret_file(folder)


def test_secret_source_reads_a_file_or_the_given_environment(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_secret_file(path, b"from-file\n")
    assert SecretSource(file=path).read({}) == b"from-file"
    assert SecretSource(env="KEY_PASSPHRASE").read({"KEY_PASSPHRASE": "from-env"}) == \
        b"from-env"
    with pytest.raises(ProtectedKeyError, match="KEY_PASSPHRASE is not set"):
        SecretSource(env="KEY_PASSPHRASE").read({})
    with pytest.raises(ProtectedKeyError, match="KEY_PASSPHRASE is not set or empty"):
        SecretSource(env="KEY_PASSPHRASE").read({"KEY_PASSPHRASE": ""})


@pytest.mark.parametrize(
    ("file", "env", "message"),
    [
        (None, None, "exactly one"),
        (Path("/run/secret"), "KEY_PASSPHRASE", "exactly one"),
        (None, "KEY PASSPHRASE", "not an environment variable name"),
        (None, "1KEY", "not an environment variable name"),
    ],
)
def test_secret_source_needs_exactly_one_valid_source(
    file: Path | None, env: str | None, message: str
) -> None:
    with pytest.raises(ProtectedKeyError, match=message):
        SecretSource(file=file, env=env)


# -- the configuration-signing certificate --------------------------------------------------


def test_self_signed_certificate() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    key = generate_private_key()
    cert = self_signed_certificate(key, "conf signer", now=now, days=10, organization="DEMO")
    assert cert.subject == cert.issuer
    assert cert.public_key() == key.public_key()
    assert cert.not_valid_before_utc == now - timedelta(minutes=5)
    assert cert.not_valid_after_utc == now + timedelta(days=10)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    cert.verify_directly_issued_by(cert)
