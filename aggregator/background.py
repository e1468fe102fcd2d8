"""The unattended round loop of ``fedgate aggregator serve``, on a thread of its own.

Started by the app's lifespan when ``settings.rounds != 0``. It connects to the broker (and keeps
retrying while the broker is away), aborts rounds a previous process left open, makes sure a
version 1 exists, then repeatedly: refreshes the enrolled fleet from the database, follows
presence for ``round_pause_s``, and runs a round among the online gateways once enough are there.
CPU-heavy work (unmasking, the strategy, model export) stays off the request path.
"""

from __future__ import annotations

import logging
import threading

import nacl.signing
from sqlalchemy import select

from aggregator.db import Database, Gateway
from aggregator.metrics import Metrics
from aggregator.orchestrator import Orchestrator, SelectionConfig
from aggregator.privacy import BudgetExhaustedError
from aggregator.registry import ModelRegistry
from aggregator.round_runner import RoundRunner, RunnerStopped
from aggregator.secagg import SecAggServer
from aggregator.settings import AggregatorSettings
from aggregator.strategy import F32, StrategyConfig
from native.errors import FedgateError, TransportError
from native.transport import Transport, TransportConfig

log = logging.getLogger(__name__)


class RoundService:
    """Owns the aggregator's MQTT connection and its round loop."""

    def __init__(self, settings: AggregatorSettings, db: Database, registry: ModelRegistry,
                 metrics: Metrics, signing_key: nacl.signing.SigningKey) -> None:
        self.settings = settings
        self.db = db
        self.metrics = metrics
        self.transport = Transport(
            TransportConfig.from_url(settings.mqtt_url, settings.mqtt_client_id, presence=False),
            on_reject=lambda reason, _topic: metrics.reject("transport", reason),
        )
        self.runner = RoundRunner(self.transport, SecAggServer(signing_key, {}), {}, db, metrics)
        self.orchestrator = Orchestrator(
            self.runner, db, registry, settings.model,
            StrategyConfig(settings.strategy, server_lr=settings.server_lr,
                           decay=settings.server_lr_decay,
                           decay_from_round=settings.server_lr_decay_from),
            SelectionConfig(settings.fraction, settings.min_participants,
                            settings.max_participants, settings.over_selection),
            {"quant_bits": settings.quant_bits, "clip": settings.clip}
            | ({"degree": settings.secagg_degree} if settings.secagg_degree else {}),
            privacy=settings.dp_config(),
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fedgate-rounds", daemon=True)
        self.completed = 0
        self.budget_exhausted = ""

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Interrupt any round (it is aborted cleanly at the next start) and disconnect."""
        self._stop.set()
        self.runner.cancel()
        self._thread.join(timeout)
        self.transport.stop()

    def _run(self) -> None:
        try:
            self._connect()
            self.orchestrator.recover()
            self.metrics.model_versions.set(
                self.orchestrator.ensure_initial(self._initial_params()))
            while not self._stop.is_set() and self._wanted():
                self._refresh_fleet()
                self.runner.idle(self.settings.round_pause_s)
                candidates = sorted(self.runner.online & set(self.runner.gateways))
                if len(candidates) < self.settings.min_participants or self._stop.is_set():
                    continue
                try:
                    report = self.orchestrator.run_round(candidates,
                                                         self.settings.stage_timeout_s)
                    self.completed += 1
                    if report.new_version is not None:
                        self.metrics.model_versions.set(report.new_version)
                except RunnerStopped:
                    return
                except BudgetExhaustedError as exc:
                    # No further round may be released; the models so far stay served.
                    log.warning("training stops: %s", exc)
                    self.budget_exhausted = str(exc)
                    return
                except FedgateError as exc:
                    log.warning("round failed: %s", exc)
        except RunnerStopped:
            return
        except Exception:
            log.exception("the round loop stopped")

    def _wanted(self) -> bool:
        return self.settings.rounds < 0 or self.completed < self.settings.rounds

    def _connect(self) -> None:
        while not self._stop.is_set():
            try:
                self.transport.start(timeout=10.0)
                return
            except TransportError as exc:
                log.warning("waiting for the broker: %s", exc)
        raise RunnerStopped("stopped before the broker answered")

    def _refresh_fleet(self) -> None:
        with self.db.session() as session:
            rows = list(session.scalars(select(Gateway).where(Gateway.revoked_at.is_(None))))
        self.runner.set_gateways({g.pid: g.id for g in rows},
                                 {g.pid: g.public_key for g in rows})

    def _initial_params(self) -> F32:
        from models import graph
        from models.zoo import get_spec

        spec = get_spec(self.settings.model)
        return graph.flatten(spec, graph.initial_params(spec))
