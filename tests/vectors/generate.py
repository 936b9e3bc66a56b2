"""Writes tests/vectors/merkle.json: leaves, roots and proofs the contract tests reuse.

Run ``python -m tests.vectors.generate`` after a deliberate encoding change; a test fails when
the committed file and this generator disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eth_hash.auto import keccak

from taonode.runtime.merkle import frontier_digest, frontier_entry, merkle_proof, merkle_root

VECTORS = Path(__file__).with_name("merkle.json")
SIZES = (1, 2, 3, 4, 5, 7, 8, 9, 17)


def _value(size: int, i: int) -> bytes:
    return keccak(f"tao-vector/{size}/{i}".encode())


def build() -> dict[str, Any]:
    trees = []
    for size in SIZES:
        values = [_value(size, i) for i in range(size)]
        trees.append(
            {
                "size": size,
                "values": ["0x" + v.hex() for v in values],
                "root": "0x" + merkle_root(values).hex(),
                "proofs": [["0x" + p.hex() for p in merkle_proof(values, i)] for i in range(size)],
            }
        )
    entries = [("x", keccak(b"digest-x")), ("linear_1", keccak(b"digest-l")), ("a", keccak(b"a"))]
    frontier = {
        "entries": [{"name": n, "digest": "0x" + d.hex()} for n, d in entries],
        "entry_values": {n: "0x" + frontier_entry(n, d).hex() for n, d in entries},
        "digest": "0x" + frontier_digest(entries).hex(),
    }
    return {
        "encoding": "DESIGN §2: leaf=keccak(0x00||uint256(i)||v), node=keccak(0x01||l||r), "
        "zero-padded to a power of two; frontier entry=keccak(0x02||uint16(len)||name||digest)",
        "trees": trees,
        "frontier": frontier,
    }


def render() -> str:
    return json.dumps(build(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    VECTORS.write_text(render())
    print(f"wrote {VECTORS}")
