"""Simulated provider downgrades (detection study, cheating provers in tests and devnet).

A :class:`Downgrade` turns an honest run into a dishonest one by changing the weights the
prover really uses and/or the kernel of some ops, and says at which op the deviation *starts*
(so a check can be scored on localisation). All of them still commit to the registered model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from taonode.runtime.execute import OpExecutor, Trace, run_traced
from taonode.runtime.graph import Model, target_name

DOT_OPS = frozenset(
    {
        "aten.linear.default",
        "aten.conv2d.default",
        "aten.matmul.default",
        "aten.scaled_dot_product_attention.default",
    }
)
WEIGHTED_OPS = frozenset({"aten.linear.default", "aten.conv2d.default"})


def round_mantissa(x: Tensor, bits: int) -> Tensor:
    """Round FP32 ``x`` to ``bits`` explicit mantissa bits (TF32 keeps 10)."""
    drop = 23 - bits
    i = x.contiguous().view(torch.int32)
    r = (i + (1 << (drop - 1))) & ~((1 << drop) - 1)
    return r.view(torch.float32)


def _first_op_reading(model: Model, weight_names: set[str]) -> int | None:
    for i, body in enumerate(model.closures):
        if any(m.name in weight_names for node in body for m in node.all_input_nodes):
            return i
    return None


def _op_weights(model: Model, index: int) -> list[str]:
    return [
        m.name
        for node in model.closures[index]
        for m in node.all_input_nodes
        if m.name in model.weights and model.weights[m.name].is_floating_point()
    ]


@dataclass(frozen=True)
class Downgrade:
    name: str
    description: str = ""

    def applies(self, model: Model) -> bool:
        return self.first_op(model) is not None

    def first_op(self, model: Model) -> int | None:
        raise NotImplementedError

    def weights(self, model: Model) -> Mapping[str, Tensor] | None:
        return None

    def executor(self, model: Model) -> OpExecutor | None:
        return None

    def run(self, model: Model, inputs: Mapping[str, Tensor]) -> Trace:
        w = self.weights(model)
        cheat = model if w is None else replace(model, weights=w)
        return run_traced(cheat, inputs, executor=self.executor(model))


@dataclass(frozen=True)
class CastWeights(Downgrade):
    dtype: torch.dtype = torch.float16

    def weights(self, model: Model) -> Mapping[str, Tensor]:
        return {
            k: v.to(self.dtype).float() if v.dtype == torch.float32 else v
            for k, v in model.weights.items()
        }

    def first_op(self, model: Model) -> int | None:
        changed = {
            k for k, v in self.weights(model).items() if not torch.equal(v, model.weights[k])
        }
        return _first_op_reading(model, changed)


class _Counter:
    """Executor wrapper that knows the index of the op it runs (ops run in index order)."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.i = -1

    def next(self) -> int:
        self.i += 1
        return self.i


@dataclass(frozen=True)
class OpRewrite(Downgrade):
    """Replace the kernel of every op of the given types (TF32, int8, GELU-tanh, softmax)."""

    kind: str = "tf32"
    targets: frozenset[str] = field(default_factory=lambda: DOT_OPS)

    def first_op(self, model: Model) -> int | None:
        return next((op.index for op in model.ops if op.target in self.targets), None)

    def executor(self, model: Model) -> OpExecutor:
        kind, targets = self.kind, self.targets

        def run(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            name = target_name(target)
            if name not in targets:
                return target(*args, **kwargs)
            if kind == "tf32":
                low = tuple(
                    round_mantissa(a, 10)
                    if isinstance(a, Tensor) and a.dtype == torch.float32 and a.dim() > 1
                    else a
                    for a in args
                )
                return target(*low, **kwargs)
            if kind == "int8":
                x, w = args[0], args[1]
                b = args[2] if len(args) > 2 else None
                sx = x.abs().amax().clamp_min(1e-12) / 127
                sw = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
                xq, wq = torch.round(x / sx), torch.round(w / sw)
                y = F.linear(xq, wq) * sx * sw.reshape(-1)
                return y if b is None else y + b
            if kind == "gelu_tanh":
                return F.gelu(args[0], approximate="tanh")
            if kind == "softmax_nomax":
                q, k, v = args[0], args[1], args[2]
                mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
                s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
                if mask is not None:
                    s = s + mask
                e = torch.exp(s)
                return (e / e.sum(-1, keepdim=True)) @ v
            raise ValueError(kind)

        return run


@dataclass(frozen=True)
class PerturbLayer(Downgrade):
    """One weighted op's weight scaled by ``1 ± rel`` element-wise (seeded signs)."""

    rel: float = 1e-3

    def target_op(self, model: Model) -> int | None:
        weighted = [op.index for op in model.ops if op.target in WEIGHTED_OPS]
        return weighted[len(weighted) // 2] if weighted else None

    def first_op(self, model: Model) -> int | None:
        return self.target_op(model)

    def weights(self, model: Model) -> Mapping[str, Tensor]:
        i = self.target_op(model)
        out = dict(model.weights)
        if i is None:
            return out
        name = max(_op_weights(model, i), key=lambda n: model.weights[n].numel())
        w = model.weights[name]
        g = torch.Generator().manual_seed(11)
        sign = torch.randint(0, 2, w.shape, generator=g).float() * 2 - 1
        out[name] = w * (1 + self.rel * sign)
        return out


@dataclass(frozen=True)
class EmbeddingRow(Downgrade):
    """The embedding row of the first input token altered (a 1% relative change)."""

    def _embedding(self, model: Model) -> tuple[int, str] | None:
        for op in model.ops:
            if op.target == "aten.embedding.default":
                return op.index, _op_weights(model, op.index)[0]
        return None

    def first_op(self, model: Model) -> int | None:
        e = self._embedding(model)
        return None if e is None else e[0]

    def run(self, model: Model, inputs: Mapping[str, Tensor]) -> Trace:
        e = self._embedding(model)
        assert e is not None
        ids = next(t for t in inputs.values() if not t.is_floating_point())
        token = int(ids.reshape(-1)[1])
        w = model.weights[e[1]].clone()
        g = torch.Generator().manual_seed(5)
        w[token] = w[token] * (1 + 0.01 * torch.randn(w.shape[1], generator=g))
        return run_traced(replace(model, weights={**model.weights, e[1]: w}), inputs)


@dataclass(frozen=True)
class SkipLayer(Downgrade):
    """A residual block skipped: its residual add returns the residual stream unchanged."""

    def _add(self, model: Model) -> tuple[int, int] | None:
        cands = []
        for op in model.ops:
            node = model.nodes[op.name]
            if op.target != "aten.add.Tensor" or len(op.inputs) != 2:
                continue
            operands = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
            if len(operands) != 2:
                continue
            shapes = [tuple(a.meta["val"].shape) for a in operands]
            if shapes[0] == shapes[1]:
                # the residual stream is the operand produced earlier
                prods = [model.producer.get(a.name, -2) for a in operands]
                cands.append((op.index, 0 if prods[0] < prods[1] else 1))
        return cands[len(cands) // 2] if cands else None

    def first_op(self, model: Model) -> int | None:
        a = self._add(model)
        return None if a is None else a[0]

    def executor(self, model: Model) -> OpExecutor:
        chosen = self._add(model)
        assert chosen is not None
        index, keep = chosen
        counter = _Counter(model)

        def run(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if counter.next() == index:
                return args[keep].clone()
            return target(*args, **kwargs)

        return run


@dataclass(frozen=True)
class OtherModel(Downgrade):
    """Another model with the same shapes: every float weight redrawn (same mean and std)."""

    def weights(self, model: Model) -> Mapping[str, Tensor]:
        g = torch.Generator().manual_seed(99)
        out = {}
        for k, v in model.weights.items():
            if v.dtype == torch.float32 and v.numel() > 1:
                out[k] = torch.randn(v.shape, generator=g) * v.std() + v.mean()
            else:
                out[k] = v
        return out

    def first_op(self, model: Model) -> int | None:
        return _first_op_reading(model, {k for k, v in model.weights.items() if v.numel() > 1})


def all_downgrades() -> list[Downgrade]:
    return [
        CastWeights("fp16-weights", "weights rounded to float16", torch.float16),
        CastWeights("bf16-weights", "weights rounded to bfloat16", torch.bfloat16),
        OpRewrite(
            "int8-linear",
            "dynamic int8 quantisation of linear layers",
            "int8",
            frozenset({"aten.linear.default"}),
        ),
        OpRewrite("tf32", "matmul/conv/attention inputs rounded to a 10-bit mantissa", "tf32"),
        PerturbLayer("perturb-1e-3", "one layer's weights × (1 ± 1e-3)", 1e-3),
        PerturbLayer("perturb-1e-4", "one layer's weights × (1 ± 1e-4)", 1e-4),
        PerturbLayer("perturb-1e-5", "one layer's weights × (1 ± 1e-5)", 1e-5),
        OpRewrite(
            "gelu-tanh",
            "GELU tanh approximation instead of erf",
            "gelu_tanh",
            frozenset({"aten.gelu.default"}),
        ),
        OpRewrite(
            "softmax-no-max",
            "attention softmax without max subtraction",
            "softmax_nomax",
            frozenset({"aten.scaled_dot_product_attention.default"}),
        ),
        EmbeddingRow("embedding-row", "one embedding row altered by 1%"),
        SkipLayer("skip-layer", "one residual block skipped"),
        OtherModel("other-model", "another model with the same shapes"),
    ]
