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
from typing import Any

from prometheus_client import CollectorRegistry

from taonode import __version__
from taonode.api.app import ApiServer, Route, build_app
from taonode.config import ConfigError, NodeConfig, Role, load_config
from taonode.datadir import DataDirError, DataDirLock
from taonode.exitcodes import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE
from taonode.logs import LogFormat, configure_logging, get_logger
from taonode.metrics import LoopLagMonitor, NodeMetrics
from taonode.service import Component, ReadinessProbe, StartupError, supervise


class Node:
    """The assembled node: its components, readiness and status, built from one config."""

    def __init__(self, config: NodeConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.metrics = NodeMetrics(self.registry, config.node.roles)
        self.started_at = time.time()
        self.components: list[Component] = []
        if config.metrics.enabled:
            self.components.append(LoopLagMonitor(self.metrics, config.metrics.loop_lag_interval_s))
        self.readiness = ReadinessProbe([])
        routes: list[Route] = []
        app = build_app(routes, self.readiness, self.registry, self.status)
        self.api = ApiServer(app, config.api.host, config.api.port)
        # The API starts last so /readyz never answers before the others exist, and stops first
        # so no new request arrives while the rest shuts down.
        self.components.append(self.api)
        for component in self.components:
            self.readiness.add(component)
        self.metrics.ready.set_function(lambda: float(self.readiness.ready()))

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


async def _serve(config: NodeConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await Node(config).run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_daemon(
    config_path: str,
    roles: Sequence[str] | None,
    log_format: str | None,
    log_level: str | None,
) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print("taonode: invalid configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    if roles:
        chosen: tuple[Role, ...] = tuple(r for r in ("prover", "challenger", "voter") if r in roles)
        config = config.with_roles(chosen)
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
        return asyncio.run(_serve(config))
    finally:
        lock.release()
