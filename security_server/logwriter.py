"""Group commit: one writer thread that commits whatever is waiting in one transaction.

The message log must never acknowledge a record before it is durable, and its hash chain
needs one strict order.  Committing each record on its own costs one disk flush (SQLite
``synchronous=FULL``) or one round trip and WAL flush (PostgreSQL) per message, and that
caps throughput.  :class:`GroupWriter` keeps the order and the durability and shares the
flush: appenders queue their items; the one writer thread takes *everything* waiting (up to
``max_group``) and hands it to ``commit_group`` as one list, to be written in one
transaction.  Each appender's future is resolved only after that call returns, i.e. after the
commit; if it raises, every item of the group fails with that error.

Other work (``submit``) runs on the same thread, alone and in queue order, so nothing else
ever writes the log concurrently.  An item whose future was cancelled before its group ran
(the waiting request went away) is dropped, not written.

Appenders on an asyncio event loop use :meth:`GroupWriter.append_async`: their results are
handed to the loop with *one* ``call_soon_threadsafe`` per group, not one thread-safe future
and one wake-up of the loop per item (at 64 waiting requests that was 64 writes to the
loop's self-pipe per commit, and a ``threading.Condition`` per record).

Appenders whose database is a local file (SQLite) use :meth:`GroupWriter.append_on_loop`
instead: the items a loop appends during one of its turns are committed together on the
loop's own thread at its next turn, if the writer thread is idle then (nothing queued, no
group or task running), and handed to the writer thread's queue otherwise.  The writer
thread's work and such a commit exclude each other (one lock), so there is still one writer
at a time and one order.  At load this saves, per item, the writer thread's wake-up, its
waits for the interpreter lock the busy loop holds (one after each statement and after the
flush) and the hand-back's wake-up of the loop: the commit blocks the loop for one flush
instead, shared by everything the turn appended (docs/decisions.md, "The message log
commits on the event loop's thread (SQLite)").  A database behind network round trips
(PostgreSQL) must not block the loop: it keeps :meth:`GroupWriter.append_async`.

This module knows nothing of the log's tables: ``commit_group`` does the writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar, cast

__all__ = ["GroupWriter", "WriterClosedError"]

T = TypeVar("T")
R = TypeVar("R")
R2 = TypeVar("R2")

DEFAULT_MAX_GROUP: Final = 1000


class WriterClosedError(RuntimeError):
    """The writer was closed: nothing more is accepted."""


@dataclass(slots=True)
class _Item(Generic[T, R]):
    value: T
    future: Future[R]


@dataclass(slots=True)
class _LoopItem(Generic[T, R]):
    value: T
    future: asyncio.Future[R]
    loop: asyncio.AbstractEventLoop


@dataclass(slots=True)
class _Task:
    fn: Callable[[], Any]
    future: Future[Any]


_STOP: Final = object()


class GroupWriter(Generic[T, R]):
    """One thread committing queued items in groups (module docstring)."""

    def __init__(self, commit_group: Callable[[Sequence[T]], Sequence[R]], *,
                 max_group: int = DEFAULT_MAX_GROUP, name: str = "group-writer") -> None:
        if max_group < 1:
            raise ValueError("max_group must be at least 1")
        self._commit_group = commit_group
        self._max_group = max_group
        self._queue: queue.SimpleQueue[_Item[T, R] | _LoopItem[T, R] | _Task | object] = (
            queue.SimpleQueue())
        self._lock = threading.Lock()
        self._working = threading.Lock()
        """Held by whoever commits or runs a task: the writer thread or a loop's turn."""
        self._closed = False
        self._turns: dict[asyncio.AbstractEventLoop, list[_LoopItem[T, R]]] = {}
        """Per loop: the items :meth:`append_on_loop` collected in its current turn."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def append(self, value: T) -> Future[R]:
        """Queue ``value``; the future gives ``commit_group``'s result for it once committed."""
        return self._put(lambda future: _Item(value, future))

    def append_async(self, value: T) -> asyncio.Future[R]:
        """Queue ``value`` from a coroutine: like :meth:`append`, but the future belongs to
        the running loop, and each group's results reach the loop in one call."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._enqueue(_LoopItem(value, future, loop))
        return future

    def append_on_loop(self, value: T) -> asyncio.Future[R]:
        """Queue ``value`` to be committed on the running loop's thread at the loop's next
        turn, in one group with everything it appends until then (up to ``max_group`` per
        group), if the writer thread is idle then; otherwise that group joins the writer
        thread's queue, behind what waits there.  Either way the future gives
        ``commit_group``'s result once committed, or its error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        with self._lock:
            if self._closed:
                raise WriterClosedError("the writer is closed")
        turn = self._turns.get(loop)
        if turn is None:
            turn = self._turns[loop] = []
            loop.call_soon(self._commit_turn, loop)
        turn.append(_LoopItem(value, future, loop))
        return future

    def submit(self, fn: Callable[[], R2]) -> Future[R2]:
        """Run ``fn`` on the writer thread, alone, after everything queued before it."""
        return self._put(lambda future: _Task(fn, future))

    def close(self) -> None:
        """Finish everything queued, then stop; later calls raise :class:`WriterClosedError`."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        self._thread.join()

    def _put(self, make: Callable[[Future[Any]], _Item[T, R] | _Task]) -> Future[Any]:
        future: Future[Any] = Future()
        self._enqueue(make(future))
        return future

    def _enqueue(self, job: _Item[T, R] | _LoopItem[T, R] | _Task) -> None:
        with self._lock:  # nothing may be queued behind _STOP
            if self._closed:
                raise WriterClosedError("the writer is closed")
            self._queue.put(job)

    def _commit_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """On ``loop``'s thread, a turn after the appends: commit them here, or hand them to
        the writer thread if it is busy or has work waiting.  Every future is settled: a
        failed commit fails its group, a closed writer every item."""
        items = [item for item in self._turns.pop(loop) if not item.future.cancelled()]
        if not items:
            return
        if not self._queue.empty() or not self._working.acquire(blocking=False):
            self._hand_over(items)
            return
        try:
            if self._closed:
                _fail(items, WriterClosedError("the writer is closed"))
                return
            if not self._queue.empty():  # queued meanwhile, by another thread: its turn
                self._hand_over(items)
                return
            for start in range(0, len(items), self._max_group):
                group = items[start:start + self._max_group]
                _settle([(item.future, result, error) for item, (result, error)
                         in zip(group, self._outcomes(group), strict=True)])
        finally:
            self._working.release()

    def _hand_over(self, items: list[_LoopItem[T, R]]) -> None:
        for index, item in enumerate(items):
            try:
                self._enqueue(item)
            except WriterClosedError as exc:
                _fail(items[index:], exc)
                return

    def _outcomes(self, group: Sequence[_Item[T, R] | _LoopItem[T, R]]
                  ) -> list[tuple[R | None, BaseException | None]]:
        """Commit ``group`` (the caller holds ``_working``): each item's result or error."""
        try:
            results = self._commit_group([item.value for item in group])
            if len(results) != len(group):
                raise RuntimeError("commit_group did not return one result per item")
        except Exception as exc:  # every waiter must hear of the failure
            return [(None, exc)] * len(group)
        return [(result, None) for result in results]

    def _run(self) -> None:
        while True:
            jobs = [self._queue.get()]
            while jobs[-1] is not _STOP and len(jobs) < self._max_group:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            group: list[_Item[T, R] | _LoopItem[T, R]] = []
            for job in jobs:
                if isinstance(job, _Item | _LoopItem):
                    group.append(job)
                    continue
                self._commit(group)
                group = []
                if isinstance(job, _Task):
                    with self._working:
                        _run_task(job)
            self._commit(group)
            if jobs[-1] is _STOP:
                return

    def _commit(self, group: list[_Item[T, R] | _LoopItem[T, R]]) -> None:
        live = [item for item in group if _still_wanted(item)]
        if not live:
            return
        with self._working:  # released before the waiters hear: a loop may commit next
            outcomes = self._outcomes(live)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome[R]]] = {}
        for item, (result, error) in zip(live, outcomes, strict=True):
            if isinstance(item, _LoopItem):
                by_loop.setdefault(item.loop, []).append((item.future, result, error))
            elif error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(cast(R, result))
        for loop, settled in by_loop.items():
            # A closed loop raises RuntimeError: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, settled)


_Outcome = tuple["asyncio.Future[R]", "R | None", "BaseException | None"]


def _still_wanted(item: _Item[T, R] | _LoopItem[T, R]) -> bool:
    """Claim a thread-safe future, or see that a loop future is not cancelled yet (if it
    is cancelled after this, its record is written and nobody is told: as for a request
    that goes away while its group commits)."""
    if isinstance(item, _Item):
        return item.future.set_running_or_notify_cancel()
    return not item.future.cancelled()


def _settle(settled: list[_Outcome[R]]) -> None:
    """In the loop: resolve every future of one group."""
    for future, result, error in settled:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(cast(R, result))


def _fail(items: Sequence[_LoopItem[T, R]], error: BaseException) -> None:
    """In the loop: fail every item's future with ``error``."""
    settled: list[_Outcome[R]] = [(item.future, None, error) for item in items]
    _settle(settled)


def _run_task(task: _Task) -> None:
    if not task.future.set_running_or_notify_cancel():
        return
    try:
        task.future.set_result(task.fn())
    except Exception as exc:
        task.future.set_exception(exc)
