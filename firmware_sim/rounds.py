"""The simulator's operator seat: runs the aggregator's orchestrator round by round and measures.

Each round is timed three ways (``firmware_sim.roundtiming``): training (the slowest
participant's local training), protocol (CPU time inside the secure-aggregation state machines:
the server core plus the busiest gateway core), and transport (the rest of the round's wall time:
model download, MQTT hops, the server update, and on one machine waiting for a CPU), with the
round's critical path laid out in time. The securely recovered sum is compared with the exact sum
of the survivors' quantized updates, and the new global model is evaluated on held-out patients.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from aggregator.db import Gateway
from aggregator.orchestrator import Orchestrator, SelectionConfig
from aggregator.privacy import BudgetExhaustedError
from aggregator.round_runner import RoundRunner
from aggregator.secagg import Outbound, SecAggServer
from aggregator.signing import load_or_create_signing_key
from aggregator.strategy import StrategyConfig
from firmware_sim.roundtiming import DEFINITIONS, round_figures, summary
from native import keys, mask
from native.errors import FedgateError, TransportError
from native.transport import Transport, TransportConfig

if TYPE_CHECKING:
    from firmware_sim.sim import AggregatorService, Fleet, SimConfig

log = logging.getLogger(__name__)


# Gateways weighted by their training beats: a 30-minute record holds at most about 3,000.
SAMPLE_WEIGHT_CAP = 4095


class TimedServer(SecAggServer):
    """The server core, with the time spent inside it accumulated (for the report).

    ``cpu_s`` is CPU time of the calling thread (plus the crypto pool's work for it),
    ``busy_s`` wall time, which also counts waiting for a CPU or the GIL.
    """

    busy_s = 0.0
    cpu_s = 0.0

    @contextmanager
    def _timed(self) -> Iterator[None]:
        wall, cpu = time.perf_counter(), keys.caller_cpu_s()
        try:
            yield
        finally:
            self.cpu_s += keys.caller_cpu_s() - cpu
            self.busy_s += time.perf_counter() - wall

    def open_round(self, *args: Any, **kwargs: Any) -> Outbound:
        with self._timed():
            return super().open_round(*args, **kwargs)

    def receive(self, data: bytes) -> int:
        with self._timed():
            return super().receive(data)

    def receive_many(self, batch: Sequence[bytes]) -> list[int | FedgateError]:
        with self._timed():
            return super().receive_many(batch)

    def close_stage(self) -> list[Outbound]:
        with self._timed():
            return super().close_stage()


class RoundDriver:
    """Runs ``cfg.rounds`` rounds over the fleet and returns the report dict."""

    def __init__(self, agg: AggregatorService, fleet: Fleet, cfg: SimConfig, broker_url: str,
                 holdout: Any) -> None:
        from models import artifacts, graph

        self.agg, self.fleet, self.cfg = agg, fleet, cfg
        self.holdout = holdout
        self.art = artifacts.ensure(cfg.model)
        state = agg.app.state
        self.db, self.registry = state.db, state.registry
        with self.db.session() as session:
            rows = list(session.scalars(select(Gateway).where(Gateway.revoked_at.is_(None))))
        self.gateways = {g.pid: g.id for g in rows}
        key = load_or_create_signing_key(agg.settings.signing_key_path)
        self.server = TimedServer(key, {g.pid: g.public_key for g in rows})
        self.transport = Transport(
            TransportConfig.from_url(broker_url, f"agg-{uuid.uuid4().hex[:8]}", presence=False),
            on_reject=lambda reason, _topic: state.metrics.reject("transport", reason))
        self.runner = RoundRunner(self.transport, self.server, self.gateways, self.db,
                                  state.metrics)
        n = len(self.gateways)
        self.secagg: dict[str, Any] = {"quant_bits": cfg.quant_bits, "clip": cfg.clip}
        if cfg.weighting == "samples":
            self.secagg["max_weight"] = SAMPLE_WEIGHT_CAP
        if cfg.secagg == "plus":
            self.secagg["degree"] = plus_degree(n, cfg.neighbours)
        self.orch = Orchestrator(self.runner, self.db, self.registry, cfg.model,
                                 StrategyConfig(cfg.strategy, server_lr=cfg.server_lr,
                                                decay=cfg.server_lr_decay,
                                                decay_from_round=cfg.server_lr_decay_from),
                                 SelectionConfig(min_participants=min(3, n)), self.secagg,
                                 privacy=cfg.dp_config())
        spec = self.art.spec
        self.orch.ensure_initial(graph.flatten(spec, graph.initial_params(spec)))

    def start(self) -> None:
        """Connect the aggregator's MQTT side and wait for every gateway's presence."""
        self.transport.start()
        self._await_online(60.0)

    def run(self, say: Callable[[str], None]) -> dict[str, Any]:
        try:
            self.start()
            initial = self._evaluate(1)
            say(f"round 0: held-out macro-F1 {initial['macro_f1']:.3f}")
            rounds = []
            for _ in range(self.cfg.rounds):
                try:
                    row = self.run_round()
                except BudgetExhaustedError as exc:
                    say(f"training stops: {exc}")
                    break
                rounds.append(row)
                say(_progress_line(row, self.cfg.rounds))
            final = self._export()
        finally:
            self.transport.stop()
        return {"config": _config_dict(self.cfg), "secagg": self.secagg,
                "parameters": int(self.art.manifest.parameter_count),
                "initial": {"model_version": 1, "metrics": initial}, "rounds": rounds,
                "summary": summary(rounds, int(self.art.manifest.parameter_count)),
                "final": final, "definitions": DEFINITIONS}

    def _await_online(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.runner.idle(0.2)
            if set(self.gateways) <= self.runner.online:
                return
        missing = sorted(set(self.gateways) - self.runner.online)
        raise TransportError(f"gateways {missing} never came online")

    def run_round(self) -> dict[str, Any]:
        """One orchestrated round among the online gateways, measured and checked."""
        busy0, cpu0 = self.server.busy_s, self.server.cpu_s
        t0 = time.monotonic()
        candidates = sorted(self.runner.online & set(self.gateways))
        rep = self.orch.run_round(candidates, self.cfg.stage_timeout_s)
        wall = time.monotonic() - t0
        out = rep.outcome
        row: dict[str, Any] = {
            "round": out.round_no, "base_version": rep.base_version,
            "model_version": rep.new_version, "selected": out.selected,
            "participants": len(out.result.included) if out.result else 0,
            "dropouts": out.dropouts, "outcome": "completed" if out.result else "aborted",
            "abort_reason": out.abort_reason, "wall_s": round(wall, 4),
            "stage_s": out.timings,
        }
        stats = [d.stats[out.round_no] for d in self.fleet.daemons if out.round_no in d.stats]
        row.update(round_figures(t0, wall, stats, self.server.cpu_s - cpu0,
                                 self.server.busy_s - busy0, rep.extra.get("timings", {})))
        if out.result is not None:
            row["aggregate_exact"] = self.exact(out.round_no, out.result)
        if rep.new_version is not None:
            row["metrics"] = self._evaluate(rep.new_version)
            row["privacy"] = self._privacy(rep.new_version)
        self.runner.idle(0.2)  # presence updates that arrived at the end of the round
        return row

    def exact(self, round_no: int, result: Any) -> bool:
        """Whether the recovered sum is the exact sum of the survivors' quantized updates."""
        by_pid = {d.enrollment.pid: d for d in self.fleet.daemons if d.enrollment is not None}
        qs = [by_pid[p].quantized.get(round_no) for p in result.included if p in by_pid]
        if len(qs) != len(result.included) or any(q is None for q in qs):
            return False
        bits = self.server.state.config.ring_bits if self.server.state.config else 0
        expected = mask.ring_sum(np.stack(qs), bits)  # type: ignore[arg-type]
        return bool(np.array_equal(result.total, expected))

    def _privacy(self, version: int) -> dict[str, Any] | None:
        """Epsilon of the round and so far, from the version's signed ledger entry."""
        with self.db.session() as session:
            row = self.registry.get(session, version)
            entry = None if row is None else (row.privacy or {}).get("dp")
        if not entry:
            return None
        return {k: entry[k] for k in ("epsilon_round", "epsilon", "delta", "noise_multiplier",
                                      "l2_clip", "sampling_rate", "rounds")}

    def _evaluate(self, version: int) -> dict[str, Any]:
        from models.evaluate import evaluate

        inputs, labels = self.holdout
        res = evaluate(self.art, self.orch.params_of(version), inputs, labels)
        d = res.to_dict()
        return {"loss": d.get("loss"), "accuracy": d.get("accuracy"),
                "macro_f1": d.get("macro_f1"), "f1": d.get("f1"), "samples": int(labels.size),
                "sensitivity": d.get("sensitivity"), "ppv": d.get("ppv"),
                "confusion": d.get("confusion")}

    def _export(self) -> dict[str, Any]:
        import hashlib
        import json

        latest = json.loads(self.agg.get("/v1/models/latest"))
        version = int(latest["version"])
        blob = self.agg.get(f"/v1/models/{version}/inference")
        if hashlib.sha256(blob).hexdigest() != latest["inference"]["sha256"]:
            raise TransportError("downloaded inference model does not match its manifest")
        path = self.cfg.out / "global_model.onnx"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)
        return {"model_version": version, "path": str(path), "sha256": latest["inference"][
            "sha256"], "lineage": latest["lineage"], "metrics": self._evaluate(version)}


def plus_degree(n: int, neighbours: int | None) -> int:
    """SecAgg+ neighbourhood size: even, below n - 1 (n - 1 would be the complete graph)."""
    want = neighbours if neighbours is not None else 10
    largest = n - 2 if n % 2 == 0 else n - 3
    degree = min(want, largest)
    if degree < 2:
        from native.errors import ConfigError

        raise ConfigError(f"SecAgg+ needs at least 5 gateways for a sparse graph, have {n}")
    return degree - degree % 2


def _config_dict(cfg: SimConfig) -> dict[str, Any]:
    plain = (int, float, str, list, type(None))
    return {k: list(v) if isinstance(v, tuple) else v if isinstance(v, plain) else str(v)
            for k, v in asdict(cfg).items()}


def _progress_line(row: dict[str, Any], total: int) -> str:
    f1 = (row.get("metrics") or {}).get("macro_f1")
    return (f"round {row['round']}/{total}: {row['outcome']}, {row['participants']} of "
            f"{row['selected']} gateways, {row['wall_s']:.2f} s (train {row['training_s']:.2f}, "
            f"protocol {row['protocol_s']:.2f}, transport {row['transport_s']:.2f}), "
            f"held-out macro-F1 {f1 if f1 is None else round(f1, 3)}")
