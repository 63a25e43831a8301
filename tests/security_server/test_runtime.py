"""Tests of the runtime's logging of messages: where the records are committed, and the
failure each proxy reports (the log's own tests cover the commit itself)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from certs.ca import DevCA
from security_server.config import SecurityServerConfig
from security_server.keys import load_keys
from security_server.runtime import Runtime
from tests.security_server.test_keys import MEMBER, SERVER, Files, offline_runtime
from xchange.errors import XRoadError
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


async def test_concurrent_messages_share_one_commit_on_the_loops_thread(
    runtime: Runtime, pki_now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = _commit_threads(runtime, monkeypatch)
    await asyncio.gather(runtime.log_message(_entry(1, pki_now), side="client"),
                         runtime.log_message(_entry(2, pki_now), side="server"))
    assert threads == [threading.get_ident()]  # SQLite: one commit, no thread hand-over
    assert [r.entry.query_id for r in await runtime.log.records()] == ["q-1", "q-2"]


@pytest.mark.parametrize(("side", "code"), [("client", "server.clientproxy.logging_failed"),
                                            ("server", "server.serverproxy.logging_failed")])
async def test_a_record_not_written_stops_the_message_with_its_proxys_code(
    runtime: Runtime, pki_now: datetime, side: str, code: str
) -> None:
    runtime.log.close()
    with pytest.raises(XRoadError) as caught:
        await runtime.log_message(_entry(1, pki_now), side=side)  # type: ignore[arg-type]
    assert caught.value.code == code
