"""Rounds as the orchestrator records them: list, and one round's stage, counts and timings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy import func, select

from aggregator.db import Round
from aggregator.deps import ApiError, SessionDep, errors
from aggregator.schemas import RoundList, RoundOut

MAX_ID = 2**63 - 1


def build() -> APIRouter:
    """Router for ``/v1/rounds``."""
    router = APIRouter(prefix="/v1", tags=["rounds"])

    @router.get("/rounds", response_model=RoundList)
    def list_rounds(
        session: SessionDep,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    ) -> RoundList:
        """Rounds, newest first."""
        total = session.scalar(select(func.count()).select_from(Round)) or 0
        rows = session.scalars(select(Round).order_by(Round.id.desc()).limit(limit).offset(offset))
        return RoundList(total=total, rounds=[RoundOut.of(row) for row in rows])

    @router.get("/rounds/{round_id}", response_model=RoundOut, responses=errors(404))
    def get_round(session: SessionDep,
                  round_id: Annotated[int, Path(ge=0, le=MAX_ID)]) -> RoundOut:
        """One round: stage, outcome, selected / participants / dropouts, seconds per stage."""
        row = session.get(Round, round_id)
        if row is None:
            raise ApiError(404, "round_not_found", f"no round {round_id}")
        return RoundOut.of(row)

    return router
