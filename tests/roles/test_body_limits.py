"""Request-body guards: the decode gate sheds load, non-finite values never pass either way."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
import torch

from taonode.api.body import BodyError, DecodeGate, dumps
from taonode.api.tensors import (
    TensorCodecError,
    tensor_from_json,
    tensor_to_json,
    tensors_from_safetensors,
    tensors_to_safetensors,
)


async def test_decode_gate_sheds_past_slots_and_queue_reverts() -> None:
    gate = DecodeGate(slots=2, queue=1)
    release = asyncio.Event()
    entered: list[int] = []

    async def hold(i: int) -> None:
        async with gate.slot():
            entered.append(i)
            await release.wait()

    holders = [asyncio.create_task(hold(i)) for i in range(3)]  # 2 in slots, 1 waiting
    # Each task runs to its first suspension within a loop iteration or two.
    for _ in range(5):
        await asyncio.sleep(0)
    assert sorted(entered) == [0, 1]
    with pytest.raises(BodyError) as refused:
        async with gate.slot():
            pass
    assert refused.value.status == 503
    release.set()
    await asyncio.gather(*holders)
    assert sorted(entered) == [0, 1, 2]  # the waiting one got its turn
    async with gate.slot():  # and the gate is free again
        pass


@pytest.mark.parametrize(
    ("dtype", "value"),
    [
        ("float32", 1e39),
        ("float32", -3.5e38),
        ("float16", 70000.0),
        ("bfloat16", 3.4e38 * 1.01),
        ("float64", float("inf")),
        ("float32", float("nan")),
    ],
)
def test_out_of_range_and_non_finite_inputs_refused_reverts(dtype: str, value: float) -> None:
    # Honest FP32 overflow on such an input is judged a violation: the prover would be slashed.
    with pytest.raises(TensorCodecError, match="finite and within"):
        tensor_from_json("x", {"dtype": dtype, "shape": [2], "data": [1.0, value]})


def test_in_range_extremes_accepted_succeeds() -> None:
    # The honest edge is not hit: the largest finite float32 and the smallest subnormal pass.
    biggest = float(torch.finfo(torch.float32).max)
    t = tensor_from_json("x", {"shape": [3], "data": [biggest, -biggest, 1e-45]})
    assert torch.isfinite(t).all()
    assert float(t[0]) == biggest


def test_safetensors_non_finite_inputs_refused_reverts() -> None:
    payload = tensors_to_safetensors({"x": torch.tensor([1.0, float("inf")])})
    with pytest.raises(TensorCodecError, match="finite"):
        tensors_from_safetensors(payload)
    ints = tensors_to_safetensors({"x": torch.tensor([1, 2], dtype=torch.int64)})
    assert tensors_from_safetensors(ints)["x"].tolist() == [1, 2]


def test_non_finite_outputs_encoded_as_strings_strict_json_succeeds() -> None:
    out = tensor_to_json(torch.tensor([[1.5, float("nan")], [float("inf"), float("-inf")]]))
    assert out["data"] == [[1.5, "NaN"], ["Infinity", "-Infinity"]]
    text = dumps({"outputs": {"y": out}}).decode()
    assert "NaN," not in text.replace('"NaN"', "")
    assert json.loads(text)["outputs"]["y"]["data"][0][1] == "NaN"
    # A bare non-finite float never leaves the node as invalid JSON.
    with pytest.raises(ValueError, match="Out of range float"):
        dumps({"x": math.inf})
    # Finite outputs are plain numbers, unchanged.
    assert tensor_to_json(torch.tensor([0.25]))["data"] == [0.25]
