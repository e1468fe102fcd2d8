"""Federated rounds end to end on the aggregator: select, aggregate securely, update, sign.

Each round: pick participants among the candidates (fraction, min/max, over-selection, drawn with
the OS CSPRNG), run the secure-aggregation round over MQTT (``RoundRunner``), turn the recovered
weighted mean of the clipped deltas into new global parameters with the configured server
strategy, and register them as the next signed model version whose parent is the round's base.
The checkpoint blob of a version is its flat parameter vector as little-endian float32; the
inference blob is the plain ONNX model from ``models.export``. A gateway trains on the latest
version at the time a round is announced: the orchestrator registers a round's result before it
announces the next round.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, select

from aggregator.db import Database, ModelVersion, Round
from aggregator.privacy import DPConfig, PrivacyLedger, poisson_select
from aggregator.registry import ModelRegistry
from aggregator.round_runner import RoundOutcome, RoundRunner
from aggregator.strategy import F32, OptimizerState, StrategyConfig, apply
from native.errors import InputError, IntegrityError, RoundAbortedError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelectionConfig:
    """How many of the available gateways a round asks to take part."""

    fraction: float = 1.0
    min_participants: int = 3
    max_participants: int = 256
    over_selection: float = 0.0  # extra share selected to absorb expected dropouts

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1 or not 0 <= self.over_selection <= 1:
            raise InputError("need 0 < fraction <= 1 and 0 <= over_selection <= 1")
        if not 1 <= self.min_participants <= self.max_participants:
            raise InputError("need 1 <= min_participants <= max_participants")


def select_participants(candidates: Sequence[int], config: SelectionConfig) -> list[int]:
    """A uniformly random subset (CSPRNG) sized by ``config``; too few candidates abort."""
    pool = sorted(set(candidates))
    if len(pool) < config.min_participants:
        raise RoundAbortedError(
            f"{len(pool)} gateways available, the round needs {config.min_participants}"
        )
    k = max(config.min_participants, math.ceil(config.fraction * len(pool)))
    k = min(config.max_participants, math.ceil(k * (1 + config.over_selection)), len(pool))
    return sorted(secrets.SystemRandom().sample(pool, k))


@dataclass
class RoundReport:
    """One orchestrated round: the transport-level outcome and the model version it produced."""

    outcome: RoundOutcome
    base_version: int
    new_version: int | None
    extra: dict[str, Any] = field(default_factory=dict)


class Orchestrator:
    """Owns the global model of one deployment and runs its rounds one after another."""

    def __init__(self, runner: RoundRunner, db: Database, registry: ModelRegistry, model: str,
                 strategy: StrategyConfig, selection: SelectionConfig,
                 secagg: dict[str, Any], privacy: DPConfig | None = None) -> None:
        self.runner = runner
        self.db = db
        self.registry = registry
        self.model = model
        self.strategy = strategy
        self.selection = selection
        self.secagg = dict(secagg)
        # Adaptive-optimizer moments live in memory: after a restart they start again from zero.
        self.optimizer = OptimizerState()
        self.privacy = privacy
        self._ledger: PrivacyLedger | None = None

    @property
    def ledger(self) -> PrivacyLedger | None:
        """The privacy ledger, rebuilt from the latest signed version on first use."""
        if self.privacy is None:
            return None
        if self._ledger is None:
            with self.db.session() as session:
                latest = self.registry.latest(session)
                stored = None if latest is None else dict(latest.privacy)
            self._ledger = PrivacyLedger(self.privacy, stored)
        return self._ledger

    def ensure_initial(self, params: F32) -> int:
        """Register ``params`` as version 1 when the registry is empty; return the latest."""
        with self.db.session() as session:
            latest = self.registry.latest(session)
            if latest is not None:
                return latest.version
            row = self._register(session, params, parent=None, round_no=None, participants=0)
            return row.version

    def recover(self) -> list[int]:
        """Abort rounds a crashed predecessor left open (call once at start); their numbers."""
        return self.runner.recover_unfinished()

    def params_of(self, version: int) -> F32:
        """The flat parameters stored in a version's checkpoint (verified against its sha256)."""
        with self.db.session() as session:
            row = self.registry.get(session, version)
            if row is None:
                raise InputError(f"no model version {version}")
            blob = self.registry.blob(session, row, "checkpoint")
        if blob is None or len(blob) % 4:
            raise IntegrityError(f"model version {version} has no float32 checkpoint")
        return np.frombuffer(blob, dtype="<f4").astype(np.float32)

    def next_round_no(self) -> int:
        """Round numbers continue from the database, so a restart never reuses one."""
        with self.db.session() as session:
            return int(session.scalar(select(func.max(Round.id))) or 0) + 1

    def run_round(self, candidates: Sequence[int], stage_timeout_s: float) -> RoundReport:
        """Run one round on the latest version; register the result if the round completes.

        ``extra["timings"]`` splits the call's wall time: ``setup_s`` (base version, selection),
        ``aggregate_s`` (the secure-aggregation round over MQTT) and ``update_s`` (server
        strategy, inference model, signed registration).
        """
        started = time.monotonic()
        with self.db.session() as session:
            base = self.registry.latest(session)
            if base is None:
                raise InputError("no global model yet: call ensure_initial() first")
            base_version = base.version
            base_sha = base.checkpoint_sha256
        params = self.params_of(base_version)
        round_no = self.next_round_no()
        config = dict(self.secagg, vector_len=int(params.size))
        if base_sha is not None:  # the signed config names the model the round trains
            config.update(model_version=base_version, model_sha256=bytes.fromhex(base_sha))
        ledger, noise = self.ledger, None
        if ledger is None:
            participants = select_participants(candidates, self.selection)
        else:
            sel = self.selection
            participants = poisson_select(candidates, ledger.config.sampling_rate,
                                          sel.min_participants, sel.max_participants)
            config.update(self._noise_config(ledger, len(participants), int(params.size)))
            noise = config["noise"].params(config["threshold"], int(params.size))
            ledger.check_budget(noise)
        opened = time.monotonic()
        outcome = self.runner.run(round_no, participants, stage_timeout_s=stage_timeout_s,
                                  **config)
        aggregated = time.monotonic()
        timings = {"setup_s": opened - started, "aggregate_s": aggregated - opened}
        if outcome.result is None:
            return RoundReport(outcome, base_version, None, {"timings": timings})
        delta = outcome.result.weighted_mean()
        new_params, self.optimizer = apply(self.strategy, params, delta, self.optimizer,
                                           round_no)
        spent = None if ledger is None or noise is None else ledger.spend(noise)
        with self.db.session() as session:
            row = self._register(session, new_params, parent=base_version, round_no=round_no,
                                 participants=len(outcome.result.included), dp=spent)
            version = row.version
            stored = session.get(Round, round_no)
            if stored is not None:
                stored.model_version = version
        log.info("round %d -> model version %d", round_no, version)
        timings["update_s"] = time.monotonic() - aggregated
        return RoundReport(outcome, base_version, version, {"timings": timings})

    def _noise_config(self, ledger: PrivacyLedger, n: int, vector_len: int) -> dict[str, Any]:
        """Threshold, unweighted ring and the planned noise of a DP round among n gateways."""
        degree = int(self.secagg.get("degree") or n - 1)
        degree = n - 1 if degree >= n - 1 else degree
        threshold = int(self.secagg.get("threshold") or (degree + 1) // 2 + 1)
        clip = ledger.config.coordinate_clip(vector_len)
        noise = ledger.plan(quant_bits=int(self.secagg.get("quant_bits", 8)), clip=clip,
                            vector_len=vector_len, threshold=threshold, participants=n)
        return {"degree": degree, "threshold": threshold, "max_weight": 1, "noise": noise,
                "clip": clip}

    def _register(self, session: Any, params: F32, *, parent: int | None, round_no: int | None,
                  participants: int, dp: dict[str, Any] | None = None) -> ModelVersion:
        from models.export import inference_model_bytes

        flat = np.ascontiguousarray(params, dtype="<f4")
        return self.registry.register(  # privacy["dp"]: the signed ledger entry
            session, inference=inference_model_bytes(self.model, flat),
            checkpoint=flat.tobytes(), parent=parent, round_id=round_no,
            participants=participants,
            config={"model": self.model, "strategy": asdict(self.strategy),
                    "selection": asdict(self.selection),
                    "secagg": {k: v for k, v in self.secagg.items() if k != "clip"}},
            privacy={"clip": float(self.secagg.get("clip", 1.0)),
                     "quant_bits": int(self.secagg.get("quant_bits", 8)),
                     "secure_aggregation": True, "dp": dp or self._carried_dp(session)},
        )

    def _carried_dp(self, session: Any) -> dict[str, Any] | None:
        """A version made without a DP round (the first one) carries the ledger as it stands."""
        latest = self.registry.latest(session)
        return None if latest is None else latest.privacy.get("dp")
