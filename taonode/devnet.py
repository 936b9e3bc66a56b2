"""``taonode devnet``: a whole TAO network in one process, played through honest and cheating
jobs, with a live progress view and a final table.

Real parts throughout: an EVM (embedded py-evm, or anvil), the compiled contracts, one libp2p
host per node on loopback, each node's own state store, blob store, journaling sender and event
watcher, and the same role services the daemon runs. Every scenario is a
:class:`~taonode.adversary.strategy.Strategy` (docs/adversary.md): its parties get their own
keys and role stacks, built with the strategy's behaviour objects, and its jobs go through its
prover's HTTP API. The end is judged by the money each party gained or lost per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import torch
from prometheus_client import CollectorRegistry

from taonode.adversary.builtin import BUILTIN
from taonode.adversary.crash import RestartableNode
from taonode.adversary.ledger import Ledger, net, read_ledger
from taonode.adversary.load import load_strategy
from taonode.adversary.report import adversary_table
from taonode.adversary.strategy import Arena, Honest, Outcome, Party, Strategy
from taonode.api.app import ApiServer, build_app
from taonode.api.tensors import tensor_to_json
from taonode.chain.anvil import AnvilChain, free_port
from taonode.chain.deploy import Contracts, Deployment, DeployParams, deploy
from taonode.chain.embedded import EmbeddedChain
from taonode.chain.localchain import BlockClock, LocalChain
from taonode.chain.tx import DirectTransactor
from taonode.protocol.dispute import JobView, ResultStatus
from taonode.protocol.dispute import Outcome as DisputeOutcome
from taonode.roles.assemble import RoleNode, RoleNodeSpec, build_role_node
from taonode.roles.context import ServedModel
from taonode.roles.judge import ProfileJudge
from taonode.runtime.graph import Factory, Model, export
from taonode.runtime.models import bert
from taonode.runtime.models.reference import REFERENCE_MODELS
from taonode.runtime.profile import Profile, calibrate
from taonode.runtime.variants import ALL_VARIANTS, get_variants
from taonode.service import Component, ReadinessProbe, StartupError, supervise
from taonode.signer import LocalSigner

ETHER = 10**18
DEFAULT_CHEATS = (
    "fp16-weights",
    "bf16-weights",
    "int8-weights",
    "perturb-1e-3",
    "withhold-data",
    "silent-mid-dispute",
)
"""Built-in strategies a plain ``taonode devnet`` plays (besides the honest baseline)."""


@dataclass(frozen=True)
class DevnetOptions:
    chain: str = "embedded"
    model: str = "transformer"
    challengers: int = 2
    voters: int = 5
    cheats: tuple[str, ...] = DEFAULT_CHEATS
    """Built-in strategy names (the classic cheating provers by default)."""
    adversaries: tuple[str | Strategy, ...] = ()
    """More strategies: built-in names, ``FILE.py:NAME`` or strategy objects."""
    honest: bool = True
    """Play the honest baseline job too."""
    block_interval_s: float = 0.25
    timeout_s: float = 300.0
    workdir: Path | None = None


@dataclass
class Scenario:
    name: str
    strategy: Strategy
    job_ids: list[bytes] = field(default_factory=list)
    refused: int = 0
    started: float = 0.0
    ended: float | None = None
    views: dict[bytes, JobView] = field(default_factory=dict)
    error: str | None = None
    phases: list[str] = field(default_factory=list)
    outcome: Outcome | None = None

    @property
    def job_id(self) -> bytes | None:
        return self.job_ids[0] if self.job_ids else None

    @property
    def view(self) -> JobView | None:
        return self.views.get(self.job_ids[0]) if self.job_ids else None

    @property
    def done(self) -> bool:
        if self.error is not None:
            return True
        if len(self.job_ids) + self.refused < self.strategy.jobs:
            return False
        return all(
            (v := self.views.get(j)) is not None
            and v.status in (ResultStatus.FINALIZED, ResultStatus.REJECTED, ResultStatus.VOIDED)
            for j in self.job_ids
        )

    @property
    def passed(self) -> bool:
        if self.error is not None or self.outcome is None:
            return False
        return self.strategy.passed(self.outcome)


# Deadlines are in blocks. The devnet mines a block every 0.25 s and every transaction mines
# one more, so 40 blocks last between ~4 s (all scenarios busy) and 10 s (idle).
DEVNET_PARAMS = DeployParams(
    challengeWindow=40,
    moveTimeout=60,
    voteWindow=100,
    proverBond=ETHER,
    challengerBond=ETHER,
    k=4,
    committeeSize=3,
    quorum=2,
    voterRewardBps=2000,
    nonVoterPenalty=ETHER // 10,
    minStake=ETHER,
    unbondDelay=20,
    maxNodes=64,
    profileDelay=8,
)


class _Task:
    """A component that runs one coroutine and then asks the node to stop."""

    def __init__(self, name: str, body: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
        self.name = name
        self._body = body
        self._stop = stop

    async def start(self) -> None:
        return None

    async def run(self) -> None:
        try:
            await self._body()
        finally:
            self._stop.set()

    async def stop(self) -> None:
        return None

    def ready(self) -> bool:
        return True


def devnet_models() -> dict[str, Factory]:
    """The models a devnet can serve: the three reference models and MiniLM."""
    return {**REFERENCE_MODELS, "minilm": bert.minilm}


def prepare_model(name: str, workdir: Path) -> tuple[Model, tuple[torch.Tensor, ...]]:
    module, example = devnet_models()[name]()
    model = export(module, example, workdir / f"{name}.pt2")
    return model, example


def calibrate_profile(model: Model, example: Sequence[torch.Tensor], k: int) -> Profile:
    """The model's profile, from inputs the scenarios never use (seeds 0 and 1)."""
    inputs = [inputs_like(model, example, seed) for seed in (0, 1)]
    return calibrate(model, inputs, get_variants(list(ALL_VARIANTS)), ks=(k,))


def inputs_like(
    model: Model, example: Sequence[torch.Tensor], seed: int
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for spec, ex in zip(model.inputs, example, strict=True):
        if ex.is_floating_point():
            out[spec.name] = torch.randn(ex.shape, generator=gen, dtype=ex.dtype)
        else:
            high = int(ex.max().item()) + 1
            out[spec.name] = torch.randint(0, max(high, 2), ex.shape, generator=gen, dtype=ex.dtype)
    return out


class Devnet:
    def __init__(self, options: DevnetOptions, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        strategies: list[Strategy] = [Honest()] if options.honest else []
        strategies += [BUILTIN[name]() for name in options.cheats]
        strategies += [load_strategy(a) if isinstance(a, str) else a for a in options.adversaries]
        self.scenarios = [Scenario(st.name, st) for st in strategies]
        self.nodes: list[RoleNode] = []
        self.labels: dict[str, str] = {}
        """Address (lower case) → who it is, for the adversary table."""
        self.deployment: Deployment | None = None
        self.gas_by_job: dict[bytes, int] = {}
        self.ledger: Ledger = {}
        self._apis: dict[tuple[int, str], ApiServer] = {}
        self._arenas: dict[int, Arena] = {}
        self._stop = asyncio.Event()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def run(self) -> int:
        opts = self.options
        started = time.monotonic()
        keys = 1 + opts.challengers + opts.voters
        keys += sum(len(s.strategy.parties_cache) for s in self.scenarios)
        with contextlib.ExitStack() as stack:
            workdir = opts.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
            chain: LocalChain
            if opts.chain == "anvil":
                # Interval mining: anvil's own clock moves the block deadlines.
                chain = await AnvilChain.start(num_keys=keys, block_time=opts.block_interval_s)
            else:
                chain = EmbeddedChain(num_keys=keys)
            try:
                return await self._run(chain, workdir, started)
            finally:
                await chain.close()

    async def _run(self, chain: LocalChain, workdir: Path, started: float) -> int:
        opts = self.options
        keys = chain.keys
        deployer = LocalSigner(keys[0])
        transactor = DirectTransactor(chain.w3, deployer)
        self.deployment = await deploy(chain.w3, transactor, DEVNET_PARAMS)
        self.say(
            f"chain: {opts.chain}, contracts deployed at block {self.deployment.block} "
            f"(coordinator {self.deployment.coordinator})"
        )
        model, example = await asyncio.to_thread(prepare_model, opts.model, workdir)
        calibrated = time.monotonic()
        profile = await asyncio.to_thread(calibrate_profile, model, example, DEVNET_PARAMS.k)
        self.say(
            f"profile: calibrated on {len(profile.calibration_inputs)} inputs × "
            f"{len(profile.variants)} execution variants in {time.monotonic() - calibrated:.1f}s "
            f"(end-to-end threshold {profile.end_to_end_threshold():.2g})"
        )
        judge = ProfileJudge(model, profile, DEVNET_PARAMS.k)
        profile_id = profile.profile_id
        contracts = Contracts.connect(chain.w3, self.deployment, transactor)
        await contracts.models.register_model(
            model.model_id, profile_id, model.num_ops, f"devnet:{opts.model}"
        )
        self.say(
            f"model: reference {opts.model}, {model.num_ops} ops, "
            f"id 0x{model.model_id.hex()[:16]}…, registered with profile 0x{profile_id.hex()[:16]}…"
        )
        served = {model.model_id: ServedModel(model, profile_id, judge)}
        # Honest shared nodes first, then every scenario's own parties (its prover, sybils…).
        layout: list[tuple[str, Party, int | None]] = []
        for i in range(opts.challengers):
            layout.append((f"challenger-{i + 1}", Party("c", frozenset({"challenger"})), None))
        for i in range(opts.voters):
            layout.append((f"voter-{i + 1}", Party("v", frozenset({"voter"})), None))
        for index, scenario in enumerate(self.scenarios):
            for party in scenario.strategy.parties_cache:
                layout.append((f"{scenario.name}/{party.name}", party, index))
        bootstrap: list[str] = []
        components: list[Component] = []
        addresses: dict[int, dict[str, str]] = {i: {} for i in range(len(self.scenarios))}
        signers: dict[int, dict[str, LocalSigner]] = {i: {} for i in range(len(self.scenarios))}
        nodes_of: dict[int, dict[str, Any]] = {i: {} for i in range(len(self.scenarios))}
        for number, (name, party, owner) in enumerate(layout):
            signer = LocalSigner(keys[1 + number])
            self.labels[str(signer.address).lower()] = name
            if owner is not None:
                addresses[owner][party.name] = str(signer.address)
                signers[owner][party.name] = signer
            if not party.roles:
                continue  # a bare key: the strategy transacts with it directly
            port = free_port()
            spec = RoleNodeSpec(
                name=name,
                roles=party.roles,
                data_dir=workdir / name.replace("/", "_"),
                signer=signer,
                deployment=self.deployment,
                models=served,
                listen=(f"/ip4/127.0.0.1/tcp/{port}",),
                bootstrap=tuple(bootstrap[:8]),
                poll_interval_s=party.poll_interval_s,
                voter_stake_wei=10 * ETHER,
                start_block=self.deployment.block,
                prover_behaviour=party.prover,
                challenger_behaviour=party.challenger,
                voter_behaviour=party.voter,
            )
            node = await build_role_node(spec, chain.w3, CollectorRegistry())
            bootstrap.append(f"/ip4/127.0.0.1/tcp/{port}/p2p/{node.p2p.peer_id}")
            self.nodes.append(node)
            if party.restartable:
                runner = RestartableNode(name, functools.partial(self._rebuild, spec, chain), node)
                components.append(runner)
                if owner is not None:
                    nodes_of[owner][party.name] = runner
            else:
                components.extend(node.components)
                if owner is not None:
                    nodes_of[owner][party.name] = node
            if node.prover is not None and owner is not None:
                api = ApiServer(
                    build_app(
                        node.routes, ReadinessProbe(node.components), CollectorRegistry(), dict
                    ),
                    "127.0.0.1",
                    0,
                )
                self._apis[(owner, party.name)] = api
                components.append(api)
        for index in range(len(self.scenarios)):
            own = signers[index]
            self._arenas[index] = Arena(
                w3=chain.w3,
                deployment=self.deployment,
                contracts=Contracts.connect(chain.w3, self.deployment),
                model=model,
                addresses=addresses[index],
                prover_bond=DEVNET_PARAMS.proverBond,
                challenger_bond=DEVNET_PARAMS.challengerBond,
                _as=lambda party, own=own: Contracts.connect(
                    chain.w3, self.deployment, DirectTransactor(chain.w3, own[party])
                ),
                _views=lambda job_id: self.nodes[0].driver.state.views.get(job_id),
                _nodes=dict(nodes_of[index]),
            )
        if not isinstance(chain, AnvilChain):  # anvil mines on its own (interval mining)
            components.append(BlockClock(chain, opts.block_interval_s))
        components.append(_Task("scenarios", lambda: self._scenarios(model, example), self._stop))
        provers = sum(1 for n in self.nodes if n.prover is not None)
        self.say(
            f"nodes: {provers} provers (one per scenario), {opts.challengers} honest challengers, "
            f"{opts.voters} honest voters, {len(self.nodes)} in all "
            f"(libp2p on 127.0.0.1, one state store each)"
        )
        try:
            result = await supervise(components, self._stop, start_timeout_s=60, stop_timeout_s=10)
        except StartupError as exc:
            self.say(f"devnet failed to start: {exc}")
            return 1
        if result.crashed is not None:
            self.say(f"devnet failed: {result.crashed}: {result.error!r}")
            return 1
        self._table(time.monotonic() - started)
        ok = all(s.passed for s in self.scenarios)
        self.say("devnet: PASS" if ok else "devnet: FAIL")
        return 0 if ok else 1

    async def _rebuild(self, spec: RoleNodeSpec, chain: LocalChain) -> RoleNode:
        node = await build_role_node(spec, chain.w3, CollectorRegistry())
        # The observer-side lists follow the live node (ledger, gas and journals read it).
        self.nodes = [node if n.spec.name == spec.name else n for n in self.nodes]
        return node

    async def _scenarios(self, model: Model, example: Sequence[torch.Tensor]) -> None:
        # Let the mesh form and the voters register before the first job.
        await self._wait_registered()
        plays: list[asyncio.Task[None]] = []
        seed = 100
        for index, scenario in enumerate(self.scenarios):
            strategy = scenario.strategy
            scenario.started = time.monotonic()
            plays.append(asyncio.create_task(self._play(scenario, self._arenas[index])))
            for _ in range(strategy.jobs):
                seed += 1
                try:
                    inputs = strategy.inputs(model, example, seed)
                    api = self._apis[(index, strategy.submit_to())]
                    job_id = await self._infer_http(api, model, inputs)
                except _Refused as exc:
                    scenario.refused += 1
                    self.say(f"  [{scenario.name}] job refused by the prover's API: {exc}")
                    continue
                except Exception as exc:
                    scenario.error = repr(exc)
                    break
                scenario.job_ids.append(job_id)
                strategy.on_job(job_id)
                self.say(f"  [{scenario.name}] job 0x{job_id.hex()[:12]}… submitted")
        views = self.nodes[0].driver.state.views
        deadline = time.monotonic() + self.options.timeout_s
        last: dict[str, str] = {}
        while time.monotonic() < deadline:
            for scenario in self.scenarios:
                if scenario.ended is not None:
                    continue
                for job_id in scenario.job_ids:
                    view = views.get(job_id)
                    if view is not None:
                        scenario.views[job_id] = view
                state = _describe(scenario.view) if scenario.job_ids else "no job"
                if last.get(scenario.name) != state:
                    last[scenario.name] = state
                    scenario.phases.append(state)
                    self.say(f"  [{scenario.name}] {state}")
                if scenario.done:
                    scenario.ended = time.monotonic()
            if all(s.done for s in self.scenarios):
                break
            await asyncio.sleep(0.2)
        for task in plays:
            task.cancel()
        await asyncio.gather(*plays, return_exceptions=True)
        for scenario in self.scenarios:
            if not scenario.done:
                scenario.error = scenario.error or "timed out"
        await self._judge()
        # Read the journals while the stores are still open (the nodes stop after this).
        await self._collect_gas()

    async def _play(self, scenario: Scenario, arena: Arena) -> None:
        try:
            await scenario.strategy.play(arena)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            scenario.error = f"play: {exc!r}"

    async def _judge(self) -> None:
        contracts = self.nodes[0].contracts
        assert self.deployment is not None
        self.ledger = await read_ledger(
            contracts,
            self.deployment.block,
            DEVNET_PARAMS.proverBond,
            DEVNET_PARAMS.challengerBond,
        )
        for index, scenario in enumerate(self.scenarios):
            arena = self._arenas[index]
            attackers = frozenset(
                arena.addresses[p.name].lower()
                for p in scenario.strategy.parties_cache
                if not p.honest
            )
            parties = {a for j in scenario.job_ids for a in self.ledger.get(j, {})}
            views = tuple(scenario.views.get(j) for j in scenario.job_ids)
            scenario.outcome = Outcome(
                jobs=tuple(scenario.job_ids),
                views=views,
                refused=scenario.refused,
                nets={a: net(self.ledger, scenario.job_ids, a) for a in sorted(parties)},
                attackers=attackers,
                provers=frozenset(v.prover.lower() for v in views if v is not None),
            )

    async def _wait_registered(self) -> None:
        voters = [n for n in self.nodes if n.voter is not None]
        stakes = self.nodes[0].contracts.stakes
        for _ in range(600):
            staked = [await stakes.stake_of(n.address) for n in voters]
            if all(s > 0 for s in staked):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("voters did not register in time")

    async def _infer_http(
        self, api: ApiServer, model: Model, inputs: dict[str, torch.Tensor]
    ) -> bytes:
        body: dict[str, Any] = {
            "model_id": "0x" + model.model_id.hex(),
            "inputs": {k: tensor_to_json(v) for k, v in inputs.items()},
        }
        url = f"http://127.0.0.1:{api.bound_port}/v1/infer"
        async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
            payload = await resp.json()
            if 400 <= resp.status < 500:
                raise _Refused(f"{resp.status} {payload}")
            if resp.status != 200:
                raise RuntimeError(f"infer failed: {resp.status} {payload}")
        return bytes.fromhex(str(payload["job_id"])[2:])

    async def _collect_gas(self) -> None:
        jobs = {j.hex(): j for s in self.scenarios for j in s.job_ids}
        for node in self.nodes:
            chain_id = int(await node.contracts.coordinator.w3.eth.chain_id)
            with contextlib.suppress(Exception):
                records = await node.store.run(
                    node.store.journal_for_sender, node.address, chain_id
                )
                for record in records:
                    for hexid, job_id in jobs.items():
                        if hexid in record.key:
                            self.gas_by_job[job_id] = self.gas_by_job.get(job_id, 0) + (
                                record.gas_used or 0
                            )

    def _table(self, total_s: float) -> None:
        rows = [("scenario", "detected", "rounds", "op", "verdict", "slashed", "gas", "time")]
        for s in self.scenarios:
            v = s.view
            d = v.dispute if v is not None else None
            detected = "yes" if d is not None else "no"
            rounds = str(d.round + (1 if d and d.leaf_op is not None else 0)) if d else "-"
            op = str(d.leaf_op) if d is not None and d.leaf_op is not None else "-"
            if s.error:
                verdict = f"error: {s.error[:40]}"
            elif s.refused and not s.job_ids:
                verdict = "refused by the API"
            elif d is None:
                verdict = v.status.value if v else "-"
            else:
                verdict = f"{d.outcome.value if d.outcome else '-'} ({d.reason or '-'})"
            slashed = "-"
            if d is not None and d.outcome is DisputeOutcome.CHALLENGER_WON:
                slashed = "prover"
            elif d is not None and d.outcome is DisputeOutcome.PROVER_WON:
                slashed = "challenger"
            gas = str(sum(self.gas_by_job.get(j, 0) for j in s.job_ids)) if s.job_ids else "-"
            took = f"{(s.ended or time.monotonic()) - s.started:.1f}s" if s.started else "-"
            mark = "ok" if s.passed else "FAIL"
            rows.append((f"{s.name} [{mark}]", detected, rounds, op, verdict, slashed, gas, took))
        self.say("")
        for line in _columns(rows):
            self.say(line)
        self.say("")
        for line in adversary_table(
            [(s.name, s.outcome, s.passed) for s in self.scenarios], self.labels
        ):
            self.say(line)
        self.say(f"\ntotal wall time {total_s:.1f}s")


class _Refused(Exception):
    """The prover's API answered 4xx: the job was never run or committed."""


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _describe(view: JobView | None) -> str:
    if view is None:
        return "computing / committing"
    if view.dispute is None:
        return f"committed ({view.status.value}, window ends at block {view.window_end})"
    d = view.dispute
    if d.phase.value in ("prover_move", "challenger_move"):
        return f"disputed: round {d.round}, segment [{d.a}, {d.b}), {d.phase.value}"
    if d.phase.value == "await_draw":
        return f"leaf op {d.leaf_op} reached: awaiting committee draw"
    if d.phase.value == "voting":
        return f"committee {len(d.committee)} voting ({len(d.votes)} votes)"
    return f"resolved: {d.outcome.value if d.outcome else '?'} ({d.reason})"


async def run_devnet(options: DevnetOptions, out: TextIO = sys.stdout) -> int:
    return await Devnet(options, out).run()
