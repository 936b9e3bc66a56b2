"""Cheating provers, for the devnet and the end-to-end tests only.

A cheat is enabled only by constructing one explicitly (``taonode devnet`` scenarios, tests);
no config key or flag of the daemon can turn one on. Each weight-space cheat returns a copy of
the model with altered weights while keeping the honest model id, exactly what a provider that
quietly downgrades a model would do; the data cheats withhold blobs or stop moving.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from taonode.runtime.graph import Model

WeightMap = dict[str, torch.Tensor]


def _float_weights(model: Model) -> list[str]:
    return [n for n, t in model.weights.items() if t.is_floating_point() and t.numel() > 1]


def _largest_matrix(model: Model) -> str:
    names = [n for n in _float_weights(model) if model.weights[n].dim() >= 2]
    if not names:
        raise ValueError("model has no weight matrix to alter")
    return max(names, key=lambda n: (model.weights[n].numel(), n))


def cast_weights(dtype: torch.dtype) -> Callable[[Model], WeightMap]:
    def transform(model: Model) -> WeightMap:
        return {
            n: (t.to(dtype).to(t.dtype) if n in set(_float_weights(model)) else t)
            for n, t in model.weights.items()
        }

    return transform


def int8_weights(model: Model) -> WeightMap:
    """Weight-only int8 with one symmetric scale per output row (round-trip to FP32)."""
    out = dict(model.weights)
    for name in _float_weights(model):
        t = model.weights[name]
        if t.dim() < 2:
            continue
        scale = t.abs().amax(dim=tuple(range(1, t.dim())), keepdim=True).clamp_min(1e-12) / 127
        out[name] = (t / scale).round().clamp(-127, 127) * scale
    return out


def perturb_weights(relative: float, seed: int = 7) -> Callable[[Model], WeightMap]:
    """One layer's weights scaled element-wise by ``1 + relative·ε``, ε ~ N(0, 1)."""

    def transform(model: Model) -> WeightMap:
        out = dict(model.weights)
        name = _largest_matrix(model)
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(out[name].shape, generator=gen, dtype=out[name].dtype)
        out[name] = out[name] * (1 + relative * noise)
        return out

    return transform


@dataclass(frozen=True)
class Cheat:
    """How a devnet prover misbehaves."""

    name: str
    weights: Callable[[Model], WeightMap] | None = None
    withhold: bool = False
    """Serve no data at all (inputs, outputs, frontiers)."""
    silent: bool = False
    """Stop answering mid-dispute: the first move is made, later ones never are."""

    def model(self, model: Model) -> Model:
        if self.weights is None:
            return model
        return dataclasses.replace(model, weights=self.weights(model))


CHEATS: dict[str, Cheat] = {
    "fp16-weights": Cheat("fp16-weights", weights=cast_weights(torch.float16)),
    "bf16-weights": Cheat("bf16-weights", weights=cast_weights(torch.bfloat16)),
    "int8-weights": Cheat("int8-weights", weights=int8_weights),
    "perturb-1e-3": Cheat("perturb-1e-3", weights=perturb_weights(1e-3)),
    "perturb-1e-4": Cheat("perturb-1e-4", weights=perturb_weights(1e-4)),
    "withhold-data": Cheat("withhold-data", weights=cast_weights(torch.bfloat16), withhold=True),
    "silent-mid-dispute": Cheat(
        "silent-mid-dispute", weights=cast_weights(torch.float16), silent=True
    ),
}
