"""Three small reference models with fixed seeds, one per family of the TAO paper.

* :func:`cnn` — conv / batch_norm / relu / max_pool / adaptive_avg_pool / linear classifier.
* :func:`transformer` — embedding, linear, layer_norm, gelu, scaled_dot_product_attention,
  residual adds (a two-layer pre-norm encoder with a classification head).
* :func:`unet` — a diffusion-style UNet block: sin/cos timestep embedding, conv, group_norm,
  silu, nearest upsampling, channel concat and a spatial self-attention.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Factory = Callable[[], tuple[nn.Module, tuple[Tensor, ...]]]


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1, groups=2)
        self.fc = nn.Linear(32, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.conv3(x)) + x
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        out: Tensor = self.fc(x)
        return out


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ff)
        self.ff2 = nn.Linear(ff, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        shape = (b, s, self.heads, d // self.heads)
        q, k, v = (t.reshape(shape).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(b, s, d))
        out: Tensor = x + self.ff2(F.gelu(self.ff1(self.ln2(x))))
        return out


class SmallTransformer(nn.Module):
    def __init__(
        self, vocab: int = 128, dim: int = 64, heads: int = 4, layers: int = 2, seq: int = 32
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(seq, dim) * 0.02)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, 4 * dim) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 4)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.tok(ids) + self.pos
        for layer in self.layers:
            x = layer(x)
        out: Tensor = self.head(self.ln(x)[:, 0])
        return out


class UNetBlock(nn.Module):
    def __init__(self, ch: int = 16, tdim: int = 32, groups: int = 4) -> None:
        super().__init__()
        self.tdim = tdim
        self.t_mlp = nn.Linear(tdim, 2 * ch)
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.gn1 = nn.GroupNorm(groups, ch)
        self.down = nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1)
        self.gn2 = nn.GroupNorm(groups, 2 * ch)
        self.attn_qkv = nn.Conv2d(2 * ch, 6 * ch, 1)
        self.attn_out = nn.Conv2d(2 * ch, 2 * ch, 1)
        self.up = nn.Conv2d(2 * ch, ch, 3, padding=1)
        self.gn3 = nn.GroupNorm(groups, 2 * ch)
        self.conv_out = nn.Conv2d(2 * ch, 3, 3, padding=1)

    def timestep_embedding(self, t: Tensor) -> Tensor:
        half = self.tdim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        args = t[:, None] * freqs[None, :]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        temb = self.t_mlp(F.silu(self.timestep_embedding(t)))
        h = F.silu(self.gn1(self.conv_in(x)))
        skip = h
        h = self.down(h) + temb[:, :, None, None]
        h = F.silu(self.gn2(h))
        b, c, hh, ww = h.shape
        q, k, v = self.attn_qkv(h).reshape(b, 3, c, hh * ww).transpose(-1, -2).unbind(1)
        a = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        h = h + self.attn_out(a.transpose(-1, -2).reshape(b, c, hh, ww))
        h = self.up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = torch.cat([h, skip], dim=1)
        out: Tensor = self.conv_out(F.silu(self.gn3(h)))
        return out


def _seeded(make: Callable[[], nn.Module]) -> nn.Module:
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        module = make()
    finally:
        torch.random.set_rng_state(gen_state)
    return module.eval()


def _randomize_bn(module: nn.Module) -> None:
    # Fresh BatchNorm running stats are (0, 1): give them non-trivial, seeded values.
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None
            assert m.running_var is not None
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def cnn() -> tuple[nn.Module, tuple[Tensor, ...]]:
    module = _seeded(SmallCNN)
    with torch.no_grad():
        _randomize_bn(module)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    return module, (x,)


def transformer() -> tuple[nn.Module, tuple[Tensor, ...]]:
    module = _seeded(SmallTransformer)
    ids = torch.randint(0, 128, (2, 32), generator=torch.Generator().manual_seed(2))
    return module, (ids,)


def unet() -> tuple[nn.Module, tuple[Tensor, ...]]:
    module = _seeded(UNetBlock)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 16, 16, generator=g)
    t = torch.tensor([10.0, 500.0])
    return module, (x, t)


REFERENCE_MODELS: dict[str, Factory] = {"cnn": cnn, "transformer": transformer, "unet": unet}
