from __future__ import annotations

import json

import pytest
import torch

from taonode.runtime.digest import DigestError, tensor_digest
from tests.vectors import tensor_digest_gen


def test_vectors_file_matches_generator_succeeds() -> None:
    committed = json.loads(tensor_digest_gen.VECTORS.read_text())
    assert committed == tensor_digest_gen.build()


def test_vectors_rebuild_from_raw_bytes_succeeds() -> None:
    import blake3

    for case in json.loads(tensor_digest_gen.VECTORS.read_text())["cases"]:
        raw = bytes.fromhex(case["header"][2:]) + bytes.fromhex(case["data"][2:])
        assert "0x" + blake3.blake3(raw).hexdigest() == case["digest"], case["name"]


def test_tensor_digest_layout_independent_succeeds() -> None:
    x = torch.randn(4, 6)
    assert tensor_digest(x.t()) == tensor_digest(x.t().contiguous())
    assert tensor_digest(x[:, 1:3]) == tensor_digest(x[:, 1:3].clone())


def test_tensor_digest_distinguishes_dtype_shape_and_bits_succeeds() -> None:
    x = torch.zeros(2, 3)
    seen = {
        tensor_digest(x),
        tensor_digest(x.reshape(3, 2)),
        tensor_digest(x.reshape(6)),
        tensor_digest(x.to(torch.float64)),
        tensor_digest(x.to(torch.int32)),
        tensor_digest(-x),  # -0.0 has another bit pattern
    }
    assert len(seen) == 6
    y = x.clone()
    y.view(torch.int32)[1, 2] ^= 1
    assert tensor_digest(y) != tensor_digest(x)


def test_tensor_digest_threads_agree_succeeds() -> None:
    x = torch.randn(3_000_000)
    assert tensor_digest(x, threads=2) == tensor_digest(x, threads=1)


def test_tensor_digest_unknown_dtype_reverts() -> None:
    with pytest.raises(DigestError):
        tensor_digest(torch.zeros(2, dtype=torch.complex64))
