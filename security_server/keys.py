"""A security server's private keys, loaded once at start: files and PKCS#11 tokens.

* Key files (the TLS authentication key, signing keys) are encrypted PKCS#8 read with the
  passphrase :meth:`SecurityServerConfig.from_env` read; an unencrypted file is refused unless
  the configuration says ``unsafe_plaintext_keys = true``.
* Signing keys in a token are found by label in one logged-in session per token (module and
  token label), shared by that token's keys and closed by :meth:`ServerKeys.close`.
* Every signing key must belong to its certificate; a mismatch is refused at start rather
  than as bad signatures later.

What it does not: the TLS handshake's own key loading (``security_server.tls`` reads the same
file with the same passphrase), or signing (:meth:`Runtime.sign <security_server.runtime
.Runtime.sign>`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization

from certs.keys import PrivateKey, ProtectedKeyError, load_certificates, load_private_key
from security_server.config import ConfigError, Pkcs11KeyConfig, SecurityServerConfig
from xchange.identifiers import ClientId
from xchange.signing import SigningIdentity

if TYPE_CHECKING:
    from certs.pkcs11 import Token

__all__ = ["ServerKeys", "load_keys"]


@dataclass
class ServerKeys:
    """The signing identities of a security server and the token sessions behind some."""

    identities: dict[ClientId, SigningIdentity]
    in_token: frozenset[ClientId] = frozenset()
    """Members whose signing key is in a token: signing them blocks on the device."""
    tokens: list[Token] = field(default_factory=list)

    def close(self) -> None:
        for token in self.tokens:
            token.close()
        self.tokens.clear()


def _load_file_key(config: SecurityServerConfig, path: Path, what: str) -> PrivateKey:
    if config.key_passphrase_source is not None and config.key_passphrase is None:
        # A programming error, but one an operator could meet through a new entry point.
        raise ConfigError("the key passphrase was not read: call SecurityServerConfig.from_env")
    try:
        return load_private_key(path, config.key_passphrase,
                                unsafe_plaintext=config.unsafe_plaintext_keys)
    except ProtectedKeyError as exc:
        raise ConfigError(f"{what}: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{what}: {path}: {exc.strerror}") from exc


def _open_token(pk: Pkcs11KeyConfig) -> Token:
    try:
        from certs.pkcs11 import Token, TokenError
    except ImportError as exc:
        raise ConfigError("keys.signing.pkcs11 needs python-pkcs11: install xchange[hsm]") from exc
    if pk.pin is None:
        raise ConfigError("the token PIN was not read: call SecurityServerConfig.from_env")
    try:
        return Token.open(pk.module, pk.token_label, pk.pin)
    except TokenError as exc:
        raise ConfigError(f"keys.signing.pkcs11: {exc}") from exc


def _same_key(key: PrivateKey, cert_path: Path) -> bool:
    cert = load_certificates(cert_path)[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)


def load_keys(config: SecurityServerConfig) -> ServerKeys:
    """Check the authentication key and load every signing key (see the module).  Raises
    :class:`ConfigError` naming the key at the first problem, with no session left open."""
    keys = ServerKeys({})
    try:
        _load_into(keys, config)
    except BaseException:
        with contextlib.suppress(Exception):
            keys.close()
        raise
    return keys


def _load_into(keys: ServerKeys, config: SecurityServerConfig) -> None:
    auth = _load_file_key(config, config.auth_key, "keys.auth_key")
    if not _same_key(auth, config.auth_cert):
        raise ConfigError("keys.auth_key does not belong to keys.auth_cert")
    sessions: dict[tuple[Path, str], Token] = {}
    in_token = set()
    for sk in config.signing_keys:
        where = f"keys.signing for {sk.member}"
        key: PrivateKey
        if sk.pkcs11 is None:
            assert sk.key is not None  # the configuration holds one or the other
            key = _load_file_key(config, sk.key, where)
        else:
            pk = sk.pkcs11
            token = sessions.get((pk.module, pk.token_label))
            if token is None:
                token = sessions[(pk.module, pk.token_label)] = _open_token(pk)
                keys.tokens.append(token)
            key = _token_key(token, pk.key_label, where)
            in_token.add(sk.member)
        if not _same_key(key, sk.cert):
            raise ConfigError(f"{where}: the key does not belong to the certificate {sk.cert}")
        keys.identities[sk.member] = SigningIdentity(sk.member, key,
                                                     tuple(load_certificates(sk.cert)))
    keys.in_token = frozenset(in_token)


def _token_key(token: Token, label: str, where: str) -> PrivateKey:
    from certs.pkcs11 import TokenError

    try:
        return token.private_key(label)
    except TokenError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
