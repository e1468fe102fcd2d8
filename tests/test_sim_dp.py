"""`fedgate sim` with distributed DP: noisy rounds whose recovered sums are exact in the ring, the
signed ledger in the report and over REST, the budget stop, and garbage DP flags."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from aggregator.privacy import DPConfig, PrivacyLedger
from firmware_sim.cli import main
from firmware_sim.sim import SimConfig, run_sim
from native.errors import ConfigError


def test_dp_sim_spends_its_budget_then_stops(tmp_path: Path) -> None:
    dp = DPConfig(0.8, 0.5)
    ledger = PrivacyLedger(dp)
    params = ledger.plan(quant_bits=10, clip=dp.coordinate_clip(10_964), vector_len=10_964,
                         threshold=3, participants=4).params(3, 10_964)
    after_one = ledger.epsilon_after(params)
    ledger.spend(params)
    after_two = ledger.epsilon_after(params)
    ledger.spend(params)
    budget = (after_two + ledger.epsilon_after(params)) / 2  # room for exactly two rounds
    cfg = SimConfig(out=tmp_path / "out", gateways=4, rounds=4, seconds=45.0, holdout_patients=1,
                    seed=5, quant_bits=10, dp_noise_multiplier=0.8, dp_l2_clip=0.5,
                    dp_epsilon_budget=budget)
    report = run_sim(cfg)
    rows = report["rounds"]
    assert len(rows) == 2
    eps = [row["privacy"]["epsilon"] for row in rows]
    assert eps == pytest.approx([after_one, after_two])
    for row in rows:
        assert row["outcome"] == "completed" and row["aggregate_exact"] is True
        assert row["privacy"]["noise_multiplier"] >= 0.8 and row["privacy"]["delta"] == 1e-5
    lineage = report["final"]["lineage"]
    assert lineage[0] == len(rows) + 1
    on_disk = json.loads((cfg.out / "report.json").read_text())
    assert on_disk["rounds"][-1]["privacy"]["epsilon"] == eps[-1]


@pytest.mark.parametrize("flags", [
    ["--dp-noise-multiplier", "0"], ["--dp-noise-multiplier", "nan"],
    ["--dp-noise-multiplier", "1", "--dp-sampling-rate", "1.5"],
    ["--dp-noise-multiplier", "1", "--dp-delta", "2"],
    ["--dp-noise-multiplier", "1", "--dp-l2-clip", "-1"],
    ["--dp-noise-multiplier", "1", "--dp-epsilon-budget", "-4"],
])
def test_garbage_dp_flags_exit_with_status_2(tmp_path: Path, flags: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--out", str(tmp_path / "o"), *flags]) == 2
    assert "dp" in capsys.readouterr().err.lower()
    assert not (tmp_path / "o" / "report.json").exists()


def test_dp_flags_are_checked_before_anything_runs() -> None:
    with pytest.raises(ConfigError, match="--dp"):
        SimConfig(dp_noise_multiplier=1.0, dp_sampling_rate=0.0).check()
    SimConfig(dp_noise_multiplier=1.0).check()


def test_sample_weighted_rounds_are_exact_and_dp_refuses_weights(tmp_path: Path) -> None:
    cfg = SimConfig(out=tmp_path / "w", gateways=3, rounds=1, seconds=45.0, holdout_patients=1,
                    seed=2, weighting="samples")
    report = run_sim(cfg)
    row = report["rounds"][0]
    assert row["aggregate_exact"] is True and report["secagg"]["max_weight"] == 4095
    with pytest.raises(ConfigError, match="unweighted"):
        SimConfig(weighting="samples", dp_noise_multiplier=1.0).check()
    with pytest.raises(ConfigError, match="weighting"):
        SimConfig(weighting="by-age").check()  # type: ignore[arg-type]


@pytest.mark.parametrize("flags", [
    ["--weighting", "by-age"], ["--server-lr-decay", "0"], ["--server-lr-decay", "1.5"],
    ["--server-lr-decay", "x"], ["--server-lr-decay-from", "-1"],
])
def test_garbage_strategy_flags_exit_with_status_2(tmp_path: Path, flags: list[str]) -> None:
    # argparse refuses what it cannot parse (exit 2 via SystemExit); the config check the rest.
    with pytest.raises(SystemExit) if flags[1] in ("by-age", "x") else contextlib.nullcontext():
        assert main(["sim", "--out", str(tmp_path / "o"), *flags]) == 2
    assert not (tmp_path / "o" / "report.json").exists()
