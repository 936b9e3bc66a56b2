"""Builds one node's role stack from explicit parts; the daemon and the devnet both use it.

Start order (stop is the reverse): state store → p2p host → peer book → tx sender → event
watcher → compute worker → role services → protocol driver. Everything a component needs is
passed in; nothing here reads config files or environment variables.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from web3 import AsyncWeb3

from taonode.api.app import Route
from taonode.chain.bindings.coordinator import TaoCoordinator
from taonode.chain.deploy import Contracts, Deployment
from taonode.chain.sender import ErrorDecoder, FeePolicy, TxSender
from taonode.chain.watcher import BindingLogDecoder, EventWatcher
from taonode.p2p.committee import CommitteeChannel
from taonode.p2p.envelope import NodeRecord, ValidatorConfig, VoteMessage
from taonode.p2p.node import P2PConfig, P2PNode
from taonode.protocol import decisions as d
from taonode.protocol.dispute import JobView
from taonode.roles.adapters import SenderAdapter, WatcherFeed
from taonode.roles.behaviour import (
    Behaviour,
    ChallengerBehaviour,
    ProverBehaviour,
    VoterBehaviour,
)
from taonode.roles.chain import ProtocolParams, read_params
from taonode.roles.challenger import ChallengerService
from taonode.roles.compute import ComputeWorker
from taonode.roles.context import RoleContext, ServedModel
from taonode.roles.driver import Handler, Policy, ProtocolDriver, Settled
from taonode.roles.jobdata import BlobServer, JobData, blob_digest, verify_blob
from taonode.roles.metrics import RoleMetrics
from taonode.roles.payouts import PayoutCollector
from taonode.roles.peers import PeerBook
from taonode.roles.profiles import ProfileBook, ServingWithProfiles, verify_profile_blob
from taonode.roles.prover import ProverService
from taonode.roles.registered import RegisteredKeys
from taonode.roles.voter import VoterService
from taonode.runtime.profile import Profile
from taonode.service import Component
from taonode.signer import Signer
from taonode.store.blobs import BlobStore
from taonode.store.state import StateStore

log = structlog.get_logger("taonode.roles")


@dataclass(frozen=True)
class RoleNodeSpec:
    name: str
    roles: frozenset[str]
    data_dir: Path
    signer: Signer
    deployment: Deployment
    models: dict[bytes, ServedModel]
    device: str = "cpu"
    threads: int = 1
    max_queue: int = 64
    sample_rate: float = 1.0
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    p2p_key_file: Path | None = None
    confirmations: int = 0
    poll_interval_s: float = 0.5
    tx_timeout_s: float = 120.0
    max_fee_wei: int = 500 * 10**9
    voter_stake_wei: int | None = None
    register_voter: bool = True
    start_block: int = 0
    profiles: tuple[Profile, ...] = ()
    """Profiles known besides each served model's current one (judged by id)."""
    prover_behaviour: ProverBehaviour | None = None
    """How the roles choose at each decision point; ``None``: honestly (the daemon always)."""
    challenger_behaviour: ChallengerBehaviour | None = None
    voter_behaviour: VoterBehaviour | None = None


class _Lifecycle:
    """A component around an adapter with its own ``run(stop)`` loop."""

    def __init__(self, name: str, target: Any, *, start: bool = True) -> None:
        self.name = name
        self._target = target
        self._call_start = start
        self._stop = asyncio.Event()
        self._started = False

    async def start(self) -> None:
        if self._call_start:
            await self._target.start()
        self._started = True

    async def run(self) -> None:
        await self._target.run(self._stop)

    async def stop(self) -> None:
        self._stop.set()

    def ready(self) -> bool:
        ready = getattr(self._target, "ready", True)
        return self._started and bool(ready() if callable(ready) else ready)


class _Closing:
    """Closes a resource (the state store, the p2p host) when the node stops."""

    def __init__(self, name: str, start: Any, stop: Any, ready: Any = None) -> None:
        self.name = name
        self._start = start
        self._stop = stop
        self._ready = ready
        self._up = False

    async def start(self) -> None:
        if self._start is not None:
            await self._start()
        self._up = True

    async def run(self) -> None:
        return None

    async def stop(self) -> None:
        if self._up:
            self._up = False
            await self._stop()

    def ready(self) -> bool:
        return self._up and (self._ready is None or bool(self._ready()))


class _ViewsOf:
    def __init__(self) -> None:
        self.driver: ProtocolDriver | None = None

    def view(self, job_id: bytes) -> JobView | None:
        return None if self.driver is None else self.driver.state.views.get(job_id)

    def head(self) -> int:
        return 0 if self.driver is None else self.driver.state.head


@dataclass
class RoleNode:
    spec: RoleNodeSpec
    components: list[Component]
    routes: list[Route]
    driver: ProtocolDriver
    p2p: P2PNode
    store: StateStore
    blobs: BlobStore
    contracts: Contracts
    params: ProtocolParams
    peers: PeerBook
    prover: ProverService | None = None
    challenger: ChallengerService | None = None
    voter: VoterService | None = None

    @property
    def address(self) -> str:
        return str(self.spec.signer.address)


async def build_role_node(
    spec: RoleNodeSpec, w3: AsyncWeb3[Any], registry: CollectorRegistry
) -> RoleNode:
    data = spec.data_dir
    data.mkdir(parents=True, exist_ok=True)
    store = StateStore(data / "state.sqlite", registry=registry)
    blobs = BlobStore(data / "blobs", digest=lambda b: blob_digest(b).hex(), registry=registry)
    contracts = Contracts.connect(w3, spec.deployment)
    params = await read_params(contracts)
    metrics = RoleMetrics(registry)
    serve = BlobServer(blobs)
    # Every profile this node knows (its model store's, and those fetched by id) is served to
    # peers under its id, next to the trace blobs.
    book = ProfileBook(
        spec.models,
        params.k,
        device=spec.device,
        profiles=spec.profiles,
        store_dir=data / "profiles",
    )
    # Only registered (staked) voters' votes are relayed or buffered.  Node records are not
    # gated: provers and challengers publish them without being in the stake registry.
    registered = RegisteredKeys(contracts.stakes, poll_interval_s=max(0.2, spec.poll_interval_s))
    p2p = P2PNode(
        P2PConfig(
            key_file=spec.p2p_key_file or data / "p2p.key",
            listen=spec.listen,
            bootstrap=spec.bootstrap,
            vote_domain=params.vote_domain,
            validation=ValidatorConfig(registered_kinds=frozenset({VoteMessage.KIND})),
        ),
        spec.signer,
        registry,
        blob_source=ServingWithProfiles(serve, book),
        # Profile ids are checked first: a keccak over at most 4 MiB, before any parse.
        blob_verifier=lambda d, p: verify_profile_blob(d, p) or verify_blob(d, p),
        is_registered=registered,
    )
    book.remote = p2p
    errors = ErrorDecoder([contracts.coordinator.abi, contracts.stakes.abi, contracts.models.abi])
    sender = TxSender(
        w3,
        spec.signer,
        store,
        fees=FeePolicy(max_fee_cap=spec.max_fee_wei),
        errors=errors,
        confirmations=1,
        poll_interval_s=spec.poll_interval_s / 2,
        registry=registry,
    )
    coordinator: TaoCoordinator = contracts.coordinator
    decoder = BindingLogDecoder([coordinator])
    watcher = EventWatcher(
        w3,
        store,
        decoder,
        name="coordinator",
        start_block=spec.start_block,
        confirmations=spec.confirmations,
        poll_interval_s=spec.poll_interval_s,
        registry=registry,
    )
    feed = WatcherFeed(watcher, store, decoder, spec.poll_interval_s)
    compute = ComputeWorker(metrics, spec.threads, spec.max_queue)
    views = _ViewsOf()
    record = NodeRecord(
        peer_id=p2p.peer_id,
        roles=tuple(sorted(spec.roles)),
        devices=(spec.device,),
        models=tuple(spec.models),
        addrs=(),
    )
    peers = PeerBook(p2p, record)
    ctx = RoleContext(
        signer=spec.signer,
        contracts=contracts,
        sender=SenderAdapter(sender, spec.tx_timeout_s),
        params=params,
        data=JobData(blobs, p2p),
        compute=compute,
        metrics=metrics,
        models=spec.models,
        peers=peers,
        views=views,
        device=spec.device,
        judges=book,
    )

    policies: list[tuple[str, Policy]] = []
    handlers: dict[type[Any], Handler] = {}
    common = _CommonActions(ctx)
    services: list[Component] = []
    prover = challenger = voter = None
    driver_ref: list[ProtocolDriver] = []

    def kick() -> None:
        if driver_ref:
            driver_ref[0].kick()

    me = str(spec.signer.address)
    if "prover" in spec.roles:
        prover = ProverService(ctx, store, blobs, spec.prover_behaviour)
        serve.serves = prover.serves
        services.append(prover)
        handlers[d.PostProverMove] = _gated(prover.post_move, prover.behaviour)
        policies.append(("prover", lambda job, head: d.prover_decide(job, me, head)))
    if "challenger" in spec.roles:
        challenger = ChallengerService(
            ctx,
            store,
            spec.sample_rate,
            kick,
            # Stop fetching a quarter of the move timeout before the deadline: re-execution
            # and landing the move transaction need the rest.
            deadline_margin=max(3, params.move_timeout // 4),
            behaviour=spec.challenger_behaviour,
        )
        services.append(challenger)
        gate = challenger.behaviour
        handlers[d.Evaluate] = _gated(challenger.evaluate, gate)
        handlers[d.Challenge] = _gated(challenger.challenge, gate)
        handlers[d.ChooseSubsegment] = _gated(challenger.choose, gate)
        ch = challenger
        policies.append(
            (
                "challenger",
                lambda job, head: d.challenger_decide(job, me, head, ch.assessment(job.job_id)),
            )
        )
    channel: CommitteeChannel | None = None
    if "voter" in spec.roles:
        stake = spec.voter_stake_wei if spec.register_voter else None
        channel = CommitteeChannel(p2p)
        voter = VoterService(
            ctx,
            store,
            channel,
            kick,
            register_stake=stake,
            peer_record=(p2p.peer_id.encode(), list(spec.listen)),
            # Vote directly with a third of the window left if the gossiped vote is not on
            # chain by then (gossip drops messages under load).
            direct_vote_margin=max(3, params.vote_window // 3),
            behaviour=spec.voter_behaviour,
        )
        services.append(voter)
        gate_v = voter.behaviour
        handlers[d.Adjudicate] = _gated(voter.adjudicate, gate_v)
        handlers[d.GossipVote] = _gated(voter.gossip, gate_v)
        handlers[d.SubmitVotes] = _gated(voter.submit, gate_v)
        handlers[d.DirectVote] = _gated(voter.direct, gate_v)
        vo = voter
        quorum = params.quorum
        policies.append(
            (
                "voter",
                lambda job, head: d.voter_decide(
                    job,
                    me,
                    head,
                    vo.verdict(job.job_id, job.attempt),
                    vo.collected(job.job_id, job.attempt),
                    quorum,
                    vo.direct_vote_margin,
                ),
            )
        )
    # Steps any party may take pass every behaviour of this node.
    behaviours = [s.behaviour for s in (prover, challenger, voter) if s is not None]
    for action_type in (d.Finalize, d.ClaimTimeout, d.DrawCommittee, d.Resolve):
        handlers[action_type] = _gated(common.send, *behaviours)
    policies = [(role, range_checked(policy, spec.models)) for role, policy in policies]
    driver = ProtocolDriver(
        feed, policies, handlers, metrics, move_timeout=params.move_timeout, me=me
    )
    driver_ref.append(driver)
    views.driver = driver

    async def close_store() -> None:
        await asyncio.to_thread(store.close)

    components: list[Component] = [
        _Closing("state", None, close_store),
        registered,
        _Closing("p2p", p2p.start, p2p.stop, lambda: p2p.running),
        peers,
        *([_Closing("committee", channel.start, channel.stop)] if channel is not None else []),
        _Lifecycle("sender", sender),
        _Lifecycle("watcher", watcher, start=False),
        compute,
        *services,
        PayoutCollector(ctx),
        driver,
    ]
    routes = prover.routes() if prover is not None else []
    return RoleNode(
        spec=spec,
        components=components,
        routes=routes,
        driver=driver,
        p2p=p2p,
        store=store,
        blobs=blobs,
        contracts=contracts,
        params=params,
        peers=peers,
        prover=prover,
        challenger=challenger,
        voter=voter,
    )


def _gated(handler: Handler, *behaviours: Behaviour) -> Handler:
    """``handler`` behind the behaviours' ``proceed`` gates (each may delay or skip it)."""

    async def gated(action: Any) -> None:
        for behaviour in behaviours:
            if not await behaviour.proceed(action):
                raise Settled("the behaviour chose not to act")
        await handler(action)

    return gated


def range_checked(policy: Policy, models: dict[bytes, ServedModel]) -> Policy:
    """``policy``, but no action at all for a view whose chain-supplied N or indices do not fit
    the served model (``decisions.index_problem``): refused loudly, once per job, instead of
    handing the roles indices that raise IndexError on every retry."""
    refused: set[bytes] = set()

    def checked(job: JobView, head: int) -> list[d.Action]:
        served = models.get(job.model_id)
        if served is not None:
            problem = d.index_problem(job, served.model.num_ops)
            if problem is not None:
                if job.job_id not in refused:
                    refused.add(job.job_id)
                    log.error(
                        "result refused: chain data does not fit the local model",
                        job=job.job_id.hex(),
                        problem=problem,
                    )
                return []
        return policy(job, head)

    return checked


class _CommonActions:
    """Steps any party may take: finalize, claim a timeout, draw the committee, resolve."""

    def __init__(self, ctx: RoleContext) -> None:
        self.ctx = ctx

    async def send(self, action: d.Action) -> None:
        c = self.ctx.contracts.coordinator
        if isinstance(action, d.Finalize):
            tx = c.finalize_tx(action.job_id)
        elif isinstance(action, d.ClaimTimeout):
            tx = c.timeout_tx(action.job_id)
        elif isinstance(action, d.DrawCommittee):
            tx = c.draw_committee_tx(action.job_id)
        elif isinstance(action, d.Resolve):
            tx = c.resolve_tx(action.job_id)
        else:  # pragma: no cover - the handler table routes only these here
            raise TypeError(type(action).__name__)
        await self.ctx.sender.submit(action.key, tx)
