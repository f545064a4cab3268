"""Merkle trees exactly as RFC 6962 defines them, checked against the RFC's own recursion."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import merkle


def reference_root(leaves: Sequence[bytes]) -> bytes:
    """MTH as RFC 6962 §2.1 writes it: split at the largest power of two below n."""
    if not leaves:
        return hashlib.sha256().digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return merkle.node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


def reference_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) as RFC 6962 §2.1.1 writes it."""
    if len(leaves) <= 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m < k:
        return [*reference_path(m, leaves[:k]), reference_root(leaves[k:])]
    return [*reference_path(m - k, leaves[k:]), reference_root(leaves[:k])]


def tree(size: int) -> list[bytes]:
    return [merkle.leaf_hash(str(i).encode()) for i in range(size)]


def test_the_leaf_and_empty_tree_hashes_are_certificate_transparencys() -> None:
    assert merkle.root([]).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


@pytest.mark.parametrize("size", range(70))
def test_the_root_is_rfc_6962s_merkle_tree_hash(size: int) -> None:
    assert merkle.root(tree(size)) == reference_root(tree(size))


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 9, 31, 33, 64])
def test_every_audit_path_is_rfc_6962s_and_proves_its_leaf(size: int) -> None:
    leaves = tree(size)
    root = merkle.root(leaves)
    for index in range(size):
        path = merkle.audit_path(index, leaves)
        assert path == reference_path(index, leaves)
        assert merkle.root_from_path(leaves[index], index, size, path) == root


@given(size=st.integers(2, 40), data=st.data())
def test_a_path_proves_nothing_for_another_leaf_or_index(size: int, data: st.DataObject) -> None:
    leaves = tree(size)
    root = merkle.root(leaves)
    index = data.draw(st.integers(0, size - 1))
    path = merkle.audit_path(index, leaves)
    other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))

    assert merkle.root_from_path(leaves[other], index, size, path) != root
    assert merkle.root_from_path(leaves[index], other, size, path) != root


def test_a_leaf_cannot_pass_for_a_node() -> None:
    left, right = merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")

    assert merkle.leaf_hash(left + right) != merkle.node_hash(left, right)


def test_an_index_outside_the_tree_has_no_path() -> None:
    with pytest.raises(IndexError):
        merkle.audit_path(3, tree(3))
    assert merkle.root_from_path(tree(3)[0], 3, 3, []) is None
