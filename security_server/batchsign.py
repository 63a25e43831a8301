"""Batch signing: messages that wait for the same key are signed with one signature.

One :class:`KeySigner` per signing key.  The first message that finds the key free is signed
at once, alone (the single form, no added delay).  Messages that arrive while the key is
busy wait and are then signed together, at most ``max_batch`` at a time, with one signature
over the Merkle root of their signing inputs (:func:`xchange.signing.sign_batch`, the batch
form of docs/protocol.md).  "Busy" means:

* a key in memory signs in the event loop, in microseconds, so it is never busy in the
  ordinary sense; it counts as busy for the rest of the loop iteration in which it signed.
  Messages that want it in that iteration are signed together at the start of the next
  (one ``call_soon``), so a burst of requests read in one pass of the loop shares a
  signature, while a lone message is signed at once;
* a key in a token (PKCS#11) signs in the token's thread and is busy until the device has
  answered -- a slow HSM collects the most, which is where one signature for many pays most.

What this does not do: wait on purpose.  No timer holds a message back to fill a batch.

A caller may pass ``then``: called with its signature as soon as it exists, in the turn of
the loop that made it, before the caller is woken.  The runtime appends the message's log
record there (``Runtime.sign_and_log``), so the record's commit is queued on the loop ahead
of the caller's wake-up: a message that waited for a batch resumes signed *and* logged at
the next turn, where resuming, appending and waiting for the commit took two turns more.

Every signature is made by :mod:`xchange.signing`; a failure fails every message of that
batch (each caller maps it to its own ``cannot_create_signature``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime

from xchange.signing import MAX_BATCH_SIZE, SigningIdentity, ToSign, sign_batch

__all__ = ["DEFAULT_MAX_BATCH", "KeySigner", "SignerStats"]

DEFAULT_MAX_BATCH = 64
"""The most messages one signature covers by default (``[keys] signing_batch_max``)."""


@dataclass(slots=True)
class SignerStats:
    """How many signatures one key made and how many messages they covered."""

    signatures: int = 0
    messages: int = 0

    @property
    def mean_batch(self) -> float:
        return self.messages / self.signatures if self.signatures else 0.0


@dataclass(slots=True)
class _Waiting:
    message: ToSign
    future: asyncio.Future[str]
    then: Callable[[str], None] | None


class KeySigner:
    """Signs digest payloads with one identity, batching the messages that wait for it
    (module docstring).  ``executor``: the token's thread, or None for a key in memory.
    Used from one event loop."""

    def __init__(self, identity: SigningIdentity, *, executor: Executor | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH,
                 sign: Callable[[SigningIdentity, list[ToSign]], list[str]] = sign_batch
                 ) -> None:
        if not 1 <= max_batch <= MAX_BATCH_SIZE:
            raise ValueError(f"max_batch must be 1 to {MAX_BATCH_SIZE}")
        self.identity = identity
        self.stats = SignerStats()
        self._executor = executor
        self._max = max_batch
        self._sign = sign
        self._busy = False
        self._waiting: list[_Waiting] = []

    async def sign(self, payload: bytes, *, signed_at: datetime | None = None,
                   nonce: str | None = None, then: Callable[[str], None] | None = None) -> str:
        """The signature of one message: the single form if it was signed alone, else the
        batch form.  Raises what signing raised.  ``then`` (module docstring) is called with
        the signature before this returns; what it raises is raised here."""
        message = ToSign(payload, signed_at, nonce)
        loop = asyncio.get_running_loop()
        if self._executor is None and (not self._busy or self._max == 1):
            # A lone message in memory (or batching off): signed now; others that want the
            # key in this iteration wait for the next.
            if not self._busy and self._max > 1:
                self._busy = True
                loop.call_soon(self._next)
            signature = self._signed([message])[0]
            if then is not None:
                then(signature)
            return signature
        future: asyncio.Future[str] = loop.create_future()
        self._waiting.append(_Waiting(message, future, then))
        if not self._busy:
            self._busy = True
            self._start()
        return await future

    def _signed(self, messages: list[ToSign]) -> list[str]:
        signatures = self._sign(self.identity, messages)
        self.stats.signatures += 1
        self.stats.messages += len(messages)
        return signatures

    def _take(self) -> list[_Waiting]:
        """The next batch: the longest waiting, still wanted, at most ``max_batch``."""
        live = [w for w in self._waiting if not w.future.done()]  # a caller may have gone
        batch, self._waiting = live[:self._max], live[self._max:]
        return batch

    def _next(self) -> None:
        """The key is free again: sign what waited, or become idle."""
        if any(not w.future.done() for w in self._waiting):
            self._start()
        else:
            self._waiting.clear()
            self._busy = False

    def _start(self) -> None:
        batch = self._take()
        loop = asyncio.get_running_loop()
        if self._executor is None:
            # Everything that waited is signed now, ``max_batch`` to a signature.
            while batch:
                try:
                    signatures = self._signed([w.message for w in batch])
                except Exception as exc:  # handed to every waiting caller
                    _fail(batch, exc)
                else:
                    _hand_out(batch, signatures)
                batch = self._take()
            loop.call_soon(self._next)
            return
        done = loop.run_in_executor(self._executor, self._signed, [w.message for w in batch])

        def finished(fut: asyncio.Future[list[str]]) -> None:
            exc = (asyncio.CancelledError() if fut.cancelled() else fut.exception())
            if exc is not None:
                _fail(batch, exc)
            else:
                _hand_out(batch, fut.result())
            self._next()

        done.add_done_callback(finished)


def _hand_out(batch: list[_Waiting], signatures: list[str]) -> None:
    """Each still-waiting caller's signature: first to its ``then``, then to the caller."""
    for waiting, signature in zip(batch, signatures, strict=True):
        if waiting.future.done():  # the caller went away
            continue
        if waiting.then is not None:
            try:
                waiting.then(signature)
            except Exception as exc:  # this message's own failure, not its batch's
                waiting.future.set_exception(exc)
                continue
        waiting.future.set_result(signature)


def _fail(batch: list[_Waiting], exc: BaseException) -> None:
    for waiting in batch:
        if not waiting.future.done():
            waiting.future.set_exception(exc)
