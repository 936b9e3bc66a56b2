"""Tensors in API requests and responses: JSON (nested lists) or safetensors bytes.

Every check a hostile request could trip is made before anything is allocated in proportion
to what the request claims: dtype whitelist, shape sanity, element caps, data/shape agreement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}
MAX_ELEMENTS = 64 * 1024 * 1024
MAX_TENSORS = 64


class TensorCodecError(ValueError):
    """A request's tensors are malformed; the message says which and why."""


def _flatten(data: Any, depth: int, out: list[Any]) -> None:
    if depth == 0:
        if isinstance(data, list):
            raise TensorCodecError("data is nested deeper than the shape")
        out.append(data)
        return
    if not isinstance(data, list):
        raise TensorCodecError("data is nested less deeply than the shape")
    for item in data:
        _flatten(item, depth - 1, out)


def tensor_from_json(name: str, spec: Any) -> torch.Tensor:
    if not isinstance(spec, dict):
        raise TensorCodecError(f"{name}: must be an object with dtype, shape and data")
    unknown = set(spec) - {"dtype", "shape", "data"}
    if unknown:
        raise TensorCodecError(f"{name}: unknown fields {sorted(unknown)}")
    dtype_name = spec.get("dtype", "float32")
    if dtype_name not in DTYPES:
        raise TensorCodecError(f"{name}: dtype must be one of {sorted(DTYPES)}")
    shape = spec.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > 8
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise TensorCodecError(f"{name}: shape must be a list of at most 8 non-negative ints")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise TensorCodecError(f"{name}: {count} elements exceeds the cap of {MAX_ELEMENTS}")
    flat: list[Any] = []
    _flatten(spec.get("data"), len(shape), flat)
    if len(flat) != count:
        raise TensorCodecError(f"{name}: data holds {len(flat)} values, shape needs {count}")
    dtype = DTYPES[dtype_name]
    for value in flat:
        if isinstance(value, bool) and dtype is not torch.bool:
            raise TensorCodecError(f"{name}: booleans in a {dtype_name} tensor")
        if not isinstance(value, int | float | bool):
            raise TensorCodecError(f"{name}: values must be numbers")
        if not dtype.is_floating_point and isinstance(value, float):
            raise TensorCodecError(f"{name}: non-integer value in a {dtype_name} tensor")
    try:
        return torch.tensor(flat, dtype=dtype).reshape(shape)
    except (OverflowError, RuntimeError) as exc:
        raise TensorCodecError(f"{name}: {exc}") from None


def tensors_from_json(body: Any) -> dict[str, torch.Tensor]:
    if not isinstance(body, dict) or not body:
        raise TensorCodecError("inputs must be a non-empty object of name → tensor")
    if len(body) > MAX_TENSORS:
        raise TensorCodecError(f"at most {MAX_TENSORS} tensors")
    return {str(name): tensor_from_json(str(name), spec) for name, spec in body.items()}


def tensor_to_json(tensor: torch.Tensor) -> dict[str, Any]:
    t = tensor.detach().cpu()
    if t.dtype not in NAMES:
        raise TensorCodecError(f"dtype {t.dtype} cannot be encoded")
    data = (
        t.to(torch.float64).tolist() if t.dtype in (torch.bfloat16, torch.float16) else t.tolist()
    )
    return {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data": data}


def tensors_from_safetensors(payload: bytes) -> dict[str, torch.Tensor]:
    try:
        tensors = st_load(payload)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise TensorCodecError(f"not a valid safetensors payload: {exc}") from None
    if not tensors:
        raise TensorCodecError("safetensors payload holds no tensors")
    if len(tensors) > MAX_TENSORS:
        raise TensorCodecError(f"at most {MAX_TENSORS} tensors")
    return dict(tensors)


def tensors_to_safetensors(tensors: Mapping[str, torch.Tensor]) -> bytes:
    return bytes(st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))
