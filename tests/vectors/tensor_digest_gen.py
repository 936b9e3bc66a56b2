"""Writes tests/vectors/tensor_digest.json: canonical tensor digests and a small trace commitment.

Run ``python -m tests.vectors.tensor_digest_gen`` after a deliberate encoding change; a test
fails when the committed file and this generator disagree. Each case lists the tensor's dtype,
shape and raw little-endian data (hex) so other implementations can rebuild it without torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from taonode.runtime.digest import tensor_bytes, tensor_digest, tensor_header
from taonode.runtime.merkle import frontier_digest, merkle_proof, merkle_root

VECTORS = Path(__file__).with_name("tensor_digest.json")


def cases() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    return [
        ("f32 scalar", torch.tensor(1.5)),
        ("f32 empty", torch.zeros(0, 3)),
        ("f32 2x3", torch.arange(6, dtype=torch.float32).reshape(2, 3) / 3),
        ("f32 transposed view", torch.arange(6, dtype=torch.float32).reshape(2, 3).t()),
        ("f32 specials", torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 1e-45])),
        ("f32 random 3x5x7", torch.randn(3, 5, 7, generator=g)),
        ("f64 1", torch.tensor([1.0], dtype=torch.float64)),
        ("f16", torch.tensor([1.0, -2.5], dtype=torch.float16)),
        ("bf16", torch.tensor([1.0, -2.5], dtype=torch.bfloat16)),
        ("i64", torch.tensor([[101, 2023], [0, -1]])),
        ("i32", torch.tensor([1, 2, 3], dtype=torch.int32)),
        ("bool", torch.tensor([True, False, True])),
    ]


def build() -> dict[str, Any]:
    out = []
    for name, t in cases():
        out.append(
            {
                "name": name,
                "dtype": str(t.dtype).removeprefix("torch."),
                "shape": list(t.shape),
                "header": "0x" + tensor_header(t).hex(),
                "data": "0x" + bytes(tensor_bytes(t)).hex(),
                "digest": "0x" + tensor_digest(t).hex(),
            }
        )
    # A 3-op chain x -> a -> b -> y: frontiers S_0={x}, S_1={a}, S_2={b}, S_3={y}.
    digests = {n: tensor_digest(torch.full((2,), float(i))) for i, n in enumerate("xaby")}
    frontiers = [[("x", digests["x"])], [("a", digests["a"])], [("b", digests["b"])]]
    frontiers.append([("y", digests["y"])])
    fds = [frontier_digest(f) for f in frontiers]
    trace = {
        "tensor_digests": {n: "0x" + d.hex() for n, d in digests.items()},
        "frontiers": [[n for n, _ in f] for f in frontiers],
        "frontier_digests": ["0x" + d.hex() for d in fds],
        "trace_root": "0x" + merkle_root(fds).hex(),
        "proofs": [["0x" + p.hex() for p in merkle_proof(fds, c)] for c in range(len(fds))],
    }
    return {
        "encoding": "BLAKE3-256(b'TAO-TENSOR-V1\\x00' || u8 len(tag) || tag || u8 ndim || "
        "u64le dims || C-contiguous little-endian data); trace root over frontier digests",
        "cases": out,
        "trace": trace,
    }


def main() -> None:
    VECTORS.write_text(json.dumps(build(), indent=1) + "\n")


if __name__ == "__main__":
    main()
