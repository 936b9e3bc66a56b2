"""Adversarial soundness cases for every rule, and the mutation check over the rules.

Soundness: each case in ``bound_cases.CASES`` is an honest FP32 evaluation built to come close
to its rule's bound; all must give r ≤ 1. Mutation: weakening a rule's bound by 2×
(``ERROR_SCALE[target] = 0.5``, a hook production never sets) must make at least one of its
cases fail, so a rule that is needlessly loose — or whose error term a refactor silently
shrinks below what honest kernels reach — is noticed. Rules whose bounds are still more than 2×
loose on every case we can construct are listed in ``KNOWN_LOOSE`` (docs/bounds.md, "Open"):
the list is checked to be exact in both directions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from taonode.runtime.bounds import ERROR_SCALE, EXACT, RULES, reference_and_bound
from taonode.runtime.check import normalized_error
from tests.runtime.bound_cases import CASES, Case

ZERO_BOUND = frozenset(
    {
        "aten.clamp.default",
        "aten.clamp_min.default",
        "aten.clamp_max.default",
        "aten.arange.default",
    }
)
"""Rules whose bound is 0 on every FP32 input (results are FP32 values): nothing to weaken."""

KNOWN_LOOSE = frozenset(
    {
        "aten.layer_norm.default",
        "aten.group_norm.default",
        "aten.scaled_dot_product_attention.default",
    }
)
"""Sound but > 2× loose on every case constructed so far (max r ≈ 0.05 for layer_norm over a
300-input adversarial search; SDPA ≈ 0.01): a 2× weakening is not noticed. Open work,
docs/bounds.md."""


def up(x: Any) -> Any:
    """FP32 → FP64 as ``op_call_fp64`` does (tensors and ``dtype=float32`` arguments)."""
    if isinstance(x, torch.Tensor) and x.dtype == torch.float32:
        return x.double()
    if x is torch.float32:
        return torch.float64
    if isinstance(x, list | tuple):
        return type(x)(up(v) for v in x)
    if isinstance(x, dict):
        return {k: up(v) for k, v in x.items()}
    return x


def case_r(c: Case) -> float:
    ref, bound = reference_and_bound(c.target, up(c.args), up(c.kwargs))
    return max(float(normalized_error(y, ref, bound).max()) for y in c.ys)


@pytest.fixture
def weakened() -> Iterator[dict[str, float]]:
    ERROR_SCALE.clear()
    yield ERROR_SCALE
    ERROR_SCALE.clear()


@pytest.mark.parametrize("c", CASES, ids=[f"{c.target}:{c.label}" for c in CASES])
def test_adversarial_case_inside_bound_succeeds(c: Case) -> None:
    r = case_r(c)
    assert r <= 1.0, f"{c.target} ({c.label}): honest evaluation leaves the bound, r = {r}"


def test_every_rule_has_an_adversarial_case_succeeds() -> None:
    covered = {c.target for c in CASES}
    missing = set(RULES) - EXACT - ZERO_BOUND - covered
    assert not missing, f"rules without a soundness case: {sorted(missing)}"


MUTABLE = sorted(set(RULES) - EXACT - ZERO_BOUND)


@pytest.mark.parametrize("target", MUTABLE)
def test_weakened_rule_is_noticed_reverts(target: str, weakened: dict[str, float]) -> None:
    weakened[target] = 0.5
    cases = [c for c in CASES if c.target == target]
    worst = max(case_r(c) for c in cases)
    if target in KNOWN_LOOSE:
        assert worst <= 1.0, f"{target} is tight now (r = {worst} at 2x): drop it from KNOWN_LOOSE"
    else:
        assert worst > 1.0, f"weakening {target} by 2x goes unnoticed (max r = {worst})"


@pytest.mark.parametrize("target", sorted(ZERO_BOUND | {"aten.masked_fill.Scalar"}))
def test_zero_bound_rules_are_exact_succeeds(target: str) -> None:
    x = torch.tensor([0.1, -3.0, 1e-30, 7.5], dtype=torch.float32)
    args: dict[str, tuple[Any, ...]] = {
        "aten.clamp.default": (x, 0.1, 5.0),
        "aten.clamp_min.default": (x, 0.1),
        "aten.clamp_max.default": (x, 0.1),
        "aten.arange.default": (7,),
        "aten.masked_fill.Scalar": (x, x > 0, -1e30),
    }
    fn = {
        "aten.clamp.default": lambda: torch.clamp(x, 0.1, 5.0),
        "aten.clamp_min.default": lambda: torch.clamp(x, min=0.1),
        "aten.clamp_max.default": lambda: torch.clamp(x, max=0.1),
        "aten.arange.default": lambda: torch.arange(7, dtype=torch.float32),
        "aten.masked_fill.Scalar": lambda: x.masked_fill(x > 0, -1e30),
    }
    kwargs = {"dtype": torch.float32} if target == "aten.arange.default" else {}
    ref, bound = reference_and_bound(target, up(args[target]), up(kwargs))
    assert float(bound.abs().max()) == 0.0
    y = fn[target]()
    assert float(normalized_error(y, ref, bound).max()) == 0.0
    # One ulp off anywhere is outside.
    bumped = y.clone()
    bumped[0] = torch.nextafter(bumped[0], torch.tensor(float("inf")))
    assert float(normalized_error(bumped, ref, bound).max()) == float("inf")


_X = torch.tensor([[0.1, -3.0, 1e-30], [7.5, -0.0, 2.0**-149]], dtype=torch.float32)
EXACT_CASES: list[tuple[str, tuple[Any, ...], torch.Tensor]] = [
    ("aten.where.self", (_X > 0, _X, -_X), torch.where(_X > 0, _X, -_X)),
    ("aten.relu.default", (_X,), torch.relu(_X)),
    ("aten.eq.Tensor", (_X, _X.flip(0)), _X.flip(0) == _X),
    ("aten.eq.Scalar", (_X, 16777217), _X == 16777217),
    ("aten.gt.Scalar", (_X * 1e7, 16777217), _X * 1e7 > 16777217),
    ("aten.argmax.default", (_X, 1), _X.argmax(1)),
    ("aten.cat.default", ([_X, -_X], 0), torch.cat([_X, -_X])),
    ("aten.stack.default", ([_X, -_X],), torch.stack([_X, -_X])),
    (
        "aten.max_pool2d.default",
        (_X[None], [1, 3]),
        torch.nn.functional.max_pool2d(_X[None], [1, 3]),
    ),
    (
        "aten.embedding.default",
        (_X, torch.tensor([1, 0, 1])),
        torch.nn.functional.embedding(torch.tensor([1, 0, 1]), _X),
    ),
]


@pytest.mark.parametrize("c", EXACT_CASES, ids=[c[0] for c in EXACT_CASES])
def test_exact_rules_exact_succeeds(c: tuple[str, tuple[Any, ...], torch.Tensor]) -> None:
    target, args, y = c
    assert target in EXACT
    ref, bound = reference_and_bound(target, up(args), {})
    assert float(bound.abs().max()) == 0.0
    assert float(normalized_error(y, ref, bound).max()) == 0.0
    if y.is_floating_point():
        bumped = y.clone().reshape(-1)
        bumped[0] = torch.nextafter(bumped[0], torch.tensor(float("inf")))
        r = normalized_error(bumped.reshape(y.shape), ref, bound)
        assert float(r.max()) == float("inf")


def test_big_integer_scalar_rounded_like_the_kernel_succeeds() -> None:
    x = torch.tensor([16777216.0, 3.0, -1.5])
    for target, y in (
        ("aten.mul.Tensor", x * 16777217),
        ("aten.add.Tensor", x + 16777217),
    ):
        ref, bound = reference_and_bound(target, up((x, 16777217)), {})
        assert float(normalized_error(y, ref, bound).max()) <= 1.0
    # An integer tensor keeps integer arithmetic.
    i = torch.tensor([3, -5])
    ref, bound = reference_and_bound("aten.mul.Tensor", (i, 16777217), {})
    assert ref.dtype == torch.int64
    assert torch.equal(ref, i * 16777217)
