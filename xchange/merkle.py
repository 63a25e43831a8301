"""Merkle trees over SHA-256 with RFC 6962 domain separation (pure core).

The message log time-stamps many records with one token: it builds a Merkle tree over a
batch of records, has the root stamped, and keeps for each record the *audit path* from its
leaf to the root.  Anyone holding a record, its path and the token can then check, offline,
that the record is covered by the token.

The tree is the one of RFC 6962 section 2.1 (also RFC 9162 section 2.1), with SHA-256::

    leaf hash  = SHA-256(0x00 || leaf data)
    node hash  = SHA-256(0x01 || left || right)
    MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n]))   k: the largest power of two < n

The 0x00 / 0x01 prefixes keep a leaf from ever being read as an inner node (second-preimage
attacks).  An audit path lists sibling hashes from the leaf upwards (RFC 6962 2.1.1), and
:func:`root_from_path` follows RFC 9162 2.1.3.2 to recompute the root from a leaf, its index
and the tree size.  An empty tree has no root here: the log never stamps an empty batch.

This module only computes.  It never compares against an expected root: callers do that and
raise their own error, with their own words, when the roots differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

__all__ = ["HASH_SIZE", "MEMO_STEP", "PathMemo", "leaf_hash", "merkle_root", "merkle_tree",
           "node_hash", "root_from_path"]

HASH_SIZE: Final = 32


def leaf_hash(data: bytes) -> bytes:
    """The hash of a leaf whose data is ``data``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an inner node over its two children's hashes."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n`` >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def merkle_tree(leaves: Sequence[bytes]) -> tuple[bytes, list[tuple[bytes, ...]]]:
    """The root over the leaf data ``leaves`` and the audit path of every leaf, in order.

    Computed in one pass (O(n log n)); raises :class:`ValueError` for no leaves.
    """
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    root, paths = _build(leaves)
    return root, [tuple(p) for p in paths]


def _build(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    if len(leaves) == 1:
        return leaf_hash(leaves[0]), [[]]
    k = _split(len(leaves))
    left, left_paths = _build(leaves[:k])
    right, right_paths = _build(leaves[k:])
    # Paths go from the leaf up: this level's sibling comes after the deeper ones.
    for path in left_paths:
        path.append(right)
    for path in right_paths:
        path.append(left)
    return node_hash(left, right), left_paths + right_paths


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The root over the leaf data ``leaves`` (at least one)."""
    return merkle_tree(leaves)[0]


class PathMemo:
    """Remembers where audit paths lead, for :func:`root_from_path` over many leaves of one
    tree: the leaves under one node share the rest of their path, so each is followed only
    :data:`MEMO_STEP` steps, to that node, and the rest is looked up.

    What is remembered is a pure function's value -- the root reached from a given node
    (its position, its hash) along a given rest of the path -- so a hit is exactly what
    computing it would give, and nothing else; a path that fails is never remembered.
    Bounded: emptied when full.
    """

    def __init__(self, size: int = 65536) -> None:
        self._size = size
        self._roots: dict[tuple[int, int, bytes, tuple[bytes, ...]], bytes] = {}

    def get(self, key: tuple[int, int, bytes, tuple[bytes, ...]]) -> bytes | None:
        return self._roots.get(key)

    def put(self, key: tuple[int, int, bytes, tuple[bytes, ...]], root: bytes) -> None:
        if len(self._roots) >= self._size:
            self._roots.clear()
        self._roots[key] = root


MEMO_STEP: Final = 4
"""Steps followed before a :class:`PathMemo` is asked: a node with 16 leaves below it."""


def root_from_path(data: bytes, index: int, size: int, path: Sequence[bytes], *,
                   memo: PathMemo | None = None) -> bytes:
    """The root that leaf ``data`` at ``index`` of a tree of ``size`` leaves reaches along
    ``path`` (RFC 9162 2.1.3.2); with a ``memo``, the same, sooner for a leaf whose path
    joins one followed before.

    Raises :class:`ValueError` when ``path`` cannot be an audit path for that position (wrong
    length, or a hash that is not 32 bytes): no root at all, rather than a wrong one.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")
    fn, sn = index, size - 1
    result = leaf_hash(data)
    key = None
    for step, sibling in enumerate(path):
        if step == MEMO_STEP and memo is not None:
            key = (fn, sn, result, tuple(path[step:]))
            if (known := memo.get(key)) is not None:
                return known
        if len(sibling) != HASH_SIZE:
            raise ValueError("an audit path hash is not 32 bytes")
        if sn == 0:
            raise ValueError("the audit path is longer than the tree is high")
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            # A right edge without a right sibling: climb the levels where this node is
            # promoted unchanged.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("the audit path is shorter than the tree is high")
    if key is not None and memo is not None:
        memo.put(key, result)
    return result
