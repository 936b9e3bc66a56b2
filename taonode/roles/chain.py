"""The roles' hands on the chain: contract calls through the journaling sender, and the
coordinator's events translated into the protocol core's events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from taonode.chain.bindings import coordinator as co
from taonode.chain.contract import Event
from taonode.chain.deploy import Contracts
from taonode.chain.tx import TxRequest
from taonode.protocol import dispute as pd
from taonode.protocol.votes import VoteDomain

_OUTCOMES = {1: pd.Outcome.PROVER_WON, 2: pd.Outcome.CHALLENGER_WON, 3: pd.Outcome.NO_QUORUM}
_REASONS = {0: "none", 1: "vote", 2: "prover_timeout", 3: "challenger_timeout"}


def to_protocol(event: Event, move_timeout: int) -> pd.ChainEvent | None:
    """The protocol core's view of a coordinator event (None for events it does not track).

    ``ProverMoved``/``ChallengerMoved`` carry the deadline of the move just made; the next
    move's deadline is what the contract sets right after: ``block.number + moveTimeout``.
    """
    block = event.block_number
    if isinstance(event, co.ResultCommitted):
        return pd.ResultCommitted(
            event.job_id,
            event.prover,
            event.model_id,
            event.profile_id,
            event.input_digest,
            event.output_digest,
            event.trace_root,
            event.num_ops,
            event.window_end,
            block,
        )
    if isinstance(event, co.ResultFinalized):
        return pd.ResultFinalized(event.job_id, block)
    if isinstance(event, co.ResultReopened):
        return pd.ResultReopened(event.job_id, event.attempt, event.window_end, block)
    if isinstance(event, co.DisputeOpened):
        return pd.DisputeOpened(
            event.job_id, event.challenger, event.deadline, block, attempt=event.attempt
        )
    if isinstance(event, co.ProverMoved):
        return pd.ProverMoved(
            event.job_id,
            event.round,
            event.a,
            event.b,
            tuple(event.cuts),
            tuple(event.digests),
            block + move_timeout,
            block,
        )
    if isinstance(event, co.ChallengerMoved):
        return pd.ChallengerMoved(
            event.job_id, event.round, event.index, event.a, event.b, block + move_timeout, block
        )
    if isinstance(event, co.LeafReached):
        return pd.LeafReached(
            event.job_id,
            event.op,
            event.input_frontier,
            event.output_frontier,
            event.seed_block,
            block,
        )
    if isinstance(event, co.SeedReanchored):
        return pd.SeedReanchored(event.job_id, event.seed_block, block)
    if isinstance(event, co.CommitteeDrawn):
        return pd.CommitteeDrawn(event.job_id, tuple(event.members), event.vote_deadline, block)
    if isinstance(event, co.VoteCast):
        return pd.VoteCast(event.job_id, event.voter, event.verdict, block)
    if isinstance(event, co.DisputeResolved):
        return pd.DisputeResolved(
            event.job_id,
            _OUTCOMES.get(event.outcome, pd.Outcome.NO_QUORUM),
            event.winner,
            _REASONS.get(event.reason, "unknown"),
            block,
        )
    return None


class KeyedSender(Protocol):
    """The journaling sender: at most one transaction per idempotency key, ever."""

    @property
    def address(self) -> str: ...

    async def submit(self, key: str, tx: TxRequest) -> Any:
        """Send ``tx`` under ``key`` (or return the earlier one) and wait until it is final."""
        ...


@dataclass(frozen=True)
class ProtocolParams:
    """The deployment's parameters the roles decide with (read from chain at start)."""

    k: int
    committee_size: int
    quorum: int
    challenge_window: int
    move_timeout: int
    vote_window: int
    prover_bond: int
    challenger_bond: int
    chain_id: int
    coordinator: str

    @property
    def vote_domain(self) -> VoteDomain:
        return VoteDomain(self.chain_id, self.coordinator)


async def read_params(contracts: Contracts) -> ProtocolParams:
    c = contracts.coordinator
    return ProtocolParams(
        k=await c.k(),
        committee_size=await c.committee_size(),
        quorum=await c.quorum(),
        challenge_window=await c.challenge_window(),
        move_timeout=await c.move_timeout(),
        vote_window=await c.vote_window(),
        prover_bond=await c.prover_bond(),
        challenger_bond=await c.challenger_bond(),
        chain_id=await c.w3.eth.chain_id,
        coordinator=c.address,
    )
