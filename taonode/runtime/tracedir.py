"""Trace directories: ``manifest.json`` plus content-addressed safetensors files.

Layout (format version 1)::

    DIR/manifest.json
    DIR/tensors/<tensor digest hex>.safetensors   # one tensor, key "tensor"

The manifest holds ``format``, ``version``, ``model_id``, ``num_ops``, ``trace_root``,
``frontier_digests``, ``input_digest``, ``output_digest``, ``inputs``/``outputs`` (value names)
and ``values`` (every committed value name → tensor digest, all hex with ``0x``). Loading
re-hashes every file and refuses a missing, truncated or altered one; given the model it also
recomputes frontier digests and the trace root and refuses a manifest that disagrees.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from taonode.runtime import safejson
from taonode.runtime.commit import Commitment, commit, commit_digests
from taonode.runtime.digest import tensor_digest
from taonode.runtime.execute import Trace
from taonode.runtime.graph import Model

FORMAT = "taonode-trace"
VERSION = 1
TRACE_MANIFEST_LIMITS = safejson.JsonLimits(max_bytes=64 << 20, max_depth=4, max_elements=4 << 20)


class TraceFormatError(ValueError):
    """A trace directory that is missing, corrupt or inconsistent with its manifest."""


@dataclass(frozen=True)
class LoadedTrace:
    trace: Trace
    manifest: dict[str, Any]
    model_id: bytes
    trace_root: bytes


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _unhex(s: Any, what: str) -> bytes:
    if not isinstance(s, str) or not s.startswith("0x") or len(s) != 66:
        raise TraceFormatError(f"manifest: {what} is not a 32-byte hex string")
    try:
        return bytes.fromhex(s[2:])
    except ValueError as exc:
        raise TraceFormatError(f"manifest: {what} is not hex") from exc


def save_trace(
    model: Model, trace: Trace, directory: str | Path, commitment: Commitment | None = None
) -> Commitment:
    """Write ``trace`` to ``directory`` (created; files written atomically)."""
    c = commitment if commitment is not None else commit(model, trace)
    root = Path(directory)
    (root / "tensors").mkdir(parents=True, exist_ok=True)
    for name, t in trace.values.items():
        path = root / "tensors" / f"{c.tensor_digests[name].hex()}.safetensors"
        if path.exists():
            continue
        tmp = path.with_suffix(".tmp")
        save_file({"tensor": t.detach().to("cpu").contiguous()}, str(tmp))
        os.replace(tmp, path)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model_id": _hex(c.model_id),
        "num_ops": c.num_ops,
        "trace_root": _hex(c.trace_root),
        "frontier_digests": [_hex(d) for d in c.frontier_digests],
        "input_digest": _hex(c.input_digest),
        "output_digest": _hex(c.output_digest),
        "inputs": list(model.input_names),
        "outputs": list(model.outputs),
        "values": {name: _hex(c.tensor_digests[name]) for name in sorted(trace.values)},
    }
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, root / "manifest.json")
    return c


def load_trace(directory: str | Path, model: Model | None = None) -> LoadedTrace:
    """Load and verify a trace directory (see the module docstring)."""
    root = Path(directory)
    try:
        manifest = safejson.load_file(root / "manifest.json", TRACE_MANIFEST_LIMITS)
    except OSError as exc:
        raise TraceFormatError(f"{root}: unreadable manifest.json: {exc.strerror or exc}") from None
    except safejson.JsonLimitError as exc:
        raise TraceFormatError(f"{root}: unreadable manifest.json: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TraceFormatError(f"{root}: not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise TraceFormatError(f"{root}: unsupported trace version {manifest.get('version')}")
    raw_values = manifest.get("values")
    if not isinstance(raw_values, dict):
        raise TraceFormatError(f"{root}: manifest has no values")
    values: dict[str, torch.Tensor] = {}
    digests: dict[str, bytes] = {}
    for name, hexd in raw_values.items():
        digest = _unhex(hexd, f"digest of {name}")
        path = root / "tensors" / f"{digest.hex()}.safetensors"
        try:
            tensors = load_file(str(path))
        except (OSError, SafetensorError, RuntimeError, ValueError) as exc:
            raise TraceFormatError(f"{path}: cannot read tensor {name}: {exc}") from exc
        if set(tensors) != {"tensor"}:
            raise TraceFormatError(f"{path}: expected one tensor named 'tensor'")
        t = tensors["tensor"]
        if tensor_digest(t) != digest:
            raise TraceFormatError(f"{path}: content does not match its digest (value {name})")
        values[name] = t
        digests[name] = digest
    model_id = _unhex(manifest.get("model_id"), "model_id")
    trace_root = _unhex(manifest.get("trace_root"), "trace_root")
    if model is not None:
        if model_id != model.model_id:
            raise TraceFormatError(
                f"{root}: trace is for model {_hex(model_id)}, not {_hex(model.model_id)}"
            )
        needed = {o for op in model.ops for o in op.outputs} | set(model.input_names)
        missing = needed - set(values)
        if missing:
            raise TraceFormatError(f"{root}: trace lacks values {sorted(missing)[:5]}")
        c = commit_digests(model, digests)
        listed = [_unhex(d, "frontier digest") for d in manifest.get("frontier_digests", [])]
        if c.trace_root != trace_root or list(c.frontier_digests) != listed:
            raise TraceFormatError(f"{root}: frontier digests / trace root do not match the values")
    return LoadedTrace(Trace(values=values), manifest, model_id, trace_root)


def read_inputs(path: str | Path, model: Model) -> dict[str, torch.Tensor]:
    """Read a safetensors file of job inputs; names, shapes and dtypes must match the model."""
    from taonode.runtime.execute import check_inputs

    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError, RuntimeError, ValueError) as exc:
        raise TraceFormatError(f"{path}: cannot read inputs: {exc}") from exc
    check_inputs(model, tensors)
    return tensors


def write_inputs(path: str | Path, inputs: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().to("cpu").contiguous() for k, v in inputs.items()}, str(path))
