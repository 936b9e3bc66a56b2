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
"""Per safetensors request (the body limit caps it lower for 4-byte dtypes)."""
MAX_JSON_ELEMENTS = 4 * 1024 * 1024
"""Per JSON request, all tensors together (each value is a Python object while decoding)."""
MAX_TENSORS = 64
MAX_DIMS = 8


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
    if depth == 1:
        # The innermost level in one C call (a call per value cost ~1 s per million);
        # a list hidden in it is caught by the type check.
        out.extend(data)
        return
    for item in data:
        _flatten(item, depth - 1, out)


def tensor_from_json(
    name: str, spec: Any, *, max_elements: int = MAX_JSON_ELEMENTS
) -> torch.Tensor:
    if not isinstance(spec, dict):
        raise TensorCodecError(f"{name}: must be an object with dtype, shape and data")
    unknown = set(spec) - {"dtype", "shape", "data"}
    if unknown:
        raise TensorCodecError(f"{name}: unknown fields {sorted(unknown)}")
    dtype_name = spec.get("dtype", "float32")
    if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
        raise TensorCodecError(f"{name}: dtype must be one of {sorted(DTYPES)}")
    shape = spec.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= max_elements for d in shape
        )
    ):
        raise TensorCodecError(
            f"{name}: shape must be a list of at most {MAX_DIMS} ints in [0, {max_elements}]"
        )
    if "data" not in spec:
        raise TensorCodecError(f"{name}: data is missing")
    count = math.prod(shape)
    if count > max_elements:
        raise TensorCodecError(f"{name}: {count} elements exceeds the cap of {max_elements}")
    flat: list[Any] = []
    _flatten(spec["data"], len(shape), flat)
    if len(flat) != count:
        raise TensorCodecError(f"{name}: data holds {len(flat)} values, shape needs {count}")
    dtype = DTYPES[dtype_name]
    # JSON decodes to exact builtin types, so one pass over the types (in C) checks them all.
    types = set(map(type, flat))
    if list in types:
        raise TensorCodecError(f"{name}: data is nested deeper than the shape")
    if bool in types and dtype is not torch.bool:
        raise TensorCodecError(f"{name}: booleans in a {dtype_name} tensor")
    if not types <= {int, float, bool}:
        raise TensorCodecError(f"{name}: values must be numbers")
    if not dtype.is_floating_point and float in types:
        raise TensorCodecError(f"{name}: non-integer value in a {dtype_name} tensor")
    try:
        tensor = torch.tensor(flat, dtype=dtype).reshape(shape)
    except (OverflowError, RuntimeError, TypeError, ValueError) as exc:
        raise TensorCodecError(f"{name}: {exc}") from None
    check_finite(name, tensor)
    return tensor


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Refuse NaN, ±inf and values outside the dtype's finite range.

    Why (issue 11 item 5): torch silently turns 1e39 into inf in a float32 tensor, and an inf
    input makes an honest FP32 op produce inf where the FP64 reference is finite, which the
    bounds judge as a violation: the honest prover gets slashed. A non-finite *input* is
    therefore never accepted (no model declares that it takes them yet).
    """
    finite = not tensor.dtype.is_floating_point or bool(torch.isfinite(tensor).all())
    if not finite:
        info = torch.finfo(tensor.dtype)
        raise TensorCodecError(
            f"{name}: values must be finite and within ±{info.max:.7g} ({NAMES[tensor.dtype]})"
        )


def tensors_from_json(body: Any) -> dict[str, torch.Tensor]:
    if not isinstance(body, dict) or not body:
        raise TensorCodecError("inputs must be a non-empty object of name → tensor")
    if len(body) > MAX_TENSORS:
        raise TensorCodecError(f"at most {MAX_TENSORS} tensors")
    out: dict[str, torch.Tensor] = {}
    budget = MAX_JSON_ELEMENTS
    for name, spec in body.items():
        tensor = tensor_from_json(str(name), spec, max_elements=budget)
        budget -= tensor.numel()
        out[str(name)] = tensor
    return out


def _nonfinite_to_text(data: Any) -> Any:
    if isinstance(data, list):
        return [_nonfinite_to_text(item) for item in data]
    if isinstance(data, float) and not math.isfinite(data):
        return "NaN" if math.isnan(data) else ("Infinity" if data > 0 else "-Infinity")
    return data


def tensor_to_json(tensor: torch.Tensor) -> dict[str, Any]:
    """``{"dtype", "shape", "data"}``; non-finite values become the strings ``"NaN"``,
    ``"Infinity"`` and ``"-Infinity"`` (protobuf's JSON mapping does the same), because bare
    ``NaN`` is not JSON and breaks strict clients."""
    t = tensor.detach().cpu()
    if t.dtype not in NAMES:
        raise TensorCodecError(f"dtype {t.dtype} cannot be encoded")
    data = (
        t.to(torch.float64).tolist() if t.dtype in (torch.bfloat16, torch.float16) else t.tolist()
    )
    if t.dtype.is_floating_point and t.numel() and not bool(torch.isfinite(t).all()):
        data = _nonfinite_to_text(data)
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
    for name, tensor in tensors.items():
        if tensor.dtype not in NAMES:
            raise TensorCodecError(f"{name}: dtype must be one of {sorted(DTYPES)}")
        if tensor.dim() > MAX_DIMS:
            raise TensorCodecError(f"{name}: at most {MAX_DIMS} dimensions")
        check_finite(name, tensor)
    return dict(tensors)


def tensors_to_safetensors(tensors: Mapping[str, torch.Tensor]) -> bytes:
    return bytes(st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))
