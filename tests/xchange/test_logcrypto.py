"""Tests of the message log's AES-256-GCM field encryption and keyring."""

from __future__ import annotations

import pytest

from xchange.logcrypto import Keyring, LogDecryptionError, UnknownKeyError

K1, K2 = b"\x01" * 32, b"\x02" * 32
HASH_A, HASH_B = "a" * 64, "b" * 64


def test_round_trip_with_a_fresh_nonce_each_time() -> None:
    ring = Keyring({"k1": K1}, "k1")
    one = ring.encrypt("body", b"secret body", HASH_A)
    two = ring.encrypt("body", b"secret body", HASH_A)
    assert one != two and b"secret" not in one
    assert len(one) == 12 + len(b"secret body") + 16
    assert ring.decrypt("k1", "body", one, HASH_A) == b"secret body"
    assert ring.decrypt("k1", "body", ring.encrypt("body", b"", HASH_A), HASH_A) == b""


def test_rotation_reads_old_fields_with_their_key() -> None:
    old = Keyring({"k1": K1}, "k1").encrypt("body", b"old", HASH_A)
    ring = Keyring({"k1": K1, "k2": K2}, "k2")
    new = ring.encrypt("body", b"new", HASH_A)
    assert ring.decrypt("k1", "body", old, HASH_A) == b"old"
    assert ring.decrypt("k2", "body", new, HASH_A) == b"new"
    with pytest.raises(LogDecryptionError):
        ring.decrypt("k1", "body", new, HASH_A)  # the row's key id matters


@pytest.mark.parametrize(
    ("name", "record_hash", "alter"),
    [
        ("header_part", HASH_A, False),  # moved to the other field
        ("body", HASH_B, False),  # moved to another record
        ("body", HASH_A, True),  # one bit flipped
    ],
)
def test_altered_or_moved_ciphertext_does_not_decrypt(name: str, record_hash: str,
                                                      alter: bool) -> None:
    ring = Keyring({"k1": K1}, "k1")
    stored = bytearray(ring.encrypt("body", b"secret", HASH_A))
    if alter:
        stored[14] ^= 1
    with pytest.raises(LogDecryptionError):
        ring.decrypt("k1", name, bytes(stored), record_hash)  # type: ignore[arg-type]


@pytest.mark.parametrize("stored", [b"", b"\x00" * 27, "text"])
def test_non_ciphertexts_are_refused(stored: bytes) -> None:
    with pytest.raises(LogDecryptionError):
        Keyring({"k1": K1}, "k1").decrypt("k1", "body", stored, HASH_A)


def test_unknown_key_id() -> None:
    with pytest.raises(UnknownKeyError):
        Keyring({"k1": K1}, "k1").decrypt("k9", "body", b"\x00" * 40, HASH_A)


@pytest.mark.parametrize(
    ("keys", "current"),
    [({"k1": K1}, "k2"), ({"k1": b"short"}, "k1"), ({"bad id!": K1}, "bad id!"), ({}, "")],
)
def test_bad_keyrings_are_refused(keys: dict[str, bytes], current: str) -> None:
    with pytest.raises(ValueError):
        Keyring(keys, current)


def test_keys_are_not_in_the_repr() -> None:
    assert "\\x01" not in repr(Keyring({"k1": K1}, "k1"))
