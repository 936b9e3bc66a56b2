"""Scalars, overflow and NaN in the theoretical bounds, and agreement between the challenger's
frontier deviation and the committee's per-op verdict on non-finite values (issue 11, items 5
and 7)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from taonode.protocol.votes import Verdict
from taonode.roles.judge import ProfileJudge
from taonode.runtime import graph
from taonode.runtime.bounds import reference_and_bound
from taonode.runtime.check import check_trace, normalized_error
from taonode.runtime.execute import Trace, run_traced
from taonode.runtime.profile import calibrate, frontier_deviation
from taonode.runtime.variants import get_variants
from tests.runtime.conftest import Exported
from tests.runtime.test_bounds_mutation import up

FMAX = torch.finfo(torch.float32).max
INF = float("inf")


def r_of(target: str, args: tuple[Any, ...], y: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    ref, bound = reference_and_bound(target, up(args), up(kwargs))
    return normalized_error(y, ref, bound)


# --- scalars that are not FP32 numbers --------------------------------------------------------
@pytest.mark.parametrize("value", [-1e30, 0.1, 1e-40, -3.3e38, 1 / 3])
def test_masked_fill_inexact_value_exact_succeeds(value: float) -> None:
    x = torch.randn(64, generator=torch.Generator().manual_seed(0))
    m = x > 0
    y = x.masked_fill(m, value)
    assert float(r_of("aten.masked_fill.Scalar", (x, m, value), y).max()) == 0.0
    f = torch.tensor(value, dtype=torch.float32)
    other = x.masked_fill(m, float(torch.nextafter(f, torch.tensor(INF))))
    assert float(r_of("aten.masked_fill.Scalar", (x, m, value), other).max()) == INF


@pytest.mark.parametrize("op", ["eq", "ne", "lt", "le", "gt", "ge"])
@pytest.mark.parametrize("s", [0.1, 1e-30, 1 / 3, 16777217.0])
def test_comparison_inexact_scalar_exact_succeeds(op: str, s: float) -> None:
    f = torch.tensor(s, dtype=torch.float32)
    x = torch.stack(
        [f, torch.nextafter(f, torch.tensor(INF)), torch.nextafter(f, torch.tensor(-INF)), -f]
    )
    y = getattr(torch, op)(x, s)
    r = r_of(f"aten.{op}.Scalar", (x, s), y)
    assert float(r.max()) == 0.0
    assert float(r_of(f"aten.{op}.Scalar", (x, s), ~y).max()) == INF


def test_scalar_mul_div_add_keep_output_rounding_succeeds() -> None:
    """The constructed family of issue 11 (``x·s`` whose FP64 value is an FP32 number while the
    FP32 program's ``x·fl32(s)`` is not), plus division and addition by the same scalars."""
    x = torch.cat([torch.arange(1, 6001, dtype=torch.float32) * 10, torch.arange(1, 6001) / 7])
    worst = 0.0
    count = 0
    for s in (0.1, 0.3, 1 / 3, 1e-3, 0.7, 2.0 / 3):
        for target, y in (
            ("aten.mul.Tensor", x * s),
            ("aten.div.Tensor", x / s),
            ("aten.add.Tensor", x + s),
            ("aten.sub.Tensor", x - s),
        ):
            worst = max(worst, float(r_of(target, (x, s), y).max()))
            count += x.numel()
    assert count > 17_798
    assert worst <= 1.0, worst


def test_scalar_mul_rounding_is_charged_reverts() -> None:
    # 10·0.1 is 1 in FP64; the FP32 program computes 10·fl32(0.1) = 1.0000000149 → 1.0 (ok) but
    # a claim off by one more ulp than the rounding allows is outside.
    x = torch.tensor([10.0, 30.0, 70.0])
    honest = x * 0.1
    assert float(r_of("aten.mul.Tensor", (x, 0.1), honest).max()) <= 1.0
    bad = torch.nextafter(torch.nextafter(honest, honest * 2), honest * 2)
    assert float(r_of("aten.mul.Tensor", (x, 0.1), bad).max()) > 1.0


# --- overflow --------------------------------------------------------------------------------
def test_honest_overflow_within_bound_succeeds() -> None:
    a = torch.tensor([1e30, -1e30, 2e19])
    assert float(r_of("aten.mul.Tensor", (a, a.abs()), a * a.abs()).max()) == 0.0
    x = torch.tensor([88.8, 89.0, 200.0])
    assert float(r_of("aten.exp.default", (x,), torch.exp(x)).max()) == 0.0
    # The conv of issue 11 item 5: an honest FP32 conv overflows, the FP64 reference is finite
    # or beyond the range: within bound either way.
    g = torch.Generator().manual_seed(1)
    cx = torch.randn(1, 4, 6, 6, generator=g) * 1e19
    cw = torch.randn(3, 4, 3, 3, generator=g) * 1e19
    y = F.conv2d(cx, cw)
    assert not bool(torch.isfinite(y).all())
    assert float(r_of("aten.conv2d.default", (cx, cw, None), y).max()) <= 1.0


def test_overflow_claims_where_impossible_or_required_reverts() -> None:
    a = torch.tensor([1e30, -1e30])
    # finite where every honest execution overflows
    assert float(r_of("aten.mul.Tensor", (a, a.abs()), a.sign() * FMAX).min()) > 1.0
    # inf where no honest execution overflows
    x = torch.tensor([88.0, 10.0])
    assert float(r_of("aten.exp.default", (x,), torch.full((2,), INF)).min()) == INF
    b = torch.tensor([3.0, -2.0])
    assert float(r_of("aten.mul.Tensor", (b, b), torch.tensor([INF, -INF])).min()) == INF
    # wrong sign of an honest overflow
    assert float(r_of("aten.mul.Tensor", (a, a.abs()), torch.tensor([-INF, INF])).min()) == INF


def test_nan_semantics_succeeds() -> None:
    x = torch.tensor([-1.0, 0.0, 2.0])
    y = torch.log(x)  # nan, -inf, log 2
    r = r_of("aten.log.default", (x,), y)
    assert float(r[:2].max()) == 0.0
    assert float(r[2]) <= 1.0
    assert float(r_of("aten.log.default", (x,), torch.tensor([0.0, -INF, y[2]]))[0]) == INF
    assert float(r_of("aten.log.default", (x,), torch.tensor([math.nan, math.nan, y[2]]))[1]) == INF


# --- challenger excess and committee verdict agree on NaN / inf --------------------------------
class _LogScale(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x) * 3.0 + 1.0


class _Overflow(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 1e30) * 1e10 + 1.0


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_non_finite_job_challenger_and_committee_agree_succeeds(kind: str, tmp_path: Path) -> None:
    module: torch.nn.Module = _LogScale() if kind == "nan" else _Overflow()
    x = torch.tensor([[-1.0, 0.5, 2.0, 1e-3]]) if kind == "nan" else torch.tensor([[1e5, -3.0]])
    model = graph.export(module, (x,), tmp_path / "m.pt2")
    inputs = {model.input_names[0]: x}
    honest = run_traced(model, inputs)
    out = honest.frontier(model, model.num_ops)
    assert not all(bool(torch.isfinite(t).all()) for t in out.values())
    profile = calibrate(model, [inputs], get_variants(["default"]), ks=(2,))
    judge = ProfileJudge(model, profile, k=2)
    challenger_own = run_traced(model, inputs)
    # Honest NaN/inf job: no excess for the challenger, WITHIN at every op for the committee.
    assert judge.end_to_end_excess(out, challenger_own.frontier(model, model.num_ops)) == 0.0
    for i in range(model.num_ops):
        v = judge.op_verdict(i, honest.op_inputs(model, i), honest.op_outputs(model, i))
        assert v is Verdict.WITHIN_TOLERANCE
    # A prover that replaces the non-finite values by finite ones in the last op's output:
    # infinite excess, and the committee finds the violation at that op.
    last = model.ops[-1].outputs[0]
    forged = honest.values[last].clone()
    forged[~torch.isfinite(forged)] = 0.0
    cheat = Trace({**honest.values, last: forged})
    excess = judge.end_to_end_excess(
        cheat.frontier(model, model.num_ops), challenger_own.frontier(model, model.num_ops)
    )
    assert excess == INF
    n = model.num_ops - 1
    v = judge.op_verdict(n, cheat.op_inputs(model, n), cheat.op_outputs(model, n))
    assert v is Verdict.THEORETICAL_VIOLATION


def test_frontier_deviation_non_finite_rule_succeeds() -> None:
    a = torch.tensor([math.nan, INF, -INF, 1.0])
    assert frontier_deviation({"y": a.clone()}, {"y": a}) == 0.0
    for bad in (
        torch.tensor([0.0, INF, -INF, 1.0]),
        torch.tensor([math.nan, -INF, -INF, 1.0]),
        torch.tensor([math.nan, INF, -INF, math.nan]),
    ):
        assert frontier_deviation({"y": bad}, {"y": a}) == INF
    # A finite deviation is scaled by the finite part of the reference, not by inf.
    near = torch.tensor([math.nan, INF, -INF, 1.5])
    assert frontier_deviation({"y": near}, {"y": a}) == pytest.approx(0.5)


# --- the GELU kernel path that rejected an honest MiniLM trace ---------------------------------
def test_gelu_vectorised_erf_path_within_bound_succeeds() -> None:
    """PyTorch routes GELU to oneDNN when it is enabled and to its own vectorised code (an
    erf polynomial with ~10u absolute error) otherwise; both must pass."""
    x = torch.cat([torch.linspace(-10, 10, 400_001), torch.logspace(-8, 1, 20_000)])
    x = torch.cat([x, -x])
    for enabled in (True, False):
        with torch.backends.mkldnn.flags(enabled=enabled):
            y = F.gelu(x)
        assert float(r_of("aten.gelu.default", (x,), y).max()) <= 1.0, enabled


def test_minilm_trace_without_onednn_within_bounds_succeeds(
    exported: dict[str, Exported],
) -> None:
    e = exported["minilm"]
    with torch.backends.mkldnn.flags(enabled=False):
        trace = run_traced(e.model, e.inputs)
    bad = [c for c in check_trace(e.model, trace) if c.theoretical_violation]
    assert not bad, [(c.index, c.target, c.stats.max) for c in bad]


def test_inf_inputs_to_a_dot_product_succeeds() -> None:
    """``[inf, −3e38, −3e38]·[1, 1, 1]``: FP64 gives inf, an FP32 order that adds the two
    finite terms first overflows to −inf and returns NaN. Both are honest; a finite claim is not,
    and an infinite bound next to an infinite exp reference accepts nothing but the inf."""
    x = torch.tensor([[INF, -3e38, -3e38]])
    w = torch.ones(1, 3)
    ref, bound = reference_and_bound("aten.linear.default", up((x, w)), {})
    assert float(ref[0, 0]) == INF
    for honest in (INF, math.nan):
        assert float(normalized_error(torch.tensor([[honest]]), ref, bound).max()) == 0.0
    assert float(normalized_error(torch.tensor([[0.0]]), ref, bound).max()) == INF
    e = torch.tensor([1000.0])
    ref, bound = reference_and_bound("aten.exp.default", up((e,)), {})
    assert float(bound[0]) == 0.0
    assert float(normalized_error(torch.tensor([5.0]), ref, bound)[0]) == INF
    assert float(normalized_error(torch.tensor([INF]), ref, bound)[0]) == 0.0
    # division by zero: the reference's inf must be matched, not waived
    ref, bound = reference_and_bound(
        "aten.div.Tensor", up((torch.tensor([1.0]), torch.zeros(1))), {}
    )
    assert float(normalized_error(torch.tensor([7.0]), ref, bound)[0]) == INF
