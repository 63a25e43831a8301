"""Tests of the RFC 6962 Merkle tree: known roots, every path of many sizes, bad paths."""

from __future__ import annotations

import hashlib

import pytest

from xchange.merkle import (
    MEMO_STEP,
    PathMemo,
    leaf_hash,
    merkle_root,
    merkle_tree,
    node_hash,
    root_from_path,
)

# RFC 6962's reference test data (certificate-transparency's merkle_tree_test: the leaf
# inputs and the roots of the first 1..8 leaves), recomputed from the definition below.
LEAVES = [bytes.fromhex(h) for h in
          ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
           "606162636465666768696a6b6c6d6e6f"]]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH straight from RFC 6962 2.1, recursively, for comparison."""
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + reference_root(leaves[:k])
                          + reference_root(leaves[k:])).digest()


@pytest.mark.parametrize("n", range(1, 9))
def test_rfc6962_test_vectors(n: int) -> None:
    assert merkle_root(LEAVES[:n]).hex() == ROOTS[n - 1]
    assert reference_root(LEAVES[:n]).hex() == ROOTS[n - 1]


def test_domain_separation() -> None:
    a, b = b"a", b"b"
    assert merkle_root([a, b]) == node_hash(leaf_hash(a), leaf_hash(b))
    # a leaf whose data is two child hashes is not the node over them
    assert leaf_hash(leaf_hash(a) + leaf_hash(b)) != merkle_root([a, b])


@pytest.mark.parametrize("n", [*range(1, 18), 31, 32, 33, 100])
def test_every_path_leads_to_the_root(n: int) -> None:
    leaves = [b"leaf-%d" % i for i in range(n)]
    root, paths = merkle_tree(leaves)
    assert root == reference_root(leaves)
    for index, (leaf, path) in enumerate(zip(leaves, paths, strict=True)):
        assert root_from_path(leaf, index, n, path) == root
        if n > 1:
            # any other leaf, index or size does not reach the root
            assert root_from_path(b"other", index, n, path) != root
            assert _reached(leaf, (index + 1) % n, n, path) != root


def _reached(leaf: bytes, index: int, size: int, path: tuple[bytes, ...],
             memo: PathMemo | None = None) -> bytes | None:
    try:
        return root_from_path(leaf, index, size, path, memo=memo)
    except ValueError:
        return None  # a path of the wrong length for that position: no root at all


def test_bad_paths_are_refused() -> None:
    leaves = [b"%d" % i for i in range(5)]
    root, paths = merkle_tree(leaves)
    with pytest.raises(ValueError, match="longer"):
        root_from_path(leaves[0], 0, 5, (*paths[0], root))
    with pytest.raises(ValueError, match="shorter"):
        root_from_path(leaves[0], 0, 5, paths[0][:-1])
    with pytest.raises(ValueError, match="32 bytes"):
        root_from_path(leaves[0], 0, 5, (paths[0][0][:31], *paths[0][1:]))
    with pytest.raises(ValueError, match="outside"):
        root_from_path(leaves[0], 5, 5, paths[0])
    with pytest.raises(ValueError, match="outside"):
        root_from_path(leaves[0], -1, 5, paths[0])


@pytest.mark.parametrize("n", [2, 17, 31, 32, 33, 100, 1000])
def test_a_memo_reaches_the_same_roots(n: int) -> None:
    """Leaves whose paths join a remembered node get the root the whole path gives; a leaf,
    position or path that differs below or above that node gets what it gets without the
    memo: a failure, or another root."""
    leaves = [b"leaf-%d" % i for i in range(n)]
    root, paths = merkle_tree(leaves)
    memo = PathMemo()
    for index, (leaf, path) in enumerate(zip(leaves, paths, strict=True)):
        assert root_from_path(leaf, index, n, path, memo=memo) == root
        assert root_from_path(b"other", index, n, path, memo=memo) != root
        assert _reached(leaf, (index + 1) % n, n, path, memo) == _reached(
            leaf, (index + 1) % n, n, path)
        if len(path) > MEMO_STEP:
            top = (*path[:-1], bytes(32))
            assert root_from_path(leaf, index, n, top, memo=memo) == root_from_path(
                leaf, index, n, top) != root
            with pytest.raises(ValueError, match="longer"):
                root_from_path(leaf, index, n, (*path, root), memo=memo)
            with pytest.raises(ValueError, match="shorter"):
                root_from_path(leaf, index, n, path[:-1], memo=memo)


def test_empty_tree_is_refused() -> None:
    with pytest.raises(ValueError):
        merkle_tree([])
