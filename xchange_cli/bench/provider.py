"""The benchmark's provider system: one fixed JSON document, as fast as Python serves it.

The benchmark measures the security servers, so the provider behind them must cost next to
nothing.  This is a bare :class:`asyncio.Protocol` speaking just enough HTTP/1.1 for the
load generator and for the provider's security server: persistent connections, pipelining,
request bodies with ``Content-Length`` or chunked encoding (read and discarded as they
arrive, so a 100 MiB upload costs no memory here), and one precomputed answer to every
request.  No routing, no header parsing beyond what framing needs.  It runs on uvloop when
that is installed.

It is a measuring instrument, not a server to expose: it trusts its peers and answers
anything.  Run: ``python -m xchange_cli.bench.provider --port 9000``; prints one JSON line
``{"ready": true, ...}`` when listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Final, cast

__all__ = ["DOCUMENT", "RESPONSE", "ProviderProtocol", "serve"]

DOCUMENT: Final = json.dumps(
    {"code": "38001010001", "name": "Mari Maasikas", "born": "1980-01-01",
     "address": "Pikk 1, Tallinn"}, separators=(",", ":")).encode()
RESPONSE: Final = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(DOCUMENT)).encode() + b"\r\n\r\n" + DOCUMENT
)
_MAX_HEAD: Final = 64 * 1024
_HEAD, _BODY, _SIZE, _CHUNK, _LAST = range(5)
"""Connection states: request head, fixed-length body, chunk size line, chunk data, the CRLF
after the last chunk."""


class ProviderProtocol(asyncio.Protocol):
    """One connection: split the byte stream into requests, answer each with RESPONSE."""

    def __init__(self) -> None:
        self._transport: asyncio.WriteTransport | None = None
        self._buf = bytearray()
        self._state = _HEAD
        self._skip = 0  # bytes still to discard in the _BODY, _CHUNK and _LAST states
        self._close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            while self._step():
                pass
        except ValueError:
            assert self._transport is not None
            self._transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                  b"Connection: close\r\n\r\n")
            self._transport.close()

    def _step(self) -> bool:
        """Advance by one unit (a body slice, a chunk, a request head); False: need data."""
        buf = self._buf
        if self._state in (_BODY, _CHUNK, _LAST):
            n = min(self._skip, len(buf))
            del buf[:n]
            self._skip -= n
            if self._skip:
                return False
            if self._state == _CHUNK:
                self._state = _SIZE
            else:
                self._answer()
            return True
        end = buf.find(b"\r\n\r\n" if self._state == _HEAD else b"\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD:
                raise ValueError("request head or chunk line too long")
            return False
        if self._state == _SIZE:
            size = int(bytes(buf[:end]).split(b";", 1)[0].strip() or b"0", 16)
            del buf[:end + 2]
            # The last chunk (size 0) is followed by a CRLF (our clients send no trailers).
            self._state, self._skip = (_CHUNK, size + 2) if size else (_LAST, 2)
            return True
        head = bytes(buf[:end]).lower()
        del buf[:end + 4]
        request_line, _, fields = head.partition(b"\r\n")
        self._close_after = b"connection: close" in fields or request_line.endswith(b"http/1.0")
        if b"transfer-encoding: chunked" in fields:
            self._state = _SIZE
            return True
        for line in fields.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                self._skip = int(line[15:])
        if self._skip:
            self._state = _BODY
        else:
            self._answer()
        return True

    def _answer(self) -> None:
        assert self._transport is not None
        self._state = _HEAD
        self._transport.write(RESPONSE)
        if self._close_after:
            self._transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ProviderProtocol, host, port, backlog=4096,
                                      reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"ready": True, "port": port}), flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
