"""``fedgate sim --model ecg-linear``: a 1e5-parameter round under SecAgg+ over a real Mosquitto,
exact, with its bytes per parameter and the report's timing split; garbage model names."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim.cli import main
from firmware_sim.sim import SimConfig, run_sim
from native.broker import MosquittoBroker, find_mosquitto
from native.errors import ConfigError


def test_linear_model_round_under_secagg_plus(tmp_path: Path) -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not installed")
    with MosquittoBroker() as broker:
        cfg = SimConfig(out=tmp_path / "out", gateways=6, rounds=2, seconds=45.0,
                        holdout_patients=1, broker=broker.url, secagg="plus", neighbours=2,
                        model="ecg-linear")
        report = run_sim(cfg)
    assert report["parameters"] == 100_228 and report["config"]["model"] == "ecg-linear"
    for row in report["rounds"]:
        assert (row["outcome"], row["participants"], row["aggregate_exact"]) == (
            "completed", 6, True)
        assert row["training_s"] + row["protocol_s"] + row["transport_s"] == pytest.approx(
            row["wall_s"], abs=1e-3)
        assert 0 < row["protocol_s"] < row["protocol_wall_server_s"] + row[
            "protocol_wall_gateway_max_s"] + 1e-6
        path = row["critical_path"]
        assert 0 < path["last_config_at_s"] < path["last_download_at_s"] <= path[
            "last_masked_input_at_s"] < path["aggregate_at_s"] <= row["wall_s"]
    summary = report["summary"]
    assert summary["completed_rounds"] == 2 and summary["all_exact"] is True
    # 8-bit updates of 6 gateways in a 16-bit ring: 2 bytes a parameter, plus a few hundred
    # bytes of keys, shares, signatures and headers per gateway and round.
    assert 2.0 < summary["uplink_bytes_per_param_per_gateway"] < 2.05
    assert summary["model_download_bytes_per_gateway"] == 4 * 100_228
    assert (cfg.out / "global_model.onnx").stat().st_size > 4 * 100_228


@pytest.mark.parametrize("model", ["activity", "nope", "", "ECG"])
def test_models_that_do_not_read_ecg_beats_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str) -> None:
    assert main(["sim", "--out", str(tmp_path / "o"), "--model", model]) == 2
    err = capsys.readouterr().err
    assert "--model must be one of ecg, ecg-linear" in err and repr(model) in err
    with pytest.raises(ConfigError):
        SimConfig(model=model).check()
