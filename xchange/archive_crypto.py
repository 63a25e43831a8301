"""Archive encryption to one or more recipients' public keys (pure).

Hybrid encryption: a fresh random 256-bit content key encrypts the whole archive file with
AES-256-GCM, and the content key is wrapped once per recipient -- the agency's auditors --
with the recipient's public key:

* RSA keys (2048 bits or more): ``RSA-OAEP-256`` (OAEP, SHA-256, MGF1-SHA-256);
* EC keys (P-256, P-384, P-521): ``ECDH-ES+A256KW`` -- an ephemeral key on the recipient's
  curve, ECDH, HKDF-SHA-256 (no salt, ``info`` = ``"xchange-archive-v1"`` || the ephemeral
  public point || the recipient's key id) to a 256-bit key-encryption key, and AES key wrap
  (RFC 3394) of the content key.

The file::

    "XCHENC01" || uint32_be(len(header)) || header || ciphertext || tag (16 bytes)

``header`` is canonical JSON::

    {"type": "xchange-encrypted-archive", "v": 1, "enc": "A256GCM", "iv": "<base64url 12>",
     "recipients": [{"kid": "<hex>", "alg": "RSA-OAEP-256", "ek": "<base64url>"},
                    {"kid": "<hex>", "alg": "ECDH-ES+A256KW", "epk": "<base64url point>",
                     "ek": "<base64url>"}]}

``kid`` is the hex SHA-256 of the recipient's SubjectPublicKeyInfo (DER), so a private key
alone finds its entry.  The GCM additional data is everything before the ciphertext (magic,
length and header), so no recipient entry can be added, removed or changed unnoticed.  Base64url
is without padding.  Whole-file GCM bounds an archive to 64 GiB, far above archive sizes.

No I/O and no clock; randomness comes from ``os.urandom`` through the cryptography library.
Failures to open a file raise :class:`~xchange.errors.BadRequestError` with code
``server.messagelog.decryption_failed`` (or ``bad_container`` for a malformed file).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from collections.abc import Sequence
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from xchange.asic import BAD_CONTAINER_CODE
from xchange.canonical import canonical_json, parse_json
from xchange.errors import BadRequestError

__all__ = [
    "ENCRYPTED_MAGIC",
    "RecipientKey",
    "decrypt_archive",
    "encrypt_archive",
    "is_encrypted",
    "key_id",
]

ENCRYPTED_MAGIC: Final = b"XCHENC01"
DECRYPTION_FAILED_CODE: Final = "server.messagelog.decryption_failed"
_TYPE: Final = "xchange-encrypted-archive"
_INFO: Final = b"xchange-archive-v1"
_MAX_HEADER: Final = 1024 * 1024
_MAX_RECIPIENTS: Final = 64

RecipientKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_OAEP: Final = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                            label=None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected a base64url string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("bad base64url") from exc


def key_id(key: RecipientKey) -> str:
    """Hex SHA-256 of the public key's SubjectPublicKeyInfo DER."""
    spki = key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def _kek(shared: bytes, epk: bytes, kid: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=_INFO + epk + bytes.fromhex(kid)).derive(shared)


def _wrap(cek: bytes, key: RecipientKey) -> dict[str, str]:
    kid = key_id(key)
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError("RSA recipient keys must have at least 2048 bits")
        return {"kid": kid, "alg": "RSA-OAEP-256", "ek": _b64(key.encrypt(cek, _OAEP))}
    ephemeral = ec.generate_private_key(key.curve)
    epk = ephemeral.public_key().public_bytes(serialization.Encoding.X962,
                                              serialization.PublicFormat.UncompressedPoint)
    kek = _kek(ephemeral.exchange(ec.ECDH(), key), epk, kid)
    return {"kid": kid, "alg": "ECDH-ES+A256KW", "epk": _b64(epk),
            "ek": _b64(aes_key_wrap(kek, cek))}


def encrypt_archive(data: bytes, recipients: Sequence[RecipientKey]) -> bytes:
    """Encrypt ``data`` so that each of ``recipients`` (and only they) can decrypt it."""
    if not recipients:
        raise ValueError("at least one recipient is needed")
    if len(recipients) > _MAX_RECIPIENTS:
        raise ValueError(f"at most {_MAX_RECIPIENTS} recipients")
    for key in recipients:
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise TypeError("recipient keys must be RSA or EC public keys")
    cek, iv = AESGCM.generate_key(bit_length=256), os.urandom(12)
    header = canonical_json({
        "type": _TYPE, "v": 1, "enc": "A256GCM", "iv": _b64(iv),
        "recipients": [_wrap(cek, key) for key in recipients],
    })
    prefix = ENCRYPTED_MAGIC + struct.pack(">I", len(header)) + header
    return prefix + AESGCM(cek).encrypt(iv, data, prefix)


def is_encrypted(data: bytes) -> bool:
    return data.startswith(ENCRYPTED_MAGIC)


def decrypt_archive(data: bytes, key: PrivateKey) -> bytes:
    """Decrypt a file written by :func:`encrypt_archive` with one recipient's private key."""
    header, prefix = _header(data)
    kid = key_id(key.public_key())
    entries = [r for r in header["recipients"] if isinstance(r, dict) and r.get("kid") == kid]
    if not entries:
        raise BadRequestError("the archive is not encrypted to this key",
                              code=DECRYPTION_FAILED_CODE)
    try:
        cek = _unwrap(entries[0], key, kid)
        iv = _unb64(header["iv"])
        return AESGCM(cek).decrypt(iv, data[len(prefix):], prefix)
    except (InvalidTag, InvalidUnwrap, ValueError, KeyError, TypeError) as exc:
        raise BadRequestError(
            "the archive cannot be decrypted: it was altered, or the key does not fit",
            code=DECRYPTION_FAILED_CODE,
        ) from exc


def _unwrap(entry: dict[str, Any], key: PrivateKey, kid: str) -> bytes:
    alg = entry["alg"]
    if alg == "RSA-OAEP-256" and isinstance(key, rsa.RSAPrivateKey):
        return key.decrypt(_unb64(entry["ek"]), _OAEP)
    if alg == "ECDH-ES+A256KW" and isinstance(key, ec.EllipticCurvePrivateKey):
        epk = _unb64(entry["epk"])
        peer = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, epk)
        return aes_key_unwrap(_kek(key.exchange(ec.ECDH(), peer), epk, kid),
                              _unb64(entry["ek"]))
    raise ValueError(f"recipient algorithm {alg!r} does not fit the key")


def _header(data: bytes) -> tuple[dict[str, Any], bytes]:
    def bad(message: str) -> BadRequestError:
        return BadRequestError(f"malformed encrypted archive: {message}",
                               code=BAD_CONTAINER_CODE)

    if not is_encrypted(data) or len(data) < len(ENCRYPTED_MAGIC) + 4:
        raise bad("it does not start with XCHENC01")
    (length,) = struct.unpack(">I", data[len(ENCRYPTED_MAGIC):len(ENCRYPTED_MAGIC) + 4])
    end = len(ENCRYPTED_MAGIC) + 4 + length
    if length > _MAX_HEADER or end + 16 > len(data):
        raise bad("header length out of bounds")
    try:
        header = parse_json(data[len(ENCRYPTED_MAGIC) + 4:end])
    except BadRequestError as exc:
        raise bad(exc.message) from exc
    if (not isinstance(header, dict) or header.get("type") != _TYPE or header.get("v") != 1
            or header.get("enc") != "A256GCM"
            or not isinstance(header.get("recipients"), list)
            or len(header["recipients"]) > _MAX_RECIPIENTS):
        raise bad(f"the header is not an {_TYPE} v1 header with A256GCM")
    return header, data[:end]
