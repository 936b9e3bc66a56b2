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
from taonode.api.body import RETRY_AFTER_S, SAFETENSORS_BODY_LIMIT, BodyError, json_body
from taonode.logs import get_logger
from taonode.service import ReadinessProbe, StartupError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
StatusProvider = Callable[[], dict[str, Any]]


JSON_OBJECT: dict[str, Any] = {"type": "object"}
READYZ_RETRY_AFTER_S = 5
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
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Schemas of path parameters (by name) and query parameters (``query:NAME``)."""
    request_content: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Further request media types besides JSON (media type → schema)."""


READINESS = web.AppKey("readiness", ReadinessProbe)
REGISTRY = web.AppKey("registry", CollectorRegistry)
STATUS: web.AppKey[StatusProvider] = web.AppKey("status")
ROUTES: web.AppKey[tuple[Route, ...]] = web.AppKey("routes")


def json_error(
    status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"error": error}
    if detail is not None:
        body["detail"] = detail
    if status == 503 and not (headers and "Retry-After" in headers):
        # RFC 9110 15.6.4: tell a client shed by load or not-ready state when to come back.
        headers = {**(headers or {}), "Retry-After": str(RETRY_AFTER_S)}
    return json_body(body, status, headers)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure is a JSON body with a clear message; no traceback reaches a client."""
    try:
        return await handler(request)
    except BodyError as exc:
        return json_error(exc.status, exc.error, exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Keep the headers that belong to the status (RFC 9110: ``Allow`` on 405).
        kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return json_error(exc.status, exc.reason, headers=kept)
    except Exception as exc:
        get_logger("taonode.api").exception("request failed", path=request.path)
        return json_error(500, "internal error", type(exc).__name__)


async def _healthz(_request: web.Request) -> web.Response:
    return json_body({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    probe = request.app[READINESS]
    states = probe.states()
    ready = bool(states) and all(states.values())
    body: dict[str, Any] = {"ready": ready, "components": states}
    reasons = probe.reasons()
    if reasons:
        body["reasons"] = reasons
    if ready:
        return json_body(body)
    return json_body(body, 503, {"Retry-After": str(READYZ_RETRY_AFTER_S)})


async def _metrics(request: web.Request) -> web.Response:
    payload = generate_latest(request.app[REGISTRY])
    return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _status(request: web.Request) -> web.Response:
    return json_body(request.app[STATUS]())


async def _openapi(request: web.Request) -> web.Response:
    routes: tuple[Route, ...] = request.app[ROUTES]
    return json_body(openapi_document(routes))


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
            "properties": {
                "ready": {"type": "boolean"},
                "components": {"type": "object", "additionalProperties": {"type": "boolean"}},
                "reasons": {"type": "object", "additionalProperties": {"type": "string"}},
            },
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
        parameters: list[dict[str, Any]] = [
            {
                "name": p,
                "in": "path",
                "required": True,
                "schema": route.parameters.get(p, {"type": "string"}),
            }
            for p in params
        ]
        parameters += [
            {"name": key[6:], "in": "query", "required": False, "schema": schema}
            for key, schema in route.parameters.items()
            if key.startswith("query:")
        ]
        if parameters:
            op["parameters"] = parameters
        if route.request_schema is not None:
            content = {"application/json": {"schema": route.request_schema}}
            content.update({k: {"schema": v} for k, v in route.request_content.items()})
            op["requestBody"] = {"required": True, "content": content}
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
    # Handlers that take bodies read them with their own per-type limit (taonode.api.body);
    # this is the backstop for any route that calls ``request.read()`` directly.
    app = web.Application(middlewares=[_errors], client_max_size=SAFETENSORS_BODY_LIMIT)
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
