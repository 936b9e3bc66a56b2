"""Role services against the reference transformer with the network and the chain replaced at
their boundaries: a scripted blob transport (``Transport``) maps peer ids to real blob stores
and can answer BUSY for chosen digests a chosen number of times; the head block is a counter
that advances on every read (a phase passing while the role retries). The services, JobData,
ProfileJudge and stores are the real ones; the paths used send no transaction.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from eth_account import Account
from prometheus_client import CollectorRegistry

from taonode.chain.deploy import Contracts
from taonode.devnet import DEVNET_PARAMS, calibrate_profile, inputs_like, prepare_model
from taonode.p2p.blob import BlobBusy, BlobNotFound
from taonode.protocol.decisions import Adjudicate
from taonode.protocol.dispute import DisputeView, JobView, Phase, ResultStatus
from taonode.protocol.votes import Verdict
from taonode.roles.availability import RetryPolicy
from taonode.roles.chain import KeyedSender, ProtocolParams
from taonode.roles.compute import ComputeWorker
from taonode.roles.context import Judges, RoleContext, ServedModel
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

FAST = RetryPolicy(first_delay_s=0.005, max_delay_s=0.02)
FORGED_OP = 20
"""The cheat: op 20's output (``linear_7``) scaled by 1.01, every later op honest from it."""
PROVER = Account.create().address
CHALLENGER = Account.create().address


def blob_store(root: Path) -> BlobStore:
    return BlobStore(root, digest=lambda b: blob_digest(b).hex())


@dataclass
class World:
    model: Model
    served: ServedModel
    frontiers: list[dict[str, torch.Tensor]]
    """The cheating prover's tensors per cut (deviating from cut 21 on)."""
    program: Path
    """The exported ``.pt2`` file."""


def build_world(workdir: Path) -> World:
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
    return World(model, served, frontiers, workdir / "transformer.pt2")


class Transport:
    """Peer id → that peer's blob store; ``busy[digest]`` BUSY answers before serving (-1:
    for ever), ``refuse`` peers that never serve. Counts every request per digest."""

    def __init__(self) -> None:
        self.stores: dict[str, BlobStore] = {}
        self.busy: dict[bytes, int] = {}
        self.refuse: set[str] = set()
        self.requests: Counter[bytes] = Counter()
        self.raw: dict[tuple[str, bytes], bytes] = {}
        """Bytes a peer answers for a digest as they are (profiles, or a lie)."""

    async def fetch_blob(
        self, peer_id: str, digest: bytes, *, max_bytes: int | None = None
    ) -> bytes:
        self.requests[digest] += 1
        left = self.busy.get(digest, 0)
        if peer_id in self.refuse or left != 0:
            if left > 0:
                self.busy[digest] = left - 1
            raise BlobBusy("server at its concurrent-transfer limit")
        if (peer_id, digest) in self.raw:
            return self.raw[(peer_id, digest)]
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


def party(
    tmp: Path,
    name: str,
    world: World,
    remote: Transport,
    views: Views,
    peers: Directory,
    compute: ComputeWorker,
    judges: Judges | None = None,
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
        judges=judges,
    )
    return Party(str(signer.address), ctx, StateStore(tmp / name / "state.sqlite"))


def prover_store(tmp: Path, world: World) -> tuple[BlobStore, list[bytes]]:
    store = blob_store(tmp / "prover-blobs")
    digests, _ = store_frontiers(store, world.frontiers)
    return store, digests


def leaf_view(
    job_id: bytes,
    model_id: bytes,
    profile_id: bytes,
    op: int,
    digests: Sequence[bytes],
    committee: Sequence[str],
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
        profile_id=profile_id,
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
    profile_id: bytes | None = None,
    judges: Judges | None = None,
) -> tuple[Verdict, Party]:
    job_id = os.urandom(32)
    clock = Clock()
    views = Views(clock)
    me = party(
        tmp,
        name,
        world,
        remote,
        views,
        Directory(peers or {PROVER: ["prover-peer"]}),
        compute,
        judges,
    )
    views.views[job_id] = leaf_view(
        job_id,
        world.model.model_id,
        world.served.profile_id if profile_id is None else profile_id,
        op,
        digests,
        [me.address, *committee],
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
