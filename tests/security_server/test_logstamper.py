"""Tests of batch time-stamping of the message log and of the refusal rule, with the real
test TSA behind the ``Timestamper`` seam (which can be taken down) and a controlled clock."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from certs.tsa import TimeStampAuthority
from security_server.logstamper import LogStamper
from security_server.messagelog import MessageLog
from tests.conftest import Clock
from tests.security_server.test_messagelog import SP, entry, fill
from xchange.errors import TimestampingFailedError
from xchange.logbatch import verify_batch, verify_record_stamp
from xchange.timestamp import (
    TimestampToken,
    parse_timestamp_response,
    timestamp_request,
    verify_timestamp_token,
)

CODE = "server.clientproxy.timestamping_failed"


class LocalTsa:
    """The test TSA in process: what ``TsaClient`` does minus HTTP; ``down`` makes it fail."""

    def __init__(self, tsa: TimeStampAuthority, now: datetime) -> None:
        self.tsa = tsa
        self.now = now
        self.down = False
        self.requests = 0
        self._serials = itertools.count(1)

    async def timestamp(self, data_hash: bytes) -> TimestampToken:
        self.requests += 1
        if self.down:
            raise TimestampingFailedError("test-tsa: could not be reached")
        reply = self.tsa.respond(timestamp_request(data_hash, nonce=5), self.now,
                                 next(self._serials))
        der = parse_timestamp_response(reply, data_hash=data_hash, nonce=5)
        return verify_timestamp_token(der, data_hash=data_hash,
                                      tsa_certs=[self.tsa.certificate])


@pytest.fixture
def log(engine: Engine) -> Iterator[MessageLog]:
    log = MessageLog(engine)
    yield log
    log.close()


@pytest.fixture
def local_tsa(tsa: TimeStampAuthority, pki_now: datetime) -> LocalTsa:
    return LocalTsa(tsa, pki_now)


async def _all_stamped(log: MessageLog, tsa: TimeStampAuthority) -> int:
    batches = {b.id: b for b in await log.batches()}
    for batch in batches.values():
        verify_batch(batch, [tsa.certificate])
    records = await log.records()
    for record in records:
        assert record.stamp is not None, record.sequence
        verify_record_stamp(record, batches[record.stamp.batch_id])
    return len(batches)


async def test_pending_records_are_stamped_in_batches(
    log: MessageLog, local_tsa: LocalTsa, tsa: TimeStampAuthority, pki_now: datetime
) -> None:
    stamper = LogStamper(log, local_tsa, clock=Clock(pki_now), max_batch=4)
    assert await stamper.stamp_pending() == 0  # nothing to do, nothing asked
    assert local_tsa.requests == 0
    await fill(log, 10)
    assert await stamper.stamp_pending() == 10
    assert await _all_stamped(log, tsa) == 3  # 4 + 4 + 2
    assert [(b.first_sequence, b.last_sequence) for b in await log.batches()] == [
        (1, 4), (5, 8), (9, 10)]


async def test_failure_refuses_after_the_acceptable_period_then_recovers(
    log: MessageLog, local_tsa: LocalTsa, tsa: TimeStampAuthority, pki_now: datetime
) -> None:
    clock = Clock(pki_now)
    stamper = LogStamper(log, local_tsa, clock=clock, max_failure_seconds=60)
    await fill(log, 2)
    local_tsa.down = True
    with pytest.raises(TimestampingFailedError):
        await stamper.stamp_pending()
    assert stamper.failing_since == pki_now
    assert stamper.last_error == "test-tsa: could not be reached"
    stamper.check(pki_now + timedelta(seconds=60), code=CODE)  # still within the period
    clock.now = pki_now + timedelta(seconds=30)
    with pytest.raises(TimestampingFailedError):
        await stamper.stamp_pending()
    assert stamper.failing_since == pki_now  # the first failure counts
    with pytest.raises(TimestampingFailedError) as caught:
        stamper.check(pki_now + timedelta(seconds=61), code=CODE)
    assert caught.value.code == CODE
    with pytest.raises(TimestampingFailedError) as caught:
        stamper.check(pki_now + timedelta(seconds=61),
                      code="server.serverproxy.timestamping_failed")
    assert caught.value.code == "server.serverproxy.timestamping_failed"

    await fill(log, 1)  # logged meanwhile (e.g. a response): part of the backlog
    local_tsa.down = False
    assert await stamper.stamp_pending() == 3
    assert stamper.failing_since is None
    assert stamper.last_error is None
    stamper.check(pki_now + timedelta(days=1), code=CODE)
    assert await _all_stamped(log, tsa) == 1


async def test_restart_keeps_the_failure_clock(
    log: MessageLog, local_tsa: LocalTsa, pki_now: datetime
) -> None:
    await fill(log, 3)  # entry(i) is created at T0 + i seconds, all unstamped
    stamper = LogStamper(log, local_tsa, clock=Clock(pki_now), max_failure_seconds=10)
    await stamper.load()
    oldest = (await log.records())[0].entry.created_at
    assert stamper.failing_since == oldest
    with pytest.raises(TimestampingFailedError):
        stamper.check(oldest + timedelta(seconds=11), code=CODE)
    await stamper.stamp_pending()
    fresh = LogStamper(log, local_tsa, clock=Clock(pki_now))
    await fresh.load()
    assert fresh.failing_since is None


async def test_sync_waiters_share_a_token(
    log: MessageLog, local_tsa: LocalTsa, tsa: TimeStampAuthority, pki_now: datetime
) -> None:
    stamper = LogStamper(log, local_tsa, clock=Clock(pki_now))
    records = await asyncio.gather(*(log.append(entry(i), error_code=SP) for i in range(1, 9)))
    await asyncio.gather(*(stamper.stamp_through(r.sequence) for r in records))
    assert local_tsa.requests == 1
    assert await _all_stamped(log, tsa) == 1
    await stamper.stamp_through(records[0].sequence)  # already stamped: nothing asked
    assert local_tsa.requests == 1


async def test_run_keeps_trying(
    log: MessageLog, local_tsa: LocalTsa, tsa: TimeStampAuthority, pki_now: datetime
) -> None:
    stamper = LogStamper(log, local_tsa, clock=Clock(pki_now))
    await fill(log, 2)
    local_tsa.down = True
    task = asyncio.create_task(stamper.run(lambda: 0.01))
    try:
        while local_tsa.requests < 3:
            await asyncio.sleep(0.01)
        local_tsa.down = False
        while (await log.unstamped(1)):
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await _all_stamped(log, tsa) == 1


def test_bad_settings_are_refused(log: MessageLog, local_tsa: LocalTsa,
                                  pki_now: datetime) -> None:
    with pytest.raises(ValueError):
        LogStamper(log, local_tsa, clock=Clock(pki_now), max_failure_seconds=0)
    with pytest.raises(ValueError):
        LogStamper(log, local_tsa, clock=Clock(pki_now), max_batch=0)
