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

A caller that knows nobody could share its group (the only message in flight, see
:meth:`security_server.runtime.Runtime.log_message`) may ask :meth:`GroupWriter.commit_now`
to commit one item on its own thread while the writer is idle: nothing queued, no group or
task running.  The writer's work and such a commit exclude each other (one lock), so there
is still only one writer at a time and the chain keeps one order; a busy writer answers
None and the caller queues the item as usual.  It saves the two hand-overs a lone item
costs (waking the writer thread, then waking the caller's loop), about as much CPU as the
commit itself.

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
        """Held by whoever commits or runs a task: the writer thread or :meth:`commit_now`."""
        self._closed = False
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

    def commit_now(self, value: T) -> R | None:
        """Commit ``value`` alone on the calling thread, if the writer is idle: return
        ``commit_group``'s result for it, or None (nothing done) if anything is queued or
        being written.  Raises what ``commit_group`` raised, and :class:`WriterClosedError`
        once closed."""
        if not self._queue.empty() or not self._working.acquire(blocking=False):
            return None
        try:
            if self._closed:
                raise WriterClosedError("the writer is closed")
            if not self._queue.empty():  # queued meanwhile (by another thread): its turn
                return None
            results = self._commit_group([value])
            if len(results) != 1:
                raise RuntimeError("commit_group did not return one result per item")
            return results[0]
        finally:
            self._working.release()

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
        outcomes: list[tuple[R | None, BaseException | None]]
        try:
            with self._working:  # released before the waiters hear: one may commit next
                results = self._commit_group([item.value for item in live])
            if len(results) != len(live):
                raise RuntimeError("commit_group did not return one result per item")
            outcomes = [(result, None) for result in results]
        except Exception as exc:  # every waiter must hear of the failure
            outcomes = [(None, exc)] * len(live)
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


def _run_task(task: _Task) -> None:
    if not task.future.set_running_or_notify_cancel():
        return
    try:
        task.future.set_result(task.fn())
    except Exception as exc:
        task.future.set_exception(exc)
