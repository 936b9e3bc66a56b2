from __future__ import annotations

import itertools

import pytest
import torch

from taonode.protocol.schedule import cuts
from taonode.runtime import graph
from taonode.runtime.execute import (
    eval_op_fp64,
    run_plain,
    run_segment,
    run_traced,
)
from taonode.runtime.graph import ModelError
from tests.runtime.conftest import MODEL_NAMES, Exported


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_run_traced_bit_identical_to_module_succeeds(
    exported: dict[str, Exported], name: str
) -> None:
    e = exported[name]
    plain = run_plain(e.model, e.inputs)
    traced = e.trace.outputs(e.model)
    assert len(plain) == len(traced)
    for p, t in zip(plain, traced, strict=True):
        assert p.dtype == t.dtype
        assert torch.equal(p, t)
    # And identical to the eager module the program was exported from.
    with torch.no_grad():
        eager = e.module(*e.inputs.values())
    assert torch.equal(eager, traced[0])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_run_segment_matches_trace_on_game_cuts_succeeds(
    exported: dict[str, Exported], name: str
) -> None:
    e = exported[name]
    n = e.model.num_ops
    bounds = [0, *cuts(0, n, 4), n]
    for a, b in itertools.pairwise(bounds):
        got = run_segment(e.model, a, b, e.trace.frontier(e.model, a))
        want = e.trace.frontier(e.model, b)
        assert set(got) == set(want)
        for k in want:
            assert torch.equal(got[k], want[k]), (name, a, b, k)


def test_frontiers_hold_inputs_and_outputs_succeeds(exported: dict[str, Exported]) -> None:
    for e in exported.values():
        m = e.model
        assert m.frontiers[m.num_ops] == tuple(sorted(m.outputs))
        assert set(m.frontiers[0]) <= set(m.input_names)
        for c in range(1, m.num_ops + 1):
            for v in m.frontiers[c]:
                assert m.producer[v] < c


def test_op_indexing_is_deterministic_succeeds(exported: dict[str, Exported]) -> None:
    e = exported["transformer"]
    again = graph.load(e.path)
    assert again.model_id == e.model.model_id
    assert again.ops == e.model.ops
    # Metadata ops are fused, never indexed.
    assert not any(op.target.startswith(("aten.view", "aten.transpose")) for op in again.ops)
    assert sum(len(op.fused) for op in again.ops) > 0


def test_model_id_changes_with_one_weight_succeeds(exported: dict[str, Exported]) -> None:
    e = exported["cnn"]
    module, example = e.module, tuple(e.inputs.values())
    with torch.no_grad():
        p = next(iter(module.parameters()))
        old = p[0].flatten()[0].item()
        p.view(-1)[0] = old + 1e-6
        try:
            other = graph.from_program(torch.export.export(module, example))
        finally:
            p.view(-1)[0] = old
    assert other.model_id != e.model.model_id
    assert other.ops == e.model.ops


def test_eval_op_fp64_close_to_fp32_succeeds(exported: dict[str, Exported]) -> None:
    e = exported["unet"]
    for i in range(e.model.num_ops):
        got = eval_op_fp64(e.model, i, e.trace.op_inputs(e.model, i))
        for k, v in got.items():
            if v.is_floating_point():
                assert v.dtype == torch.float64
                assert torch.allclose(v, e.trace.values[k].double(), rtol=1e-4, atol=1e-5)


def test_run_traced_input_name_mismatch_reverts(exported: dict[str, Exported]) -> None:
    e = exported["cnn"]
    with pytest.raises(ModelError, match="input names"):
        run_traced(e.model, {"y": e.inputs["x"]})
    with pytest.raises(ModelError, match="exported for"):
        run_traced(e.model, {"x": e.inputs["x"][:1]})


def test_run_segment_missing_frontier_reverts(exported: dict[str, Exported]) -> None:
    e = exported["cnn"]
    with pytest.raises(ModelError, match="lacks"):
        run_segment(e.model, 1, 3, {})
