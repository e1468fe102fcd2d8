"""The aggregator's FastAPI app factory.

``create_app(settings)`` builds everything inside the lifespan: the database (tables created if
absent, so a restart on the same database keeps enrollments and the model history), the signing
key, the model registry and the metrics. Nothing is built at import time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from starlette.exceptions import HTTPException as StarletteHTTPException

from aggregator.db import Database, ModelVersion
from aggregator.deps import ApiError
from aggregator.metrics import Metrics
from aggregator.registry import ModelRegistry
from aggregator.routers import enroll, evaluations, health, models, privacy, rounds
from aggregator.settings import AggregatorSettings
from aggregator.signing import load_or_create_signing_key
from native.errors import FedgateError

log = logging.getLogger(__name__)


def create_app(settings: AggregatorSettings) -> FastAPI:
    """Build the aggregator's ASGI app for ``settings``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.database_url, settings.database_schema)
        db.create_all()
        key = load_or_create_signing_key(settings.signing_key_path)
        app.state.db = db
        app.state.registry = ModelRegistry(key, settings.max_blob_bytes)
        with db.session() as session:
            count = session.scalar(select(func.count()).select_from(ModelVersion)) or 0
        app.state.metrics.model_versions.set(count)
        app.state.rounds = None
        if settings.rounds != 0:
            from aggregator.background import RoundService

            app.state.rounds = RoundService(settings, db, app.state.registry,
                                            app.state.metrics, key)
            app.state.rounds.start()
        log.info("aggregator ready: %d model versions, database %s", count,
                 db.engine.url.render_as_string())
        try:
            yield
        finally:
            if app.state.rounds is not None:
                app.state.rounds.stop()
            db.dispose()

    app = FastAPI(
        title="fedgate aggregator", version="1", lifespan=lifespan,
        description="Enrollment, rounds and signed model versions of a fedgate deployment.",
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    for module in (health, enroll, rounds, models, privacy, evaluations):
        app.include_router(module.build())
    _install_handlers(app)
    return app


def _install_handlers(app: FastAPI) -> None:
    metrics: Metrics = app.state.metrics

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        metrics.reject("http", exc.reason)
        return JSONResponse({"error": exc.reason, "detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(FedgateError)
    async def fedgate_error(request: Request, exc: FedgateError) -> Response:
        # A stored blob or signature that fails verification is a server-side fault, but it
        # is still reported with a reason and counted, not as an anonymous 500.
        reason = type(exc).__name__
        metrics.reject("http", reason)
        log.error("%s on %s: %s", reason, request.url.path, exc)
        return JSONResponse({"error": reason, "detail": str(exc)}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        metrics.reject("http", _validation_reason(exc))
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        metrics.reject("http", f"http_{exc.status_code}")
        return await http_exception_handler(request, exc)

    @app.middleware("http")
    async def count_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics.http_requests.labels(request.method, template, str(response.status_code)).inc()
        return response


# Metric labels must stay a bounded set: only known field names become part of a reason.
_FIELDS = frozenset({"code", "public_key", "proof", "label", "ttl_s", "limit", "offset",
                     "version", "round_id", "gateway_id", "report", "signature"})


def _validation_reason(exc: RequestValidationError) -> str:
    errors = exc.errors()
    loc = errors[0].get("loc", ()) if errors else ()
    field = str(loc[-1]) if loc else ""
    return f"invalid_{field}" if field in _FIELDS else "validation_error"
