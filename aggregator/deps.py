"""Request-scoped dependencies (``Annotated``) and the API's one error type."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from aggregator.db import Database
from aggregator.metrics import Metrics
from aggregator.registry import ModelRegistry
from aggregator.schemas import ErrorOut
from aggregator.settings import AggregatorSettings


class ApiError(Exception):
    """A refusal with an HTTP status, a bounded reason label and a readable detail."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the ErrorOut bodies a route can answer with."""
    return {status: {"model": ErrorOut} for status in statuses}


def _settings(request: Request) -> AggregatorSettings:
    settings: AggregatorSettings = request.app.state.settings
    return settings


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def _registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


def _database(request: Request) -> Database:
    database: Database = request.app.state.db
    return database


def _session(db: Annotated[Database, Depends(_database)]) -> Iterator[Session]:
    # Endpoints commit explicitly before they answer, so a 2xx always means "stored".
    session = db.new_session()
    try:
        yield session
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


SettingsDep = Annotated[AggregatorSettings, Depends(_settings)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
DatabaseDep = Annotated[Database, Depends(_database)]
SessionDep = Annotated[Session, Depends(_session)]
_bearer = HTTPBearer(auto_error=False, description="the operator's admin token")


def _require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if credentials is None:
        raise ApiError(401, "missing_admin_token", "send 'Authorization: Bearer <admin token>'")
    expected = settings.admin_token.get_secret_value().encode()
    if not hmac.compare_digest(credentials.credentials.encode(), expected):
        raise ApiError(403, "bad_admin_token", "the admin token is not valid")


AdminDep = Annotated[None, Depends(_require_admin)]
