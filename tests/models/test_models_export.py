"""Inference export: plain onnxruntime runs it and agrees with the trained parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from firmware_sim.cli import main as fedgate_main
from models import artifacts, graph
from models.activity import synthetic_windows
from models.export import export_inference, predict
from models.trainer import LocalTrainer, TrainConfig, train_local
from models.zoo import ECG
from native.errors import InputError, TrainingError


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[artifacts.Artifacts, np.ndarray]:
    art = artifacts.ensure("activity", tmp_path_factory.mktemp("cache"))
    x, y = synthetic_windows(400, np.random.default_rng(1))
    w0 = graph.flatten(art.spec, graph.initial_params(art.spec))
    res = train_local(art, w0, x, y, TrainConfig(epochs=1, lr=3e-3))
    return art, w0 + res.delta


def test_export_matches_training_eval(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    art, params = trained
    out = export_inference("activity", params, tmp_path / "m.onnx")
    model = onnx.load(str(out))
    assert {o.domain for o in model.graph.node} == {""}  # standard ops only
    assert [i.name for i in model.graph.input] == ["accel"]
    x, _ = synthetic_windows(50, np.random.default_rng(2))
    trainer = LocalTrainer(art)
    trainer.set_parameters(params)
    np.testing.assert_allclose(predict(out, x), trainer.logits(x), rtol=1e-5, atol=1e-5)


def test_cli_export(trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    _, params = trained
    np.save(tmp_path / "p.npy", params)
    rc = fedgate_main(
        [
            "models",
            "export",
            "--model",
            "activity",
            "--params",
            str(tmp_path / "p.npy"),
            "--out",
            str(tmp_path / "m.onnx"),
        ]
    )
    assert rc == 0 and (tmp_path / "m.onnx").is_file()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content",
    [b"garbage", None, "short", "nan", "pickle"],
)
def test_cli_export_garbage(
    trained,
    tmp_path: Path,
    content: object,  # type: ignore[no-untyped-def]
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, params = trained
    p = tmp_path / "p.npy"
    if content == "short":
        np.save(p, params[:-3])
    elif content == "nan":
        bad = params.copy()
        bad[0] = np.nan
        np.save(p, bad)
    elif content == "pickle":
        np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif isinstance(content, bytes):
        p.write_bytes(content)
    out = tmp_path / "m.onnx"
    rc = fedgate_main(
        ["models", "export", "--model", "activity", "--params", str(p), "--out", str(out)]
    )
    assert rc == 2 and not out.exists()
    assert "error" in capsys.readouterr().err
    assert list(tmp_path.glob(".m.onnx*")) == []


def test_export_errors(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, params = trained
    with pytest.raises(InputError):
        export_inference("nope", params, tmp_path / "m.onnx")
    with pytest.raises(TrainingError):
        export_inference("ecg", params, tmp_path / "m.onnx")  # activity params, wrong length
    with pytest.raises(InputError):
        export_inference("activity", params, tmp_path)
    with pytest.raises(TrainingError):
        predict(tmp_path / "missing.onnx", {})


def test_cli_artifacts_and_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        fedgate_main(["models", "init-params", "--model", "ecg", "--out", str(tmp_path / "w.npy")])
        == 0
    )
    assert np.load(tmp_path / "w.npy").size == graph.parameter_count(ECG)
    with pytest.raises(SystemExit):
        fedgate_main(["models", "export", "--model", "resnet", "--params", "x", "--out", "y"])
    capsys.readouterr()
    assert fedgate_main(["models", "artifacts", "--model", "ecg", "--cache", str(tmp_path)]) == 0
    line = capsys.readouterr().out.strip()
    assert artifacts.ensure("ecg", tmp_path).manifest.digest() in line
    manifest = next(tmp_path.glob("ecg-v1-*/manifest.json"))
    manifest.write_text("{}")
    assert fedgate_main(["models", "artifacts", "--model", "ecg", "--cache", str(tmp_path)]) == 2
    assert "manifest" in capsys.readouterr().err
