"""CPU per request of the client side alone: aiohttp's ClientSession against
security_server.httpclient.Pool, alternately, against one aiohttp server in another process
over TLS (2 KB request and answer bodies, keep-alive, as between two security servers).

    .venv/bin/python bench/client_cpu.py [rounds]

Prints the client process's CPU time per request (``time.process_time``) at 1 and 64
connections; the server's CPU is not counted.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

BODY = b"x" * 2048
PORT = 18777


def serve(port: int, cert: str, key: str) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=BODY, content_type="application/x-frame")

    app = web.Application()
    app.router.add_post("/m", handle)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=ctx, print=None,
                access_log=None)


async def run(kind: str, cert: str, conns: int, n: int) -> tuple[float, float]:
    import aiohttp

    from security_server.httpclient import Pool

    ctx = ssl.create_default_context(cafile=cert)
    ctx.check_hostname = False
    headers = (("Content-Type", "application/x-frame"),)
    one: Callable[[], Awaitable[None]]
    close: Callable[[], Awaitable[None]]
    if kind == "aiohttp":
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx, limit=64), auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar())
        timeout = aiohttp.ClientTimeout(total=60, sock_connect=5)

        async def one() -> None:
            async with session.post(f"https://127.0.0.1:{PORT}/m", data=BODY,
                                    headers=dict(headers), timeout=timeout) as resp:
                async for _ in resp.content.iter_any():
                    pass

        close = session.close
    else:
        pool = Pool("127.0.0.1", PORT, tls=ctx, limit=64)

        async def one() -> None:
            async with await pool.request("POST", "/m", headers, BODY, timeout=60) as resp:
                async for _ in resp.chunks():
                    pass

        close = pool.close

    async def worker(k: int) -> None:
        for _ in range(k):
            await one()

    await asyncio.gather(*(worker(2) for _ in range(conns)))  # connections opened
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(n // conns) for _ in range(conns)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await close()
    return cpu / n * 1e6, n / wall


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        serve(PORT, sys.argv[2], sys.argv[3])
        return
    from certs.keys import (
        generate_private_key,
        self_signed_tls_certificate,
        unsafe_write_plaintext_key,
        write_certificate,
    )
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "s.pem", Path(tmp) / "s.key"
        private = generate_private_key()
        write_certificate(cert, self_signed_tls_certificate(
            private, "bench", now=datetime.now(UTC), hosts=("127.0.0.1",)))
        unsafe_write_plaintext_key(key, private)
        server = subprocess.Popen([sys.executable, __file__, "serve", str(cert), str(key)])
        time.sleep(1.5)
        try:
            for rnd in range(rounds):
                for conns, n in ((1, 3000), (64, 6400)):
                    for kind in ("aiohttp", "httpclient"):
                        cpu, rps = asyncio.run(run(kind, str(cert), conns, n))
                        print(f"round {rnd} {conns:3d} connections {kind:10s} "
                              f"{cpu:6.1f} us of client CPU per request ({rps:.0f} req/s)",
                              flush=True)
        finally:
            server.terminate()


if __name__ == "__main__":
    main()
