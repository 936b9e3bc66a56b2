"""The carry-over tamper of issue 11 against the real role nodes and the real coordinator on
the embedded chain: the prover scales the residual ``add_2`` of the reference transformer by
1.05 from cut 14 on and computes every later op honestly from it. Each op's own inputs and
outputs are then honest; only the leaf rule (carried values keep their digest) catches it.
The cheating prover must end slashed, the honest challenger must win."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from taonode.devnet import inputs_like
from taonode.protocol.dispute import Outcome, ResultStatus
from taonode.protocol.votes import Verdict
from taonode.runtime.execute import run_segment_values, run_traced
from tests.roles.network import commit_forged, network

pytestmark = pytest.mark.slow

TAMPERED = "add_2"
CUT = 14


def carry_over_tamper(
    model_frontiers: tuple[tuple[str, ...], ...],
    honest: dict[str, torch.Tensor],
    later: dict[str, torch.Tensor],
    forged: torch.Tensor,
) -> list[dict[str, torch.Tensor]]:
    out: list[dict[str, torch.Tensor]] = []
    for c, names in enumerate(model_frontiers):
        values = {}
        for name in names:
            if c < CUT:
                values[name] = honest[name]
            elif name == TAMPERED:
                values[name] = forged
            else:
                values[name] = later.get(name, honest[name])
        out.append(values)
    return out


async def test_carry_over_tamper_slashes_the_prover_not_the_challenger_reverts(
    tmp_path: Path,
) -> None:
    async with network(tmp_path) as net:
        model = net.model
        assert TAMPERED in model.frontiers[CUT - 1]
        assert TAMPERED in model.frontiers[CUT]
        inputs = inputs_like(model, net.example, 123)
        honest = dict(run_traced(model, inputs).values)
        forged = honest[TAMPERED] * 1.05
        start = {n: (forged if n == TAMPERED else honest[n]) for n in model.frontiers[CUT]}
        later = run_segment_values(model, CUT, model.num_ops, start)
        frontiers = carry_over_tamper(model.frontiers, honest, later, forged)
        # Every op is honest given its own inputs: op 13 sees the honest add_2 and outputs
        # linear_4 exactly as an honest run; op 16 reads the forged add_2 and adds honestly.
        assert torch.equal(frontiers[CUT]["linear_4"], honest["linear_4"])
        job_id = os.urandom(32)
        await commit_forged(net, job_id, frontiers)

        view = await net.wait_resolved(job_id)
        assert view.status is ResultStatus.REJECTED, view
        dispute = view.dispute
        assert dispute is not None
        assert dispute.outcome is Outcome.CHALLENGER_WON, dispute
        assert dispute.reason == "vote"
        assert dispute.winner is not None
        assert dispute.winner.lower() == net.challenger.address.lower()
        # The game ended at the op in front of the cut where add_2 changed, and the committee
        # found the provable rule break (not a tolerance question).
        assert dispute.leaf_op == CUT - 1
        verdicts = {v for _, v in dispute.votes}
        assert verdicts == {int(Verdict.THEORETICAL_VIOLATION)}, dispute.votes
        assert len(dispute.votes) >= 2
