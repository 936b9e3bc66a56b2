from __future__ import annotations

from typing import Any

import pytest
import torch

from taonode.protocol.votes import Verdict
from taonode.runtime.check import check_op, check_trace, locate, unbounded_ops
from taonode.runtime.execute import Trace, run_segment_values, run_traced
from tests.runtime.conftest import MODEL_NAMES, Exported
from tests.runtime.fp32_orders import round_mantissa

DOT_OPS = {
    "aten.linear.default",
    "aten.conv2d.default",
    "aten.scaled_dot_product_attention.default",
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_check_trace_reference_models_clean_succeeds(
    exported: dict[str, Exported], name: str
) -> None:
    e = exported[name]
    assert unbounded_ops(e.model) == []
    checks = check_trace(e.model, e.trace)
    assert len(checks) == e.model.num_ops
    assert all(c.verdict is Verdict.WITHIN_TOLERANCE for c in checks)
    assert max(c.stats.max for c in checks) <= 1.0
    assert all(c.stats.count > 0 for c in checks)


def _inject(e: Exported, index: int, bit: int) -> Trace:
    """A prover that flips one mantissa bit of op ``index``'s output and carries on from it."""
    name = e.model.ops[index].outputs[0]
    values = dict(e.trace.values)
    t = values[name].clone()
    flat = t.view(-1)
    pos = int(flat.abs().argmax())
    flat.view(torch.int32)[pos] ^= 1 << bit
    values[name] = t
    frontier = {k: values[k] for k in e.model.frontiers[index + 1]}
    values.update(run_segment_values(e.model, index + 1, e.model.num_ops, frontier))
    return Trace(values)


@pytest.mark.parametrize(
    ("name", "index"), [("cnn", 4), ("transformer", 7), ("unet", 12), ("minilm", 40)]
)
def test_locate_flipped_mantissa_bit_succeeds(
    exported: dict[str, Exported], name: str, index: int
) -> None:
    e = exported[name]
    found = locate(e.model, _inject(e, index, bit=20))
    assert [c.index for c in found] == [index]
    assert found[0].verdict is Verdict.THEORETICAL_VIOLATION
    assert found[0].stats.max > 1.0
    assert "bound" in found[0].reason


def test_locate_flip_without_recompute_blames_first_op_succeeds(
    exported: dict[str, Exported],
) -> None:
    e = exported["transformer"]
    name = e.model.ops[5].outputs[0]
    values = dict(e.trace.values)
    t = values[name].clone()
    t.view(-1).view(torch.int32)[3] ^= 1 << 21
    values[name] = t
    found = locate(e.model, Trace(values))
    assert found
    assert found[0].index == 5


def _tf32(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    name = str(target)
    if name in DOT_OPS:
        args = tuple(
            round_mantissa(a, 10) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in args
        )
    return target(*args, **kwargs)


def _bf16(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    name = str(target)
    if name in DOT_OPS:
        low = tuple(
            a.bfloat16() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in args
        )
        return target(*low, **kwargs).float()
    return target(*args, **kwargs)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("variant", [_tf32, _bf16])
def test_locate_low_precision_execution_reverts(
    exported: dict[str, Exported], name: str, variant: Any
) -> None:
    e = exported[name]
    trace = run_traced(e.model, e.inputs, executor=variant)
    found = locate(e.model, trace)
    assert found, f"{variant.__name__} execution of {name} accepted"
    first_dot = next(op.index for op in e.model.ops if op.target in DOT_OPS)
    assert found[0].index == first_dot


def test_check_op_wrong_shape_and_dtype_reverts(exported: dict[str, Exported]) -> None:
    e = exported["cnn"]
    op = e.model.ops[0]
    inputs = e.trace.op_inputs(e.model, 0)
    y = e.trace.values[op.name]
    bad_shape = check_op(e.model, 0, inputs, {op.name: y[:1]})
    assert bad_shape.verdict is Verdict.THEORETICAL_VIOLATION
    assert "shape" in bad_shape.reason
    bad_dtype = check_op(e.model, 0, inputs, {op.name: y.double()})
    assert bad_dtype.verdict is Verdict.THEORETICAL_VIOLATION
    assert "dtype" in bad_dtype.reason
    nan = y.clone()
    nan.view(-1)[0] = float("nan")
    assert check_op(e.model, 0, inputs, {op.name: nan}).verdict is Verdict.THEORETICAL_VIOLATION
