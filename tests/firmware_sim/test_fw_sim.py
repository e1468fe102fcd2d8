"""`fedgate sim` end to end: embedded broker and a real Mosquitto, report contents, the exported
global model, exact aggregates, and garbage on the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from firmware_sim.cli import main
from firmware_sim.sim import SimConfig, run_sim
from native.broker import MosquittoBroker, find_mosquitto

ROUND_KEYS = {"round", "participants", "dropouts", "bytes_up", "bytes_down", "training_s",
              "protocol_s", "transport_s", "stage_s", "metrics", "aggregate_exact", "wall_s"}


def check_outputs(out: Path, report: dict[str, Any], gateways: int, rounds: int) -> None:
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["rounds"] == json.loads(json.dumps(report["rounds"]))
    assert len(report["rounds"]) == rounds
    for i, row in enumerate(report["rounds"], start=1):
        assert set(row) >= ROUND_KEYS, set(ROUND_KEYS) - set(row)
        assert row["outcome"] == "completed" and row["model_version"] == i + 1
        assert (row["participants"], row["dropouts"]) == (gateways, 0)
        assert row["aggregate_exact"] is True
        assert row["bytes_up"] > 0 and row["bytes_down"] > 0 and row["training_s"] > 0
        assert set(row["stage_s"]) == {"collect_keys", "collect_shares", "collect_masked",
                                       "collect_unmask"}
        assert 0 <= row["metrics"]["accuracy"] <= 1 and row["metrics"]["samples"] > 0
    assert report["final"]["lineage"] == list(range(rounds + 1, 0, -1))
    assert set(report["ingestion"]) == set(report["gateways"]) == set(report["gateway_pids"])
    for name, gw in report["ingestion"].items():
        assert gw["beats"] > 0 and gw["devices"], name
        for dev in gw["devices"].values():
            assert dev["accepted"] == dev["radio"]["published"] > 0  # a clean link: all in
            assert dev["gaps"] == 0 and dev["rejected"] == {}
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import onnxruntime as ort

    from edge_client.localdata import StoreData

    session = ort.InferenceSession(str(out / "global_model.onnx"))
    inputs, labels = StoreData(out / "work" / "gateway-000" / "store.sqlite").dataset()
    logits = session.run(None, {"beat": inputs["beat"], "rr": inputs["rr"]})[0]
    assert logits.shape == (labels.size, 4) and np.isfinite(logits).all()


def test_sim_with_the_embedded_broker(tmp_path: Path) -> None:
    cfg = SimConfig(out=tmp_path / "out", gateways=3, devices=2, rounds=2, seconds=60.0,
                    holdout_patients=1, seed=3)
    report = run_sim(cfg)
    check_outputs(cfg.out, report, 3, 2)
    assert report["secagg"] == {"quant_bits": 8, "clip": cfg.clip}
    ids = [sorted(int(d) for d in report["ingestion"][g]["devices"]) for g in report["gateways"]]
    assert ids == [[1, 2], [3, 4], [5, 6]]  # two patches per gateway, each its own patient
    from edge_client.store import Store

    with Store(cfg.out / "work" / "gateway-001" / "store.sqlite") as store:
        assert store.device_ids() == [3, 4]


def test_sim_secagg_plus_over_mosquitto(tmp_path: Path) -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not installed")
    with MosquittoBroker() as broker:
        cfg = SimConfig(out=tmp_path / "out", gateways=5, rounds=1, seconds=45.0,
                        holdout_patients=1, broker=broker.url, secagg="plus", neighbours=2,
                        quant_bits=6)
        report = run_sim(cfg)
    check_outputs(cfg.out, report, 5, 1)
    assert report["secagg"]["degree"] == 2 and report["secagg"]["quant_bits"] == 6


@pytest.mark.parametrize("argv, needle", [
    (["--gateways", "1"], "--gateways must be 2..256"),
    (["--rounds", "0"], "--rounds must be"),
    (["--data", "mitdb"], "needs --data-dir"),
    (["--data", "mitdb", "--data-dir", "/nonexistent"], "is not a folder"),
    (["--secagg", "plus", "--neighbours", "3"], "even number"),
    (["--quant-bits", "40"], "--quant-bits"),
    (["--broker", "http://x"], "--broker must be"),
    (["--clip", "-1"], "--clip"),
    (["--epochs", "0"], "--epochs"),
    (["--lr", "nan"], "--lr"),
    (["--devices", "0"], "--devices must be 1..16"),
    (["--seconds", "5"], "--seconds of signal per device must be 30..86400"),
    (["--scenario", "no-such-scenario"], "no such file (built-in scenarios: dropouts, mitdb"),
    (["--scenario", "ward", "--gateways", "3"], "--scenario defines the fleet"),
    (["--scenario", "dropouts", "--rounds", "1"], "an event in round 2"),
    (["--scenario", "mitdb"], "record: MIT-BIH record"),
    (["--data", "mitdb", "--data-dir", ".", "--devices", "2"], "--data mitdb streams one"),
])
def test_sim_cli_rejects_garbage(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 argv: list[str], needle: str) -> None:
    assert main(["sim", "--out", str(tmp_path / "o"), *argv]) == 2
    assert needle in capsys.readouterr().err


def test_sim_cli_rejects_unparseable_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["sim", "--gateways", "many"])
    assert exc.value.code == 2 and "invalid int" in capsys.readouterr().err


@pytest.mark.data
def test_sim_on_mitdb_records(tmp_path: Path, mitdb_dir: Path) -> None:
    """One gateway per record (links to three shared records), one held out."""
    folder = tmp_path / "records"
    folder.mkdir()
    for record in ("101", "106", "119"):
        for ext in ("hea", "dat", "atr"):
            os.symlink(mitdb_dir / f"{record}.{ext}", folder / f"{record}.{ext}")
    cfg = SimConfig(out=tmp_path / "out", rounds=1, data="mitdb", data_dir=folder,
                    holdout=["119"])
    report = run_sim(cfg)
    assert report["gateways"] == ["101", "106"]
    row = report["rounds"][0]
    assert (row["outcome"], row["participants"], row["aggregate_exact"]) == ("completed", 2, True)
    assert row["metrics"]["samples"] > 1000  # record 119's beats


def test_sim_cli_names_the_bad_key_of_a_scenario_file(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[gateways]]\nname = "a"\n[[gateways.devices]]\nkind = "ecg"\n'
                   'hr_bpm = "fast"\n[[gateways]]\nname = "b"\n[[gateways.devices]]\n'
                   'kind = "ecg"\n')
    assert main(["sim", "--out", str(tmp_path / "o"), "--scenario", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "ConfigError" in err and "gateways[0].devices[0].hr_bpm: expected a number" in err


def test_flags_override_the_scenario_which_overrides_defaults() -> None:
    from firmware_sim.cli import _sim_config, build_parser

    cfg = _sim_config(build_parser().parse_args(["sim", "--scenario", "ward"]))
    assert (cfg.rounds, cfg.seconds, cfg.seed) == (4, 180.0, 0)
    cfg = _sim_config(build_parser().parse_args(["sim", "--scenario", "ward", "--rounds", "2",
                                                 "--seconds", "60", "--seed", "5"]))
    assert (cfg.rounds, cfg.seconds, cfg.seed) == (2, 60.0, 5)
    cfg = _sim_config(build_parser().parse_args(["sim"]))
    assert (cfg.gateways, cfg.devices, cfg.rounds, cfg.seconds) == (4, 1, 10, None)
