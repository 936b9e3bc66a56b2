"""Node-wide metrics on a registry the node owns (never the process-global default registry)."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Gauge, Histogram, Info

from taonode import __version__


class NodeMetrics:
    """Build info, uptime, event-loop lag and component states."""

    def __init__(self, registry: CollectorRegistry, roles: tuple[str, ...]) -> None:
        self.registry = registry
        self._started = time.monotonic()
        self.build_info = Info("taonode_build", "Build information", registry=registry)
        self.build_info.info({"version": __version__, "roles": ",".join(roles) or "none"})
        self.uptime = Gauge(
            "taonode_uptime_seconds", "Seconds since the node started", registry=registry
        )
        self.uptime.set_function(lambda: time.monotonic() - self._started)
        self.loop_lag = Gauge(
            "taonode_event_loop_lag_seconds",
            "Most recent event-loop lag (how late a timer fired)",
            registry=registry,
        )
        self.loop_lag_hist = Histogram(
            "taonode_event_loop_lag_distribution_seconds",
            "Event-loop lag samples",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
            registry=registry,
        )
        self.component_ready = Gauge(
            "taonode_component_ready",
            "1 when the component reports ready",
            ["component"],
            registry=registry,
        )
        self.ready = Gauge("taonode_ready", "1 when every component is ready", registry=registry)


class LoopLagMonitor:
    """A component that measures how late the event loop runs a periodic timer."""

    name = "loop-lag"

    def __init__(self, metrics: NodeMetrics, interval_s: float) -> None:
        self._metrics = metrics
        self._interval = interval_s
        self._running = False

    async def start(self) -> None:
        self._running = True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self._interval)
            lag = max(0.0, loop.time() - before - self._interval)
            self._metrics.loop_lag.set(lag)
            self._metrics.loop_lag_hist.observe(lag)

    async def stop(self) -> None:
        self._running = False

    def ready(self) -> bool:
        return self._running
