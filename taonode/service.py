"""Component supervision: ordered start, one TaskGroup for the running node, ordered stop.

A component is started (bind sockets, open stores), then its ``run`` coroutine is supervised;
``run`` may return when its work is done, and raising from it is a crash. A stop request or a
crash cancels every ``run`` and then stops the started components in reverse order, each within
its own time budget, so a hung component cannot hold the process hostage.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from taonode.logs import get_logger


class Component(Protocol):
    name: str

    async def start(self) -> None: ...

    async def run(self) -> None: ...

    async def stop(self) -> None: ...

    def ready(self) -> bool: ...


class StartupError(Exception):
    """A component could not start (port in use, dependency down); the message says why."""


@dataclass(frozen=True)
class SupervisionResult:
    crashed: str | None
    """Name of the component whose failure stopped the node, or None after a requested stop."""
    error: BaseException | None
    stop_timeouts: tuple[str, ...]
    """Components that did not stop inside their budget."""


class _StopRequested(Exception):
    pass


class _ComponentCrashed(Exception):
    def __init__(self, name: str, error: BaseException) -> None:
        super().__init__(name)
        self.name = name
        self.error = error


async def _run_one(component: Component) -> None:
    try:
        await component.run()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise _ComponentCrashed(component.name, exc) from exc


async def _wait(stop: asyncio.Event) -> None:
    await stop.wait()
    raise _StopRequested


async def supervise(
    components: Sequence[Component],
    stop: asyncio.Event,
    *,
    start_timeout_s: float,
    stop_timeout_s: float,
) -> SupervisionResult:
    """Run ``components`` until ``stop`` is set or one of them fails."""
    log = get_logger("taonode.service")
    started: list[Component] = []
    crashed: str | None = None
    error: BaseException | None = None
    try:
        for component in components:
            try:
                await asyncio.wait_for(component.start(), start_timeout_s)
            except TimeoutError:
                raise StartupError(
                    f"{component.name}: did not start within {start_timeout_s:g} s"
                ) from None
            started.append(component)
            log.debug("component started", component=component.name)
        log.info("node running", components=[c.name for c in started])
        try:
            async with asyncio.TaskGroup() as group:
                for component in started:
                    group.create_task(_run_one(component), name=component.name)
                group.create_task(_wait(stop), name="stop-request")
        except* _StopRequested:
            log.info("stop requested")
        except* _ComponentCrashed as crashes:
            first = crashes.exceptions[0]
            assert isinstance(first, _ComponentCrashed)
            crashed, error = first.name, first.error
            log.error(
                "component crashed; stopping the node",
                component=first.name,
                error=repr(first.error),
                exc_info=first.error,
            )
    finally:
        timeouts: list[str] = []
        for component in reversed(started):
            try:
                await asyncio.wait_for(component.stop(), stop_timeout_s)
                log.debug("component stopped", component=component.name)
            except TimeoutError:
                timeouts.append(component.name)
                log.error("component did not stop in time", component=component.name)
            except Exception as exc:
                log.error(
                    "component failed to stop cleanly", component=component.name, error=repr(exc)
                )
    return SupervisionResult(crashed=crashed, error=error, stop_timeouts=tuple(timeouts))


class ReadinessProbe:
    """Aggregates component readiness for ``/readyz`` and the ready metrics."""

    def __init__(self, components: Sequence[Component]) -> None:
        self._components = list(components)

    def add(self, component: Component) -> None:
        self._components.append(component)

    def states(self) -> dict[str, bool]:
        out: dict[str, bool] = {}
        for component in self._components:
            ok = False
            with contextlib.suppress(Exception):
                ok = bool(component.ready())
            out[component.name] = ok
        return out

    def ready(self) -> bool:
        states = self.states()
        return bool(states) and all(states.values())

    def reasons(self) -> dict[str, str]:
        """Why components are not ready, for those that say (``not_ready_reason()``)."""
        out: dict[str, str] = {}
        for component in self._components:
            explain = getattr(component, "not_ready_reason", None)
            if explain is None:
                continue
            with contextlib.suppress(Exception):
                reason = explain()
                if reason:
                    out[component.name] = str(reason)
        return out
