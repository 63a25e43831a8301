"""Signing keys in a PKCS#11 token (an HSM, a smart card, SoftHSM2).

What it does: logs in to a token once (:class:`Token`: one session, every call on it serialised
by a lock, because a PKCS#11 session runs one operation at a time), generates key pairs inside
the token, and hands out key objects that implement cryptography's private-key interfaces.
PyJWT (message signatures), cryptography's CSR builder and the rest of xchange take them where
they take a key in memory, and never see the private key: the token signs, and
``private_bytes()`` / ``private_numbers()`` raise.

* **EC P-256** (ES256): ``CKM_ECDSA`` over a SHA-2 digest made here.  The token answers the
  raw ``r || s`` (PKCS#11 v2.40 mechanisms, section 2.3.1); it becomes the DER
  ``ECDSA-Sig-Value`` that cryptography's interface promises (and PyJWT turns back into raw).
* **RSA** (PS256): ``CKM_SHA256_RSA_PKCS_PSS`` (and its SHA-384/512 siblings) with MGF1 over
  the same hash, as JWS requires (RFC 7518 section 3.5); ``CKM_SHA256_RSA_PKCS`` (PKCS#1
  v1.5) for certificate signing requests.

Generated keys are token objects with ``CKA_SENSITIVE`` true and ``CKA_EXTRACTABLE`` false,
found again by their label.

What it does not: initialise tokens (``softhsm2-util`` or the vendor's tool), import or delete
keys, or hold the TLS key (the authentication key stays a file).  Needs python-pkcs11, the
``hsm`` extra; importing this module without it raises ``ImportError``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

import pkcs11
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from cryptography.hazmat.primitives.asymmetric.padding import PSS, AsymmetricPadding, PKCS1v15
from cryptography.utils import Buffer
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.types import SignMixin

from certs.ca import make_csr
from xchange.certificates import sign_cert_subject
from xchange.identifiers import ClientId

__all__ = [
    "Token",
    "TokenEcKey",
    "TokenError",
    "TokenKey",
    "TokenRsaKey",
    "generate_sign_key_and_csr",
]

_T = TypeVar("_T")

# DER of the named curve prime256v1 (1.2.840.10045.3.1.7), the CKA_EC_PARAMS of a P-256 key.
_P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")
_RSA_BITS = 3072

# hash name -> (PSS mechanism, PKCS#1 v1.5 mechanism, PSS hashAlg, PSS MGF)
_RSA_MECHANISMS = {
    "sha256": (Mechanism.SHA256_RSA_PKCS_PSS, Mechanism.SHA256_RSA_PKCS, Mechanism.SHA256,
               MGF.SHA256),
    "sha384": (Mechanism.SHA384_RSA_PKCS_PSS, Mechanism.SHA384_RSA_PKCS, Mechanism.SHA384,
               MGF.SHA384),
    "sha512": (Mechanism.SHA512_RSA_PKCS_PSS, Mechanism.SHA512_RSA_PKCS, Mechanism.SHA512,
               MGF.SHA512),
}


class TokenError(ValueError):
    """The token, a key in it, or an operation on it failed: no such module, token or key, a
    wrong PIN, a mechanism the device refuses.  The message names the token and the key."""


class _Login:
    """The one logged-in session of this process on one token (see :class:`Token`)."""

    def __init__(self, session: pkcs11.Session, key: tuple[str, str], pin_digest: bytes,
                 rw: bool) -> None:
        self.session, self.key, self.pin_digest, self.rw = session, key, pin_digest, rw
        self.lock = threading.Lock()
        self.users = 0
        self.closed = False


_LOGINS: dict[tuple[str, str], _Login] = {}
_LOGINS_LOCK = threading.Lock()


class Token:
    """A logged-in token, shared by all its keys.  Thread-safe: every call on the session
    holds the session's lock.

    PKCS#11 keeps a login per application and token, not per session, and logging out ends it
    for every session.  So a process has one session per token: :meth:`open` of a token that
    is already open here shares its session (once the PIN is checked against the one that
    logged in), and the session closes when every :class:`Token` on it is closed.
    """

    def __init__(self, login: _Login, label: str) -> None:
        self._login = login
        self._label = label
        self._closed = False

    @classmethod
    def open(cls, module: Path, token_label: str, pin: bytes, *, rw: bool = False) -> Token:
        """Load the PKCS#11 ``module``, find the token by label and log in as its user.
        ``rw`` is needed to generate keys, not to sign."""
        where = f"PKCS#11 token {token_label!r} ({module})"
        key = (str(module), token_label)
        pin_digest = hashlib.sha256(pin).digest()
        with _LOGINS_LOCK:
            login = _LOGINS.get(key)
            if login is None:
                session = _log_in(module, token_label, pin, rw, where)
                login = _LOGINS[key] = _Login(session, key, pin_digest, rw)
            elif not hmac.compare_digest(login.pin_digest, pin_digest):
                raise TokenError(f"{where}: wrong PIN")
            elif rw and not login.rw:
                raise TokenError(f"{where}: open read-only in this process")
            login.users += 1
        return cls(login, token_label)

    @property
    def label(self) -> str:
        return self._label

    def close(self) -> None:
        """Stop using the token; the keys it handed out stop working.  The last user of the
        session logs out and closes it.  Closing twice does nothing."""
        login = self._login
        with _LOGINS_LOCK:
            if self._closed:
                return
            self._closed = True
            login.users -= 1
            if login.users:
                return
            del _LOGINS[login.key]
        with login.lock:
            login.closed = True
            try:
                login.session.close()
            except pkcs11.PKCS11Error as exc:
                raise TokenError(f"token {self._label!r}: closing: {_describe(exc)}") from exc

    def __enter__(self) -> Token:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, what: str, operation: Callable[[pkcs11.Session], _T]) -> _T:
        """Run ``operation`` on the session under its lock; PKCS#11 errors become
        :class:`TokenError` naming what was being done."""
        with self._login.lock:
            if self._closed or self._login.closed:
                raise TokenError(f"token {self._label!r}: {what}: the session is closed")
            try:
                return operation(self._login.session)
            except pkcs11.PKCS11Error as exc:
                raise TokenError(f"token {self._label!r}: {what}: {_describe(exc)}") from exc

    # -- keys -------------------------------------------------------------------------------

    def private_key(self, label: str) -> TokenKey:
        """The key pair labelled ``label``: exactly one private and one public key object."""
        private, public = self.call(f"finding key {label!r}", lambda session: (
            session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label),
            session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label),
        ))
        if not isinstance(private, SignMixin):
            raise TokenError(f"token {self._label!r}: key {label!r} cannot sign")
        if private.key_type == KeyType.EC:
            params, point = self.call(f"reading key {label!r}", lambda _: (
                public[Attribute.EC_PARAMS], public[Attribute.EC_POINT]))
            if params != _P256_PARAMS:
                raise TokenError(f"token {self._label!r}: key {label!r} is not on curve P-256")
            return TokenEcKey(self, private, label, _ec_public_key(point))
        if private.key_type == KeyType.RSA:
            modulus, exponent = self.call(f"reading key {label!r}", lambda _: (
                public[Attribute.MODULUS], public[Attribute.PUBLIC_EXPONENT]))
            numbers = rsa.RSAPublicNumbers(int.from_bytes(exponent, "big"),
                                           int.from_bytes(modulus, "big"))
            return TokenRsaKey(self, private, label, numbers.public_key())
        raise TokenError(f"token {self._label!r}: key {label!r} is neither EC nor RSA")

    def has_key(self, label: str) -> bool:
        found = self.call(f"searching for {label!r}", lambda session: list(
            session.get_objects({Attribute.LABEL: label})))
        return bool(found)

    def generate_key(self, label: str, kind: Literal["ec", "rsa"] = "ec") -> TokenKey:
        """Generate a key pair inside the token: EC P-256 or RSA 3072, sensitive and not
        extractable, stored on the token under ``label`` (which must be new)."""
        if self.has_key(label):
            raise TokenError(f"token {self._label!r} already holds an object labelled {label!r}")
        # The same random CKA_ID on both halves pairs them for tools that match by id.
        common: dict[str, Any] = {"store": True, "label": label, "id": os.urandom(16)}
        private_template = {Attribute.TOKEN: True, Attribute.PRIVATE: True,
                            Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                            Attribute.SIGN: True, Attribute.DECRYPT: False}
        public_template = {Attribute.TOKEN: True, Attribute.VERIFY: True}

        def generate(session: pkcs11.Session) -> None:
            if kind == "ec":
                parameters = session.create_domain_parameters(
                    KeyType.EC, {Attribute.EC_PARAMS: _P256_PARAMS}, local=True)
                parameters.generate_keypair(private_template=private_template,
                                            public_template=public_template, **common)
            else:
                session.generate_keypair(KeyType.RSA, _RSA_BITS,
                                               private_template=private_template,
                                               public_template=public_template, **common)

        self.call(f"generating key {label!r}", generate)
        return self.private_key(label)


def _log_in(module: Path, token_label: str, pin: bytes, rw: bool, where: str) -> pkcs11.Session:
    try:
        text_pin = pin.decode("utf-8")  # python-pkcs11 takes the PIN as text
    except UnicodeDecodeError as exc:
        raise TokenError(f"{where}: the PIN is not UTF-8 text") from exc
    try:
        lib = pkcs11.lib(str(module))
        token = lib.get_token(token_label=token_label)
        return token.open(user_pin=text_pin, rw=rw)
    except pkcs11.PinIncorrect as exc:
        raise TokenError(f"{where}: wrong PIN") from exc
    except pkcs11.NoSuchToken as exc:
        raise TokenError(f"{where}: no such token") from exc
    except pkcs11.UserAlreadyLoggedIn as exc:
        raise TokenError(f"{where}: other code in this process is logged in already") from exc
    except pkcs11.PKCS11Error as exc:
        raise TokenError(f"{where}: {_describe(exc)}") from exc


def _describe(exc: pkcs11.PKCS11Error) -> str:
    # python-pkcs11's messages are often empty; the class names the PKCS#11 return value.
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _ec_public_key(point: bytes) -> ec.EllipticCurvePublicKey:
    """CKA_EC_POINT is a DER OCTET STRING around the point (PKCS#11 v2.40); a few tokens
    give the bare point."""
    if len(point) == 67 and point[:2] == b"\x04\x41":
        point = point[2:]
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as exc:
        raise TokenError("the token's EC public key is not a P-256 point") from exc


def _digest(data: bytes, algorithm: hashes.HashAlgorithm | utils.Prehashed) -> bytes:
    if isinstance(algorithm, utils.Prehashed):
        if len(data) != algorithm.digest_size:
            raise ValueError("pre-hashed data has the wrong length")
        return bytes(data)
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


class _InToken:
    """What the two key classes share: a handle on the token, and no way out for the key."""

    def __init__(self, token: Token, handle: SignMixin, label: str) -> None:
        self._token, self._handle, self._label = token, handle, label

    @property
    def label(self) -> str:
        return self._label

    @property
    def token(self) -> Token:
        return self._token

    def _sign(self, data: bytes, **mechanism: Any) -> bytes:
        signature: bytes = self._token.call(f"signing with {self._label!r}",
                                            lambda _: self._handle.sign(data, **mechanism))
        return signature

    def private_numbers(self) -> Any:
        raise TypeError(_NOT_EXPORTABLE)

    def private_bytes(self, encoding: serialization.Encoding,
                      format: serialization.PrivateFormat,
                      encryption_algorithm: serialization.KeySerializationEncryption) -> bytes:
        raise TypeError(_NOT_EXPORTABLE)

    def __copy__(self) -> Self:
        return self  # a handle: copies would share the token anyway

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._label!r} in token {self._token.label!r}>"


_NOT_EXPORTABLE = "the private key is in a PKCS#11 token and cannot be exported"


class TokenEcKey(_InToken, ec.EllipticCurvePrivateKey):
    """An EC P-256 private key in a token (see the module)."""

    def __init__(self, token: Token, handle: SignMixin, label: str,
                 public_key: ec.EllipticCurvePublicKey) -> None:
        super().__init__(token, handle, label)
        self._public_key = public_key

    def sign(self, data: Buffer,
             signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise UnsupportedAlgorithm("a token EC key signs with ECDSA only")
        digest = _digest(bytes(data), signature_algorithm.algorithm)
        raw = self._sign(digest, mechanism=Mechanism.ECDSA)
        half = len(raw) // 2
        return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                          int.from_bytes(raw[half:], "big"))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public_key.curve

    @property
    def key_size(self) -> int:
        return self._public_key.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise UnsupportedAlgorithm("a token signing key does not do key agreement")


class TokenRsaKey(_InToken, rsa.RSAPrivateKey):
    """An RSA private key in a token (see the module)."""

    def __init__(self, token: Token, handle: SignMixin, label: str,
                 public_key: rsa.RSAPublicKey) -> None:
        super().__init__(token, handle, label)
        self._public_key = public_key

    def sign(self, data: bytes, padding: AsymmetricPadding,
             algorithm: utils.Prehashed | hashes.HashAlgorithm | utils.NoDigestInfo) -> bytes:
        if not isinstance(algorithm, hashes.HashAlgorithm) or algorithm.name not in \
                _RSA_MECHANISMS:
            raise UnsupportedAlgorithm("a token RSA key signs whole data with SHA-256, "
                                       "SHA-384 or SHA-512")
        pss, pkcs1, hash_mech, mgf = _RSA_MECHANISMS[algorithm.name]
        mechanism, param = self._mechanism(padding, algorithm, pss, pkcs1, hash_mech, mgf)
        return self._sign(bytes(data), mechanism=mechanism, mechanism_param=param)

    def _mechanism(self, pad: AsymmetricPadding, algorithm: hashes.HashAlgorithm,
                   pss: Mechanism, pkcs1: Mechanism, hash_mech: Mechanism,
                   mgf: MGF) -> tuple[Mechanism, tuple[Mechanism, MGF, int] | None]:
        if isinstance(pad, PKCS1v15):
            return pkcs1, None
        if not isinstance(pad, PSS):
            raise UnsupportedAlgorithm(f"a token RSA key does not sign with {pad.name}")
        # cryptography keeps the MGF hash and the salt length in private attributes only.
        mgf_hash = getattr(pad.mgf, "_algorithm", None)
        if not isinstance(mgf_hash, hashes.HashAlgorithm) or mgf_hash.name != algorithm.name:
            raise UnsupportedAlgorithm("RSA-PSS in a token needs MGF1 over the signing hash")
        salt = getattr(pad, "_salt_length", None)
        if salt is PSS.DIGEST_LENGTH:
            salt = algorithm.digest_size
        elif salt is PSS.MAX_LENGTH:
            salt = (self.key_size + 6) // 8 - algorithm.digest_size - 2  # RFC 8017 9.1.1
        if not isinstance(salt, int) or salt < 0:
            raise UnsupportedAlgorithm("RSA-PSS in a token needs a fixed salt length")
        return pss, (hash_mech, mgf, salt)

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        raise UnsupportedAlgorithm("a token signing key does not decrypt")

    @property
    def key_size(self) -> int:
        return self._public_key.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public_key


TokenKey = TokenEcKey | TokenRsaKey


def generate_sign_key_and_csr(
    token: Token,
    key_label: str,
    member: ClientId,
    member_name: str,
    *,
    kind: Literal["ec", "rsa"] = "ec",
    country: str = "XX",
) -> tuple[TokenKey, bytes]:
    """Generate ``member``'s signing key inside ``token`` and a PEM PKCS#10 request for its
    signing certificate, signed through the token (proof of possession without the key ever
    leaving it).  A CA issues the certificate from the request
    (:meth:`certs.ca.DevCA.issue_from_csr` for the development CA)."""
    subject = sign_cert_subject(member, member_name, country=country)  # checks before creating
    key = token.generate_key(key_label, kind)
    return key, make_csr(key, subject)
