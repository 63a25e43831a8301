"""Tests of the runtime's logging of messages: where the records are committed, signing and
logging in one turn, and the failure each proxy reports (the log's own tests cover the
commit itself)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal

import pytest

from certs.ca import DevCA
from security_server.batchsign import KeySigner
from security_server.config import SecurityServerConfig
from security_server.keys import load_keys
from security_server.runtime import Runtime
from tests.security_server.test_keys import MEMBER, SERVER, Files, offline_runtime
from xchange.errors import XRoadError
from xchange.messagelog import LogEntry, StoredRecord
from xchange.signing import SigningIdentity, ToSign, verify_payload
from xchange.transport import FrameHead


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


def _signed_entry(i: int, at: datetime) -> Callable[[FrameHead], LogEntry]:
    return lambda head: dataclasses.replace(_entry(i, at), signature=head.signature)


_PART = b'{"id": "q"}'
_STAPLES = (b"ocsp-1", b"ocsp-2")


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


@pytest.mark.parametrize("signed", [False, True], ids=["log_message", "sign_and_log"])
@pytest.mark.parametrize(("side", "code"), [("client", "server.clientproxy.logging_failed"),
                                            ("server", "server.serverproxy.logging_failed")])
async def test_a_record_not_written_stops_the_message_with_its_proxys_code(
    runtime: Runtime, pki_now: datetime, side: Literal["client", "server"], code: str,
    signed: bool
) -> None:
    runtime.log.close()
    with pytest.raises(XRoadError) as caught:
        if signed:
            await runtime.sign_and_log(runtime.identities[MEMBER], b"p" * 64, _PART, _STAPLES,
                                       _signed_entry(1, pki_now), side=side)
        else:
            await runtime.log_message(_entry(1, pki_now), side=side)
    assert caught.value.code == code


async def test_a_batch_of_signatures_and_its_records_are_committed_in_the_signing_turn(
    runtime: Runtime, pki_now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = _commit_threads(runtime, monkeypatch)
    payloads = [bytes([i]) * 64 for i in range(4)]
    heads = await asyncio.gather(*(
        runtime.sign_and_log(runtime.identities[MEMBER], payloads[i], _PART, _STAPLES,
                             _signed_entry(i, pki_now),
                             side="client", signed_at=pki_now, nonce=f"{i:032d}")
        for i in range(4)))
    # The first was signed alone, at once; the other three waited for the key and were
    # signed together at the next turn, where their records joined the first's: one commit,
    # made before any of them resumed (signing, then logging, took two).
    assert threads == [threading.get_ident()]
    records = await runtime.log.records()
    assert [r.entry.query_id for r in records] == [f"q-{i}" for i in range(4)]
    assert all((h.header_part, h.ocsp_responses) == (_PART, _STAPLES) for h in heads)
    signatures = [h.signature for h in heads]
    assert [r.entry.signature for r in records] == signatures
    anchors = [runtime.identities[MEMBER].chain[-1]]
    sizes = [verify_payload(s, payloads[i], expected_signer=MEMBER, anchors=anchors,
                            at=pki_now, code="server.serverproxy.invalid_signature").batch_size
             for i, s in enumerate(signatures)]
    assert sizes == [None, 3, 3, 3]


async def test_nothing_is_logged_for_a_message_that_could_not_be_signed(
    runtime: Runtime, pki_now: datetime
) -> None:
    def broken(identity: SigningIdentity, messages: list[ToSign]) -> list[str]:
        raise RuntimeError("token removed")

    identity = runtime.identities[MEMBER]
    runtime.signers[MEMBER] = KeySigner(identity, sign=broken)
    results = await asyncio.gather(*(
        runtime.sign_and_log(identity, b"p" * 64, _PART, _STAPLES, _signed_entry(i, pki_now),
                             side="server")
        for i in range(3)), return_exceptions=True)
    assert [getattr(r, "code", r) for r in results] == [
        "server.serverproxy.cannot_create_signature"] * 3
    assert await runtime.log.records() == []


async def test_a_record_that_cannot_be_made_stops_its_message_only(
    runtime: Runtime, pki_now: datetime
) -> None:
    def refused(head: FrameHead) -> LogEntry:
        raise XRoadError("refused", code="server.clientproxy.timestamping_failed")

    results = await asyncio.gather(*(
        runtime.sign_and_log(runtime.identities[MEMBER], b"p" * 64, _PART, _STAPLES,
                             refused if i == 1 else _signed_entry(i, pki_now), side="client")
        for i in range(3)), return_exceptions=True)
    assert isinstance(results[1], XRoadError)
    assert results[1].code == "server.clientproxy.timestamping_failed"
    assert [r.entry.query_id for r in await runtime.log.records()] == ["q-0", "q-2"]
