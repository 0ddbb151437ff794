"""The HTTP sidecar the router calls: FastAPI over the gate.

Errors are always a status below 500 with ``{"detail": "<one sentence>"}``: 400 for a body that is not
UTF-8 JSON, 401 for a missing or wrong bearer token, 413 for a body over the limit, 422 for a body that
does not fit the schema (the field is named). A check's audit line is written before its verdict is
returned. Under overload, a check whose enforced Stage 2 was shed at admission (gate/batching.py) gets
503 with Retry-After instead of an unchecked verdict; the batch endpoint returns such verdicts marked
degraded (and bypassed under fail-open), like any other Stage 2 failure.

A check runs on the event loop: Stage 1 plugins must not block (gate/hookspecs.py) and take microseconds,
less than a thread hop costs (benchmarks/RESULTS.md); Stage 2 runs on its micro-batching workers and the
loop awaits the result. Only an audit fsync on every line goes to a worker thread.
"""

from __future__ import annotations

import hmac
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from gate import logs
from gate.audit import AuditLog, record
from gate.config import ConfigError, GateSettings, load_settings
from gate.engine import Gate
from gate.types import CheckRequest, Stage2Mode, Status, Verdict

TOKEN_ENV = "WALTZ_GATE_API_TOKEN"
CONFIG_ENV = "WALTZ_GATE_CONFIG"
_ROUTES = {"/v1/check", "/v1/check/batch", "/v1/plugins", "/healthz", "/readyz", "/metrics", "/openapi.json"}

log = logs.get("waltz_gate.server")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[CheckRequest] = Field(min_length=1)


class BatchVerdicts(BaseModel):
    verdicts: list[Verdict]


def load_token(settings: GateSettings) -> str | None:
    token = os.environ.get(TOKEN_ENV)
    path = settings.server.token_file
    if not token and path is not None:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"config field server.token_file: cannot read {path}: {exc.strerror}.") from None
        if not token:
            raise ConfigError(f"config field server.token_file: {path} is empty.")
    return token or None


class _BodyTooLarge(Exception):
    pass


_TOO_LARGE = "waltz_gate.body_too_large"


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body is larger than {limit} bytes."}, status_code=413)


class _BodyLimit:
    """Pure ASGI middleware: a body over the limit gets 413 with a JSON sentence, chunked or not."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            return await self._reject(send)
        received, started = 0, False

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    scope[_TOO_LARGE] = self.limit  # FastAPI turns errors while reading into a 400: see _http
                    raise _BodyTooLarge
            return message

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send):
        await _too_large(self.limit)({"type": "http"}, None, send)


class _HttpMetrics:
    """Pure ASGI middleware: request count and latency by route and status (cheap, no body buffering)."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def capture(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope["path"] if scope["path"] in _ROUTES else "other"
            self.metrics.http_requests.labels(route, str(status[0])).inc()
            self.metrics.http_latency.labels(route).observe(time.perf_counter() - start)


def create_app(settings: GateSettings, gate: Gate | None = None) -> FastAPI:
    """The ASGI app. Plugins load (and bad config fails) here, before the server accepts traffic."""
    gate = gate or Gate.from_settings(settings)
    token = load_token(settings)
    audit_settings = settings.server.audit
    if settings.server.workers > 1:  # one file per worker process: no two processes rotate one file
        path = audit_settings.path
        audit_settings = audit_settings.model_copy(update={"path": path.with_name(f"{path.stem}-{os.getpid()}{path.suffix}")})
    audit = AuditLog(audit_settings) if audit_settings.enabled else None
    raw_text = audit_settings.raw_text

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        log.info("started", plugins=[p.name for p in gate.plugins], auth=token is not None,
                 audit=str(audit.path) if audit else None)
        yield
        # Uvicorn has let in-flight requests finish; their audit lines are written. Make them durable.
        if audit is not None:
            audit.close()
        gate.close()
        log.info("stopped", audited=audit.written if audit else 0)

    app = FastAPI(
        title="waltz-gate",
        version="0.1.0",
        description="Safety gate sidecar: check an agent's response before it goes out.",
        lifespan=lifespan,
    )
    app.add_middleware(_BodyLimit, limit=settings.server.max_body_bytes)
    app.add_middleware(_HttpMetrics, metrics=gate.metrics)
    app.state.gate, app.state.audit = gate, audit

    def require_token(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})

    async def run_check(request: CheckRequest) -> Verdict:
        # Stage 1 runs on the event loop (microseconds); Stage 2 runs on its own workers and is awaited, so
        # no thread waits per request. Only an fsync per audit line blocks long enough to need a thread.
        verdict = await gate.check_async(request)
        if audit is not None:
            line = record(request, verdict, raw_text)
            if fsync_each:
                await anyio.to_thread.run_sync(audit.write, line)
            else:
                audit.write(line)
        return verdict

    fsync_each = audit is not None and audit_settings.fsync == "always"

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            return JSONResponse({"detail": "request body is not valid JSON."}, status_code=400)
        if isinstance(first.get("input"), bytes | bytearray):
            return JSONResponse({"detail": "request body must be JSON (Content-Type: application/json)."}, 400)
        loc = ".".join(str(x) for x in first["loc"] if x != "body") or "body"
        return JSONResponse({"detail": f"{loc}: {first['msg']}."}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if _TOO_LARGE in request.scope:
            return _too_large(request.scope[_TOO_LARGE])
        detail = exc.detail if exc.status_code != 400 else "request body could not be parsed (is it UTF-8 JSON?)."
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", path=request.url.path, error=f"{type(exc).__name__}: {exc}")
        return JSONResponse({"detail": "internal error; the server log has details."}, status_code=500)

    @app.post("/v1/check", responses={200: {"model": Verdict}}, dependencies=[Depends(require_token)])
    async def check(request: CheckRequest) -> Response:
        verdict = await run_check(request)
        if verdict.stage2.mode == Stage2Mode.ENFORCE and any(f.status == Status.SHED for f in verdict.findings):
            # Admission control: Stage 2 could not judge this in time. Tell the caller to back off rather
            # than hand back an unchecked answer; the audit log has the shed verdict.
            retry = gate.retry_after_s()
            return JSONResponse({"detail": f"Stage 2 is overloaded and this check was shed; retry after {retry} s.",
                                 "retry_after_s": retry}, status_code=503, headers={"Retry-After": str(retry)})
        return Response(verdict.model_dump_json(), media_type="application/json")

    @app.post("/v1/check/batch", responses={200: {"model": BatchVerdicts}}, dependencies=[Depends(require_token)])
    async def check_batch(batch: BatchRequest) -> Response:
        if len(batch.items) > settings.server.max_batch:
            raise HTTPException(422, f"items: at most {settings.server.max_batch} items per batch (got {len(batch.items)}).")
        verdicts: list[str] = [""] * len(batch.items)

        async def one(i: int, item: CheckRequest) -> None:
            verdicts[i] = (await run_check(item)).model_dump_json()

        async with anyio.create_task_group() as tg:
            for i, item in enumerate(batch.items):
                tg.start_soon(one, i, item)
        return Response('{"verdicts":[' + ",".join(verdicts) + "]}", media_type="application/json")

    @app.get("/v1/plugins", dependencies=[Depends(require_token)])
    async def list_plugins() -> list[dict]:
        ready = gate.ready()
        return [
            {"name": p.name, "stage": p.stage, "description": p.description, "ready": ready[p.name],
             "timeout_ms": p.timeout_s * 1000}
            for p in gate.plugins
        ]

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        plugins = gate.ready()
        audit_ok = audit is None or audit.writable()
        ok = all(plugins.values()) and audit_ok
        body = {"status": "ready" if ok else "not ready", "plugins": plugins, "audit": audit_ok}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        registry = gate.metrics.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # several workers: merge their metrics
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn (``gate.server:app_from_env``): config path from WALTZ_GATE_CONFIG."""
    settings = load_settings(os.environ.get(CONFIG_ENV) or None)
    logs.configure(access_log=settings.server.access_log)
    return create_app(settings)
