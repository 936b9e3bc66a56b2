"""The bound-aware adversary of the detection study (issue 4).

The attacker may move every op output anywhere inside an acceptance region — (a) the theoretical
one (``r ≤ 1``) or (b) the empirical one (``r ≤`` the profile's threshold) — and steers toward a
goal with a gradient-sign step: gradients of the goal w.r.t. every op output are taken once at
the honest point (autograd through the traced run), then the trace is rebuilt op by op *from the
attacker's own earlier outputs*: each op's output is the honest FP32 result on those inputs plus
``s·τ·B·sign(grad)``, with the largest ``s ∈ {0.9, 0.6, 0.3, 0.1, 0}`` that still passes the op's
check. The final trace is re-checked with ``check`` (+ profile); an attack succeeds when the trace
is accepted *and* the goal is reached.

Goals: flip the argmax of the CNN's classifier (per sample); shift the MiniLM sentence embedding
by a cosine distance ``1 - cos ≥ 0.01`` toward a random orthogonal direction (per sample).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from taonode.protocol.votes import Verdict
from taonode.runtime.bounds import FP64_SLACK, reference_and_bound
from taonode.runtime.check import check_trace, normalized_error
from taonode.runtime.execute import Trace, op_call_fp64, run_segment_values, run_traced
from taonode.runtime.graph import Model
from taonode.runtime.profile import Profile, check_trace_with_profile

STEPS = (0.9, 0.6, 0.3, 0.1, 0.0)
COSINE_GOAL = 0.01

Goal = Callable[[Tensor, Tensor], Tensor]
"""``(adversarial output, honest output) -> scalar`` to maximise (differentiable)."""


@dataclass(frozen=True)
class AttackResult:
    accepted: bool
    samples: int
    successes: int
    metric: list[float]
    """Per sample: the logit margin change (CNN) or the cosine shift (MiniLM)."""
    trace: Trace


def _gradients(
    model: Model, inputs: Mapping[str, Tensor], goal: Goal, honest_out: Tensor
) -> dict[str, Tensor]:
    offsets: dict[str, Tensor] = {}
    counter = iter(range(model.num_ops))

    def add_offset(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        i = next(counter)
        out = target(*args, **kwargs)
        op = model.ops[i]
        if isinstance(out, Tensor) and out.is_floating_point() and op.outputs == (op.name,):
            o = torch.zeros_like(out, requires_grad=True)
            offsets[op.name] = o
            return out + o
        return out

    trace = run_traced(model, inputs, executor=add_offset, enable_grad=True)
    value = goal(trace.outputs(model)[0], honest_out)
    torch.autograd.backward(value)
    return {k: (o.grad if o.grad is not None else torch.zeros_like(o)) for k, o in offsets.items()}


def attack(
    model: Model,
    inputs: Mapping[str, Tensor],
    goal: Goal,
    success: Callable[[Tensor, Tensor], Tensor],
    profile: Profile | None,
) -> AttackResult:
    honest = run_traced(model, inputs)
    honest_out = honest.outputs(model)[0]
    grads = _gradients(model, inputs, goal, honest_out)
    values: dict[str, Tensor] = dict(honest.inputs(model))
    for i, op in enumerate(model.ops):
        frontier = {k: values[k] for k in model.frontiers[i]}
        fp32 = run_segment_values(model, i, i + 1, frontier)
        for name in op.outputs:
            values[name] = fp32[name]
        if op.outputs != (op.name,) or op.name not in grads:
            continue
        tau = 1.0 if profile is None else profile.ops[i].threshold
        if tau <= 0:
            continue
        op_in = {k: values[k] for k in op.inputs}
        ref, bound = reference_and_bound(*op_call_fp64(model, i, op_in))
        bound = torch.where(torch.isfinite(bound), bound, torch.zeros_like(bound))
        direction = torch.sign(grads[op.name]).double()
        base = fp32[op.name]
        for s in STEPS:
            cand = (base.double() + s * tau * bound / (1 + FP64_SLACK) * direction).float()
            r = normalized_error(cand, ref, bound * (1 + FP64_SLACK))
            if float(r.max()) <= tau:
                values[op.name] = cand
                break
    trace = Trace(values)
    if profile is None:
        checks = check_trace(model, trace)
    else:
        checks = check_trace_with_profile(model, trace, profile)
    accepted = all(c.verdict is Verdict.WITHIN_TOLERANCE for c in checks)
    out = trace.outputs(model)[0]
    hit = success(out, honest_out)
    successes = int(hit.sum()) if accepted else 0
    return AttackResult(accepted, int(hit.numel()), successes, _metric(out, honest_out), trace)


def _metric(out: Tensor, honest: Tensor) -> list[float]:
    if out.dim() == 2 and out.shape[1] > 16:  # embeddings
        cos = torch.nn.functional.cosine_similarity(out.double(), honest.double(), dim=1)
        return [float(1 - c) for c in cos]
    return [float(v) for v in (out.argmax(1) != honest.argmax(1)).float()]


def classifier_goal(out: Tensor, honest: Tensor) -> Tensor:
    """Push the runner-up logit above the top one (per sample)."""
    top = honest.argmax(1)
    masked = honest.clone()
    masked[torch.arange(len(top)), top] = -float("inf")
    runner = masked.argmax(1)
    idx = torch.arange(len(top))
    return (out[idx, runner] - out[idx, top]).sum()


def classifier_success(out: Tensor, honest: Tensor) -> Tensor:
    return out.argmax(1) != honest.argmax(1)


def embedding_goal_for(honest: Tensor, seed: int = 0) -> Goal:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(honest.shape, generator=g)
    h = honest.detach()
    d = d - (d * h).sum(1, keepdim=True) / (h * h).sum(1, keepdim=True) * h
    d = d / d.norm(dim=1, keepdim=True)

    def goal(out: Tensor, _honest: Tensor) -> Tensor:
        value: Tensor = (out * d).sum()
        return value

    return goal


def embedding_success(out: Tensor, honest: Tensor) -> Tensor:
    cos = torch.nn.functional.cosine_similarity(out.double(), honest.double(), dim=1)
    return (1 - cos) >= COSINE_GOAL
