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
import base64
import contextlib
import ctypes
import ctypes.util
import functools
import itertools
import os
import tempfile
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
)
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Protocol, TypeVar

from xchange.body import (
    CHUNK_SIZE,
    BodyDigest,
    BodyHasher,
    BodyReader,
    ExternalBody,
    MessageBody,
)
from xchange.errors import XRoadError

__all__ = ["MEMORY_THRESHOLD", "SOAP_PART_LIMIT", "Body", "BodySink", "Runner", "SoapMessage",
           "Spool", "inline", "limit_malloc_arenas", "soap_message", "spool", "xml_lane"]

_T = TypeVar("_T")

MEMORY_THRESHOLD: Final = 1024 * 1024
"""Bodies up to this size (1 MiB) stay in memory; larger ones are spooled to a file."""
SOAP_PART_LIMIT: Final = 16 * 1024 * 1024
"""The most of a spooled ``multipart/related`` SOAP message read into memory (16 MiB): its
SOAP part (with its MIME headers) must end within it; the attachments stay in the spool."""


class Body:
    """A complete body: its digest, and its bytes in memory or in a temporary file."""

    __slots__ = ("_data", "_file", "_logged", "_stored", "digest")

    def __init__(self, digest: BodyDigest, *, data: bytes | None = None,
                 file: IO[bytes] | None = None,
                 stored: tuple[BodyReader, BodySink] | None = None) -> None:
        if (data is None) == (file is None):
            raise ValueError("a body is in memory or in a file")
        self.digest = digest
        self._data = data
        self._file = file
        self._stored = stored
        self._logged = False

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

    async def read(self) -> bytes:
        """The whole body in memory (a SOAP message, which is parsed whole)."""
        if self._data is not None:
            return self._data
        return b"".join([chunk async for chunk in self.stream()])

    async def head(self, limit: int) -> bytes:
        """The first ``limit`` bytes (all of them if fewer)."""
        if self._data is not None:
            return self._data[:limit]
        return await asyncio.to_thread(self._pread, 0, min(limit, self.size))

    def for_log(self) -> MessageBody:
        """The body as the message log takes it: bytes, or an external body -- already in
        the log's chunk store if it was spooled with the log's sink, else read from here."""
        if self._data is not None:
            return self._data
        self._logged = True
        return ExternalBody(self.digest, self if self._stored is None else self._stored[0])

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

    def _pread(self, offset: int, length: int | None = None) -> bytes:
        assert self._file is not None
        # pread: no shared file position, so several readers may read at once.
        length = min(CHUNK_SIZE, self.size - offset) if length is None else length
        piece = os.pread(self._file.fileno(), length, offset)
        if len(piece) != length:
            raise OSError("the spool file is shorter than its body")
        return piece

    def close(self) -> None:
        """Drop the spool file (nothing to do for a body in memory), and the copy in the
        log's chunk store if no record took it."""
        if self._file is not None:
            self._file.close()
        if self._stored is not None and not self._logged:
            _in_background(asyncio.to_thread(self._stored[1].drop))
        self._stored = None


class BodySink(Protocol):
    """Somewhere else a large body is written as it arrives (the message log's chunk
    store).  Blocking: called on a worker thread, in order."""

    def write(self, data: bytes) -> None: ...

    def finish(self) -> BodyReader: ...

    def drop(self) -> None: ...


_THREADS: Final = ThreadPoolExecutor(2, thread_name_prefix="xchange-body")
"""The threads that hash and write large bodies (two cores' worth; see also
:func:`limit_malloc_arenas`)."""


_XML_LANES: Final = tuple(ThreadPoolExecutor(1, thread_name_prefix=f"xchange-xml{i}")
                          for i in range(2))
_lane_turns = itertools.count()


class Runner(Protocol):
    """Runs a blocking step and gives its result: :func:`inline` or an :func:`xml_lane`."""

    def __call__(self, step: Callable[..., _T], /, *args: Any,
                 **kwargs: Any) -> Awaitable[_T]: ...


def xml_lane() -> Runner:
    """One thread to run all steps of one XML document on, off the event loop, in order:
    an lxml parser fed piece by piece must stay on the thread it started on (its names
    live in that thread's dictionary).  Documents take the two lanes in turn."""
    lane = _XML_LANES[next(_lane_turns) % len(_XML_LANES)]

    async def run(step: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(lane, functools.partial(step, *args, **kwargs))

    return run


async def inline(step: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """A :class:`Runner` for small steps: on the event loop."""
    return step(*args, **kwargs)


class _Stage:
    """Runs ``step`` on each piece on a worker thread, in order, while the event loop goes on;
    at most ``depth`` pieces wait."""

    def __init__(self, step: Callable[[bytes], None], *, depth: int = 2) -> None:
        self._step = step
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(depth)
        self._task = asyncio.ensure_future(self._run())

    async def put(self, data: bytes) -> None:
        if self._task.done():  # it failed: say why
            await self._task
        await self._queue.put(data)

    async def close(self) -> None:
        """Wait for every piece to be done; raise the first failure."""
        if not self._task.done():
            await self._queue.put(None)
        await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while (data := await self._queue.get()) is not None:
            await loop.run_in_executor(_THREADS, self._step, data)


class _Worker:
    """A large body's pieces are hashed, written to the spool file and written to the sink,
    each on a thread of its own, while the event loop receives the next ones: the slowest
    step sets the pace, not their sum."""

    def __init__(self, file: IO[bytes], sink: BodySink | None) -> None:
        self.file, self.sink = file, sink
        self.hasher = BodyHasher()
        self._abandoned = False
        self._stages = (_Stage(self.hasher.update), _Stage(self._write),
                        *((_Stage(self._store),) if sink is not None else ()))

    async def put(self, data: bytes) -> None:
        for stage in self._stages:
            await stage.put(data)

    async def close(self) -> None:
        """Wait for every piece to be hashed and written; raise the first failure."""
        for stage in self._stages:
            await stage.close()

    async def abandon(self) -> None:
        """Stop writing, wait for the piece in hand, then drop the file and the sink's copy."""
        self._abandoned = True
        with contextlib.suppress(Exception):
            await self.close()
        self.file.close()
        if self.sink is not None:
            await asyncio.to_thread(self.sink.drop)

    def _write(self, data: bytes) -> None:
        if self._abandoned:
            return
        self.file.write(data)
        self.file.flush()  # the body is read back with pread, below Python's buffer

    def _store(self, data: bytes) -> None:
        if not self._abandoned and self.sink is not None:
            self.sink.write(data)


class Spool:
    """Collects a body as it arrives: in memory, then -- past the threshold -- in a temporary
    file and, if given one, a :class:`BodySink`, both written (and the bytes hashed) on a
    worker thread while the next bytes arrive."""

    def __init__(self, directory: Path | None, *, limit: int, too_large: XRoadError,
                 threshold: int = MEMORY_THRESHOLD,
                 sink: Callable[[], BodySink] | None = None) -> None:
        self._directory = directory
        self._limit = limit
        self._too_large = too_large
        self._threshold = threshold
        self._new_sink = sink
        self._size = 0
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._worker: _Worker | None = None

    async def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._size += len(chunk)
        if self._size > self._limit:
            raise self._too_large
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._worker is None and self._pending_size > self._threshold:
            # Closed by Body.close or discard, not here: it outlives this call.
            file = tempfile.TemporaryFile(dir=self._directory, prefix="body-")  # noqa: SIM115
            self._worker = _Worker(file, None if self._new_sink is None else self._new_sink())
        if self._worker is not None and self._pending_size >= CHUNK_SIZE:
            await self._worker.put(self._take())

    async def finish(self) -> Body:
        """The complete body."""
        if self._worker is None:
            data = self._take()
            return Body(BodyDigest.of(data), data=data)
        worker = self._worker
        if self._pending:
            await worker.put(self._take())
        await worker.close()
        stored = None
        if worker.sink is not None:
            stored = (await asyncio.to_thread(worker.sink.finish), worker.sink)
        self._worker = None
        return Body(worker.hasher.digest(), file=worker.file, stored=stored)

    def discard(self) -> None:
        """Give up: drop what was collected (the sink's part on a thread of its own)."""
        self._pending, self._pending_size = [], 0
        worker, self._worker = self._worker, None
        if worker is not None:
            _in_background(worker.abandon())

    def _take(self) -> bytes:
        data = b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        return data


_M_ARENA_MAX: Final = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Let glibc's malloc keep at most ``arenas`` heaps (True if it could be set: glibc only).
    Call it before any thread starts.

    By default every thread that allocates gets a heap of its own (up to eight per core),
    and each keeps the 1 MiB buffers it freed for reuse: streaming a 100 MiB body through the
    worker threads left a security server 20-45 MiB larger, most of it free memory held in
    those heaps; with two heaps, 8-15 MiB (measured with ``xchange bench``, same run).  Two
    cores' worth of threads share two heaps with little contention.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


_cleaning: set[asyncio.Future[None]] = set()


def _in_background(cleanup: Coroutine[Any, Any, None]) -> None:
    """Clean up without holding up the request that is going away."""
    future = asyncio.ensure_future(cleanup)
    _cleaning.add(future)
    future.add_done_callback(_cleaning.discard)


async def spool(chunks: AsyncIterable[bytes], directory: Path | None, *, limit: int,
                too_large: XRoadError, sink: Callable[[], BodySink] | None = None) -> Body:
    """Read ``chunks`` to the end into a :class:`Body`; over ``limit`` bytes raises
    ``too_large`` (and nothing is kept)."""
    target = Spool(directory, limit=limit, too_large=too_large, sink=sink)
    try:
        async for chunk in chunks:
            await target.write(chunk)
        return await target.finish()
    except BaseException:
        target.discard()
        raise


@dataclass(frozen=True, slots=True)
class SoapMessage:
    """What of a SOAP message (:class:`Body`) is read into memory to check it."""

    data: bytes | None
    """The whole message, or (``head_only``) its first bytes; ``None`` for a spooled
    ``text/xml`` message, which is parsed from :meth:`Body.chunks` as it is read."""
    head_only: bool
    body: Body
    request_hash: str | None
    """For ``data=None``: the requestHash of the message (the SHA-512 taken as it arrived)."""

    def pieces(self) -> bytes | Iterator[bytes]:
        """What :mod:`xchange.soap.envelope` is given: the bytes, or the spooled pieces
        (blocking reads: see :meth:`run`)."""
        return self.data if self.data is not None else self.body.chunks()

    async def run(self, check: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``check(*args, **kwargs)``: on a worker thread when it reads the spool."""
        if self.data is not None:
            return check(*args, **kwargs)
        return await asyncio.to_thread(check, *args, **kwargs)


async def soap_message(body: Body, content_type: str | None) -> SoapMessage:
    """What of a SOAP message is read into memory.

    A ``multipart/related`` message larger than :data:`SOAP_PART_LIMIT`: its first
    :data:`SOAP_PART_LIMIT` bytes (the SOAP part must end within them;
    :func:`xchange.soap.mime.soap_part` with ``head_only``); the attachments are never read.
    A spooled ``text/xml`` message: nothing -- it is parsed piece by piece from the spool,
    keeping only its Header and the name of its Body's element.  Anything else (a message
    in memory, a multipart message up to the limit): the whole message."""
    multipart = (content_type or "").split(";", 1)[0].strip().lower() == "multipart/related"
    if body.data is not None:
        return SoapMessage(body.data, False, body, None)
    if not multipart:
        return SoapMessage(None, False, body,
                           base64.b64encode(body.digest.sha512).decode("ascii"))
    if body.size > SOAP_PART_LIMIT:
        return SoapMessage(await body.head(SOAP_PART_LIMIT), True, body, None)
    return SoapMessage(await body.read(), False, body, None)
