"""IdentityMemo: a value per identity of the arguments, never for an equal but other object."""

from __future__ import annotations

import pytest

from xchange.memo import IdentityMemo


class Box:
    """Equal by value, like a certificate; the memo must not care."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Box) and other.value == self.value

    def __hash__(self) -> int:
        return self.value


def counting() -> tuple[IdentityMemo[[Box, Box], int], list[tuple[int, int]]]:
    calls: list[tuple[int, int]] = []

    def add(a: Box, b: Box) -> int:
        calls.append((a.value, b.value))
        return a.value + b.value

    return IdentityMemo(add, size=3), calls


def test_computed_once_per_identity() -> None:
    memo, calls = counting()
    a, b = Box(1), Box(2)
    assert memo(a, b) == 3
    assert memo(a, b) == 3
    assert calls == [(1, 2)]
    assert memo(b, a) == 3  # another order is another key
    assert calls == [(1, 2), (2, 1)]


def test_an_equal_but_other_object_is_computed_afresh() -> None:
    memo, calls = counting()
    a, b = Box(1), Box(2)
    memo(a, b)
    memo(Box(1), b)
    assert calls == [(1, 2), (1, 2)]


def test_entries_keep_their_objects_alive_so_ids_are_not_reused() -> None:
    memo, calls = counting()
    for _ in range(2):
        memo(Box(5), Box(6))  # temporaries: without the memo's reference their ids recur
    assert calls == [(5, 6), (5, 6)]
    assert len(memo) == 2


def test_failures_are_not_remembered() -> None:
    attempts = []

    def fail_once(a: Box) -> int:
        attempts.append(a.value)
        if len(attempts) == 1:
            raise ValueError("first time")
        return a.value

    memo = IdentityMemo(fail_once)
    a = Box(7)
    with pytest.raises(ValueError, match="first time"):
        memo(a)
    assert memo(a) == 7
    assert memo(a) == 7
    assert attempts == [7, 7]


def test_bounded_by_emptying_when_full() -> None:
    memo, calls = counting()
    boxes = [Box(i) for i in range(4)]
    for box in boxes:
        memo(box, box)
    assert len(memo) == 1  # the fourth found it full: emptied, then added
    memo(boxes[3], boxes[3])
    memo(boxes[0], boxes[0])
    assert calls == [(0, 0), (1, 1), (2, 2), (3, 3), (0, 0)]


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        IdentityMemo(lambda: 0, size=0)
    memo = IdentityMemo(lambda a=0: a)
    with pytest.raises(TypeError, match="positional"):
        memo(a=1)
