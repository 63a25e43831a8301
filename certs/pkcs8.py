"""Encrypted PKCS#8 private keys: PBES2 with scrypt and AES-256-CBC.

What it does: turns a private key into a PEM ``ENCRYPTED PRIVATE KEY`` (RFC 5958 section 3,
``EncryptedPrivateKeyInfo``) whose encryption is PBES2 (RFC 8018 section 6.2) with the scrypt
key-derivation function (RFC 7914 section 7: ``N = 2**14, r = 8, p = 1``, a 16-byte random
salt) and AES-256-CBC (RFC 8018 appendix B.2.5 names the scheme; the IV is its parameter).

Why our own encoder: cryptography's ``BestAvailableEncryption`` writes PBES2 with PBKDF2-SHA256
at 2048 iterations, cheap to brute-force for a passphrase a person chose, and "best available"
may change between releases; cryptography offers no way to choose the scheme for PKCS#8.  The
ASN.1 here is a few fixed structures.  Reading is left to the libraries: cryptography and
OpenSSL (so Python's ``ssl`` module too) read these files, as they read ``openssl pkcs8
-topk8 -scrypt`` output, which has the same layout.

The cost is chosen in one place: :data:`DEFAULT_SCRYPT_COST`, always, except inside
:func:`unsafe_scrypt_cost`, which a test suite uses to write its throwaway keys with a cheaper
(still real, still scrypt) cost.  A reader takes the cost from the file, so keys written either
way load anywhere.

What it does not: decrypt (see :func:`certs.keys.load_private_key`), or write any other scheme.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

__all__ = [
    "DEFAULT_SCRYPT_COST",
    "PEM_BEGIN",
    "PEM_END",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "UNSAFE_TEST_SCRYPT_COST",
    "ScryptCost",
    "encrypt_private_key",
    "unsafe_scrypt_cost",
]

PEM_LABEL = "ENCRYPTED PRIVATE KEY"
"""The PEM label of encrypted PKCS#8 (RFC 7468 section 11)."""
PEM_BEGIN = f"-----BEGIN {PEM_LABEL}-----"
PEM_END = f"-----END {PEM_LABEL}-----"

# RFC 7914 section 2 suggests r = 8, p = 1; N = 2**14 needs 16 MiB and about 50 ms here.  A
# larger N would pass OpenSSL's default 32 MiB scrypt memory limit, and Python's ssl module
# (which reads the TLS key with OpenSSL) could then no longer open the file.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1


@dataclass(frozen=True, slots=True)
class ScryptCost:
    """scrypt's cost parameters (RFC 7914 section 2): ``n`` (CPU and memory cost, a power of
    two above 1), ``r`` (block size), ``p`` (parallelism).  Memory needed: 128 * n * r bytes."""

    n: int
    r: int
    p: int

    def __post_init__(self) -> None:
        if self.n < 2 or self.n & (self.n - 1) or self.r < 1 or self.p < 1:
            raise ValueError(f"not a valid scrypt cost: {self}")


DEFAULT_SCRYPT_COST = ScryptCost(SCRYPT_N, SCRYPT_R, SCRYPT_P)
"""The cost of every key file written outside :func:`unsafe_scrypt_cost` (about 50 ms)."""

UNSAFE_TEST_SCRYPT_COST = ScryptCost(2**10, SCRYPT_R, SCRYPT_P)
"""A cost for test suites' throwaway keys only: 1 MiB and about 3 ms per derivation, 16 times
cheaper than the default and far too cheap for a passphrase a person chose."""

_cost = DEFAULT_SCRYPT_COST


@contextlib.contextmanager
def unsafe_scrypt_cost(cost: ScryptCost) -> Iterator[None]:
    """Within the block, key files written by this process use ``cost``.  For test suites,
    whose many throwaway keys would otherwise spend seconds in scrypt; never for real keys.
    Processes started meanwhile still use the default."""
    global _cost
    previous, _cost = _cost, cost
    try:
        yield
    finally:
        _cost = previous

_OID_PBES2 = "1.2.840.113549.1.5.13"  # RFC 8018 appendix A.4
_OID_SCRYPT = "1.3.6.1.4.1.11591.4.11"  # RFC 7914 section 7
_OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"  # NIST CSOR, RFC 8018 appendix B.2.5


def _tlv(tag: int, content: bytes) -> bytes:
    """One DER element (X.690 section 8.1): tag, definite length, content."""
    size = len(content)
    if size < 0x80:
        length = bytes([size])
    else:
        octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(octets)]) + octets
    return bytes([tag]) + length + content


def _sequence(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _octet_string(value: bytes) -> bytes:
    return _tlv(0x04, value)


def _integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("only non-negative integers are encoded here")
    # One extra byte when the top bit is set keeps the value positive (X.690 section 8.3).
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _oid(dotted: str) -> bytes:
    """X.690 section 8.19: the first two arcs in one subidentifier, each in base 128."""
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return _tlv(0x06, bytes(body))


def encrypt_private_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
                        passphrase: bytes) -> bytes:
    """The PEM ``ENCRYPTED PRIVATE KEY`` of ``key`` under ``passphrase`` (see the module)."""
    if not passphrase:
        raise ValueError("an empty passphrase protects nothing")
    plain = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    salt, iv = os.urandom(16), os.urandom(16)
    cost = _cost
    derived = Scrypt(salt=salt, length=32, n=cost.n, r=cost.r, p=cost.p).derive(passphrase)
    padder = padding.PKCS7(128).padder()  # RFC 8018 section 6.2.1 step 4
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(derived), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(padded) + encryptor.finalize()
    scrypt_params = _sequence(_octet_string(salt), _integer(cost.n), _integer(cost.r),
                              _integer(cost.p))
    pbes2_params = _sequence(
        _sequence(_oid(_OID_SCRYPT), scrypt_params),  # keyDerivationFunc
        _sequence(_oid(_OID_AES256_CBC), _octet_string(iv)),  # encryptionScheme
    )
    der = _sequence(_sequence(_oid(_OID_PBES2), pbes2_params), _octet_string(encrypted))
    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "\n".join([PEM_BEGIN, *lines, PEM_END, ""]).encode("ascii")
