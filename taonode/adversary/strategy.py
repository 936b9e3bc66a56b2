"""The adversary interface: a :class:`Strategy` names the parties it controls (each a funded key
with its own role stack whose behaviour objects it chooses, or a bare key it transacts with
directly), the jobs it plays, and, optionally, a coroutine that acts alongside the nodes.

The devnet runs every strategy against honest nodes and judges it by the money: the attacker
must end with less than it started with (or at least no accepted cheating result), and no honest
party may lose anything. docs/adversary.md is the guide for writing one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from web3 import AsyncWeb3

from taonode.chain.deploy import Contracts, Deployment
from taonode.protocol.dispute import JobView, ResultStatus
from taonode.roles.behaviour import ChallengerBehaviour, ProverBehaviour, VoterBehaviour
from taonode.runtime.graph import Model

ETHER = 10**18


@dataclass
class Party:
    """One key the strategy controls (or, with ``honest=True``, brings along as a victim)."""

    name: str
    roles: frozenset[str] = frozenset()
    """Role services to run for this key; empty: a bare funded key (see :meth:`Arena.as_`)."""
    prover: ProverBehaviour | None = None
    challenger: ChallengerBehaviour | None = None
    voter: VoterBehaviour | None = None
    honest: bool = False
    """A party the strategy needs but that plays honestly: it must not lose anything."""
    poll_interval_s: float = 0.2
    restartable: bool = False
    """Run the node so that :meth:`Arena.kill` and :meth:`Arena.restart` can crash it."""


@dataclass
class Arena:
    """What a strategy's :meth:`Strategy.play` may touch: the chain, its own keys and the
    devnet's view of every job (read-only)."""

    w3: AsyncWeb3[Any]
    deployment: Deployment
    contracts: Contracts
    """Read-only bindings."""
    model: Model
    addresses: dict[str, str]
    """Party name → address (the strategy's own parties)."""
    prover_bond: int
    challenger_bond: int
    _as: Any
    _views: Any
    _nodes: dict[str, Any] = field(default_factory=dict)

    def as_(self, party: str) -> Contracts:
        """The contracts, sending as ``party`` (a bare key or one with a role stack)."""
        result: Contracts = self._as(party)
        return result

    def view(self, job_id: bytes) -> JobView | None:
        result: JobView | None = self._views(job_id)
        return result

    def node(self, party: str) -> Any:
        """The party's running role node (:class:`taonode.roles.assemble.RoleNode`)."""
        runner = self._nodes[party]
        return getattr(runner, "node", runner)

    async def kill(self, party: str) -> None:
        """Kill a ``restartable`` party's node abruptly (as SIGKILL would: nothing flushed)."""
        await self._nodes[party].kill()

    async def restart(self, party: str) -> None:
        """Start a killed party's node again from its data directory."""
        await self._nodes[party].restart()


@dataclass(frozen=True)
class Outcome:
    """How one strategy's jobs ended, in money and in status."""

    jobs: tuple[bytes, ...]
    views: tuple[JobView | None, ...]
    refused: int
    """Jobs the prover's API refused (never committed)."""
    nets: dict[str, int]
    """Address → protocol balance change (wei) over the strategy's jobs, every party that moved."""
    attackers: frozenset[str]
    """Addresses of the strategy's dishonest parties (lower case)."""
    provers: frozenset[str]
    """Addresses (lower case) that committed the strategy's results."""

    @property
    def attacker_net(self) -> int:
        return sum(v for a, v in self.nets.items() if a.lower() in self.attackers)

    @property
    def honest_losers(self) -> dict[str, int]:
        return {a: v for a, v in self.nets.items() if a.lower() not in self.attackers and v < 0}

    @property
    def cheating_accepted(self) -> bool:
        """A result committed by an attacker was accepted."""
        return any(
            v is not None
            and v.status is ResultStatus.FINALIZED
            and v.prover.lower() in self.attackers
            for v in self.views
        )


class Strategy:
    """Base class of every adversary strategy (subclass it; every method has a default)."""

    name: str = ""
    summary: str = ""
    jobs: int = 1
    """How many jobs the devnet submits for this strategy."""
    expected: str = "attacker loses"
    """One line for the table: how it should end."""

    def parties(self) -> list[Party]:
        """The keys this strategy controls; the first party with the prover role gets the jobs
        (over its HTTP API) unless :meth:`submit_to` says otherwise."""
        return [Party("prover", frozenset({"prover"}), prover=ProverBehaviour())]

    def submit_to(self) -> str:
        for party in self.parties_cache:
            if "prover" in party.roles:
                return party.name
        raise ValueError(f"strategy {self.name}: no party proves")

    def inputs(
        self, model: Model, example: Sequence[torch.Tensor], seed: int
    ) -> dict[str, torch.Tensor]:
        """Inputs of job number ``seed`` (default: random inputs like the example)."""
        from taonode.devnet import inputs_like

        return inputs_like(model, example, seed)

    def on_job(self, job_id: bytes) -> None:
        """Told each job id as soon as the prover answered (before it is committed)."""

    async def play(self, arena: Arena) -> None:
        """Runs alongside the nodes from the first job on (bare keys transact from here)."""

    def attacker_lost(self, outcome: Outcome) -> bool:
        """Did the attack fail? Default: the attacker's parties together lost money, or at least
        gained none and no result an attacker committed was accepted."""
        if outcome.attacker_net < 0:
            return not outcome.cheating_accepted
        return outcome.attacker_net == 0 and not outcome.cheating_accepted

    # -- used by the devnet ------------------------------------------------------------------

    @property
    def parties_cache(self) -> list[Party]:
        cached: list[Party] | None = getattr(self, "_parties", None)
        if cached is None:
            cached = self.parties()
            self._parties = cached
        return cached

    def passed(self, outcome: Outcome) -> bool:
        """The devnet's verdict: the attack failed and no honest party lost anything."""
        return self.attacker_lost(outcome) and not outcome.honest_losers


class Honest(Strategy):
    """The baseline: an honest prover's job finalizes undisputed and nobody loses anything."""

    name = "honest"
    summary = "honest prover, honest inputs"
    expected = "finalized, undisputed"

    def parties(self) -> list[Party]:
        return [Party("prover", frozenset({"prover"}), honest=True)]

    def attacker_lost(self, outcome: Outcome) -> bool:
        return all(
            v is not None and v.status is ResultStatus.FINALIZED and v.dispute is None
            for v in outcome.views
        )
