"""Batch time-stamping of the message log, and the rule that stops traffic when it fails.

Every ``timestamping_interval_seconds`` (global configuration) :meth:`LogStamper.run` takes
the records not yet stamped -- in sequence order, at most ``max_batch`` at a time, until none
are left -- builds their Merkle tree (:func:`xchange.logbatch.plan_batch`), gets one token
for the root from the approved TSAs and stores it with every record's path
(:meth:`MessageLog.add_batch`).  A backlog left by an outage is stamped the same way, in as
many batches as it takes, as soon as a TSA answers again.

In ``sync`` mode the message log waits for each record's stamp before the message passes
(:meth:`LogStamper.stamp_through`); records waiting at the same moment share one token.

**Refusal.** :meth:`LogStamper.check` refuses new messages with ``timestamping_failed`` once
stamping has been failing for longer than ``max_failure_seconds`` (``[messagelog]
timestamping_max_failure_seconds``, default 4 hours), until a stamping pass succeeds.
"Failing since" starts at the first failed pass after a success.  At start it is the creation
time of the oldest record still unstamped, if any: a restart does not reset the clock, so a
server that keeps crashing cannot log unstamped forever.

Nothing here decides what a TSA is: the :class:`Timestamper` seam (``TsaClient``) does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final, Protocol

from security_server.messagelog import MessageLog
from xchange.errors import TimestampingFailedError, XRoadError
from xchange.logbatch import plan_batch
from xchange.timestamp import TimestampToken

__all__ = ["LogStamper", "Timestamper"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH: Final = 10_000


class Timestamper(Protocol):
    """Gets a verified time-stamp token for a SHA-256 hash (``TsaClient``)."""

    async def timestamp(self, data_hash: bytes) -> TimestampToken: ...


class LogStamper:
    """Stamps a :class:`MessageLog` in batches and tracks how long stamping has failed."""

    def __init__(self, message_log: MessageLog, tsa: Timestamper, *,
                 clock: Callable[[], datetime], max_failure_seconds: float = 14400.0,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_failure_seconds <= 0 or max_batch < 1:
            raise ValueError("max_failure_seconds and max_batch must be positive")
        self._log = message_log
        self._tsa = tsa
        self._clock = clock
        self._max_failure = timedelta(seconds=max_failure_seconds)
        self._max_batch = max_batch
        self._lock = asyncio.Lock()
        self._stamped_through = 0
        self.failing_since: datetime | None = None
        """When stamping started failing (``None``: it is not failing)."""
        self.last_error: str | None = None

    async def load(self) -> None:
        """Start the failure clock from the oldest unstamped record, if there is one."""
        pending = await self._log.unstamped(1)
        if pending:
            self.failing_since = pending[0].entry.created_at
            self._stamped_through = pending[0].sequence - 1

    def check(self, now: datetime, *, code: str) -> None:
        """Raise ``timestamping_failed`` (``code``) if stamping has failed for too long."""
        since = self.failing_since
        if since is not None and now - since > self._max_failure:
            raise TimestampingFailedError(
                f"time-stamping has failed since {since.isoformat()}: new messages are "
                "refused until a time-stamp is obtained", code=code)

    async def stamp_pending(self) -> int:
        """Stamp every record not yet stamped; return how many.  Raises the failure (a
        :class:`~xchange.errors.XRoadError`) after recording it."""
        async with self._lock:
            return await self._stamp_all()

    async def stamp_through(self, sequence: int) -> None:
        """Return once record ``sequence`` is stamped, stamping now if need be (sync mode)."""
        async with self._lock:
            if self._stamped_through < sequence:
                await self._stamp_all()

    async def run(self, interval: Callable[[], float]) -> None:
        """Stamp at once, then every ``interval()`` seconds, forever (a background task)."""
        while True:
            with contextlib.suppress(XRoadError):  # recorded and logged; tried again later
                await self.stamp_pending()
            await asyncio.sleep(interval())

    async def _stamp_all(self) -> int:
        stamped = 0
        try:
            while records := await self._log.unstamped_hashes(self._max_batch):
                # In a thread: a minute's records at load are a tree of 10^5 leaves, tens
                # of ms of hashing that would stall every message on the loop at once.
                plan = await asyncio.to_thread(plan_batch, records)
                token = await self._tsa.timestamp(plan.root)
                batch = await self._log.add_batch(plan, token)
                self._stamped_through = batch.last_sequence
                stamped += batch.size
                if len(records) < self._max_batch:
                    break
        except Exception as exc:  # whatever went wrong, the records stay unstamped
            if self.failing_since is None:
                self.failing_since = self._clock()
            self.last_error = exc.message if isinstance(exc, XRoadError) else repr(exc)
            log.warning("time-stamping the message log failed (failing since %s): %s",
                        self.failing_since.isoformat(), self.last_error)
            if isinstance(exc, XRoadError):
                raise
            raise TimestampingFailedError("time-stamping the message log failed") from exc
        if self.failing_since is not None:
            log.info("time-stamping the message log recovered; %d records stamped", stamped)
        self.failing_since = None
        self.last_error = None
        return stamped
