from __future__ import annotations

from typing import Any

import pytest
import torch

from taonode.api.tensors import (
    TensorCodecError,
    tensor_from_json,
    tensor_to_json,
    tensors_from_json,
    tensors_from_safetensors,
    tensors_to_safetensors,
)


def test_tensor_json_roundtrip_succeeds() -> None:
    for t in (
        torch.randn(2, 3, 4),
        torch.arange(6, dtype=torch.int64).reshape(3, 2),
        torch.tensor([True, False]),
        torch.tensor(3.5),
    ):
        again = tensor_from_json("x", tensor_to_json(t))
        assert again.dtype == t.dtype
        assert torch.equal(again, t)


def test_safetensors_roundtrip_succeeds() -> None:
    tensors = {"a": torch.randn(4, 5), "b": torch.ones(3, dtype=torch.int64)}
    again = tensors_from_safetensors(tensors_to_safetensors(tensors))
    assert again.keys() == tensors.keys()
    assert all(torch.equal(again[k], tensors[k]) for k in tensors)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([1, 2], "must be an object"),
        ({"dtype": "complex64", "shape": [1], "data": [1]}, "dtype must be one of"),
        ({"shape": [2], "data": [1.0]}, "holds 1 values"),
        ({"shape": [-1], "data": []}, "shape must be"),
        ({"shape": [1 << 20, 1 << 20], "data": []}, "exceeds the cap"),
        ({"shape": [2], "data": [[1.0], [2.0]]}, "deeper than the shape"),
        ({"shape": [2, 1], "data": [1.0, 2.0]}, "less deeply"),
        ({"dtype": "int64", "shape": [1], "data": [1.5]}, "non-integer"),
        ({"shape": [1], "data": ["x"]}, "must be numbers"),
        ({"shape": [1], "data": [1.0], "extra": 1}, "unknown fields"),
    ],
)
def test_tensor_from_json_bad_input_reverts(spec: Any, message: str) -> None:
    with pytest.raises(TensorCodecError, match=message):
        tensor_from_json("x", spec)


def test_tensors_from_json_and_safetensors_bad_input_reverts() -> None:
    with pytest.raises(TensorCodecError):
        tensors_from_json({})
    with pytest.raises(TensorCodecError):
        tensors_from_json([1])
    with pytest.raises(TensorCodecError, match="safetensors"):
        tensors_from_safetensors(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    good = tensors_to_safetensors({"a": torch.ones(1000)})
    with pytest.raises(TensorCodecError):
        tensors_from_safetensors(good[: len(good) // 2])
