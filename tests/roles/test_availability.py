"""Withheld data never decides a sub-segment or a vote by itself (issue 11, items 4 and 6).

The real ChallengerService / VoterService / ProfileJudge / JobData run against the reference
transformer; the network boundary is a scripted blob transport (``Transport``) that maps peer
ids to real blob stores and can answer BUSY for chosen digests a chosen number of times, and
the head block is a counter that advances on every read (a phase that passes as the role
retries). The chain is not involved: no transaction is sent on these paths.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
import pytest_asyncio
import torch
from eth_account import Account
from prometheus_client import CollectorRegistry

from taonode.chain.deploy import Contracts
from taonode.devnet import DEVNET_PARAMS, calibrate_profile, inputs_like, prepare_model
from taonode.p2p.blob import BlobBusy, BlobNotFound
from taonode.protocol.choice import Evidence, choose_subsegment
from taonode.protocol.decisions import Adjudicate
from taonode.protocol.dispute import DisputeView, JobView, Phase, ResultStatus
from taonode.protocol.votes import Verdict
from taonode.roles.availability import RetryPolicy
from taonode.roles.chain import KeyedSender, ProtocolParams
from taonode.roles.challenger import ChallengerService
from taonode.roles.compute import ComputeWorker
from taonode.roles.context import RoleContext, ServedModel
from taonode.roles.jobdata import JobData, blob_digest
from taonode.roles.judge import ProfileJudge
from taonode.roles.metrics import RoleMetrics
from taonode.roles.voter import VoterService
from taonode.runtime.execute import run_segment_values, run_traced
from taonode.runtime.graph import Model
from taonode.signer import LocalSigner
from taonode.store.blobs import BlobStore
from taonode.store.state import StateStore
from tests.roles.network import store_frontiers

pytestmark = pytest.mark.slow

FAST = RetryPolicy(first_delay_s=0.005, max_delay_s=0.02)
FORGED_OP = 20
"""The cheat: op 20's output (``linear_7``) scaled by 1.01, every later op honest from it."""


def blob_store(root: Path) -> BlobStore:
    return BlobStore(root, digest=lambda b: blob_digest(b).hex())


@dataclass
class World:
    model: Model
    served: ServedModel
    frontiers: list[dict[str, torch.Tensor]]
    """The cheating prover's tensors per cut (deviating from cut 21 on)."""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    workdir = tmp_path_factory.mktemp("availability")
    model, example = prepare_model("transformer", workdir)
    profile = calibrate_profile(model, example, DEVNET_PARAMS.k)
    served = ServedModel(model, profile.profile_id, ProfileJudge(model, profile, DEVNET_PARAMS.k))
    honest = dict(run_traced(model, inputs_like(model, example, 321)).values)
    (name,) = model.ops[FORGED_OP].outputs
    start = {n: honest[n] for n in model.frontiers[FORGED_OP + 1]}
    start[name] = honest[name] * 1.01
    later = run_segment_values(model, FORGED_OP + 1, model.num_ops, start)
    values = {**honest, name: start[name], **later}
    frontiers = [
        {n: (honest[n] if c <= FORGED_OP else values[n]) for n in names}
        for c, names in enumerate(model.frontiers)
    ]
    return World(model, served, frontiers)


class Transport:
    """Peer id → that peer's blob store; ``busy[digest]`` BUSY answers before serving (-1:
    for ever), ``refuse`` peers that never serve. Counts every request per digest."""

    def __init__(self) -> None:
        self.stores: dict[str, BlobStore] = {}
        self.busy: dict[bytes, int] = {}
        self.refuse: set[str] = set()
        self.requests: Counter[bytes] = Counter()

    async def fetch_blob(
        self, peer_id: str, digest: bytes, *, max_bytes: int | None = None
    ) -> bytes:
        self.requests[digest] += 1
        left = self.busy.get(digest, 0)
        if peer_id in self.refuse or left != 0:
            if left > 0:
                self.busy[digest] = left - 1
            raise BlobBusy("server at its concurrent-transfer limit")
        store = self.stores.get(peer_id)
        if store is None or not store.has(digest.hex()):
            raise BlobNotFound(digest.hex())
        return store.get(digest.hex())


class Clock:
    """The head block: one block passes every time a role reads it."""

    def __init__(self) -> None:
        self.block = 0

    def head(self) -> int:
        self.block += 1
        return self.block


class Directory:
    def __init__(self, peers: Mapping[str, Sequence[str]]) -> None:
        self.peers = {a.lower(): list(p) for a, p in peers.items()}

    def peers_of(self, address: str) -> Sequence[str]:
        return self.peers.get(address.lower(), [])


class Views:
    def __init__(self, clock: Clock, views: Mapping[bytes, JobView] | None = None) -> None:
        self.clock = clock
        self.views = dict(views or {})

    def view(self, job_id: bytes) -> JobView | None:
        return self.views.get(job_id)

    def head(self) -> int:
        return self.clock.head()


@dataclass
class Party:
    address: str
    ctx: RoleContext
    store: StateStore


PROVER = Account.create().address
CHALLENGER = Account.create().address


@pytest_asyncio.fixture
async def compute() -> AsyncIterator[ComputeWorker]:
    worker = ComputeWorker(RoleMetrics(CollectorRegistry()), 1, 16)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


def party(
    tmp: Path,
    name: str,
    world: World,
    remote: Transport,
    views: Views,
    peers: Directory,
    compute: ComputeWorker,
) -> Party:
    signer = LocalSigner(os.urandom(32))
    params = ProtocolParams(4, 3, 2, 40, 60, 100, 1, 1, 1, "0x" + "00" * 20)
    ctx = RoleContext(
        signer=signer,
        contracts=cast(Contracts, None),  # never reached: these paths send no transaction
        sender=cast(KeyedSender, None),
        params=params,
        data=JobData(blob_store(tmp / name / "blobs"), remote),
        compute=compute,
        metrics=RoleMetrics(CollectorRegistry()),
        models={world.model.model_id: world.served},
        peers=peers,
        views=views,
    )
    return Party(str(signer.address), ctx, StateStore(tmp / name / "state.sqlite"))


def prover_store(tmp: Path, world: World) -> tuple[BlobStore, list[bytes]]:
    store = blob_store(tmp / "prover-blobs")
    digests, _ = store_frontiers(store, world.frontiers)
    return store, digests


async def test_brief_withholding_does_not_steer_the_challenger_succeeds(
    tmp_path: Path, world: World, compute: ComputeWorker
) -> None:
    # The prover answers BUSY for the frontier at cut 18 (end of the honest [12, 18), start of
    # the deviating [18, 24)) the first 5 times, then serves it.
    remote = Transport()
    store, digests = prover_store(tmp_path, world)
    remote.stores["prover-peer"] = store
    bounds = [0, 6, 12, 18, world.model.num_ops]
    remote.busy[digests[18]] = 5
    clock = Clock()
    me = party(
        tmp_path,
        "challenger",
        world,
        remote,
        Views(clock),
        Directory({PROVER: ["prover-peer"]}),
        compute,
    )
    challenger = ChallengerService(me.ctx, me.store, 1.0, retry=FAST)
    scores = await challenger.score_subsegments(
        world.served, PROVER, bounds, [digests[c] for c in bounds], give_up_block=10_000
    )
    assert remote.requests[digests[18]] == 6  # withheld five times, then fetched
    assert [s.evidence for s in scores] == [Evidence.MEASURED] * 4
    assert [s.excess > 1.0 for s in scores] == [False, False, False, True]
    for draw in range(4):
        assert choose_subsegment(scores, draw) == 3


async def test_withholding_for_the_whole_window_leaves_only_unavailable_scores_reverts(
    tmp_path: Path, world: World, compute: ComputeWorker
) -> None:
    # Control for the test above: had the challenger given up at once (deadline reached), the
    # two sub-segments around the withheld cut would be unmeasurable.
    remote = Transport()
    store, digests = prover_store(tmp_path, world)
    remote.stores["prover-peer"] = store
    remote.busy[digests[18]] = -1
    bounds = [0, 6, 12, 18, world.model.num_ops]
    me = party(
        tmp_path,
        "challenger",
        world,
        remote,
        Views(Clock()),
        Directory({PROVER: ["prover-peer"]}),
        compute,
    )
    challenger = ChallengerService(me.ctx, me.store, 1.0, retry=FAST)
    scores = await challenger.score_subsegments(
        world.served, PROVER, bounds, [digests[c] for c in bounds], give_up_block=20
    )
    assert remote.requests[digests[18]] > 1  # retried until the give-up block
    assert [s.evidence for s in scores] == [
        Evidence.MEASURED,
        Evidence.MEASURED,
        Evidence.UNAVAILABLE,
        Evidence.UNAVAILABLE,
    ]
    assert choose_subsegment(scores, 0) in (2, 3)


def leaf_view(
    job_id: bytes, model_id: bytes, op: int, digests: Sequence[bytes], committee: Sequence[str]
) -> JobView:
    dispute = DisputeView(
        challenger=CHALLENGER,
        phase=Phase.VOTING,
        a=op,
        b=op + 1,
        round=3,
        deadline=100,
        leaf_op=op,
        digest_a=digests[op],
        digest_b=digests[op + 1],
        input_frontier=digests[op],
        output_frontier=digests[op + 1],
        committee=tuple(committee),
    )
    return JobView(
        job_id=job_id,
        prover=PROVER,
        model_id=model_id,
        profile_id=b"\x00" * 32,
        input_digest=digests[0],
        output_digest=digests[-1],
        trace_root=b"\x00" * 32,
        num_ops=len(digests) - 1,
        window_end=0,
        status=ResultStatus.DISPUTED,
        dispute=dispute,
    )


async def adjudicate(
    tmp: Path,
    world: World,
    remote: Transport,
    digests: Sequence[bytes],
    op: int,
    compute: ComputeWorker,
    name: str = "voter",
    peers: Mapping[str, Sequence[str]] | None = None,
    committee: Sequence[str] = (),
) -> tuple[Verdict, Party]:
    job_id = os.urandom(32)
    clock = Clock()
    views = Views(clock)
    me = party(
        tmp, name, world, remote, views, Directory(peers or {PROVER: ["prover-peer"]}), compute
    )
    views.views[job_id] = leaf_view(
        job_id, world.model.model_id, op, digests, [me.address, *committee]
    )
    voter = VoterService(me.ctx, me.store, None, direct_vote_margin=10, retry=FAST)
    await voter.start()
    await voter.adjudicate(Adjudicate(job_id, op, digests[op], digests[op + 1]))
    verdict = voter.verdict(job_id)
    assert verdict is not None
    # What the voter persisted is what it will vote after a restart.
    stored = {r.job_id: r.status for r in me.store.results()}
    assert stored[job_id.hex()] == verdict.name
    return verdict, me


async def test_one_busy_reply_does_not_make_a_voter_vote_unavailable_succeeds(
    tmp_path: Path, world: World, compute: ComputeWorker
) -> None:
    # An honest leaf (op 5); every blob the voter needs answers BUSY once, then is served.
    remote = Transport()
    store, digests = prover_store(tmp_path, world)
    remote.stores["prover-peer"] = store
    op = world.model.ops[5]
    for d in (digests[5], digests[6]):
        remote.busy[d] = 1
    verdict, _ = await adjudicate(tmp_path, world, remote, digests, 5, compute)
    assert verdict is Verdict.WITHIN_TOLERANCE, op
    assert remote.requests[digests[5]] == 2


async def test_prover_withholding_the_leaf_from_every_member_is_voted_unavailable_reverts(
    tmp_path: Path, world: World, compute: ComputeWorker
) -> None:
    remote = Transport()
    store, digests = prover_store(tmp_path, world)
    remote.stores["prover-peer"] = store
    remote.refuse.add("prover-peer")
    verdict, _ = await adjudicate(tmp_path, world, remote, digests, FORGED_OP, compute)
    assert verdict is Verdict.DATA_UNAVAILABLE
    # Decided only after retrying up to the give-up block (deadline 100 - margin 10).
    assert remote.requests[digests[FORGED_OP]] > 5


async def test_prover_serving_only_some_members_gains_nothing_succeeds(
    tmp_path: Path, world: World, compute: ComputeWorker
) -> None:
    # The prover serves member A only; member B fetches the leaf data from A (which serves
    # what it fetched) and reaches the same verdict on the forged op.
    remote = Transport()
    store, digests = prover_store(tmp_path, world)
    remote.stores["prover-peer"] = store
    verdict_a, a = await adjudicate(tmp_path, world, remote, digests, FORGED_OP, compute, "a")
    assert verdict_a.slashes_prover
    assert verdict_a is not Verdict.DATA_UNAVAILABLE
    remote.stores["a-peer"] = cast(BlobStore, a.ctx.data.local)
    remote.refuse.add("prover-peer")
    verdict_b, _ = await adjudicate(
        tmp_path,
        world,
        remote,
        digests,
        FORGED_OP,
        compute,
        "b",
        peers={PROVER: ["prover-peer"], a.address: ["a-peer"]},
        committee=[a.address],
    )
    assert verdict_b is verdict_a
