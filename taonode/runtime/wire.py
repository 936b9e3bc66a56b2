"""Tensors as bytes: the canonical encoding of :mod:`taonode.runtime.digest` and its inverse.

``payload = header ‖ data`` is exactly what the tensor digest hashes, so a payload received
from anyone is verified by hashing it (``blake3(payload) == digest``) before it is decoded.
"""

from __future__ import annotations

import math

import blake3
import torch

from taonode.runtime.digest import _AS_INT, DTYPE_TAGS, MAGIC, tensor_bytes, tensor_header

_BY_TAG = {tag: dtype for dtype, tag in DTYPE_TAGS.items()}
MAX_DIMS = 32


class WireError(ValueError):
    """Bytes that are not a canonical tensor payload, or that do not match their digest."""


def encode_tensor(t: torch.Tensor) -> bytes:
    return tensor_header(t) + bytes(tensor_bytes(t))


def payload_digest(payload: bytes) -> bytes:
    return bytes(blake3.blake3(payload).digest())


def is_tensor_payload(payload: bytes) -> bool:
    return payload.startswith(MAGIC)


def decode_tensor(payload: bytes, expected_digest: bytes | None = None) -> torch.Tensor:
    """Parse a canonical payload (checking its digest first when one is given)."""
    if expected_digest is not None and payload_digest(payload) != expected_digest:
        raise WireError("tensor payload does not match its digest")
    if not payload.startswith(MAGIC):
        raise WireError("not a tensor payload")
    pos = len(MAGIC)
    try:
        tag_len = payload[pos]
        tag = payload[pos + 1 : pos + 1 + tag_len]
        pos += 1 + tag_len
        ndim = payload[pos]
        pos += 1
    except IndexError:
        raise WireError("truncated tensor header") from None
    dtype = _BY_TAG.get(bytes(tag))
    if dtype is None:
        raise WireError(f"unknown dtype tag {bytes(tag)!r}")
    if ndim > MAX_DIMS or len(payload) < pos + 8 * ndim:
        raise WireError("bad tensor shape")
    shape = [int.from_bytes(payload[pos + 8 * i : pos + 8 * i + 8], "little") for i in range(ndim)]
    pos += 8 * ndim
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(payload) - pos != math.prod(shape) * itemsize:
        raise WireError("tensor data length does not match its shape")
    storage = _AS_INT.get(dtype, dtype)
    data = bytearray(payload[pos:])
    flat = torch.frombuffer(data, dtype=storage) if data else torch.empty(0, dtype=storage)
    if storage is not dtype:
        flat = flat.view(dtype)
    return flat.reshape(shape)
