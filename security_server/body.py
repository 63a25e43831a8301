"""Message bodies as they cross a security server: spooled as they arrive, hashed as they pass.

Every body -- the IS's request, a frame's body from the other security server, the provider
system's response -- is read as a stream into a :class:`Spool`: up to
:data:`MEMORY_THRESHOLD` it stays in memory; beyond, it goes to an unnamed temporary file in
the server's spool directory, written in :data:`~xchange.body.CHUNK_SIZE` pieces.  Either
way it is hashed as it passes (:class:`xchange.body.BodyHasher`), so when the last byte is
in, the :class:`Body` knows its digest without reading anything again, and the header part
and digest can be signed or verified.

A :class:`Body` is then read as often as needed -- sent on (:meth:`Body.stream`), copied into
the message log (it is an :class:`xchange.body.BodyReader`) -- and closed when the request is
done (the file disappears with it; it never had a name).  Only a body that is complete and
no larger than the limit becomes a :class:`Body`: over the limit, reading stops at once with
``client.payload_too_large`` (or the caller's code).

The SOAP side and the REST side both hand their bodies over as :class:`Body` objects
(:meth:`Body.of` for bytes already in memory).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Final

from xchange.body import CHUNK_SIZE, BodyDigest, BodyHasher, ExternalBody, MessageBody
from xchange.errors import XRoadError

__all__ = ["MEMORY_THRESHOLD", "Body", "Spool", "spool"]

MEMORY_THRESHOLD: Final = 1024 * 1024
"""Bodies up to this size (1 MiB) stay in memory; larger ones are spooled to a file."""


class Body:
    """A complete body: its digest, and its bytes in memory or in a temporary file."""

    __slots__ = ("_data", "_file", "digest")

    def __init__(self, digest: BodyDigest, *, data: bytes | None = None,
                 file: IO[bytes] | None = None) -> None:
        if (data is None) == (file is None):
            raise ValueError("a body is in memory or in a file")
        self.digest = digest
        self._data = data
        self._file = file

    @classmethod
    def of(cls, data: bytes) -> Body:
        """A body already in memory."""
        return cls(BodyDigest.of(data), data=data)

    @property
    def size(self) -> int:
        return self.digest.size

    @property
    def data(self) -> bytes | None:
        """The bytes, when the body is in memory; ``None`` when it is spooled."""
        return self._data

    def for_log(self) -> MessageBody:
        """The body as the message log takes it: bytes, or an external body read from here."""
        return self._data if self._data is not None else ExternalBody(self.digest, self)

    def chunks(self) -> Iterator[bytes]:
        """The bytes in pieces (:class:`xchange.body.BodyReader`); blocking file reads."""
        if self._data is not None:
            yield from (self._data,) if self._data else ()
            return
        for offset in range(0, self.size, CHUNK_SIZE):
            yield self._pread(offset)

    async def stream(self) -> AsyncIterator[bytes]:
        """The bytes in pieces, read from the file off the event loop."""
        if self._data is not None:
            if self._data:
                yield self._data
            return
        for offset in range(0, self.size, CHUNK_SIZE):
            yield await asyncio.to_thread(self._pread, offset)

    def _pread(self, offset: int) -> bytes:
        assert self._file is not None
        # pread: no shared file position, so several readers may read at once.
        length = min(CHUNK_SIZE, self.size - offset)
        piece = os.pread(self._file.fileno(), length, offset)
        if len(piece) != length:
            raise OSError("the spool file is shorter than its body")
        return piece

    def close(self) -> None:
        """Drop the spool file (nothing to do for a body in memory)."""
        if self._file is not None:
            self._file.close()


class Spool:
    """Collects a body as it arrives: in memory, then in a temporary file past the threshold."""

    def __init__(self, directory: Path | None, *, limit: int, too_large: XRoadError,
                 threshold: int = MEMORY_THRESHOLD) -> None:
        self._directory = directory
        self._limit = limit
        self._too_large = too_large
        self._threshold = threshold
        self._hasher = BodyHasher()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._file: IO[bytes] | None = None

    async def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._hasher.update(chunk)
        if self._hasher.size > self._limit:
            self.discard()
            raise self._too_large
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._file is None and self._pending_size > self._threshold:
            # Closed by Body.close or discard, not here: it outlives this call.
            self._file = tempfile.TemporaryFile(  # noqa: SIM115
                dir=self._directory, prefix="body-")
        if self._file is not None and self._pending_size >= CHUNK_SIZE:
            await self._flush()

    async def finish(self) -> Body:
        """The complete body."""
        digest = self._hasher.digest()
        if self._file is None:
            data = b"".join(self._pending)
            self._pending = []
            return Body(digest, data=data)
        await self._flush()
        file, self._file = self._file, None
        return Body(digest, file=file)

    def discard(self) -> None:
        """Give up: drop what was collected."""
        self._pending, self._pending_size = [], 0
        if self._file is not None:
            self._file.close()
            self._file = None

    async def _flush(self) -> None:
        assert self._file is not None
        data = b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        if data:
            await asyncio.to_thread(_write, self._file, data)


def _write(file: IO[bytes], data: bytes) -> None:
    file.write(data)
    file.flush()  # the body is read back with pread, below Python's buffer


async def spool(chunks: AsyncIterable[bytes], directory: Path | None, *, limit: int,
                too_large: XRoadError) -> Body:
    """Read ``chunks`` to the end into a :class:`Body`; over ``limit`` bytes raises
    ``too_large`` (and nothing is kept)."""
    target = Spool(directory, limit=limit, too_large=too_large)
    try:
        async for chunk in chunks:
            await target.write(chunk)
        return await target.finish()
    except BaseException:
        target.discard()
        raise
