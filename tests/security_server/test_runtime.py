"""Tests of the runtime's message count and how it lets a lone message's records skip the log's
writer thread (the log's own tests cover the commit itself)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from certs.ca import DevCA
from security_server.config import SecurityServerConfig
from security_server.keys import load_keys
from security_server.runtime import RUNTIME, Runtime, message_handler
from tests.security_server.test_keys import MEMBER, SERVER, Files, offline_runtime
from xchange.messagelog import LogEntry, StoredRecord


@pytest.fixture
async def runtime(tmp_path: Path, dev_ca: DevCA, pki_now: datetime) -> AsyncIterator[Runtime]:
    """A runtime over key files and a message log on SQLite (configuration client unused)."""
    dev_ca.issue_key_and_cert(tmp_path, "auth", SERVER, member_name="Keys", now=pki_now)
    dev_ca.issue_key_and_cert(tmp_path, "sign", MEMBER, member_name="Keys", now=pki_now)
    files = Files(tmp_path, dev_ca)
    config = SecurityServerConfig.from_file(files.config()).from_env(files.environ)
    keys = load_keys(config)
    try:
        async with offline_runtime(config, keys, dev_ca, pki_now) as rt:
            yield rt
    finally:
        keys.close()


def _entry(i: int, at: datetime) -> LogEntry:
    return LogEntry(query_id=f"q-{i}", kind="request", direction="outgoing",
                    client="TEST/GOV/4242/consumer", service="TEST/GOV/1234/provider/persons",
                    user_id=None, issue=None, header_part=b'{"id": "q"}', body=b"body",
                    signature="eyJhbGciOiJFUzI1NiJ9..sig", status="ok", error_code=None,
                    created_at=at, ocsp_responses=())


def _commit_threads(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    threads = []
    real = rt.log._commit_group

    def where(entries: Sequence[LogEntry]) -> list[StoredRecord]:
        threads.append(threading.get_ident())
        return real(entries)

    monkeypatch.setattr(rt.log._writer, "_commit_group", where)
    return threads


async def test_handlers_count_the_messages_in_flight(runtime: Runtime) -> None:
    app = web.Application()
    app[RUNTIME] = runtime
    seen = []

    @message_handler
    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(runtime.messages_in_flight)
        if request.path == "/fail":
            raise web.HTTPBadRequest()
        return web.Response()

    with runtime.in_flight():
        await handler(make_mocked_request("GET", "/", app=app))
    with pytest.raises(web.HTTPBadRequest):
        await handler(make_mocked_request("GET", "/fail", app=app))
    assert seen == [2, 1]
    assert runtime.messages_in_flight == 0  # also after a failure


async def test_only_a_lone_message_is_logged_without_the_writer_thread(
    runtime: Runtime, pki_now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = _commit_threads(runtime, monkeypatch)
    with runtime.in_flight():
        await runtime.log_message(_entry(1, pki_now), side="client")
        with runtime.in_flight():  # another message: the writer thread groups the records
            await runtime.log_message(_entry(2, pki_now), side="server")
    here = threading.get_ident()
    assert threads[0] == here != threads[1]
    assert [r.sequence for r in await runtime.log.records()] == [1, 2]
