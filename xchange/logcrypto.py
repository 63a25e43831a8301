"""Encryption at rest of message-log contents: AES-256-GCM with keys by id (pure core).

A security server may keep the header part and body of every logged message encrypted, so
that a copy of its database (a backup, a stolen disk, a curious database administrator)
does not reveal what agencies exchanged.  The metadata an auditor searches by -- message id,
client, service, user id, issue, times -- and the signature and OCSP responses stay in the
clear.

* Each stored field is ``nonce (12 bytes) || ciphertext || tag (16 bytes)``, with a fresh
  random nonce per field (NIST SP 800-38D 8.2.2: random 96-bit IVs; a key may protect 2^32
  fields, far beyond any key's life here).
* The associated data binds the ciphertext to its place: ``xchange-messagelog-v2/<field>/
  <record_hash>``, so a ciphertext moved to another field or record does not decrypt.
* A large body is not one field but a sequence of chunks (:data:`xchange.body.CHUNK_SIZE`
  each), stored apart from its row under a random body id and encrypted one by one
  (:meth:`Keyring.encrypt_chunk`), so that neither writing nor reading holds it whole.  Each
  chunk's associated data is ``xchange-messagelog-v2/body-chunk/<body_id>/<index>/<last|more>``:
  a chunk moved to another body or place, chunks reordered, or a body cut short after a chunk
  (the last one says it is the last) do not decrypt.
* Each row names the id of its key.  Rotation: add a key, make it current; old rows keep
  their key ids and are read with the old keys, never re-encrypted.
* The record hash is over the *plaintext* digests (:mod:`xchange.messagelog`), so encryption
  changes no hash and the chain is the same encrypted or not.

This module holds keys and does the cryptography; reading key files is
``security_server.logkeys``.  Failures are :class:`LogDecryptionError` (altered data) or
:class:`KeyError`-like :class:`UnknownKeyError` (a key missing from the keyring).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "KEY_ID_PATTERN",
    "Keyring",
    "LogDecryptionError",
    "UnknownKeyError",
]

KEY_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""What a key id may look like: it is stored in every row and appears in logs."""
_NONCE: Final = 12
_TAG: Final = 16

LogField = Literal["header_part", "body"]


class LogDecryptionError(ValueError):
    """A stored field does not decrypt with its key: it was altered or moved."""


class UnknownKeyError(LookupError):
    """A row names a key id the keyring does not hold."""


@dataclass(frozen=True, slots=True)
class Keyring:
    """The log's AES-256 keys by id, and the id of the one new rows are encrypted with."""

    keys: Mapping[str, bytes] = field(repr=False)
    current: str
    _sealer: AESGCM = field(init=False, repr=False, compare=False)
    """The current key's cipher, made once (not per field written)."""

    def __post_init__(self) -> None:
        for key_id, key in self.keys.items():
            if not KEY_ID_PATTERN.fullmatch(key_id):
                raise ValueError(f"key id {key_id!r} must match {KEY_ID_PATTERN.pattern}")
            if not isinstance(key, bytes) or len(key) != 32:
                raise ValueError(f"key {key_id!r} is not 32 bytes (AES-256)")
        if self.current not in self.keys:
            raise ValueError(f"the current key {self.current!r} is not in the keyring")
        object.__setattr__(self, "_sealer", AESGCM(self.keys[self.current]))

    def encrypt(self, name: LogField, plaintext: bytes, record_hash: str) -> bytes:
        """``name`` of the record ``record_hash``, encrypted with the current key."""
        nonce = os.urandom(_NONCE)
        return nonce + self._sealer.encrypt(nonce, plaintext, _aad(name, record_hash))

    def decrypt(self, key_id: str, name: LogField, stored: bytes, record_hash: str) -> bytes:
        """The plaintext of a field stored by :meth:`encrypt` under ``key_id``."""
        return self._open(key_id, name, stored, _aad(name, record_hash))

    def encrypt_chunk(self, body_id: str, index: int, last: bool, plaintext: bytes) -> bytes:
        """Chunk ``index`` of the large body ``body_id``, encrypted with the current key."""
        nonce = os.urandom(_NONCE)
        return nonce + self._sealer.encrypt(nonce, plaintext, _chunk_aad(body_id, index, last))

    def decrypt_chunk(self, key_id: str, body_id: str, index: int, last: bool,
                      stored: bytes) -> bytes:
        """The plaintext of a chunk stored by :meth:`encrypt_chunk` under ``key_id``."""
        return self._open(key_id, f"body chunk {index}", stored,
                          _chunk_aad(body_id, index, last))

    def _open(self, key_id: str, what: str, stored: bytes, aad: bytes) -> bytes:
        key = self.keys.get(key_id)
        if key is None:
            raise UnknownKeyError(f"no message-log key with id {key_id!r}")
        if not isinstance(stored, bytes) or len(stored) < _NONCE + _TAG:
            raise LogDecryptionError(f"encrypted {what} is not a ciphertext (too short)")
        try:
            return AESGCM(key).decrypt(stored[:_NONCE], stored[_NONCE:], aad)
        except InvalidTag as exc:
            raise LogDecryptionError(
                f"encrypted {what} does not decrypt with key {key_id!r}: altered or moved"
            ) from exc


def _aad(name: LogField, record_hash: str) -> bytes:
    return f"xchange-messagelog-v2/{name}/{record_hash}".encode("ascii")


def _chunk_aad(body_id: str, index: int, last: bool) -> bytes:
    place = "last" if last else "more"
    return f"xchange-messagelog-v2/body-chunk/{body_id}/{index:d}/{place}".encode("ascii")
