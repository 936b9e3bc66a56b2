"""Composition root: builds the node from its config and supervises the components.

Signals only set the stop event; shutdown is ordered (reverse start order) and every stage
has a time budget (``node.shutdown_stage_timeout_s``).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from taonode import __version__
from taonode.api.app import ApiServer, Route, build_app
from taonode.config import ConfigError, NodeConfig, Role, load_config
from taonode.datadir import DataDirError, DataDirLock
from taonode.exitcodes import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE
from taonode.logs import LogFormat, configure_logging, get_logger
from taonode.metrics import LoopLagMonitor, NodeMetrics
from taonode.roles.assemble import RoleNode, RoleNodeSpec, build_role_node
from taonode.roles.behaviour import ChallengerBehaviour, ProverBehaviour, VoterBehaviour
from taonode.runtime.safejson import restore_recursion_limit
from taonode.service import Component, ReadinessProbe, StartupError, supervise
from taonode.wiring import ChainParts, connect_chain, load_served, models_dir

LOCAL_CHAIN_IDS = frozenset({31337, 131277322940537})
"""anvil's and eth-tester's chain ids: the only chains an adversary strategy may run on."""


@dataclass(frozen=True)
class Behaviours:
    """The node's behaviour objects (``None``: honest)."""

    prover: ProverBehaviour | None = None
    challenger: ChallengerBehaviour | None = None
    voter: VoterBehaviour | None = None


class Node:
    """The assembled node: its components, readiness and status, built from one config."""

    def __init__(self, config: NodeConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.metrics = NodeMetrics(self.registry, config.node.roles)
        self.started_at = time.time()
        self.components: list[Component] = []
        self.routes: list[Route] = []
        self.role_node: RoleNode | None = None
        self.behaviours: Behaviours = Behaviours()
        """Honest unless ``--unsafe-adversary`` chose a strategy (local chains only)."""
        if config.metrics.enabled:
            self.components.append(LoopLagMonitor(self.metrics, config.metrics.loop_lag_interval_s))
        self.readiness = ReadinessProbe([])
        self.api: ApiServer | None = None
        self.metrics.ready.set_function(lambda: float(self.readiness.ready()))

    async def assemble(self) -> None:
        """Builds the role stack (when the node has roles), then the API server."""
        if self.config.node.roles:
            parts = await connect_chain(self.config)
            spec = await self._role_spec(parts)
            self.role_node = await build_role_node(spec, parts.w3, self.registry)
            self.components.extend(parts.components)
            self.components.extend(self.role_node.components)
            self.routes.extend(self.role_node.routes)
        app = build_app(self.routes, self.readiness, self.registry, self.status)
        self.api = ApiServer(app, self.config.api.host, self.config.api.port)
        # The API starts last so /readyz never answers before the others exist, and stops first
        # so no new request arrives while the rest shuts down.
        self.components.append(self.api)
        for component in self.components:
            self.readiness.add(component)

    async def _role_spec(self, parts: ChainParts) -> RoleNodeSpec:
        config = self.config
        stored, served = load_served(config, parts.deployment.params.k)
        if not served:
            get_logger("taonode.node").warning(
                "no models: this node can register and watch, but not prove, check or judge",
                models_dir=str(models_dir(config)),
            )
        head = int(await parts.w3.eth.block_number)
        return RoleNodeSpec(
            name=config.node.name,
            roles=frozenset(config.node.roles),
            data_dir=config.node.data_dir,
            signer=parts.signer,
            deployment=parts.deployment,
            models=served,
            device=config.compute.device,
            threads=config.compute.threads,
            max_queue=config.prover.max_queue,
            sample_rate=config.challenger.sample_rate,
            listen=config.p2p.listen,
            bootstrap=config.p2p.bootstrap,
            p2p_key_file=config.p2p.key_file,
            confirmations=config.chain.confirmations,
            poll_interval_s=config.chain.poll_interval_s,
            tx_timeout_s=config.chain.tx_timeout_s,
            max_fee_wei=int(config.chain.max_fee_gwei * 10**9),
            voter_stake_wei=int(config.voter.stake_eth * 10**18),
            register_voter=config.voter.auto_register,
            prover_behaviour=self.behaviours.prover,
            challenger_behaviour=self.behaviours.challenger,
            voter_behaviour=self.behaviours.voter,
            start_block=min(head, parts.deployment.block),
            profiles=tuple(p for s in stored for p in s.profiles),
        )

    def status(self) -> dict[str, Any]:
        states = self.readiness.states()
        for name, ok in states.items():
            self.metrics.component_ready.labels(component=name).set(1.0 if ok else 0.0)
        return {
            "version": __version__,
            "name": self.config.node.name,
            "roles": list(self.config.node.roles),
            "started_at": self.started_at,
            "ready": self.readiness.ready(),
            "components": states,
            "config": self.config.redacted(),
        }

    async def run(self, stop: asyncio.Event) -> int:
        log = get_logger("taonode.node", node=self.config.node.name)
        budget = self.config.node.shutdown_stage_timeout_s
        try:
            await self.assemble()
            # Every adapter is imported and built now; see taonode.runtime.safejson.
            restore_recursion_limit()
            result = await supervise(
                self.components, stop, start_timeout_s=60.0, stop_timeout_s=budget
            )
        except StartupError as exc:
            log.error("start-up failed", error=str(exc))
            print(f"taonode: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if result.crashed is not None:
            print(f"taonode: component {result.crashed} failed: {result.error!r}", file=sys.stderr)
            return EXIT_RUNTIME
        if result.stop_timeouts:
            log.warning("stopped with components past their budget", late=result.stop_timeouts)
        log.info("node stopped")
        return EXIT_OK


async def _serve(config: NodeConfig, behaviours: Behaviours) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        node = Node(config)
        node.behaviours = behaviours
        return await node.run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_daemon(
    config_path: str,
    roles: Sequence[str] | None,
    log_format: str | None,
    log_level: str | None,
    adversary: str | None = None,
) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(exc.report("taonode: "), file=sys.stderr)
        return EXIT_USAGE
    if roles:
        chosen: tuple[Role, ...] = tuple(r for r in ("prover", "challenger", "voter") if r in roles)
        config = config.with_roles(chosen)
    behaviours = Behaviours()
    if adversary is not None:
        # Only for tests and local networks: a cheating node on a public chain would just
        # lose its bonds, but it must never be one typo away.
        if config.chain.chain_id not in LOCAL_CHAIN_IDS:
            print(
                f"taonode: --unsafe-adversary {adversary} is refused (local chains only: "
                f"{sorted(LOCAL_CHAIN_IDS)})",
                file=sys.stderr,
            )
            return EXIT_USAGE
        # Imported only here: the adversary package is never loaded by an honest node.
        from taonode.adversary.load import StrategyError, load_strategy

        try:
            party = load_strategy(adversary).parties_cache[0]
        except StrategyError as exc:
            print(f"taonode: --unsafe-adversary refused: {exc}", file=sys.stderr)
            return EXIT_USAGE
        behaviours = Behaviours(party.prover, party.challenger, party.voter)
    fmt: LogFormat = "console" if (log_format or config.log.format) == "console" else "json"
    configure_logging(fmt, log_level or config.log.level)
    log = get_logger("taonode.node", node=config.node.name)
    lock = DataDirLock(config.node.data_dir)
    try:
        lock.acquire()
    except DataDirError as exc:
        print(f"taonode: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        log.info(
            "taonode starting",
            version=__version__,
            roles=list(config.node.roles),
            config=str(config.source),
        )
        return asyncio.run(_serve(config, behaviours))
    finally:
        lock.release()
