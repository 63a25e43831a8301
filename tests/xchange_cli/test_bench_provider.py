"""The benchmark's provider system on a real socket: framing of requests and bodies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from xchange_cli.bench.provider import DOCUMENT, RESPONSE, ProviderProtocol


@pytest.fixture
async def provider() -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ProviderProtocol, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    async with server:
        yield port


async def _exchange(port: int, data: bytes, answers: int) -> bytes:
    """Send ``data`` in small pieces (framing must not depend on packet borders), then
    read until ``answers`` responses or the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(0, len(data), 7):
            writer.write(data[i:i + 7])
            await writer.drain()
        got = b""
        while got.count(b"HTTP/1.1 ") < answers:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            got += chunk
        return got
    finally:
        writer.close()


async def test_pipelined_requests_each_get_the_document(provider: int) -> None:
    one = b"GET /persons/1 HTTP/1.1\r\nHost: x\r\nX-Road-Client: A/B/C/d\r\n\r\n"
    assert await _exchange(provider, one * 3, 3) == RESPONSE * 3


async def test_bodies_with_length_or_chunks_are_read_past(provider: int) -> None:
    sized = b"POST /upload HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world"
    chunked = (b"POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
    after = b"GET / HTTP/1.1\r\n\r\n"
    assert await _exchange(provider, sized + chunked + after, 3) == RESPONSE * 3


async def test_connection_close_is_honoured(provider: int) -> None:
    data = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n"
    assert await _exchange(provider, data, 2) == RESPONSE  # one answer, then closed


async def test_garbage_gets_400_and_a_closed_connection(provider: int) -> None:
    data = b"POST / HTTP/1.1\r\nContent-Length: many\r\n\r\n"
    got = await _exchange(provider, data, 2)
    assert got.startswith(b"HTTP/1.1 400 ")


async def test_a_real_http_client_gets_the_json_document(provider: int) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(2):  # the second request reuses the connection
            async with session.post(f"http://127.0.0.1:{provider}/x",
                                    data=b"z" * 300_000) as resp:
                assert resp.status == 200
                assert await resp.read() == DOCUMENT
                assert resp.content_type == "application/json"
