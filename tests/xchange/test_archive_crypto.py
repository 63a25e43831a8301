"""Archive encryption to auditors' public keys: RSA-OAEP and ECDH-ES, tampering refused."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from xchange.archive_crypto import (
    ENCRYPTED_MAGIC,
    decrypt_archive,
    encrypt_archive,
    is_encrypted,
    key_id,
)
from xchange.canonical import parse_json
from xchange.errors import BadRequestError

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP384R1())
OTHER = ec.generate_private_key(ec.SECP256R1())
PLAIN = b"PK\x03\x04 an archive" * 100


def header_of(data: bytes) -> dict[str, object]:
    (length,) = struct.unpack(">I", data[8:12])
    doc = parse_json(data[12:12 + length])
    assert isinstance(doc, dict)
    return doc


def test_every_recipient_can_decrypt_and_no_one_else() -> None:
    data = encrypt_archive(PLAIN, [RSA_KEY.public_key(), EC_KEY.public_key()])
    assert is_encrypted(data) and data.startswith(ENCRYPTED_MAGIC)
    assert PLAIN[:20] not in data
    header = header_of(data)
    assert [r["alg"] for r in header["recipients"]] == [  # type: ignore[attr-defined]
        "RSA-OAEP-256", "ECDH-ES+A256KW"]
    assert header["recipients"][0]["kid"] == key_id(RSA_KEY.public_key())  # type: ignore[index]
    assert decrypt_archive(data, RSA_KEY) == PLAIN
    assert decrypt_archive(data, EC_KEY) == PLAIN
    with pytest.raises(BadRequestError, match="not encrypted to this key") as info:
        decrypt_archive(data, OTHER)
    assert info.value.code == "server.messagelog.decryption_failed"


def test_fresh_key_and_iv_each_time() -> None:
    a, b = (encrypt_archive(PLAIN, [OTHER.public_key()]) for _ in range(2))
    assert a != b


@pytest.mark.parametrize("where", ["ciphertext", "tag", "header"])
def test_tampering_is_refused(where: str) -> None:
    data = bytearray(encrypt_archive(PLAIN, [EC_KEY.public_key()]))
    if where == "ciphertext":
        data[len(data) // 2] ^= 1
    elif where == "tag":
        data[-1] ^= 1
    else:
        at = data.index(b'"enc":"A256GCM"') - 1
        data[at:at + 1] = b" "  # still JSON, no longer the authenticated header
    with pytest.raises(BadRequestError):
        decrypt_archive(bytes(data), EC_KEY)


def test_refuses_malformed_files_and_weak_or_no_recipients() -> None:
    with pytest.raises(BadRequestError, match="does not start with XCHENC01"):
        decrypt_archive(b"PK\x03\x04", EC_KEY)
    with pytest.raises(BadRequestError, match="header length"):
        decrypt_archive(ENCRYPTED_MAGIC + struct.pack(">I", 10**9), EC_KEY)
    with pytest.raises(ValueError, match="at least one recipient"):
        encrypt_archive(PLAIN, [])
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    with pytest.raises(ValueError, match="2048"):
        encrypt_archive(PLAIN, [weak.public_key()])
