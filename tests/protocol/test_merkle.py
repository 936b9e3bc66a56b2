"""The normative Merkle encoding, checked against a separate recursive construction."""

from __future__ import annotations

import json

from eth_hash.auto import keccak
from hypothesis import given
from hypothesis import strategies as st

from taonode.runtime.merkle import (
    ZERO32,
    MerkleError,
    frontier_digest,
    merkle_proof,
    merkle_root,
    verify_proof,
)
from tests.vectors.generate import VECTORS, render


def _reference_root(values: list[bytes]) -> bytes:
    """Independent construction: recursive halving over the padded leaf level."""
    leaves = [keccak(b"\x00" + i.to_bytes(32, "big") + v) for i, v in enumerate(values)]
    size = 1 << (len(leaves) - 1).bit_length()
    leaves += [bytes(32)] * (size - len(leaves))

    def build(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaves[lo]
        mid = (lo + hi) // 2
        return keccak(b"\x01" + build(lo, mid) + build(mid, hi))

    return build(0, size)


values_st = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40)


@given(values_st)
def test_merkle_root_matches_reference_succeeds(values: list[bytes]) -> None:
    assert merkle_root(values) == _reference_root(values)


@given(values_st, st.data())
def test_merkle_proof_roundtrip_succeeds(values: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(values) - 1))
    root = merkle_root(values)
    proof = merkle_proof(values, index)
    assert verify_proof(root, index, values[index], proof)
    other = bytes(b ^ 1 for b in values[index])
    assert not verify_proof(root, index, other, proof)
    if index ^ 1 < len(values) and values[index ^ 1] != values[index]:
        assert not verify_proof(root, index ^ 1, values[index], proof)


def test_merkle_root_empty_is_zero_succeeds() -> None:
    assert merkle_root([]) == ZERO32


def test_merkle_single_leaf_has_empty_proof_succeeds() -> None:
    v = keccak(b"one")
    assert merkle_proof([v], 0) == []
    assert verify_proof(merkle_root([v]), 0, v, [])


def test_merkle_padding_is_not_a_leaf_reverts() -> None:
    values = [keccak(b"a"), keccak(b"b"), keccak(b"c")]
    root = merkle_root(values)
    # Index 3 is padding: proving bytes32(0) there must fail because leaves are hashed.
    assert not verify_proof(root, 3, ZERO32, merkle_proof(values, 2))


def test_merkle_bad_lengths_revert() -> None:
    try:
        merkle_root([b"short"])
    except MerkleError:
        pass
    else:
        raise AssertionError("a short leaf must be refused")


def test_frontier_digest_is_order_independent_and_rejects_duplicates_succeeds() -> None:
    a, b = ("a", keccak(b"1")), ("b", keccak(b"2"))
    assert frontier_digest([a, b]) == frontier_digest([b, a])
    assert frontier_digest([a, b]) != frontier_digest([("a", b[1]), ("b", a[1])])
    try:
        frontier_digest([a, a])
    except MerkleError:
        pass
    else:
        raise AssertionError("duplicate names must be refused")


def test_vectors_file_matches_generator_succeeds() -> None:
    assert VECTORS.read_text() == render(), "run python -m tests.vectors.generate"
    data = json.loads(VECTORS.read_text())
    for tree in data["trees"]:
        values = [bytes.fromhex(v[2:]) for v in tree["values"]]
        assert "0x" + _reference_root(values).hex() == tree["root"]
