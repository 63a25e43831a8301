"""Tests of the group-commit writer: grouping, order, failure of a whole group, cancel, close."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import pytest

from security_server.logwriter import GroupWriter, WriterClosedError


class Recorder:
    """A ``commit_group`` that records the groups it is given; it can be held or made to
    fail for a given value."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.fail_on: int | None = None

    def __call__(self, values: Sequence[int]) -> list[int]:
        if self.fail_on in values:
            raise OSError("disk full")
        self.groups.append(list(values))
        return [v * 10 for v in values]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def writer(recorder: Recorder) -> Iterator[GroupWriter[int, int]]:
    writer: GroupWriter[int, int] = GroupWriter(recorder, max_group=50)
    yield writer
    writer.close()


def hold(writer: GroupWriter[int, int]) -> threading.Event:
    """Keep the writer thread busy until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def blocker() -> None:
        started.set()
        release.wait(10)

    writer.submit(blocker)
    assert started.wait(10)
    return release


def test_waiting_items_are_committed_as_one_group(
    writer: GroupWriter[int, int], recorder: Recorder
) -> None:
    release = hold(writer)
    futures = [writer.append(i) for i in range(20)]
    release.set()
    assert [f.result(10) for f in futures] == [i * 10 for i in range(20)]
    assert recorder.groups == [list(range(20))]


def test_groups_are_capped(writer: GroupWriter[int, int], recorder: Recorder) -> None:
    release = hold(writer)
    futures = [writer.append(i) for i in range(120)]
    release.set()
    for f in futures:
        f.result(10)
    assert [len(g) for g in recorder.groups] == [50, 50, 20]
    assert [v for g in recorder.groups for v in g] == list(range(120))


def test_a_failed_group_fails_every_item(
    writer: GroupWriter[int, int], recorder: Recorder
) -> None:
    recorder.fail_on = 3
    release = hold(writer)
    futures = [writer.append(i) for i in range(6)]
    release.set()
    for f in futures:
        with pytest.raises(OSError, match="disk full"):
            f.result(10)
    recorder.fail_on = None
    assert writer.append(7).result(10) == 70
    assert recorder.groups == [[7]]


def test_tasks_run_alone_and_in_order(writer: GroupWriter[int, int], recorder: Recorder) -> None:
    release = hold(writer)
    seen: list[list[list[int]]] = []
    first = [writer.append(i) for i in (1, 2)]

    def look() -> int:
        seen.append([list(g) for g in recorder.groups])
        return 99

    task = writer.submit(look)
    second = [writer.append(i) for i in (3, 4)]
    release.set()
    assert task.result(10) == 99
    for f in first + second:
        f.result(10)
    assert seen == [[[1, 2]]]
    assert recorder.groups == [[1, 2], [3, 4]]


def test_failing_task_reports_its_error(writer: GroupWriter[int, int]) -> None:
    def boom() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        writer.submit(boom).result(10)
    assert writer.append(1).result(10) == 10


def test_cancelled_items_are_not_written(
    writer: GroupWriter[int, int], recorder: Recorder
) -> None:
    release = hold(writer)
    futures = [writer.append(i) for i in range(4)]
    assert futures[1].cancel()
    release.set()
    assert [f.result(10) for f in (futures[0], futures[2], futures[3])] == [0, 20, 30]
    assert recorder.groups == [[0, 2, 3]]


def test_close_drains_then_refuses(recorder: Recorder) -> None:
    writer: GroupWriter[int, int] = GroupWriter(recorder)
    release = hold(writer)
    futures: list[Future[int]] = [writer.append(i) for i in range(3)]
    closer = threading.Thread(target=writer.close)
    closer.start()
    release.set()
    closer.join(10)
    assert [f.result(0) for f in futures] == [0, 10, 20]
    with pytest.raises(WriterClosedError):
        writer.append(4)
    writer.close()  # twice is fine


def test_max_group_must_be_positive(recorder: Recorder) -> None:
    with pytest.raises(ValueError):
        GroupWriter(recorder, max_group=0)


# -- appenders on an event loop


class LoopCounter:
    """Counts the callbacks other threads hand to the running loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.calls = 0
        self._original = loop.call_soon_threadsafe

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return self._original(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign,assignment]


async def test_loop_appenders_of_one_group_are_answered_in_one_call(
    writer: GroupWriter[int, int], recorder: Recorder
) -> None:
    counter = LoopCounter(asyncio.get_running_loop())
    release = hold(writer)
    futures = [writer.append_async(i) for i in range(20)]
    release.set()
    assert await asyncio.gather(*futures) == [i * 10 for i in range(20)]
    assert recorder.groups == [list(range(20))]
    assert counter.calls == 1


async def test_a_failed_group_fails_every_loop_appender(
    writer: GroupWriter[int, int], recorder: Recorder
) -> None:
    recorder.fail_on = 3
    release = hold(writer)
    futures = [writer.append_async(i) for i in range(5)]
    release.set()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    assert recorder.groups == []
    assert await writer.append_async(7) == 70  # the next group is written


async def test_cancelled_loop_appenders_are_not_written(
    writer: GroupWriter[int, int], recorder: Recorder
) -> None:
    release = hold(writer)
    futures = [writer.append_async(i) for i in range(3)]
    futures[1].cancel()
    release.set()
    assert [await futures[0], await futures[2]] == [0, 20]
    assert recorder.groups == [[0, 2]]


async def test_loop_appenders_are_refused_once_closed(recorder: Recorder) -> None:
    writer: GroupWriter[int, int] = GroupWriter(recorder)
    writer.close()
    with pytest.raises(WriterClosedError):
        writer.append_async(1)


# -- append_on_loop: a loop turn's items committed on the loop's own thread


class Where:
    """A ``commit_group`` that records each group's thread, then commits with ``recorder``."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.threads: list[int] = []

    def __call__(self, values: Sequence[int]) -> list[int]:
        self.threads.append(threading.get_ident())
        return self.recorder(values)


async def test_one_turns_appends_are_committed_as_one_group_on_the_loops_thread(
    recorder: Recorder
) -> None:
    where = Where(recorder)
    writer: GroupWriter[int, int] = GroupWriter(where)
    try:
        counter = LoopCounter(asyncio.get_running_loop())
        first = [writer.append_on_loop(i) for i in range(5)]
        assert not any(f.done() for f in first)  # committed at the loop's next turn
        assert await asyncio.gather(*first) == [0, 10, 20, 30, 40]
        assert await writer.append_on_loop(5) == 50  # a later turn: a group of its own
        assert recorder.groups == [[0, 1, 2, 3, 4], [5]]
        assert where.threads == [threading.get_ident()] * 2
        assert counter.calls == 0  # no other thread handed anything to the loop
        assert await asyncio.wrap_future(writer.append(6)) == 60  # the thread goes on
        assert where.threads[2] != threading.get_ident()
    finally:
        writer.close()


async def test_a_turns_group_is_capped(recorder: Recorder) -> None:
    writer: GroupWriter[int, int] = GroupWriter(recorder, max_group=4)
    try:
        assert await asyncio.gather(*[writer.append_on_loop(i) for i in range(10)]) == [
            i * 10 for i in range(10)]
        assert recorder.groups == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    finally:
        writer.close()


async def test_a_busy_writer_thread_gets_the_turns_group_in_order(recorder: Recorder) -> None:
    where = Where(recorder)
    writer: GroupWriter[int, int] = GroupWriter(where)
    try:
        release = hold(writer)  # a task running
        waiting = writer.append_async(1)  # and an item queued behind it
        turn = [writer.append_on_loop(i) for i in (2, 3)]
        await asyncio.sleep(0.05)
        assert not waiting.done() and not any(f.done() for f in turn)
        assert recorder.groups == []  # neither committed beside the thread nor ahead of it
        release.set()
        assert await asyncio.gather(waiting, *turn) == [10, 20, 30]
        assert [v for g in recorder.groups for v in g] == [1, 2, 3]
        assert threading.get_ident() not in where.threads
    finally:
        writer.close()


async def test_an_item_queued_for_the_thread_goes_before_the_turns_group(
    recorder: Recorder
) -> None:
    where = Where(recorder)
    writer: GroupWriter[int, int] = GroupWriter(where)
    try:
        release = hold(writer)
        turn = writer.append_on_loop(2)
        queued = writer.append(1)  # from another thread's point of view: queued first
        release.set()
        assert await turn == 20 and queued.result(10) == 10
        assert [v for g in recorder.groups for v in g] == [1, 2]
    finally:
        writer.close()


async def test_the_writer_thread_waits_while_a_turn_commits(recorder: Recorder) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(values: Sequence[int]) -> list[int]:
        if values == [1]:
            entered.set()
            release.wait(10)  # blocks the loop, as a flush does
        return recorder(values)

    writer: GroupWriter[int, int] = GroupWriter(slow)
    seen: list[object] = []

    def other_thread() -> None:
        assert entered.wait(10)
        later = writer.append(2)
        time.sleep(0.05)
        seen.extend([later.done(), list(recorder.groups)])
        release.set()
        seen.append(later.result(10))

    try:
        helper = threading.Thread(target=other_thread)
        helper.start()
        assert await writer.append_on_loop(1) == 10
        await asyncio.to_thread(helper.join, 10)
        assert seen == [False, [], 20]
        assert recorder.groups == [[1], [2]]  # one writer at a time, one order
    finally:
        writer.close()


async def test_a_failed_turn_fails_its_whole_group_and_the_next_turn_commits(
    recorder: Recorder
) -> None:
    writer: GroupWriter[int, int] = GroupWriter(recorder)
    try:
        recorder.fail_on = 3
        results = await asyncio.gather(*[writer.append_on_loop(i) for i in (2, 3, 4)],
                                       return_exceptions=True)
        assert all(isinstance(r, OSError) for r in results)
        recorder.fail_on = None
        assert await writer.append_on_loop(5) == 50
        assert recorder.groups == [[5]]
    finally:
        writer.close()


async def test_cancelled_turn_items_are_not_written(recorder: Recorder) -> None:
    writer: GroupWriter[int, int] = GroupWriter(recorder)
    try:
        futures = [writer.append_on_loop(i) for i in range(3)]
        futures[1].cancel()
        assert [await futures[0], await futures[2]] == [0, 20]
        assert recorder.groups == [[0, 2]]
    finally:
        writer.close()


async def test_turn_items_fail_closed_when_the_writer_closes_first(recorder: Recorder) -> None:
    writer: GroupWriter[int, int] = GroupWriter(recorder)
    pending = writer.append_on_loop(1)
    writer.close()
    with pytest.raises(WriterClosedError):
        await pending
    with pytest.raises(WriterClosedError):
        writer.append_on_loop(2)
    assert recorder.groups == []
