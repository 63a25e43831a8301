"""Replay protection between security servers.

Every request's signature carries, signed, the time it was made (``iat``) and a random
one-time value (``jti``, see :mod:`xchange.signing`).  The provider security server

* refuses a request signed more than ``window`` ago or more than ``max_skew`` in the future
  (``server.serverproxy.stale_message``): a captured request cannot be replayed later;
* refuses a ``(client, jti)`` it has already accepted within the window
  (``server.serverproxy.duplicate_message_id``): nor can it be replayed now.

The ``X-Road-Id`` chosen by the client's information system is deliberately not the key: an
IS may resend a request under the same id, and each sending is a new signature and ``jti``.
The set of seen values is bounded and in memory, per process; entries older than the window
are forgotten, and since older requests are refused by time, forgetting them is safe.  (A
second node behind a load balancer keeps its own set: a replay to another node within the
window is the residual risk; docs/protocol.md says so.)
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta

from xchange.errors import ServerProxyError

__all__ = ["ReplayWindow"]


class ReplayWindow:
    def __init__(self, window: timedelta = timedelta(minutes=5), max_entries: int = 1_000_000,
                 max_skew: timedelta = timedelta(seconds=60)):
        if window <= timedelta(0) or max_entries < 1 or max_skew < timedelta(0):
            raise ValueError("window and max_entries must be positive")
        self._window = window
        self._skew = max_skew
        self._max = max_entries
        self._seen: OrderedDict[tuple[str, str], datetime] = OrderedDict()

    def accept(self, client: str, message_id: str, now: datetime) -> None:
        """Record the id, or raise ``duplicate_message_id`` if seen within the window.

        Ids are kept for window + skew after acceptance: long enough that any replay of a
        request still fresh by :meth:`check_fresh` finds its id.
        """
        horizon = now - self._window - self._skew
        while self._seen and next(iter(self._seen.values())) < horizon:
            self._seen.popitem(last=False)
        key = (client, message_id)
        if key in self._seen:
            raise ServerProxyError(
                f"message id {message_id!r} from {client} was already received",
                code="server.serverproxy.duplicate_message_id",
            )
        # Make room only for a new id: evicting before the check let the oldest be replayed.
        if len(self._seen) >= self._max:
            self._seen.popitem(last=False)
        self._seen[key] = now

    def check_fresh(self, signed_at: datetime, now: datetime) -> None:
        """Raise ``stale_message`` unless ``signed_at`` lies within the window around ``now``."""
        if signed_at < now - self._window or signed_at > now + self._skew:
            raise ServerProxyError(
                f"request was signed at {signed_at.isoformat()}, outside the accepted window "
                f"({self._window} back, {self._skew} ahead of {now.isoformat()})",
                code="server.serverproxy.stale_message",
            )

    def forget(self, client: str, message_id: str) -> None:
        """Release an id whose message was not processed (so the client may retry it)."""
        self._seen.pop((client, message_id), None)

    def __len__(self) -> int:
        return len(self._seen)
