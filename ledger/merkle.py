"""Merkle trees as Certificate Transparency defines them (RFC 6962 §2.1, RFC 9162 §2.1).

Leaves are hashed ``SHA-256(0x00 ‖ data)`` and interior nodes ``SHA-256(0x01 ‖ left ‖ right)``,
so a leaf can never pass for a node. A tree of n leaves splits at the largest power of two
below n; equivalently, each level pairs nodes from the left and carries an odd last node up
unchanged, which is how :func:`root` and :func:`audit_path` compute it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"
HASH_SIZE: Final = 32


def leaf_hash(data: bytes) -> bytes:
    """The hash of one leaf's data."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node over its two children."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of ``leaves`` (leaf hashes, in order); the empty tree's is
    ``SHA-256()``."""
    if not leaves:
        return hashlib.sha256().digest()
    level = list(leaves)
    while len(level) > 1:
        level = _parents(level)
    return level[0]


def audit_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The audit path (RFC 6962 ``PATH``) of leaf ``index``: the sibling hashes from the leaf
    up to the root, nearest first."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} is not in a tree of {len(leaves)} leaves")
    path = []
    level = list(leaves)
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index //= 2
        level = _parents(level)
    return path


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root that ``path`` proves for leaf hash ``leaf`` at ``index`` in a tree of ``size``
    leaves (RFC 9162 §2.1.3.2), or None when the path cannot belong to such a tree."""
    if not 0 <= index < size:
        return None
    node, last = index, size - 1
    computed = leaf
    for sibling in path:
        if last == 0:
            return None
        if node % 2 == 1 or node == last:
            computed = node_hash(sibling, computed)
            while node % 2 == 0 and node != 0:
                node >>= 1
                last >>= 1
        else:
            computed = node_hash(computed, sibling)
        node >>= 1
        last >>= 1
    return computed if last == 0 else None


def _parents(level: Sequence[bytes]) -> list[bytes]:
    parents = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        parents.append(level[-1])
    return parents
