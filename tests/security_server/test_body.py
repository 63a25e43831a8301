"""Tests of spooling: bodies collected as they arrive, in memory or in a temporary file, hashed
and copied to a sink on the way, and cleaned up whatever happens."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from security_server.body import (
    MEMORY_THRESHOLD,
    Body,
    Spool,
    inline,
    limit_malloc_arenas,
    spool,
    xml_lane,
)
from xchange.body import BodyDigest, BodyReader, ExternalBody, read_all
from xchange.errors import XRoadError

TOO_LARGE = XRoadError("too large", code="client.payload_too_large")
DATA = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(100_000))  # 3.05 MiB


class MemorySink:
    """A real, in-memory body sink (the message log's chunk store stands behind the seam)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.finished = self.dropped = False
        self.fail_after: int | None = None

    def write(self, data: bytes) -> None:
        if self.fail_after is not None and len(self.data) >= self.fail_after:
            raise OSError("disk full")
        self.data += data

    def finish(self) -> BodyReader:
        self.finished = True
        return _Reader(bytes(self.data))

    def drop(self) -> None:
        self.dropped = True
        self.data.clear()


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def chunks(self) -> Iterator[bytes]:
        yield self.data


async def pieces(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]
        await asyncio.sleep(0)


def open_files(directory: Path) -> int:
    """Open files of this process in ``directory`` (spool files have no name once made)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(str(directory))
    return count


async def collect(body: Body) -> bytes:
    return b"".join([chunk async for chunk in body.stream()])


@pytest.mark.parametrize("size", [0, 1, MEMORY_THRESHOLD])
async def test_a_small_body_stays_in_memory(tmp_path: Path, size: int) -> None:
    sink = MemorySink()
    body = await spool(pieces(DATA[:size]), tmp_path, limit=10**9, too_large=TOO_LARGE,
                       sink=lambda: sink)
    assert body.data == DATA[:size]
    assert body.digest == BodyDigest.of(DATA[:size])
    assert body.for_log() == DATA[:size]
    assert await collect(body) == DATA[:size] == b"".join(body.chunks())
    assert open_files(tmp_path) == 0
    assert not sink.finished and not sink.data  # the log takes small bodies inline


async def test_a_large_body_is_spooled_hashed_and_copied_to_the_sink(tmp_path: Path) -> None:
    sink = MemorySink()
    body = await spool(pieces(DATA, 1000), tmp_path, limit=10**9, too_large=TOO_LARGE,
                       sink=lambda: sink)
    assert body.data is None
    assert body.digest == BodyDigest.of(DATA)
    assert await collect(body) == DATA == b"".join(body.chunks())
    assert sink.finished and bytes(sink.data) == DATA
    assert os.listdir(tmp_path) == []  # the spool file never had a name
    assert open_files(tmp_path) == 1
    logged = body.for_log()
    assert isinstance(logged, ExternalBody)
    assert isinstance(logged.reader, _Reader)  # the sink's copy, not the spool
    assert read_all(logged) == DATA
    body.close()
    await asyncio.sleep(0.1)
    assert open_files(tmp_path) == 0
    assert not sink.dropped  # logged: the record needs it


async def test_a_large_body_never_logged_is_dropped_from_the_sink(tmp_path: Path) -> None:
    sink = MemorySink()
    body = await spool(pieces(DATA), tmp_path, limit=10**9, too_large=TOO_LARGE,
                       sink=lambda: sink)
    body.close()
    for _ in range(50):
        if sink.dropped:
            break
        await asyncio.sleep(0.02)
    assert sink.dropped and open_files(tmp_path) == 0


async def test_without_a_sink_the_log_reads_the_spool(tmp_path: Path) -> None:
    body = await spool(pieces(DATA), tmp_path, limit=10**9, too_large=TOO_LARGE)
    logged = body.for_log()
    assert isinstance(logged, ExternalBody) and logged.reader is body
    assert read_all(logged) == DATA
    body.close()


@pytest.mark.parametrize("limit", [len(DATA) - 1, MEMORY_THRESHOLD - 1, 0])
async def test_over_the_limit_reading_stops_and_nothing_is_kept(tmp_path: Path,
                                                                limit: int) -> None:
    sink = MemorySink()
    read = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal read
        async for piece in pieces(DATA):
            read += len(piece)
            yield piece

    with pytest.raises(XRoadError) as caught:
        await spool(counted(), tmp_path, limit=limit, too_large=TOO_LARGE, sink=lambda: sink)
    assert caught.value is TOO_LARGE
    assert read <= limit + 65536  # stopped at the first piece past the limit
    for _ in range(50):
        if open_files(tmp_path) == 0 and (sink.dropped or not sink.data):
            break
        await asyncio.sleep(0.02)
    assert open_files(tmp_path) == 0
    assert not sink.data


async def test_a_failing_sink_fails_the_body_and_cleans_up(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.fail_after = 1
    with pytest.raises(OSError, match="disk full"):
        await spool(pieces(DATA), tmp_path, limit=10**9, too_large=TOO_LARGE,
                    sink=lambda: sink)
    for _ in range(50):
        if sink.dropped:
            break
        await asyncio.sleep(0.02)
    assert sink.dropped and open_files(tmp_path) == 0


async def test_a_sender_that_fails_midway_leaves_nothing(tmp_path: Path) -> None:
    sink = MemorySink()

    async def broken() -> AsyncIterator[bytes]:
        async for piece in pieces(DATA[:2 * MEMORY_THRESHOLD]):
            yield piece
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):
        await spool(broken(), tmp_path, limit=10**9, too_large=TOO_LARGE, sink=lambda: sink)
    for _ in range(50):
        if sink.dropped:
            break
        await asyncio.sleep(0.02)
    assert sink.dropped and open_files(tmp_path) == 0


async def test_a_spool_can_be_fed_directly(tmp_path: Path) -> None:
    target = Spool(tmp_path, limit=10**9, too_large=TOO_LARGE, threshold=10)
    for piece in (b"0123456789", b"a", b"", b"bc"):
        await target.write(piece)
    body = await target.finish()
    assert body.data is None and await collect(body) == b"0123456789abc"
    body.close()


def test_a_body_is_in_memory_or_in_a_file() -> None:
    with pytest.raises(ValueError, match="in memory or in a file"):
        Body(BodyDigest.of(b""))
    assert Body.of(b"abc").size == 3


def test_malloc_arenas_can_be_limited_on_glibc() -> None:
    assert limit_malloc_arenas(8) is True  # the project's Linux hosts: glibc


async def test_an_xml_lane_runs_every_step_of_a_document_on_one_thread_off_the_loop() -> None:
    run = xml_lane()
    threads = {await run(threading.get_ident) for _ in range(20)}
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert await inline(threading.get_ident) == threading.get_ident()
    with pytest.raises(ZeroDivisionError):  # a step's failure reaches the caller
        await run(divmod, 1, 0)
