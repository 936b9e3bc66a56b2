"""Test helpers: a deployed environment with named actors, traces and the dispute game driver."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from eth_typing import ChecksumAddress
from eth_utils.crypto import keccak
from web3.types import TxReceipt

from taonode.chain.deploy import Contracts, Deployment, DeployParams, deploy
from taonode.chain.localchain import LocalChain
from taonode.chain.states import Phase
from taonode.chain.tx import DirectTransactor
from taonode.protocol import schedule
from taonode.protocol.votes import Verdict, VoteDomain, dispute_id, sign_vote
from taonode.runtime.merkle import merkle_proof, merkle_root
from taonode.signer import LocalSigner

ETHER = 10**18
TEST_PARAMS = DeployParams(
    challengeWindow=5,
    moveTimeout=4,
    voteWindow=4,
    proverBond=ETHER,
    challengerBond=ETHER // 2,
    k=3,
    committeeSize=3,
    quorum=2,
    voterRewardBps=2000,
    nonVoterPenalty=ETHER // 10,
    minStake=ETHER,
    unbondDelay=5,
    maxNodes=64,
    profileDelay=6,
)

DEPLOYER, PROVER, CHALLENGER, CLIENT = 0, 1, 2, 3
FIRST_VOTER = 4
MODEL_ID = keccak(b"model")
MODEL_OPS = 10
PROFILE_ID = keccak(b"profile")


def model_for(num_ops: int) -> bytes:
    """One registered model per op count (the coordinator takes N from the registry)."""
    return MODEL_ID if num_ops == MODEL_OPS else keccak(f"model:{num_ops}".encode())


def h(label: str | int) -> bytes:
    return keccak(str(label).encode())


@dataclass
class Env:
    chain: LocalChain
    deployment: Deployment
    params: DeployParams
    actors: list[Contracts]
    signers: list[LocalSigner]
    voters: list[int] = field(default_factory=list)

    def as_(self, who: int) -> Contracts:
        return self.actors[who]

    def addr(self, who: int) -> ChecksumAddress:
        return self.signers[who].address

    @property
    def c(self) -> Contracts:
        """Contracts as the deployer."""
        return self.actors[DEPLOYER]

    async def mine(self, blocks: int = 1) -> None:
        await self.chain.mine(blocks)

    async def block(self) -> int:
        return int(await self.chain.w3.eth.block_number)

    async def balance(self, address: str) -> int:
        return int(await self.chain.w3.eth.get_balance(address))  # type: ignore[arg-type]

    @property
    def domain(self) -> VoteDomain:
        return VoteDomain(self.deployment.chain_id, self.deployment.coordinator)

    async def register_model(self, num_ops: int = MODEL_OPS) -> bytes:
        """Register the model with ``num_ops`` ops (once, as the client); returns its id."""
        model = model_for(num_ops)
        if await self.c.models.num_ops_of(model) == 0:
            await self.as_(CLIENT).models.register_model(model, PROFILE_ID, num_ops, "ipfs://m")
        return model

    async def register_voters(self, stakes_ether: Sequence[int]) -> list[int]:
        ids = []
        for i, stake in enumerate(stakes_ether):
            who = FIRST_VOTER + i
            await self.as_(who).stakes.register(
                b"peer-%d" % who, [f"/ip4/127.0.0.1/tcp/{4000 + who}"], value=stake * ETHER
            )
            ids.append(who)
        self.voters = ids
        return ids

    async def commit(
        self,
        job: bytes,
        trace: Trace,
        prover: int = PROVER,
        *,
        ends: tuple[bytes, bytes] | None = None,
        profile: bytes = PROFILE_ID,
    ) -> TxReceipt:
        """Commit ``trace`` for the model of its op count; the input and output digests are the
        trace's end digests unless ``ends`` says otherwise."""
        model = await self.register_model(trace.num_ops)
        inp, out = ends if ends is not None else (trace.digests[0], trace.digests[-1])
        return await self.as_(prover).coordinator.commit_result(
            job, model, profile, inp, out, trace.root, value=self.params.proverBond
        )

    def vote_sig(self, who: int, job: bytes, verdict: Verdict, attempt: int = 1) -> bytes:
        """``who``'s EIP-712 vote in dispute ``attempt`` of ``job``."""
        return sign_vote(self.chain.keys[who], self.domain, dispute_id(job, attempt), verdict)

    async def attempt(self, job: bytes) -> int:
        """The number of the job's current (or last) dispute."""
        return (await self.c.coordinator.result_of(job)).attempts


async def make_env(chain: LocalChain, params: DeployParams) -> Env:
    signers = [LocalSigner(k) for k in chain.keys]
    transactors = [DirectTransactor(chain.w3, s) for s in signers]
    deployment = await deploy(chain.w3, transactors[DEPLOYER], params)
    base = Contracts.connect(chain.w3, deployment)
    actors = [base.as_(t) for t in transactors]
    return Env(chain, deployment, deployment.params, actors, signers)


@dataclass(frozen=True)
class Trace:
    """Frontier digests 0..N of a (fake) execution, with its trace root and proofs."""

    digests: tuple[bytes, ...]

    @classmethod
    def honest(cls, num_ops: int, seed: str = "t") -> Trace:
        return cls(tuple(h(f"{seed}:{c}") for c in range(num_ops + 1)))

    def cheat_from(self, op: int) -> Trace:
        """A trace that agrees up to cut ``op`` and differs after it (op ``op`` is wrong)."""
        bad = tuple(h(f"bad:{c}") for c in range(op + 1, len(self.digests)))
        return Trace(self.digests[: op + 1] + bad)

    @property
    def num_ops(self) -> int:
        return len(self.digests) - 1

    @property
    def root(self) -> bytes:
        return merkle_root(list(self.digests))

    def cut_digests(self, a: int, b: int, k: int) -> list[bytes]:
        """The interior cut digests of [a, b) (what the challenger echoes back)."""
        return [self.digests[c] for c in schedule.cuts(a, b, k)]

    def move(self, cuts: Sequence[int]) -> tuple[list[bytes], list[bytes]]:
        """Digests and the flat proof list for a prover move over ``cuts``."""
        digests = [self.digests[c] for c in cuts]
        proofs = [p for c in cuts for p in merkle_proof(list(self.digests), c)]
        return digests, proofs


def pick_subsegment(a: int, b: int, k: int, claimed: Trace, reference: Trace) -> int:
    """The challenger's choice: the first sub-segment whose end the prover got wrong
    (digest equality stands in for the tolerance check); the last one when all agree."""
    bounds = [a, *schedule.cuts(a, b, k), b]
    for j in range(len(bounds) - 1):
        if claimed.digests[bounds[j + 1]] != reference.digests[bounds[j + 1]]:
            return j
    return len(bounds) - 2


@dataclass
class GameResult:
    leaf_op: int
    rounds: int
    receipts: list[TxReceipt]


async def play_to_leaf(
    env: Env, job: bytes, claimed: Trace, reference: Trace, challenger: int = CHALLENGER
) -> GameResult:
    """Challenge ``job`` (as ``challenger``) and play both sides until the leaf is reached."""
    co_p = env.as_(PROVER).coordinator
    co_c = env.as_(challenger).coordinator
    receipts = [await co_c.challenge(job, value=env.params.challengerBond)]
    rounds = 0
    k = env.params.k
    while True:
        cuts = await co_p.expected_cuts(job)
        digests, proofs = claimed.move(cuts)
        receipts.append(await co_p.prover_move(job, digests, proofs))
        d = await co_p.dispute_of(job)
        if d.phase != Phase.CHALLENGER_MOVE:
            break
        j = pick_subsegment(d.a, d.b, k, claimed, reference)
        receipts.append(await co_c.challenger_move(job, j, claimed.cut_digests(d.a, d.b, k)))
        rounds += 1
        d = await co_p.dispute_of(job)
        if d.phase != Phase.PROVER_MOVE:
            break
    d = await co_p.dispute_of(job)
    assert d.phase == Phase.AWAIT_DRAW
    assert d.b == d.a + 1
    return GameResult(d.a, rounds, receipts)


def with_params(params: DeployParams, **changes: int) -> DeployParams:
    return replace(params, **changes)  # type: ignore[arg-type]


async def open_job(env: Env, job: bytes, claimed: Trace, fee: int = ETHER // 10) -> None:
    """Register the model (once), commit ``claimed`` as the prover and fund the job as client."""
    await env.commit(job, claimed)
    if fee:
        await env.as_(CLIENT).coordinator.fund_job(job, value=fee)


async def draw(env: Env, job: bytes) -> list[ChecksumAddress]:
    """Wait for the seed block and draw the committee (as the client)."""
    await env.mine(2)
    await env.as_(CLIENT).coordinator.draw_committee(job)
    return await env.c.coordinator.committee_of(job)


def key_of(env: Env, address: str) -> int:
    return next(i for i, s in enumerate(env.signers) if s.address == address)


async def submit_all(
    env: Env, job: bytes, members: Sequence[str], verdict: Verdict, submitter: int = CLIENT
) -> TxReceipt:
    """Every member in ``members`` signs ``verdict``; one aggregated submission."""
    committee = list(await env.c.coordinator.committee_of(job))
    seats = [committee.index(m) for m in members]  # type: ignore[arg-type]
    attempt = await env.attempt(job)
    sigs = [env.vote_sig(key_of(env, m), job, verdict, attempt) for m in members]
    return await env.as_(submitter).coordinator.submit_votes(
        job, seats, [int(verdict)] * len(sigs), sigs
    )


async def assert_solvent(env: Env) -> None:
    """The coordinator's and the registry's balance invariants."""
    co, st = env.c.coordinator, env.c.stakes
    assert await env.balance(co.address) == (
        await co.total_bonds() + await co.total_fees() + await co.total_pending()
    )
    assert await env.balance(st.address) == (
        await st.total_stake() + await st.total_unbonding() + await st.total_credits()
    )
