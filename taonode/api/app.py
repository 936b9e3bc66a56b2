"""The node's HTTP server: health, readiness, metrics, status, OpenAPI, and the roles' routes.

Routes are declared as :class:`Route` records, so the OpenAPI document is generated from the
same table the router is built from and cannot drift from it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from taonode import __version__
from taonode.logs import get_logger
from taonode.service import ReadinessProbe, StartupError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
StatusProvider = Callable[[], dict[str, Any]]


JSON_OBJECT: dict[str, Any] = {"type": "object"}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "detail": {}},
    "required": ["error"],
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    responses: dict[int, str]
    response_schema: dict[str, Any] = field(default_factory=lambda: dict(JSON_OBJECT))
    request_schema: dict[str, Any] | None = None
    content_type: str = "application/json"
    tag: str = "node"


READINESS = web.AppKey("readiness", ReadinessProbe)
REGISTRY = web.AppKey("registry", CollectorRegistry)
STATUS: web.AppKey[StatusProvider] = web.AppKey("status")
ROUTES: web.AppKey[tuple[Route, ...]] = web.AppKey("routes")


def json_error(status: int, error: str, detail: Any = None) -> web.Response:
    body: dict[str, Any] = {"error": error}
    if detail is not None:
        body["detail"] = detail
    return web.json_response(body, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure is a JSON body with a clear message; no traceback reaches a client."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason)
    except Exception as exc:
        get_logger("taonode.api").exception("request failed", path=request.path)
        return json_error(500, "internal error", type(exc).__name__)


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    probe = request.app[READINESS]
    states = probe.states()
    ready = probe.ready()
    return web.json_response({"ready": ready, "components": states}, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    payload = generate_latest(request.app[REGISTRY])
    return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _status(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATUS]())


async def _openapi(request: web.Request) -> web.Response:
    routes: tuple[Route, ...] = request.app[ROUTES]
    return web.json_response(openapi_document(routes))


CORE_ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", _healthz, "Liveness: the process serves HTTP", {200: "alive"}),
    Route(
        "GET",
        "/readyz",
        _readyz,
        "Readiness: every component reports ready",
        {200: "ready", 503: "not ready"},
        {
            "type": "object",
            "properties": {"ready": {"type": "boolean"}, "components": JSON_OBJECT},
            "required": ["ready", "components"],
        },
    ),
    Route(
        "GET",
        "/metrics",
        _metrics,
        "Prometheus metrics from the node's own registry",
        {200: "text exposition format"},
        {"type": "string"},
        content_type="text/plain",
    ),
    Route(
        "GET",
        "/v1/status",
        _status,
        "Version, roles, component states and redacted config",
        {200: "status"},
    ),
    Route("GET", "/openapi.json", _openapi, "This document", {200: "OpenAPI 3.1 document"}),
)


def openapi_document(routes: Sequence[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "tags": [route.tag],
            "responses": {
                str(code): {
                    "description": text,
                    "content": {
                        route.content_type if code < 400 else "application/json": {
                            "schema": route.response_schema if code < 400 else ERROR_SCHEMA
                        }
                    },
                }
                for code, text in route.responses.items()
            },
        }
        params = [seg[1:-1] for seg in route.path.split("/") if seg.startswith("{")]
        if params:
            op["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in params
            ]
        if route.request_schema is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": route.request_schema}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "taonode", "version": __version__},
        "paths": paths,
    }


def build_app(
    routes: Sequence[Route],
    readiness: ReadinessProbe,
    registry: CollectorRegistry,
    status: StatusProvider,
) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024 * 1024)
    all_routes: tuple[Route, ...] = (*CORE_ROUTES, *routes)
    app[READINESS] = readiness
    app[REGISTRY] = registry
    app[STATUS] = status
    app[ROUTES] = tuple(all_routes)
    for route in all_routes:
        app.router.add_route(route.method, route.path, route.handler)
    return app


class ApiServer:
    """The HTTP component (``AppRunner``/``TCPSite``), ready once it listens."""

    name = "api"

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise StartupError(
                f"api: cannot listen on {self._host}:{self._port}: {exc.strerror or exc}"
            ) from None
        for address in self._runner.addresses:
            if isinstance(address, tuple):
                self.bound_port = int(address[1])
                break
        get_logger("taonode.api").info("api listening", host=self._host, port=self.bound_port)

    async def run(self) -> None:
        # aiohttp serves from its own tasks; nothing to drive here.
        return None

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def ready(self) -> bool:
        return self._runner is not None
