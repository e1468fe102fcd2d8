"""Where one simulated round's wall time went, from the clocks the parts keep.

The orchestrator splits its ``run_round`` into setup, aggregation and update; each gateway marks
its milestones (``edge_client.daemon.RoundStats.marks``: round config in hand, training started,
model downloaded, local data ready, fit done, MASKED_INPUT published, round over) and counts the
CPU time spent inside its secure-aggregation core; the server core counts its own. From these the
round is split three ways (``DEFINITIONS``) and its critical path is laid out in time.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class GatewayRound(Protocol):
    """What the figures read from one gateway's ``RoundStats``."""

    train_s: float
    fit_cpu_s: float
    download_s: float
    protocol_s: float
    protocol_wall_s: float
    bytes_up: int
    bytes_down: int
    model_bytes: int
    samples: int
    error: str
    marks: dict[str, float]


def _latest(stats: Sequence[GatewayRound], mark: str, t0: float) -> float | None:
    values = [s.marks[mark] - t0 for s in stats if mark in s.marks]
    return round(max(values), 4) if values else None


def critical_path(t0: float, stats: Sequence[GatewayRound],
                  timings: dict[str, float]) -> dict[str, float | None]:
    """Seconds from the round's start: when the last gateway had the config, had its model, had
    its update, published it; when the aggregate was ready; and how long each gap took."""
    aggregated = timings.get("setup_s", 0.0) + timings.get("aggregate_s", 0.0)
    last_masked = _latest(stats, "masked", t0)
    return {
        "setup_s": round(timings.get("setup_s", 0.0), 4),
        "last_config_at_s": _latest(stats, "config", t0),
        "last_download_at_s": _latest(stats, "downloaded", t0),
        "last_fit_at_s": _latest(stats, "trained", t0),
        "last_masked_input_at_s": last_masked,
        "aggregate_at_s": round(aggregated, 4),
        "unmask_after_last_input_s": None if last_masked is None else round(
            aggregated - last_masked, 4),
        "update_s": round(timings.get("update_s", 0.0), 4),
    }


def round_figures(t0: float, wall: float, stats: Sequence[GatewayRound], server_cpu_s: float,
                  server_wall_s: float, timings: dict[str, float]) -> dict[str, Any]:
    """The report's timing and traffic figures of one round (``DEFINITIONS``)."""
    train = [s.train_s for s in stats] or [0.0]
    training = min(wall, max(train))
    gateway_cpu = max([s.protocol_s for s in stats] or [0.0])
    protocol = min(wall - training, server_cpu_s + gateway_cpu)
    return {
        "training_s": round(training, 4), "training_mean_s": round(float(np.mean(train)), 4),
        "fit_cpu_max_s": round(max([s.fit_cpu_s for s in stats] or [0.0]), 4),
        "fit_cpu_total_s": round(sum(s.fit_cpu_s for s in stats), 4),
        "protocol_s": round(protocol, 4), "protocol_server_s": round(server_cpu_s, 4),
        "protocol_gateway_max_s": round(gateway_cpu, 4),
        "protocol_cpu_total_s": round(server_cpu_s + sum(s.protocol_s for s in stats), 4),
        "protocol_wall_server_s": round(server_wall_s, 4),
        "protocol_wall_gateway_max_s": round(max([s.protocol_wall_s for s in stats] or [0.0]), 4),
        "transport_s": round(max(0.0, wall - training - protocol), 4),
        "download_max_s": round(max([s.download_s for s in stats] or [0.0]), 4),
        "critical_path": critical_path(t0, stats, timings),
        "bytes_up": sum(s.bytes_up for s in stats),
        "bytes_down": sum(s.bytes_down for s in stats),
        "model_download_bytes": sum(s.model_bytes for s in stats),
        "samples": sum(s.samples for s in stats),
        "gateway_errors": sorted({s.error for s in stats if s.error}),
    }


def summary(rows: Sequence[dict[str, Any]], n_params: int) -> dict[str, Any]:
    """Medians over the completed rounds (each part's median taken separately)."""
    done = [r for r in rows if r.get("outcome") == "completed"]
    if not done:
        return {"completed_rounds": 0}

    def med(key: str) -> float:
        return round(statistics.median(float(r[key]) for r in done), 4)

    per_gateway = [r["bytes_up"] / max(1, r["participants"]) for r in done]
    down = [r["bytes_down"] / max(1, r["participants"]) for r in done]
    wall = med("wall_s")
    return {
        "completed_rounds": len(done), "median_wall_s": wall, "median_training_s":
        med("training_s"), "median_protocol_s": med("protocol_s"),
        "median_transport_s": med("transport_s"),
        "protocol_plus_transport_share": round(
            statistics.median((r["protocol_s"] + r["transport_s"]) / r["wall_s"] for r in done), 4),
        "uplink_bytes_per_param_per_gateway": round(statistics.median(per_gateway) / n_params, 4),
        "downlink_mqtt_bytes_per_gateway": round(statistics.median(down)),
        "model_download_bytes_per_gateway": round(statistics.median(
            r["model_download_bytes"] / max(1, r["participants"]) for r in done)),
        "all_exact": all(r.get("aggregate_exact") is True for r in done),
    }


DEFINITIONS = {
    "wall_s": "the orchestrator's run_round: base version and selection, the secure-aggregation "
              "round over MQTT, then the server update (strategy, inference model, signed "
              "registration); critical_path.* are seconds from its start",
    "training_s": "slowest participant's local training: its local data plus the fit, from its "
                  "model download to the update in hand (wall clock; on one machine this "
                  "includes waiting for a CPU: every gateway's fit shares the sim's training "
                  "worker processes); fit_cpu_* is the CPU time of the fits themselves",
    "protocol_s": "CPU time inside the secure-aggregation cores on the critical path: the server "
                  "core plus the busiest gateway core, each as thread CPU time (time.thread_time "
                  "of the calling thread plus the crypto pool's work for it), capped at "
                  "wall_s - training_s; protocol_cpu_total_s adds every gateway core, "
                  "protocol_wall_* are the wall seconds spent in the same calls",
    "transport_s": "wall_s - training_s - protocol_s: the model download over HTTP, MQTT hops "
                   "and stage hand-offs, the server update, and (one process, one GIL for the "
                   "protocol threads of every simulated gateway) waiting for a CPU",
    "bytes_up": "MQTT bytes published by the participants for the round (payload + 104-byte "
                "transport header per message)",
    "bytes_down": "MQTT bytes delivered to the participants for the round",
    "model_download_bytes": "checkpoint bytes downloaded over HTTPS/HTTP by the participants",
    "aggregate_exact": "securely recovered sum == exact ring sum of the survivors' quantized "
                       "updates",
    "metrics": "global model on held-out patients (never seen by any gateway)",
}
