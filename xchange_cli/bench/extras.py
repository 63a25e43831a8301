"""The measurements besides request rates: a large body, and verifying a large log.

* :func:`large_body` POSTs one large body (100 MiB by default) through the federation and
  reports the time, the answer, and how far each process's RSS rose above where it was.
* :func:`fill_log` writes a message log of N records -- real request/response pairs signed
  by the federation's two members -- straight through
  :class:`security_server.messagelog.MessageLog` (no HTTP), and :func:`verify_log_speed`
  times ``xchange ss verify-log`` over it, as an operator would run it.  The pairs are signed
  the way the servers sign them under load: :data:`LOG_SIGNING_BATCH` requests (and as many
  responses) to a batch signature (docs/performance.md says where the number comes from).
* :func:`signature_batches` counts, in a running server's log, how many messages its batch
  signatures covered.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from certs.keys import load_certificates, load_private_key, read_secret_file
from certs.ocsp import OcspResponder
from security_server.body import Body
from security_server.db import create_db_engine, create_tables
from security_server.logkeys import load_keyring
from security_server.messagelog import MessageLog
from security_server.runtime import make_entry
from xchange.ocsp import ocsp_request
from xchange.rest import RestRequest, RestResponse, digest_payload, request_hash_of
from xchange.signing import SigningIdentity, ToSign, sign_batch
from xchange.transport import FrameHead
from xchange_cli.bench import procs
from xchange_cli.bench.stats import MIB, server_figures
from xchange_cli.federation import Federation, ServerFiles

__all__ = ["LOG_SIGNING_BATCH", "fill_log", "large_body", "signature_batches",
           "verify_log_speed"]

_CHUNK = 1024 * 1024

LOG_SIGNING_BATCH = 6
"""Messages per signature in the verify-log log: the mean batch the security servers formed
at 64 connections (``signature_batches``, docs/performance.md)."""


def large_body(fed: Federation, pids: Mapping[str, int], *, size_mib: int,
               timeout_s: float = 300.0) -> dict[str, Any]:
    """POST ``size_mib`` MiB through the consumer's client proxy to the provider system.

    The client streams the body in 1 MiB pieces, so its own memory does not count.  An
    error answer is a result like any other and is reported as such.
    """
    consumer = fed.servers[1]
    service = fed.services["persons"]
    size = size_mib * MIB
    before = {}
    for name, pid in pids.items():
        procs.reset_peak(pid)
        before[name] = procs.sample(pid)
    conn = http.client.HTTPConnection("127.0.0.1", consumer.client_proxy_port, timeout=timeout_s)
    started = time.perf_counter()
    status, error, detail = 0, None, ""
    try:
        conn.putrequest("POST", f"/r1/{service}/upload")
        conn.putheader("X-Road-Client", str(fed.allowed_client))
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        piece = b"\x5a" * _CHUNK
        for _ in range(size_mib):
            conn.send(piece)
        resp = conn.getresponse()
        status = resp.status
        error = resp.getheader("X-Road-Error")
        detail = resp.read(2000).decode("utf-8", "replace")
    except OSError as exc:
        # The server may answer (413) and close before the whole body is sent.
        error, detail = type(exc).__name__, str(exc)
        with contextlib.suppress(OSError, http.client.HTTPException):
            resp = conn.getresponse()
            status, error = resp.status, resp.getheader("X-Road-Error") or error
            detail = resp.read(2000).decode("utf-8", "replace")
    finally:
        conn.close()
    seconds = time.perf_counter() - started
    figures = {name: server_figures(before[name], procs.sample(pid), procs.CLK_TCK)
               for name, pid in pids.items()}
    return {
        "size_mib": size_mib,
        "status": status,
        "error": error,
        "answer": detail[:300],
        "seconds": seconds,
        "mib_per_s": size_mib / seconds if seconds > 0 else None,
        "rss_growth_mib": {n: f.rss_growth_mib for n, f in figures.items()},
        "peak_rss_mib": {n: f.peak_rss_mib for n, f in figures.items()},
        "cpu_s": {n: f.cpu_s for n, f in figures.items()},
    }


def _identity(server: ServerFiles) -> SigningIdentity:
    passphrase = read_secret_file(server.directory.parent / "keys.passphrase")
    key = load_private_key(server.directory / "sign.key", passphrase)
    return SigningIdentity(server.agency.member, key,
                           tuple(load_certificates(server.directory / "sign.pem")))


def _unsafe_fast_sqlite(path: Path) -> sa.Engine:
    """An SQLite engine without fsync: fine for a throwaway log that only has to be read
    back, never for a server's log (which :func:`security_server.db.create_db_engine`
    makes durable)."""
    engine = sa.create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()

    return engine


async def _fill(log: MessageLog, fed: Federation, records: int, batch: int) -> None:
    consumer, provider = _identity(fed.servers[1]), _identity(fed.servers[0])
    # Staple real OCSP responses, as the servers do: the audit checks them.
    responder, issued = OcspResponder(fed.ca), datetime.now(UTC)
    consumer_staples, provider_staples = (
        (responder.respond(ocsp_request(i.chain[0], fed.ca.certificate), issued),)
        for i in (consumer, provider))
    service = fed.services["persons"]
    body = b'{"code":"38001010001","name":"Mari Maasikas","born":"1980-01-01"}'
    empty, answer = Body.of(b""), Body.of(body)
    pending: list[asyncio.Future[Any]] = []
    pairs = (records + 1) // 2
    for first in range(0, pairs, batch):
        now = datetime.now(UTC)
        requests = [RestRequest.from_is(
            "GET", f"/r1/{service}/persons/{i:011d}",
            (("X-Road-Client", str(fed.allowed_client)), ("X-Road-Id", str(uuid.uuid4()))))
            for i in range(first, min(first + batch, pairs))]
        parts = [req.header_part() for req in requests]
        payloads = [digest_payload(part, b"") for part in parts]
        signatures = sign_batch(consumer, [ToSign(p, now, uuid.uuid4().hex) for p in payloads])
        responses = [RestResponse(message_id=req.message_id, client=req.client,
                                  service=req.service, request_hash=request_hash_of(payload),
                                  status=200, headers=(("content-type", "application/json"),))
                     .header_part() for req, payload in zip(requests, payloads, strict=True)]
        answers = sign_batch(provider, [ToSign(digest_payload(r, body)) for r in responses])
        entries = []
        for k, req in enumerate(requests):
            entries.append(make_entry(req, "request", "outgoing",
                                      FrameHead(parts[k], signatures[k], consumer_staples),
                                      empty, now))
            if 2 * (first + k) + 1 < records:
                entries.append(make_entry(
                    req, "response", "incoming",
                    FrameHead(responses[k], answers[k], provider_staples), answer, now))
        pending += [asyncio.ensure_future(
            log.append(e, error_code="server.clientproxy.logging_failed")) for e in entries]
        if len(pending) >= 512:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


def fill_log(path: Path, fed: Federation, records: int,
             batch: int = LOG_SIGNING_BATCH) -> float:
    """Write ``records`` signed records into a new SQLite log at ``path``, ``batch``
    messages to a signature; return seconds."""
    started = time.perf_counter()
    engine = _unsafe_fast_sqlite(path)
    create_tables(engine)
    log = MessageLog(engine)
    try:
        asyncio.run(_fill(log, fed, records, batch))
    finally:
        log.close()
        engine.dispose()
    return time.perf_counter() - started


def verify_log_speed(fed: Federation, work: Path, records: int,
                     batch: int = LOG_SIGNING_BATCH) -> dict[str, Any]:
    """Time ``xchange ss verify-log`` over a fresh log of ``records`` records, as the
    consumer's security server would have written it (``batch`` messages to a signature)."""
    path = work / "verify-log.db"
    path.unlink(missing_ok=True)
    fill_seconds = fill_log(path, fed, records, batch)
    env = dict(os.environ, XCHANGE_DATABASE_URL=f"sqlite:///{path}")
    argv = [sys.executable, "-m", "xchange_cli", "ss", "verify-log", "--config",
            str(fed.servers[1].config)]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False,
                          timeout=3600)
    seconds = time.perf_counter() - started
    ok = done.returncode == 0 and f"intact: {records} records" in done.stdout
    return {
        "records": records,
        "seconds": seconds,
        "records_per_s": records / seconds if ok else None,
        "ok": ok,
        "output": (done.stdout + done.stderr).strip()[-500:],
        "fill_seconds": fill_seconds,
        "signing_batch": batch,
        "note": "wall time of the whole command, interpreter start included",
    }


def signature_batches(server: ServerFiles, after: int = 0) -> dict[str, Any]:
    """How many messages each signature covered in ``server``'s SQLite log, over the records
    numbered above ``after``: per kind (requests are the consumer's signatures, responses
    the provider's), messages, distinct signatures (a single-form signature is a batch of
    one) and their mean and largest batch."""
    engine = create_db_engine(f"sqlite:///{server.database}")
    log = MessageLog(engine, keyring=load_keyring(server.log_keys) if server.log_keys else None)

    async def read() -> list[Any]:
        return await log.records_after(after, 10_000_000)

    try:
        records = asyncio.run(read())
    finally:
        log.close()
        engine.dispose()
    figures: dict[str, Any] = {}
    for kind in ("request", "response"):
        sizes = Counter(r.entry.signature.split("~")[0] for r in records
                        if r.entry.kind == kind and r.entry.status == "ok")
        messages = sum(sizes.values())
        figures[kind] = {"messages": messages, "signatures": len(sizes),
                         "mean_batch": messages / len(sizes) if sizes else None,
                         "largest_batch": max(sizes.values(), default=None)}
    return figures
