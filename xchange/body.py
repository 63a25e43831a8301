"""Message bodies that need not be held in memory: their digests, taken as they pass (pure).

A body crosses a security server as a stream: it is hashed as it arrives
(:class:`BodyHasher`), kept in memory when small and in a spool file when large (that is
``security_server.body``), and signed, logged and sent on only once it is complete.  What the
core needs of a body is here:

* :class:`BodyDigest` -- its size and SHA-256 and SHA-512 digests: SHA-512 enters the
  signed digest payload (:func:`xchange.rest.digest_payload`), SHA-256 the message log's
  record hash (:mod:`xchange.messagelog`);
* :class:`BodyReader` -- the seam to where a large body's bytes are (a spool file, the
  message log's body chunks): read again, chunk by chunk, as often as needed;
* :class:`ExternalBody` -- a body held outside memory: its digest and its reader.  The
  message log and audit accept one wherever they accept ``bytes``.

No I/O happens here: an :class:`ExternalBody`'s reader does it, behind the protocol.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol

__all__ = [
    "CHUNK_SIZE",
    "BodyDigest",
    "BodyHasher",
    "BodyReader",
    "ExternalBody",
    "MessageBody",
    "body_digest",
    "body_sha256",
    "body_size",
    "read_all",
]

CHUNK_SIZE: Final = 1024 * 1024
"""The size of the pieces a large body is written, read and encrypted in (1 MiB)."""


@dataclass(frozen=True, slots=True)
class BodyDigest:
    """The size and digests of a body's bytes."""

    size: int
    sha256: bytes
    sha512: bytes

    def __post_init__(self) -> None:
        if self.size < 0 or len(self.sha256) != 32 or len(self.sha512) != 64:
            raise ValueError("a body digest is a size and 32- and 64-byte hashes")

    @classmethod
    def of(cls, data: bytes) -> BodyDigest:
        return cls(len(data), hashlib.sha256(data).digest(), hashlib.sha512(data).digest())


class BodyHasher:
    """Hash a body piece by piece, as it passes."""

    __slots__ = ("_sha256", "_sha512", "size")

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._sha512 = hashlib.sha512()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._sha256.update(chunk)
        self._sha512.update(chunk)
        self.size += len(chunk)

    def digest(self) -> BodyDigest:
        return BodyDigest(self.size, self._sha256.digest(), self._sha512.digest())


class BodyReader(Protocol):
    """Where a large body's bytes are; :meth:`chunks` may be called any number of times and
    yields the whole body each time, in pieces of at most about :data:`CHUNK_SIZE`."""

    def chunks(self) -> Iterator[bytes]: ...


@dataclass(frozen=True, slots=True, eq=False)
class ExternalBody:
    """A body held outside memory.

    ``digest`` must be the digest of what ``reader`` yields: taken as the bytes arrived
    (:class:`BodyHasher`), or -- for bytes read back from storage, which may have been
    altered -- by :meth:`measure`, which reads them.
    """

    digest: BodyDigest
    reader: BodyReader = field(repr=False)

    @classmethod
    def measure(cls, reader: BodyReader) -> ExternalBody:
        """Read ``reader`` through once and take its digest from what it yielded."""
        hasher = BodyHasher()
        for chunk in reader.chunks():
            hasher.update(chunk)
        return cls(hasher.digest(), reader)

    def chunks(self) -> Iterator[bytes]:
        return self.reader.chunks()


MessageBody = bytes | ExternalBody
"""A body as the core takes it: its bytes, or an :class:`ExternalBody`."""


def body_digest(body: MessageBody) -> BodyDigest:
    return body.digest if isinstance(body, ExternalBody) else BodyDigest.of(body)


def body_sha256(body: MessageBody) -> bytes:
    """SHA-256 of the body (the message log's record hash takes this one only)."""
    return body.digest.sha256 if isinstance(body, ExternalBody) else hashlib.sha256(body).digest()


def body_size(body: MessageBody) -> int:
    return body.digest.size if isinstance(body, ExternalBody) else len(body)


def read_all(body: MessageBody) -> bytes:
    """The whole body in memory: only for what needs it whole (an evidence container)."""
    return body if isinstance(body, bytes) else b"".join(body.chunks())
