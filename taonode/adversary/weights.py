"""Weight-space cheats: a copy of the model's weights altered the way a provider that quietly
downgrades a model would (lower precision, quantization, noise), keeping the honest model id."""

from __future__ import annotations

from collections.abc import Callable

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
