"""A small provider information system for the demo, the benchmark and end-to-end tests.

It plays an agency's population register behind its security server:

* ``GET /persons/{code}``: one person's record (JSON), 404 when unknown;
* ``GET /persons``: all records, or those whose name contains ``?name=``;
* ``POST /echo``: the request body and the X-Road headers the security server passed on;
* ``GET /slow?seconds=N``: answers after N seconds (to show timeouts);
* ``POST /digest``: the size and SHA-256 of the request body, read as a stream;
* ``GET /bytes?size=N``: N bytes of :func:`sample_bytes`, streamed (large answers);
* ``GET /openapi.json``: the OpenAPI 3 description of the above.

Run: ``python -m xchange_cli.demo_provider --port 9000``; prints ``ready`` when listening.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from collections.abc import Iterator

from aiohttp import web

__all__ = ["PERSONS", "create_provider_app", "sample_bytes"]

PERSONS: dict[str, dict[str, object]] = {
    "38001010001": {"code": "38001010001", "name": "Mari Maasikas", "born": "1980-01-01",
                    "address": "Pikk 1, Tallinn"},
    "49002020002": {"code": "49002020002", "name": "Liis Lepik", "born": "1990-02-02",
                    "address": "Rüütli 2, Tartu"},
    "37503030003": {"code": "37503030003", "name": "Jaan Tamm", "born": "1975-03-03",
                    "address": "Aia 3, Pärnu"},
}


async def _person(request: web.Request) -> web.Response:
    record = PERSONS.get(request.match_info["code"])
    if record is None:
        return web.json_response({"error": "no such person"}, status=404)
    return web.json_response(record)


async def _persons(request: web.Request) -> web.Response:
    name = request.query.get("name", "").lower()
    return web.json_response([p for p in PERSONS.values() if name in str(p["name"]).lower()])


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    xroad = {k: v for k, v in request.headers.items() if k.lower().startswith("x-road-")}
    return web.json_response(
        {"method": request.method, "path": request.raw_path, "body_bytes": len(body),
         "body": body.decode("utf-8", "replace")[:1000], "x_road_headers": xroad,
         "content_type": request.headers.get("Content-Type")}
    )


def sample_bytes(size: int) -> Iterator[bytes]:
    """``size`` bytes that do not repeat (SHA-256 of a counter), in 1 MiB pieces."""
    block = 1024 * 1024
    for start in range(0, size, block):
        n = min(block, size - start)
        first = start // 32
        piece = b"".join(hashlib.sha256(b"%d" % i).digest()
                         for i in range(first, first + (n + 31) // 32 + 1))
        offset = start - first * 32
        yield piece[offset:offset + n]


async def _digest(request: web.Request) -> web.Response:
    sha, size = hashlib.sha256(), 0
    async for chunk in request.content.iter_any():
        sha.update(chunk)
        size += len(chunk)
    return web.json_response({"bytes": size, "sha256": sha.hexdigest()})


async def _bytes(request: web.Request) -> web.StreamResponse:
    size = int(request.query.get("size", "0"))
    out = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    out.content_length = size
    await out.prepare(request)
    for piece in sample_bytes(size):
        await out.write(piece)
    await out.write_eof()
    return out


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("seconds", "5")))
    return web.json_response({"slow": True})


OPENAPI: dict[str, object] = {
    "openapi": "3.0.3",
    "info": {"title": "Population register", "version": "1.0"},
    "paths": {
        "/persons": {"get": {"summary": "Search persons by name",
                             "responses": {"200": {"description": "Persons"}}}},
        "/persons/{code}": {"get": {"summary": "One person",
                                    "parameters": [{"name": "code", "in": "path",
                                                    "required": True,
                                                    "schema": {"type": "string"}}],
                                    "responses": {"200": {"description": "A person"}}}},
        "/echo": {"post": {"summary": "Echo", "responses": {"200": {"description": "Echo"}}}},
    },
}


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


def create_provider_app() -> web.Application:
    app = web.Application(client_max_size=512 * 1024 * 1024)
    app.router.add_get("/persons/{code}", _person)
    app.router.add_get("/persons", _persons)
    app.router.add_route("*", "/echo", _echo)
    app.router.add_route("*", "/echo/{tail:.*}", _echo)
    app.router.add_get("/slow", _slow)
    app.router.add_post("/digest", _digest)
    app.router.add_get("/bytes", _bytes)
    app.router.add_get("/openapi.json", _openapi)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    async def ready(app: web.Application) -> None:
        print(json.dumps({"ready": True, "port": args.port}), flush=True)

    app = create_provider_app()
    app.on_startup.append(ready)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
