"""``/health`` and ``/metrics``: liveness with a database check, and Prometheus text."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from aggregator.deps import DatabaseDep, MetricsDep
from aggregator.schemas import HealthOut


def build() -> APIRouter:
    """Router for the operational endpoints (outside ``/v1``: they are not versioned API)."""
    router = APIRouter(tags=["operations"])

    @router.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
    def health(db: DatabaseDep, response: Response) -> HealthOut:
        """200 when the database answers, 503 otherwise."""
        if db.ping():
            return HealthOut(status="ok", database="ok")
        response.status_code = 503
        return HealthOut(status="degraded", database="unreachable")

    @router.get(
        "/metrics", response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                         "description": "Prometheus text exposition format"}},
    )
    def metrics(metrics: MetricsDep) -> Response:
        """Every counter of this process, rejections by reason included."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
