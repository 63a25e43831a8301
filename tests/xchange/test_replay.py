"""Tests of replay protection: freshness of the signing time and one acceptance per value."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from xchange.errors import ServerProxyError
from xchange.replay import ReplayWindow

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)
SKEW = timedelta(seconds=60)
RETAINED = WINDOW + SKEW
DUPLICATE = "server.serverproxy.duplicate_message_id"
STALE = "server.serverproxy.stale_message"
US = timedelta(microseconds=1)


def new_window(max_entries: int = 1000) -> ReplayWindow:
    return ReplayWindow(WINDOW, max_entries, max_skew=SKEW)


def assert_duplicate(window: ReplayWindow, client: str, message_id: str, now: datetime) -> None:
    with pytest.raises(ServerProxyError) as info:
        window.accept(client, message_id, now)
    assert info.value.code == DUPLICATE
    assert info.value.status == 409


# -- duplicates -----------------------------------------------------------------------------


def test_first_acceptance_then_duplicate_refused() -> None:
    window = new_window()
    window.accept("EE/GOV/1/a", "m1", T0)
    assert_duplicate(window, "EE/GOV/1/a", "m1", T0)
    assert_duplicate(window, "EE/GOV/1/a", "m1", T0 + timedelta(seconds=1))
    assert len(window) == 1


@pytest.mark.parametrize(
    ("client", "message_id"),
    [("EE/GOV/1/b", "m1"), ("EE/GOV/1", "m1"), ("EE/GOV/1/a", "m2"), ("EE/GOV/1/a", "M1")],
)
def test_values_are_per_client_and_exact(client: str, message_id: str) -> None:
    window = new_window()
    window.accept("EE/GOV/1/a", "m1", T0)
    window.accept(client, message_id, T0)
    assert len(window) == 2


@pytest.mark.parametrize(
    ("later", "accepted"),
    [
        (timedelta(0), False),
        (WINDOW, False),
        (RETAINED - US, False),
        (RETAINED, False),  # the edge is still inside
        (RETAINED + US, True),
        (timedelta(days=1), True),
    ],
)
def test_ids_are_kept_for_window_plus_skew(later: timedelta, accepted: bool) -> None:
    window = new_window()
    window.accept("c", "m1", T0)
    if accepted:
        window.accept("c", "m1", T0 + later)
    assert_duplicate(window, "c", "m1", T0 + later)


def test_expired_entries_are_dropped() -> None:
    window = new_window()
    for i in range(5):
        window.accept("c", f"m{i}", T0 + timedelta(seconds=i))
    now = T0 + RETAINED + timedelta(seconds=2, microseconds=1)
    window.accept("c", "late", now)
    # m0..m2 fell out; m3, m4 and late remain
    assert len(window) == 3
    window.accept("c", "m2", now)
    assert_duplicate(window, "c", "m3", now)


def test_forget_releases_an_id() -> None:
    window = new_window()
    window.accept("c", "m1", T0)
    window.accept("c", "m2", T0)
    window.forget("c", "m1")
    assert len(window) == 1
    window.accept("c", "m1", T0 + timedelta(seconds=1))
    assert_duplicate(window, "c", "m2", T0 + timedelta(seconds=1))


@pytest.mark.parametrize(("client", "message_id"), [("c", "never-seen"), ("other", "m1")])
def test_forget_of_unknown_id_is_a_no_op(client: str, message_id: str) -> None:
    window = new_window()
    window.accept("c", "m1", T0)
    window.forget(client, message_id)
    assert_duplicate(window, "c", "m1", T0)


@pytest.mark.parametrize("max_entries", [1, 2, 3, 10])
def test_max_entries_bound_forgets_oldest_first(max_entries: int) -> None:
    window = new_window(max_entries)
    for i in range(max_entries + 2):
        window.accept("c", f"m{i}", T0 + timedelta(seconds=i))
        assert len(window) == min(i + 1, max_entries)
    now = T0 + timedelta(seconds=max_entries + 2)
    kept = [f"m{i}" for i in range(2, max_entries + 2)]
    # every kept id is refused, the oldest included, and refusing evicts nothing
    for message_id in kept + kept:
        assert_duplicate(window, "c", message_id, now)
    assert len(window) == max_entries
    # the two pushed out by the bound (within the window) are forgotten
    window.accept("c", "m0", now)
    assert_duplicate(window, "c", "m0", now)
    assert len(window) == max_entries


# -- freshness of the signing time ----------------------------------------------------------


@pytest.mark.parametrize(
    ("signed", "fresh"),
    [
        (timedelta(0), True),
        (-WINDOW, True),
        (-WINDOW - US, False),
        (-timedelta(days=365), False),
        (SKEW, True),
        (SKEW + US, False),
        (timedelta(days=1), False),
    ],
)
def test_check_fresh(signed: timedelta, fresh: bool) -> None:
    window = new_window()
    if fresh:
        window.check_fresh(T0 + signed, T0)
        return
    with pytest.raises(ServerProxyError) as info:
        window.check_fresh(T0 + signed, T0)
    assert info.value.code == STALE
    assert info.value.status == 400


def test_zero_skew_refuses_any_future_time() -> None:
    window = ReplayWindow(WINDOW, max_skew=timedelta(0))
    window.check_fresh(T0, T0)
    with pytest.raises(ServerProxyError):
        window.check_fresh(T0 + US, T0)


_OFFSETS = [-WINDOW - SKEW, -WINDOW, -SKEW, timedelta(0), SKEW, WINDOW, WINDOW + SKEW]


@pytest.mark.parametrize(
    ("accepted_at", "replayed_at"),
    [(a, r) for a, r in itertools.product(_OFFSETS, _OFFSETS) if r >= a],
)
def test_a_fresh_replay_always_finds_its_id(accepted_at: timedelta, replayed_at: timedelta) -> None:
    # signed at T0; accepted at T0 + accepted_at; replayed later at T0 + replayed_at.
    window = new_window()
    try:
        window.check_fresh(T0, T0 + accepted_at)
    except ServerProxyError:
        return  # never accepted in the first place
    window.accept("c", "jti-1", T0 + accepted_at)
    try:
        window.check_fresh(T0, T0 + replayed_at)
    except ServerProxyError:
        return  # refused as stale
    assert_duplicate(window, "c", "jti-1", T0 + replayed_at)


@pytest.mark.parametrize(
    ("window", "max_entries", "skew"),
    [
        (timedelta(0), 10, SKEW),
        (timedelta(seconds=-1), 10, SKEW),
        (WINDOW, 0, SKEW),
        (WINDOW, -5, SKEW),
        (WINDOW, 10, -US),
    ],
)
def test_bad_parameters_refused(window: timedelta, max_entries: int, skew: timedelta) -> None:
    with pytest.raises(ValueError, match="positive"):
        ReplayWindow(window, max_entries, max_skew=skew)
