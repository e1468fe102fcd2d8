"""The sim report's round split: training, protocol (CPU in the cores), transport (the rest),
the critical path from the gateways' marks, and the medians of a run."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from firmware_sim.roundtiming import DEFINITIONS, critical_path, round_figures, summary


@dataclass
class Stats:
    train_s: float = 0.0
    fit_cpu_s: float = 0.0
    download_s: float = 0.0
    protocol_s: float = 0.0
    protocol_wall_s: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    model_bytes: int = 0
    samples: int = 0
    error: str = ""
    marks: dict[str, float] = field(default_factory=dict)


def gateway(t0: float, train: float, cpu: float, masked_at: float, **kw: float) -> Stats:
    marks = {"config": t0 + 0.01, "train_start": t0 + 0.02, "downloaded": t0 + 0.1,
             "trained": t0 + masked_at - 0.001, "masked": t0 + masked_at}
    return Stats(train_s=train, protocol_s=cpu, marks=marks, bytes_up=2000, bytes_down=300,
                 **kw)  # type: ignore[arg-type]


def test_split_adds_up_and_protocol_is_cpu_on_the_critical_path() -> None:
    t0 = 1000.0
    stats = [gateway(t0, 0.5, 0.004, 0.62, protocol_wall_s=0.3),
             gateway(t0, 0.6, 0.007, 0.71, protocol_wall_s=0.1)]
    timings = {"setup_s": 0.01, "aggregate_s": 0.75, "update_s": 0.04}
    row = round_figures(t0, 0.8, stats, 0.02, 0.05, timings)
    assert row["training_s"] == 0.6
    assert row["protocol_s"] == pytest.approx(0.027)  # server CPU + the busiest gateway's CPU
    assert row["protocol_cpu_total_s"] == pytest.approx(0.031)
    assert row["protocol_wall_gateway_max_s"] == 0.3
    assert row["training_s"] + row["protocol_s"] + row["transport_s"] == pytest.approx(0.8)
    path = row["critical_path"]
    assert path["last_masked_input_at_s"] == pytest.approx(0.71)
    assert path["aggregate_at_s"] == pytest.approx(0.76)
    assert path["unmask_after_last_input_s"] == pytest.approx(0.05)
    assert (row["bytes_up"], row["bytes_down"]) == (4000, 600)


def test_parts_never_exceed_the_round() -> None:
    # Training longer than the round (a straggler still fitting when the round closed) and
    # more core CPU than is left: each part is capped, transport never negative.
    stats = [gateway(0.0, 5.0, 0.5, 0.9)]
    row = round_figures(0.0, 1.0, stats, 0.4, 0.4, {})
    assert row["training_s"] == 1.0 and row["protocol_s"] == 0.0 and row["transport_s"] == 0.0
    empty = round_figures(0.0, 1.0, [], 0.01, 0.01, {})
    assert empty["training_s"] == 0.0 and empty["critical_path"]["last_config_at_s"] is None
    assert critical_path(0.0, [], {})["unmask_after_last_input_s"] is None


def test_summary_takes_medians_of_completed_rounds() -> None:
    def row(wall: float, train: float, up: int, outcome: str = "completed") -> dict[str, object]:
        return {"outcome": outcome, "wall_s": wall, "training_s": train, "protocol_s": 0.01,
                "transport_s": wall - train - 0.01, "participants": 2, "bytes_up": up,
                "bytes_down": 100, "model_download_bytes": 800, "aggregate_exact": True}
    rows = [row(1.0, 0.8, 4000), row(2.0, 1.9, 4200), row(3.0, 2.0, 4400),
            row(9.0, 0.0, 0, "aborted")]
    out = summary(rows, 1000)  # type: ignore[arg-type]
    assert out["completed_rounds"] == 3 and out["median_wall_s"] == 2.0
    assert out["median_training_s"] == 1.9
    assert out["protocol_plus_transport_share"] == pytest.approx(0.2)
    assert out["uplink_bytes_per_param_per_gateway"] == 2.1 and out["all_exact"] is True
    assert summary([], 10) == {"completed_rounds": 0}
    assert {"training_s", "protocol_s", "transport_s", "wall_s"} <= set(DEFINITIONS)
