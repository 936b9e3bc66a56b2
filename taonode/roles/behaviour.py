"""How a role service behaves at each point where a party chooses what to do.

Every role service asks one behaviour object at its decision points. The classes here are the
honest behaviour, and the daemon only ever uses them; the devnet and the tests hand a node a
subclass from the adversary package instead to make it misbehave in any way the protocol
allows (docs/adversary.md). Keeping the choice points generic means the production roles carry
no branch for any particular cheat: they call the hook and do what it returns.

Each hook receives the values the honest service is about to use and returns the ones it
should use instead; the honest implementation returns them unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from taonode.protocol.choice import SubsegmentScore
from taonode.protocol.decisions import Action, Assessment, ChooseSubsegment, PostProverMove
from taonode.protocol.dispute import JobView
from taonode.protocol.votes import Verdict
from taonode.roles.context import RoleContext
from taonode.roles.jobdata import LocalBlobs
from taonode.runtime.commit import Commitment
from taonode.runtime.execute import Trace
from taonode.runtime.graph import Model


@dataclass(frozen=True)
class ProverJob:
    """One job as the prover sees it when it decides how to run and commit it."""

    job_id: bytes
    model: Model
    """The served (honest) model."""
    inputs: Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class ProverMove:
    """The contents of one ``proverMove``: frontier digests at the expected cuts + proofs."""

    digests: tuple[bytes, ...]
    proofs: tuple[bytes, ...]


class Behaviour:
    """What every behaviour shares: the node it runs in, and a gate before every action."""

    ctx: RoleContext | None = None

    def attach(self, ctx: RoleContext) -> None:
        """Called once when the node is built: the node's identity, chain, data and views."""
        self.ctx = ctx

    async def proceed(self, action: Action) -> bool:
        """Called before the node executes ``action`` (a move, a challenge, a vote, a
        finalize…). ``False`` skips it for good; awaiting here delays it."""
        return True


class ProverBehaviour(Behaviour):
    """The prover's choice points (honest: run the served model, commit what it computed)."""

    blobs: LocalBlobs | None = None

    def attach_blobs(self, blobs: LocalBlobs) -> None:
        self.blobs = blobs

    def model_for(self, job: ProverJob) -> Model:
        """The model actually run for ``job``."""
        return job.model

    def answer(self, job: ProverJob, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The outputs returned to the client."""
        return outputs

    def rewrite_trace(self, job: ProverJob, trace: Trace) -> Trace:
        """The trace that is hashed, stored and committed (runs on the background pool)."""
        return trace

    def commitment(self, job: ProverJob, trace: Trace, commitment: Commitment) -> Commitment | None:
        """The commitment sent on chain (``None``: never commit), given the (rewritten) trace
        and its honest commitment, whose data is stored already. Blobs named by other digests
        must be put into :attr:`blobs` by the behaviour (runs on the background pool)."""
        return commitment

    def serves(self, digest: bytes, peer: str | None) -> bool:
        """Whether the blob ``digest`` is served to ``peer`` (a libp2p peer id) right now."""
        return True

    async def move(self, action: PostProverMove, move: ProverMove) -> ProverMove | None:
        """The dispute move sent for ``action`` (``None``: do not move)."""
        return move


class ChallengerBehaviour(Behaviour):
    """The challenger's choice points (honest: re-execute, challenge deviations, follow the
    largest deviation down the game)."""

    def assess(self, view: JobView) -> Assessment | None:
        """An assessment made without re-executing (``None``: evaluate honestly)."""
        return None

    def choose(
        self, action: ChooseSubsegment, scores: Sequence[SubsegmentScore], honest: int
    ) -> int:
        """The sub-segment index picked, given each sub-segment's score (excess, evidence:
        rule break, unavailable data…) and the index the honest rule chose."""
        return honest


class VoterBehaviour(Behaviour):
    """The committee member's choice points (honest: vote what the judge found)."""

    def verdict(self, view: JobView, found: Verdict) -> Verdict:
        """The verdict persisted and voted, given the one the judge reached."""
        return found
