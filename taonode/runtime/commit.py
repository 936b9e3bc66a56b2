"""Commitments to a trace (DESIGN §2): tensor digests, frontier digests, trace root, proofs.

* ``frontier_digest(c)`` = :func:`taonode.runtime.merkle.frontier_digest` over the
  ``(value name, tensor digest)`` pairs of ``S_c``.
* ``trace_root`` = :func:`taonode.runtime.merkle.merkle_root` over ``frontier_digest(0..N)``.
* ``input_digest`` / ``output_digest`` = ``frontier_digest`` over all user inputs / the graph
  outputs (the job's input and result as posted on chain).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from taonode.runtime.digest import tensor_digest
from taonode.runtime.execute import Trace
from taonode.runtime.graph import Model, ModelError
from taonode.runtime.merkle import frontier_digest, merkle_proof, merkle_root


@dataclass(frozen=True)
class Commitment:
    model_id: bytes
    num_ops: int
    tensor_digests: Mapping[str, bytes]
    frontier_digests: tuple[bytes, ...]
    trace_root: bytes
    input_digest: bytes
    output_digest: bytes

    def frontier_proof(self, cut: int) -> list[bytes]:
        """Merkle proof of ``frontier_digests[cut]`` against :attr:`trace_root`."""
        return merkle_proof(self.frontier_digests, cut)

    def frontier_entries(self, model: Model, cut: int) -> list[tuple[str, bytes]]:
        return [(name, self.tensor_digests[name]) for name in model.frontiers[cut]]

    def tensor_proof(self, model: Model, cut: int, name: str) -> tuple[int, list[bytes]]:
        """Position and Merkle proof of value ``name`` inside ``frontier_digests[cut]``.

        The leaf value is ``merkle.frontier_entry(name, tensor_digests[name])``.
        """
        from taonode.runtime.merkle import frontier_entry

        names = model.frontiers[cut]
        if name not in names:
            raise ModelError(f"{name} is not in frontier {cut}")
        leaves = [frontier_entry(n, self.tensor_digests[n]) for n in names]
        pos = names.index(name)
        return pos, merkle_proof(leaves, pos)


def digest_values(values: Mapping[str, torch.Tensor], threads: int = 1) -> dict[str, bytes]:
    return {name: tensor_digest(t, threads=threads) for name, t in values.items()}


def frontier_digests(model: Model, digests: Mapping[str, bytes]) -> tuple[bytes, ...]:
    return tuple(
        frontier_digest([(name, digests[name]) for name in names]) for names in model.frontiers
    )


def commit_digests(model: Model, digests: Mapping[str, bytes]) -> Commitment:
    """Commitment from already computed tensor digests (e.g. read back from a manifest)."""
    frontiers = frontier_digests(model, digests)
    return Commitment(
        model_id=model.model_id,
        num_ops=model.num_ops,
        tensor_digests=dict(digests),
        frontier_digests=frontiers,
        trace_root=merkle_root(frontiers),
        input_digest=frontier_digest([(n, digests[n]) for n in model.input_names]),
        output_digest=frontier_digest([(n, digests[n]) for n in model.outputs]),
    )


def commit(model: Model, trace: Trace, threads: int = 1) -> Commitment:
    """Hash every committed value of ``trace`` and build the commitment (off the hot path)."""
    missing = {o for op in model.ops for o in op.outputs} - set(trace.values)
    if missing:
        raise ModelError(f"trace lacks op outputs {sorted(missing)[:5]}")
    return commit_digests(model, digest_values(trace.values, threads=threads))
