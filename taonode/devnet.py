"""``taonode devnet``: a whole TAO network in one process, played through honest and cheating
jobs, with a live progress view and a final table.

Real parts throughout: an EVM (embedded py-evm, or anvil), the compiled contracts, one libp2p
host per node on loopback, each node's own state store, blob store, journaling sender and event
watcher, and the same role services the daemon runs. Only the cheating provers are devnet-only:
a job is cheated by handing the prover a :class:`~taonode.roles.cheats.Cheat` directly (the
HTTP API has no way to ask for one).
"""

from __future__ import annotations

import asyncio
import contextlib
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

from taonode.api.app import ApiServer, build_app
from taonode.api.tensors import tensor_to_json
from taonode.chain.anvil import AnvilChain, free_port
from taonode.chain.deploy import Contracts, Deployment, DeployParams, deploy
from taonode.chain.embedded import EmbeddedChain
from taonode.chain.localchain import BlockClock, LocalChain
from taonode.chain.tx import DirectTransactor
from taonode.protocol.dispute import JobView, Outcome, ResultStatus
from taonode.roles.assemble import RoleNode, RoleNodeSpec, build_role_node
from taonode.roles.cheats import CHEATS, Cheat
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


@dataclass(frozen=True)
class DevnetOptions:
    chain: str = "embedded"
    model: str = "transformer"
    challengers: int = 2
    voters: int = 5
    cheats: tuple[str, ...] = DEFAULT_CHEATS
    block_interval_s: float = 0.25
    timeout_s: float = 300.0
    workdir: Path | None = None


@dataclass
class Scenario:
    name: str
    cheat: Cheat | None
    job_id: bytes | None = None
    started: float = 0.0
    ended: float | None = None
    view: JobView | None = None
    error: str | None = None
    phases: list[str] = field(default_factory=list)

    @property
    def honest(self) -> bool:
        return self.cheat is None

    @property
    def done(self) -> bool:
        return self.error is not None or (
            self.view is not None
            and self.view.status
            in (ResultStatus.FINALIZED, ResultStatus.REJECTED, ResultStatus.VOIDED)
        )

    @property
    def passed(self) -> bool:
        if self.view is None or self.error is not None:
            return False
        if self.honest:
            return self.view.status is ResultStatus.FINALIZED and self.view.dispute is None
        d = self.view.dispute
        return d is not None and d.outcome is Outcome.CHALLENGER_WON


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
        self.scenarios: list[Scenario] = [Scenario("honest", None)] + [
            Scenario(name, CHEATS[name]) for name in options.cheats
        ]
        self.nodes: list[RoleNode] = []
        self.deployment: Deployment | None = None
        self.gas_by_job: dict[bytes, int] = {}
        self._stop = asyncio.Event()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def run(self) -> int:
        opts = self.options
        started = time.monotonic()
        with contextlib.ExitStack() as stack:
            workdir = opts.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
            chain: LocalChain
            if opts.chain == "anvil":
                # Interval mining: anvil's own clock moves the block deadlines.
                chain = await AnvilChain.start(
                    num_keys=4 + opts.challengers + opts.voters, block_time=opts.block_interval_s
                )
            else:
                chain = EmbeddedChain(num_keys=4 + opts.challengers + opts.voters)
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
        registry = CollectorRegistry()
        layout = (
            [("prover", frozenset({"prover"}))]
            + [(f"challenger-{i + 1}", frozenset({"challenger"})) for i in range(opts.challengers)]
            + [(f"voter-{i + 1}", frozenset({"voter"})) for i in range(opts.voters)]
        )
        bootstrap: list[str] = []
        components: list[Component] = []
        for index, (name, roles) in enumerate(layout):
            port = free_port()
            spec = RoleNodeSpec(
                name=name,
                roles=roles,
                data_dir=workdir / name,
                signer=LocalSigner(keys[1 + index]),
                deployment=self.deployment,
                models=served,
                listen=(f"/ip4/127.0.0.1/tcp/{port}",),
                bootstrap=tuple(bootstrap),
                poll_interval_s=0.2,
                voter_stake_wei=10 * ETHER,
                start_block=self.deployment.block,
            )
            node = await build_role_node(spec, chain.w3, CollectorRegistry())
            bootstrap.append(f"/ip4/127.0.0.1/tcp/{port}/p2p/{node.p2p.peer_id}")
            self.nodes.append(node)
            components.extend(node.components)
        prover = self.nodes[0]
        assert prover.prover is not None
        api = ApiServer(
            build_app(prover.routes, ReadinessProbe(prover.components), registry, lambda: {}),
            "127.0.0.1",
            0,
        )
        components.append(api)
        if not isinstance(chain, AnvilChain):  # anvil mines on its own (interval mining)
            components.append(BlockClock(chain, opts.block_interval_s))
        components.append(
            _Task("scenarios", lambda: self._scenarios(api, model, example), self._stop)
        )
        self.say(
            f"nodes: 1 prover, {opts.challengers} challengers, {opts.voters} voters "
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

    async def _scenarios(
        self, api: ApiServer, model: Model, example: Sequence[torch.Tensor]
    ) -> None:
        prover = self.nodes[0]
        assert prover.prover is not None
        # Let the mesh form and the voters register before the first job.
        await self._wait_registered()
        for seed, scenario in enumerate(self.scenarios):
            inputs = inputs_like(model, example, seed + 100)
            scenario.started = time.monotonic()
            try:
                if scenario.cheat is None:
                    scenario.job_id = await self._infer_http(api, model, inputs)
                else:
                    result = await prover.prover.infer(model.model_id, inputs, cheat=scenario.cheat)
                    scenario.job_id = result.job_id
            except Exception as exc:
                scenario.error = repr(exc)
            self.say(f"  [{scenario.name}] job 0x{(scenario.job_id or b'').hex()[:12]}… submitted")
        deadline = time.monotonic() + self.options.timeout_s
        last: dict[str, str] = {}
        while time.monotonic() < deadline:
            for scenario in self.scenarios:
                if scenario.job_id is None or scenario.ended is not None:
                    continue
                scenario.view = self.nodes[1].driver.state.views.get(scenario.job_id)
                state = _describe(scenario.view)
                if last.get(scenario.name) != state:
                    last[scenario.name] = state
                    scenario.phases.append(state)
                    self.say(f"  [{scenario.name}] {state}")
                if scenario.done:
                    scenario.ended = time.monotonic()
            if all(s.done or s.job_id is None for s in self.scenarios):
                break
            await asyncio.sleep(0.2)
        for scenario in self.scenarios:
            if not scenario.done:
                scenario.error = scenario.error or "timed out"
        # Read the journals while the stores are still open (the nodes stop after this).
        await self._collect_gas()

    async def _wait_registered(self) -> None:
        voters = [n for n in self.nodes if n.voter is not None]
        stakes = self.nodes[0].contracts.stakes
        for _ in range(300):
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
            if resp.status != 200:
                raise RuntimeError(f"infer failed: {resp.status} {payload}")
        return bytes.fromhex(str(payload["job_id"])[2:])

    async def _collect_gas(self) -> None:
        for node in self.nodes:
            chain_id = int(await node.contracts.coordinator.w3.eth.chain_id)
            with contextlib.suppress(Exception):
                records = await node.store.run(
                    node.store.journal_for_sender, node.address, chain_id
                )
                for record in records:
                    for scenario in self.scenarios:
                        if scenario.job_id and scenario.job_id.hex() in record.key:
                            self.gas_by_job[scenario.job_id] = self.gas_by_job.get(
                                scenario.job_id, 0
                            ) + (record.gas_used or 0)

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
            elif d is None:
                verdict = v.status.value if v else "-"
            else:
                verdict = f"{d.outcome.value if d.outcome else '-'} ({d.reason or '-'})"
            slashed = "-"
            if d is not None and d.outcome is Outcome.CHALLENGER_WON:
                slashed = "prover"
            elif d is not None and d.outcome is Outcome.PROVER_WON:
                slashed = "challenger"
            gas = str(self.gas_by_job.get(s.job_id, 0)) if s.job_id else "-"
            took = f"{(s.ended or time.monotonic()) - s.started:.1f}s" if s.started else "-"
            mark = "ok" if s.passed else "FAIL"
            rows.append((f"{s.name} [{mark}]", detected, rounds, op, verdict, slashed, gas, took))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        self.say("")
        for i, row in enumerate(rows):
            self.say("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
            if i == 0:
                self.say("  ".join("-" * w for w in widths))
        self.say(f"\ntotal wall time {total_s:.1f}s")


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
