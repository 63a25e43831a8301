"""Results of pure functions of immutable objects, remembered by the objects' identity (pure).

The message path meets the same few certificate objects over and over -- the peer's TLS
certificate, a signer's parsed ``x5c`` chain, the approved CAs of the configuration in force
-- each parsed once and then shared (see :func:`xchange.signing._parse_x5c`).  Hashing or
comparing a ``cryptography`` certificate costs microseconds (it hashes or compares its DER),
so a memo keyed by the certificate's value would cost about as much as some of what it
saves.  :class:`IdentityMemo` keys by ``id()`` instead and keeps a reference to the objects
of every entry, so an id cannot be reused by another object while its entry lives, and a hit
is checked with ``is``.  Only for functions whose result depends on nothing but their
(immutable) arguments: what a certificate hashes to, whether one certificate's signature was
made by another's key -- never a decision that depends on the time.

Bounded: when full it is emptied; the objects in use come back on their next call.  Safe to
share between threads (at worst two threads compute the same value).
"""

from __future__ import annotations

from collections.abc import Callable
from operator import is_
from typing import Final, Generic, ParamSpec, TypeVar

__all__ = ["IdentityMemo"]

P = ParamSpec("P")
V = TypeVar("V")

DEFAULT_SIZE: Final = 1024


class IdentityMemo(Generic[P, V]):
    """``fn(*args)`` remembered per identity of ``args`` (module docstring)."""

    def __init__(self, fn: Callable[P, V], *, size: int = DEFAULT_SIZE) -> None:
        if size < 1:
            raise ValueError("size must be positive")
        self._fn = fn
        self._size = size
        self._memo: dict[tuple[int, ...], tuple[tuple[object, ...], V]] = {}

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> V:
        if kwargs:
            raise TypeError("an IdentityMemo takes positional arguments only")
        key = tuple(map(id, args))
        hit = self._memo.get(key)
        # Same ids, same number of them: compared pairwise in C (a generator over zip cost
        # as much as the rest of a hit).
        if hit is not None and all(map(is_, hit[0], args)):
            return hit[1]
        value = self._fn(*args, **kwargs)
        if len(self._memo) >= self._size:
            self._memo.clear()
        self._memo[key] = (args, value)
        return value

    def __len__(self) -> int:
        return len(self._memo)
