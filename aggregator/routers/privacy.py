"""``/v1/privacy``: the privacy budget spent by the deployment, from the signed lineage."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from aggregator.deps import RegistryDep, SessionDep, SettingsDep
from aggregator.schemas import PrivacyOut


def build() -> APIRouter:
    """Router for ``/v1/privacy``."""
    router = APIRouter(prefix="/v1", tags=["privacy"])

    @router.get("/privacy", response_model=PrivacyOut)
    def privacy(request: Request, session: SessionDep, registry: RegistryDep,
                settings: SettingsDep) -> PrivacyOut:
        """Epsilon spent (at the configured delta) and the budget left, per the latest version."""
        dp = settings.dp_config()
        latest = registry.latest(session)
        entry: dict[str, Any] = dict((latest.privacy or {}).get("dp") or {}) if latest else {}
        service = getattr(request.app.state, "rounds", None)
        exhausted = getattr(service, "budget_exhausted", "") if service is not None else ""
        if dp is None and not entry:
            return PrivacyOut(enabled=False, epsilon=0.0, remaining=None, rounds=0,
                              model_version=None if latest is None else latest.version,
                              exhausted=exhausted)
        budget = dp.epsilon_budget if dp is not None else entry.get("epsilon_budget")
        spent = float(entry.get("epsilon", 0.0))
        return PrivacyOut(
            enabled=dp is not None,
            mechanism=dp.mechanism if dp else entry.get("mechanism"),
            noise_multiplier=dp.noise_multiplier if dp else entry.get("noise_multiplier"),
            l2_clip=dp.l2_clip if dp else entry.get("l2_clip"),
            sampling_rate=dp.sampling_rate if dp else entry.get("sampling_rate"),
            delta=dp.delta if dp else entry.get("delta"),
            epsilon=spent, epsilon_budget=budget,
            remaining=None if budget is None else max(0.0, float(budget) - spent),
            rounds=int(entry.get("rounds", 0)),
            model_version=None if latest is None else latest.version, exhausted=exhausted)

    return router
