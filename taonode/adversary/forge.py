"""Building commitments the honest prover would never make, and publishing their data.

A forged commitment lists one frontier per cut, each any mapping of names to tensors: the same
name may carry different tensors at different cuts (that is what a carry-over tamper is). Every
tensor and manifest is put into the prover's blob store so peers can fetch what was committed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from taonode.protocol.manifest import FrontierManifest
from taonode.roles.jobdata import LocalBlobs
from taonode.runtime.commit import Commitment
from taonode.runtime.digest import tensor_digest
from taonode.runtime.execute import Trace, run_segment, run_segment_values
from taonode.runtime.graph import Model
from taonode.runtime.merkle import merkle_root
from taonode.runtime.wire import encode_tensor


def publish_frontier(blobs: LocalBlobs, frontier: Mapping[str, torch.Tensor]) -> bytes:
    """Store ``frontier``'s tensors and manifest; returns its frontier digest."""
    entries: list[tuple[str, bytes]] = []
    for name in sorted(frontier):
        tensor = frontier[name]
        digest = tensor_digest(tensor)
        if not blobs.has(digest.hex()):
            blobs.put(encode_tensor(tensor), expected=digest.hex())
        entries.append((name, digest))
    manifest = FrontierManifest(tuple(entries))
    if not blobs.has(manifest.digest.hex()):
        blobs.put(manifest.encode(), expected=manifest.digest.hex())
    return manifest.digest


def forged_commitment(
    blobs: LocalBlobs, model: Model, frontiers: Sequence[Mapping[str, torch.Tensor]]
) -> Commitment:
    """A commitment over exactly these frontiers (any count: ``num_ops`` is ``len - 1``)."""
    digests = tuple(publish_frontier(blobs, f) for f in frontiers)
    last = frontiers[-1]
    return Commitment(
        model_id=model.model_id,
        num_ops=len(frontiers) - 1,
        tensor_digests={n: tensor_digest(t) for n, t in last.items()},
        frontier_digests=digests,
        trace_root=merkle_root(digests),
        input_digest=digests[0],
        output_digest=digests[-1],
    )


def honest_frontiers(model: Model, trace: Trace) -> list[dict[str, torch.Tensor]]:
    return [trace.frontier(model, c) for c in range(model.num_ops + 1)]


def carried_values(model: Model) -> list[tuple[int, str]]:
    """``(cut, name)`` for every value op ``cut`` neither reads nor writes but that is in both
    ``S_cut`` and ``S_cut+1`` (carried across the cut unchanged) and that a later op reads."""
    found: list[tuple[int, str]] = []
    for c, op in enumerate(model.ops):
        later = {n for o in model.ops[c + 1 :] for n in o.inputs}
        for name in sorted(set(model.frontiers[c]) & set(model.frontiers[c + 1])):
            if name not in op.inputs and name not in op.outputs and name in later:
                found.append((c, name))
    return found


def tamper_carried(
    model: Model, trace: Trace, cut: int, name: str, factor: float
) -> list[dict[str, torch.Tensor]]:
    """Frontiers of a trace where ``name`` is scaled by ``factor`` as it crosses ``cut`` (from
    ``S_cut+1`` on) and every later op is recomputed honestly from the tampered value."""
    frontiers = honest_frontiers(model, trace)
    start = dict(run_segment(model, cut, cut + 1, frontiers[cut]))
    start[name] = start[name] * factor
    values = {**start, **run_segment_values(model, cut + 1, model.num_ops, start)}
    for c in range(cut + 1, model.num_ops + 1):
        frontiers[c] = {n: values[n] for n in model.frontiers[c]}
    return frontiers
