"""The built-in strategies: every attack of issue 11 and the devnet's classic cheats.

Each is an ordinary :class:`~taonode.adversary.strategy.Strategy`, written only against the
public interface (docs/adversary.md), so each doubles as an example for writing new ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import torch

from taonode.adversary.forge import (
    carried_values,
    forged_commitment,
    honest_frontiers,
    publish_frontier,
    tamper_carried,
)
from taonode.adversary.strategy import Arena, Outcome, Party, Strategy
from taonode.adversary.weights import WeightMap, cast_weights, int8_weights, perturb_weights
from taonode.protocol.choice import SubsegmentScore
from taonode.protocol.decisions import Assessment, ChooseSubsegment, PostProverMove
from taonode.protocol.dispute import JobView, Phase
from taonode.protocol.votes import Verdict
from taonode.roles.behaviour import (
    ChallengerBehaviour,
    ProverBehaviour,
    ProverJob,
    ProverMove,
    VoterBehaviour,
)
from taonode.runtime.commit import Commitment
from taonode.runtime.execute import Trace
from taonode.runtime.graph import Model

PROVER = frozenset({"prover"})
CHALLENGER = frozenset({"challenger"})
VOTER = frozenset({"voter"})

# -- prover behaviours -------------------------------------------------------------------------


class OtherWeights(ProverBehaviour):
    """Runs the model with altered weights under the honest model id."""

    def __init__(self, transform: Callable[[Model], WeightMap] | None) -> None:
        self.transform = transform

    def model_for(self, job: ProverJob) -> Model:
        if self.transform is None:
            return job.model
        return dataclasses.replace(job.model, weights=self.transform(job.model))


class WithholdAll(OtherWeights):
    """Serves nothing at all (inputs, outputs, frontiers) to anyone."""

    def serves(self, digest: bytes, peer: str | None) -> bool:
        return False


class SilentMidDispute(OtherWeights):
    """Makes the first move, never a later one."""

    async def move(self, action: PostProverMove, move: ProverMove) -> ProverMove | None:
        return move if action.round == 0 else None


class CarryOverTamper(ProverBehaviour):
    """Scales a value carried unchanged across a cut (by default the reference Transformer's
    residual ``add_2``) and recomputes every later op honestly from it."""

    def __init__(self, factor: float = 1.05, prefer: str = "add_2") -> None:
        self.factor = factor
        self.prefer = prefer

    def commitment(self, job: ProverJob, trace: Trace, commitment: Commitment) -> Commitment:
        assert self.blobs is not None
        carried = carried_values(job.model)
        if not carried:
            raise ValueError("model carries no value across a cut")
        chosen = [cv for cv in carried if cv[1] == self.prefer] or carried
        cut, name = chosen[len(chosen) // 2]
        frontiers = tamper_carried(job.model, trace, cut, name, self.factor)
        return forged_commitment(self.blobs, job.model, frontiers)


class UnboundOutput(ProverBehaviour):
    """Hands the client scaled outputs and commits their digest as the output digest, over an
    honest trace (whose cut N is the honest output)."""

    def __init__(self, factor: float = 1.05) -> None:
        self.factor = factor
        self.answers: dict[bytes, dict[str, torch.Tensor]] = {}

    def answer(self, job: ProverJob, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        forged = {n: t * self.factor for n, t in outputs.items()}
        self.answers[job.job_id] = forged
        return forged

    def commitment(self, job: ProverJob, trace: Trace, commitment: Commitment) -> Commitment:
        assert self.blobs is not None
        digest = publish_frontier(self.blobs, self.answers.pop(job.job_id))
        return dataclasses.replace(commitment, output_digest=digest)


class WrongNumOps(OtherWeights):
    """Cheats with fp16 weights and commits ``numOps = N + 1`` (a repeated last frontier), so
    that the game's bounds run past the model."""

    def __init__(self) -> None:
        super().__init__(cast_weights(torch.float16))

    def commitment(self, job: ProverJob, trace: Trace, commitment: Commitment) -> Commitment:
        assert self.blobs is not None
        frontiers = honest_frontiers(job.model, trace)
        return forged_commitment(self.blobs, job.model, [*frontiers, frontiers[-1]])


class TamperLastOp(ProverBehaviour):
    """Scales the model outputs in the committed trace: a cheat in the last op only, every
    earlier op honest."""

    def __init__(self, factor: float = 1.05) -> None:
        self.factor = factor

    def rewrite_trace(self, job: ProverJob, trace: Trace) -> Trace:
        values = dict(trace.values)
        for name in job.model.ops[-1].outputs:
            values[name] = values[name] * self.factor
        return Trace(values)


class WithholdSteering(TamperLastOp):
    """The last-op cheat, and for ``hold_s`` seconds of every challenger decision window it
    withholds the frontier ending the first sub-segment, so a challenger that scores missing
    data as the worst deviation walks down to an honest op; everything is served at the leaf."""

    def __init__(self, jobs: set[bytes], factor: float = 1.05, hold_s: float = 3.0) -> None:
        super().__init__(factor)
        self.jobs = jobs
        self.hold_s = hold_s
        self._windows: dict[tuple[bytes, int], float] = {}

    def serves(self, digest: bytes, peer: str | None) -> bool:
        assert self.ctx is not None
        now = time.monotonic()
        for job_id in list(self.jobs):
            view = self.ctx.views.view(job_id)
            d = view.dispute if view is not None else None
            if d is None or d.phase is not Phase.CHALLENGER_MOVE or not d.cut_digests:
                continue
            opened = self._windows.setdefault((job_id, d.round), now)
            if digest == d.cut_digests[0] and now - opened < self.hold_s:
                return False
        return True


# -- challenger and voter behaviours -----------------------------------------------------------


class Disputer(ChallengerBehaviour):
    """Disputes the given jobs without looking, ignores every other; ``never_moves`` stops
    after the challenge, otherwise it always picks the sub-segment that deviates least."""

    def __init__(self, jobs: set[bytes], never_moves: bool = False) -> None:
        self.jobs = jobs
        self.never_moves = never_moves

    def assess(self, view: JobView) -> Assessment | None:
        return Assessment.DEVIATES if view.job_id in self.jobs else Assessment.NOT_SAMPLED

    def choose(
        self, action: ChooseSubsegment, scores: Sequence[SubsegmentScore], honest: int
    ) -> int:
        return min(range(len(scores)), key=lambda j: (scores[j].excess, j))

    async def proceed(self, action: object) -> bool:
        return not (self.never_moves and isinstance(action, ChooseSubsegment))


class Partisan(VoterBehaviour):
    """Votes WITHIN_TOLERANCE on its own prover's disputes, honestly on every other."""

    def __init__(self, jobs: set[bytes]) -> None:
        self.jobs = jobs

    def verdict(self, view: JobView, found: Verdict) -> Verdict:
        return Verdict.WITHIN_TOLERANCE if view.job_id in self.jobs else found


# -- strategies --------------------------------------------------------------------------------


class _Tracked(Strategy):
    """A strategy that remembers its job ids (shared with its behaviours)."""

    def __init__(self) -> None:
        self.job_ids: set[bytes] = set()

    def on_job(self, job_id: bytes) -> None:
        self.job_ids.add(job_id)


class ProverCheat(_Tracked):
    """One cheating prover with the given behaviour (factory)."""

    def __init__(
        self, name: str, summary: str, make: Callable[[set[bytes]], ProverBehaviour]
    ) -> None:
        super().__init__()
        self.name = name
        self.summary = summary
        self._make = make

    def parties(self) -> list[Party]:
        return [Party("prover", PROVER, prover=self._make(self.job_ids))]


class SelfChallengeShield(_Tracked):
    """The prover cheats (fp16) and challenges its own result at once from a sybil key that
    then never moves, so honest challengers find the result no longer pending."""

    name = "self-challenge-shield"
    summary = "fp16 prover challenges itself from a sybil key and never moves"

    def parties(self) -> list[Party]:
        return [
            Party("prover", PROVER, prover=OtherWeights(cast_weights(torch.float16))),
            Party("sybil"),
        ]

    async def play(self, arena: Arena) -> None:
        sybil = arena.as_("sybil").coordinator
        done: set[bytes] = set()
        while True:
            for job_id in sorted(self.job_ids - done):
                result = await arena.contracts.coordinator.result_of(job_id)
                if result.status == 1:  # Pending: first in, before any honest challenger
                    await sybil.challenge(job_id, value=arena.challenger_bond)
                    done.add(job_id)
            await asyncio.sleep(0.02)


class SelfChallengeThrow(_Tracked):
    """Like the shield, but the prover cheats in its last op only and the sybil plays the game:
    it walks to an honest leaf and loses the vote on purpose."""

    name = "self-challenge-throw"
    summary = "last op × 1.05; a sybil challenger walks to an honest leaf and loses"

    def parties(self) -> list[Party]:
        return [
            Party("prover", PROVER, prover=TamperLastOp()),
            Party("sybil", CHALLENGER, challenger=Disputer(self.job_ids), poll_interval_s=0.05),
        ]


class SybilVoter(_Tracked):
    """The fp16 prover also stakes a voter that votes for it whenever drawn."""

    name = "sybil-voter"
    summary = "fp16 prover with its own staked voter voting WITHIN_TOLERANCE"

    def parties(self) -> list[Party]:
        return [
            Party("prover", PROVER, prover=OtherWeights(cast_weights(torch.float16))),
            Party("sybil-voter", VOTER, voter=Partisan(self.job_ids)),
        ]


class FalseChallenger(_Tracked):
    """An honest prover's result disputed by a challenger that picks the least deviating
    sub-segment every round: it must lose its bond."""

    name = "false-challenger"
    summary = "disputes an honest result, picks sub-segments adversarially"
    expected = "challenger loses its bond"

    def parties(self) -> list[Party]:
        return [
            Party("victim", PROVER, honest=True),
            Party("liar", CHALLENGER, challenger=Disputer(self.job_ids), poll_interval_s=0.05),
        ]


class FalseChallengerRestart(FalseChallenger):
    """The false challenger again, while the honest prover is killed abruptly (no graceful
    shutdown) mid-dispute and restarted from its store: it must still win."""

    name = "false-challenger-restart"
    summary = "false challenger; the honest prover is killed and restarted mid-dispute"

    def __init__(self) -> None:
        super().__init__()
        self.kills = 0

    def parties(self) -> list[Party]:
        return [
            Party("victim", PROVER, honest=True, restartable=True),
            Party("liar", CHALLENGER, challenger=Disputer(self.job_ids), poll_interval_s=0.05),
        ]

    async def play(self, arena: Arena) -> None:
        # Crash once the prover has made its first move, before it owes the next one: the
        # restarted node must find the dispute in its store and on chain and answer in time.
        while True:
            for job_id in self.job_ids:
                view = arena.view(job_id)
                d = view.dispute if view is not None else None
                if d is not None and (d.round >= 1 or d.phase is Phase.CHALLENGER_MOVE):
                    await arena.kill("victim")
                    self.kills += 1
                    await asyncio.sleep(1.0)
                    await arena.restart("victim")
                    return
            await asyncio.sleep(0.05)


class DataHiccup(ProverBehaviour):
    """An honest prover with a hiccup: while its result is being voted on, the first request
    from each peer for each blob is refused (as a busy or briefly unreachable server would)."""

    def __init__(self, jobs: set[bytes]) -> None:
        self.jobs = jobs
        self._refused: set[tuple[str | None, bytes]] = set()

    def serves(self, digest: bytes, peer: str | None) -> bool:
        assert self.ctx is not None
        voting = False
        for job_id in list(self.jobs):
            view = self.ctx.views.view(job_id)
            if view is not None and view.dispute is not None:
                voting = voting or view.dispute.phase is Phase.VOTING
        if not voting or (peer, digest) in self._refused:
            return True
        self._refused.add((peer, digest))
        return False


class DataGriefing(_Tracked):
    """A false challenger disputes an honest result whose prover answers each committee
    member's first request for each blob with a refusal: one hiccup must not slash it."""

    name = "da-griefing"
    summary = "false challenger; the honest prover refuses each voter's first fetch"
    expected = "challenger loses its bond"

    def parties(self) -> list[Party]:
        return [
            Party("victim", PROVER, prover=DataHiccup(self.job_ids), honest=True),
            Party("liar", CHALLENGER, challenger=Disputer(self.job_ids), poll_interval_s=0.05),
        ]


class NanFarming(_Tracked):
    """An honest prover fed inputs with a NaN, so its honest outputs are NaN: bait for
    challengers whose excess treats NaN as infinite while the committee treats NaNs as equal."""

    name = "nan-farming"
    summary = "honest compute on NaN inputs, baiting challenger bonds"
    expected = "no challenger bond farmed"

    def parties(self) -> list[Party]:
        return [Party("prover", PROVER)]

    def inputs(
        self, model: Model, example: Sequence[torch.Tensor], seed: int
    ) -> dict[str, torch.Tensor]:
        inputs = super().inputs(model, example, seed)
        floats = [n for n, t in inputs.items() if t.is_floating_point()]
        if not floats:
            raise ValueError(f"{self.name} needs a model with a floating-point input")
        tensor = inputs[floats[0]].clone()
        tensor.view(-1)[0] = math.nan
        inputs[floats[0]] = tensor
        return inputs

    def attacker_lost(self, outcome: Outcome) -> bool:
        # Honest compute on the attacker's own inputs: it only has to gain nothing.
        return outcome.attacker_net <= 0


def _weights(name: str, transform: Callable[[Model], WeightMap], summary: str) -> ProverCheat:
    return ProverCheat(name, summary, lambda _jobs: OtherWeights(transform))


BUILTIN: dict[str, Callable[[], Strategy]] = {
    "fp16-weights": lambda: _weights(
        "fp16-weights", cast_weights(torch.float16), "weights rounded to fp16"
    ),
    "bf16-weights": lambda: _weights(
        "bf16-weights", cast_weights(torch.bfloat16), "weights rounded to bf16"
    ),
    "int8-weights": lambda: _weights("int8-weights", int8_weights, "weight-only int8"),
    "perturb-1e-3": lambda: _weights(
        "perturb-1e-3", perturb_weights(1e-3), "one matrix × (1 + 1e-3·ε)"
    ),
    "perturb-1e-4": lambda: _weights(
        "perturb-1e-4", perturb_weights(1e-4), "one matrix × (1 + 1e-4·ε)"
    ),
    "withhold-data": lambda: ProverCheat(
        "withhold-data",
        "bf16 weights, serves no data",
        lambda _jobs: WithholdAll(cast_weights(torch.bfloat16)),
    ),
    "silent-mid-dispute": lambda: ProverCheat(
        "silent-mid-dispute",
        "fp16 weights, stops moving after round 0",
        lambda _jobs: SilentMidDispute(cast_weights(torch.float16)),
    ),
    "carry-over-tamper": lambda: ProverCheat(
        "carry-over-tamper",
        "scales a carried residual by 1.05 across a cut",
        lambda _jobs: CarryOverTamper(),
    ),
    "unbound-output": lambda: ProverCheat(
        "unbound-output",
        "client gets outputs × 1.05, honest trace committed",
        lambda _jobs: UnboundOutput(),
    ),
    "wrong-num-ops": lambda: ProverCheat(
        "wrong-num-ops", "fp16 weights, commits numOps = N + 1", lambda _jobs: WrongNumOps()
    ),
    "withhold-steering": lambda: ProverCheat(
        "withhold-steering",
        "last op × 1.05, withholds honest sub-segment ends while the challenger decides",
        WithholdSteering,
    ),
    "self-challenge-shield": SelfChallengeShield,
    "self-challenge-throw": SelfChallengeThrow,
    "sybil-voter": SybilVoter,
    "false-challenger": FalseChallenger,
    "false-challenger-restart": FalseChallengerRestart,
    "da-griefing": DataGriefing,
    "nan-farming": NanFarming,
}
"""Built-in strategies by name (a fresh instance per call)."""

ATTACKS = (
    "carry-over-tamper",
    "unbound-output",
    "wrong-num-ops",
    "self-challenge-shield",
    "self-challenge-throw",
    "withhold-steering",
    "sybil-voter",
    "false-challenger",
    "false-challenger-restart",
    "da-griefing",
    "nan-farming",
)
"""Every issue-11 attack (nan-farming needs a model with floating-point inputs: ``--model
cnn`` or ``unet``)."""
