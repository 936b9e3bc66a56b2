"""Keccak Merkle trees in the normative encoding of DESIGN §2 (shared with the contracts).

* Leaf ``i`` with value ``v`` (32 bytes): ``keccak256(0x00 ‖ uint256(i) ‖ v)``.
* Internal node: ``keccak256(0x01 ‖ left ‖ right)``.
* The leaf level is padded with ``bytes32(0)`` up to the next power of two. Padding entries
  are used as they are (not hashed as leaves), so they can never collide with a real leaf.
* A proof lists the siblings from the leaf level up; bit ``j`` of the index says whether the
  running hash is the right (1) or left (0) child at level ``j``.
* A tree of one leaf has that leaf hash as its root and an empty proof. An empty tree has root
  ``bytes32(0)``.

The trace root is this tree over ``frontier_digest(0..N)``; a frontier digest is this tree over
:func:`frontier_entry` values of the frontier's tensors sorted by name.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_hash.auto import keccak

ZERO32 = bytes(32)
LEAF_DOMAIN = b"\x00"
NODE_DOMAIN = b"\x01"
ENTRY_DOMAIN = b"\x02"


class MerkleError(ValueError):
    """A malformed leaf, index or proof."""


def _check32(value: bytes, what: str) -> None:
    if len(value) != 32:
        raise MerkleError(f"{what} must be 32 bytes, got {len(value)}")


def leaf_hash(index: int, value: bytes) -> bytes:
    """Hash of leaf ``index`` holding the 32-byte ``value``."""
    _check32(value, "leaf value")
    if not 0 <= index < 2**256:
        raise MerkleError(f"leaf index out of range: {index}")
    return keccak(LEAF_DOMAIN + index.to_bytes(32, "big") + value)


def node_hash(left: bytes, right: bytes) -> bytes:
    return keccak(NODE_DOMAIN + left + right)


def frontier_entry(name: str, tensor_digest: bytes) -> bytes:
    """The 32-byte value one named tensor contributes to a frontier digest.

    ``keccak256(0x02 ‖ uint16(len(name)) ‖ utf8(name) ‖ tensor_digest)``; the length prefix
    keeps ``(name, digest)`` pairs unambiguous.
    """
    _check32(tensor_digest, "tensor digest")
    raw = name.encode("utf-8")
    if len(raw) >= 2**16:
        raise MerkleError("value name too long")
    return keccak(ENTRY_DOMAIN + len(raw).to_bytes(2, "big") + raw + tensor_digest)


def _levels(values: Sequence[bytes]) -> list[list[bytes]]:
    level = [leaf_hash(i, v) for i, v in enumerate(values)]
    width = 1
    while width < len(level):
        width *= 2
    level.extend([ZERO32] * (width - len(level)))
    levels = [level]
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def merkle_root(values: Sequence[bytes]) -> bytes:
    """Root over ``values`` (each 32 bytes); ``bytes32(0)`` when empty."""
    if not values:
        return ZERO32
    return _levels(values)[-1][0]


def merkle_proof(values: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes proving ``values[index]`` against :func:`merkle_root`."""
    if not 0 <= index < len(values):
        raise MerkleError(f"index {index} outside a tree of {len(values)} leaves")
    proof: list[bytes] = []
    for level in _levels(values)[:-1]:
        proof.append(level[index ^ 1])
        index //= 2
    return proof


def verify_proof(root: bytes, index: int, value: bytes, proof: Sequence[bytes]) -> bool:
    """True when ``value`` sits at ``index`` of the tree with ``root``."""
    _check32(root, "root")
    if index >= 2 ** len(proof):
        return False
    running = leaf_hash(index, value)
    for level, sibling in enumerate(proof):
        _check32(sibling, "proof entry")
        running = node_hash(sibling, running) if index >> level & 1 else node_hash(running, sibling)
    return running == root


def frontier_digest(entries: Sequence[tuple[str, bytes]]) -> bytes:
    """Frontier digest over ``(value name, tensor digest)`` pairs, sorted by name."""
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        raise MerkleError("duplicate value name in frontier")
    ordered = sorted(entries, key=lambda e: e[0])
    return merkle_root([frontier_entry(name, digest) for name, digest in ordered])
