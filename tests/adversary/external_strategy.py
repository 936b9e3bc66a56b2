"""A strategy written only against docs/adversary.md, loaded by path the way a user's own file
is (``taonode devnet --adversary tests/adversary/external_strategy.py:GarbageMoves``)."""

from __future__ import annotations

import dataclasses
import os

import torch

from taonode.adversary import Party, Strategy
from taonode.protocol.decisions import PostProverMove
from taonode.roles.behaviour import ProverBehaviour, ProverJob, ProverMove
from taonode.runtime.graph import Model


class _Prover(ProverBehaviour):
    def model_for(self, job: ProverJob) -> Model:
        halved = {n: t.to(torch.float16).to(t.dtype) for n, t in job.model.weights.items()}
        return dataclasses.replace(job.model, weights=halved)

    async def move(self, action: PostProverMove, move: ProverMove) -> ProverMove | None:
        if action.round == 0:
            return move
        # Later rounds: digests that match nothing it committed (the contract must refuse them).
        return ProverMove(tuple(os.urandom(32) for _ in move.digests), move.proofs)


class GarbageMoves(Strategy):
    name = "garbage-moves"
    summary = "fp16 weights, random digests after the first move"

    def parties(self) -> list[Party]:
        return [Party("prover", frozenset({"prover"}), prover=_Prover())]
