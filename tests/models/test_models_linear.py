"""The ``ecg-linear`` model: a binned linear classifier of the ECG model's inputs, about 1e5
parameters, trained for real with onnxruntime-training; its graph is checked against numpy."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edge_client.localdata import StoreData
from firmware_sim.simdata import fill_store, patient_spec
from models import artifacts, graph, linear
from models.export import inference_model_bytes
from models.ort import runtime
from models.trainer import TrainConfig, train_local
from models.zoo import ECG, ECG_LINEAR, get_spec
from native.errors import TrainingError


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> artifacts.Artifacts:
    return artifacts.ensure("ecg-linear", tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def beats(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], np.ndarray]:
    path = tmp_path_factory.mktemp("store") / "store.sqlite"
    fill_store(path, patient_spec(0, 4, 90.0), 90.0)  # N, S and V beats
    return StoreData(path).dataset()


def test_spec_size_and_manifest(art: artifacts.Artifacts) -> None:
    assert get_spec("ecg-linear") is ECG_LINEAR
    assert ECG_LINEAR.input_shapes() == ECG.input_shapes()  # the same beats the CNN reads
    assert graph.parameter_count(ECG_LINEAR) == 261 * 96 * 4 + 4 == 100_228
    m = art.manifest
    assert (m.name, m.parameter_count) == ("ecg-linear", 100_228)
    assert m.parameters == [["linear.bias", [4]], ["linear.weight", [261 * 96, 4]]]
    assert [i["name"] for i in m.inputs] == ["beat", "rr"]
    assert graph.definition_hash(ECG_LINEAR) != graph.definition_hash(ECG)
    assert not graph.flatten(ECG_LINEAR, graph.initial_params(ECG_LINEAR)).any()


def test_inference_graph_is_the_binned_linear_function(
        beats: tuple[dict[str, np.ndarray], np.ndarray]) -> None:
    rng = np.random.default_rng(3)
    params = {n: rng.standard_normal(s).astype(np.float32)
              for n, s in graph.param_shapes(ECG_LINEAR)}
    inputs = {k: v[:50].copy() for k, v in beats[0].items()}
    inputs["beat"][:5] *= 40.0  # far outside the range: clipped into the end bins
    inputs["rr"][5:10] = -3.0
    blob = inference_model_bytes("ecg-linear", graph.flatten(ECG_LINEAR, params))
    sess = runtime().InferenceSession(blob, providers=["CPUExecutionProvider"])
    got = sess.run(None, inputs)[0]
    want = linear.reference_logits(ECG_LINEAR, params, inputs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    # The one-hot product written out densely gives the same logits.
    offset, scale = linear._bin_constants(ECG_LINEAR)
    x = np.concatenate([inputs["beat"].reshape(50, -1), inputs["rr"]], axis=1)
    codes = np.zeros((50, ECG_LINEAR.features, ECG_LINEAR.bins), dtype=np.float32)
    idx = np.clip(np.floor((x - offset) * scale), 0, ECG_LINEAR.bins - 1).astype(int)
    np.put_along_axis(codes, idx[:, :, None], 1.0, axis=2)
    dense = codes.reshape(50, -1) @ params["linear.weight"] + params["linear.bias"]
    np.testing.assert_allclose(got, dense, rtol=1e-5, atol=1e-4)


def test_a_local_round_learns_and_is_reproducible(
        art: artifacts.Artifacts, beats: tuple[dict[str, np.ndarray], np.ndarray]) -> None:
    x, y = beats
    assert set(np.unique(y)) >= {0, 1, 2}
    w0 = graph.flatten(art.spec, graph.initial_params(art.spec))
    cfg = TrainConfig(epochs=3, batch_size=64, lr=3e-3, seed=5)
    res = train_local(art, w0, x, y, cfg)
    assert res.delta.shape == (100_228,) and np.isfinite(res.delta).all()
    assert res.metrics["loss"] < 0.5 * res.metrics["loss_first_epoch"]
    assert np.count_nonzero(res.delta) > 1000
    assert np.array_equal(train_local(art, w0, x, y, cfg).delta, res.delta)
    blob = inference_model_bytes("ecg-linear", w0 + res.delta)
    sess = runtime().InferenceSession(blob, providers=["CPUExecutionProvider"])
    pred = np.argmax(sess.run(None, x)[0], axis=1)
    assert np.mean(pred == y) > 0.9  # on its own training beats; held-out scores: the sim


def test_bad_inputs_and_bad_specs(art: artifacts.Artifacts,
                                  beats: tuple[dict[str, np.ndarray], np.ndarray]) -> None:
    x, y = beats
    w0 = graph.flatten(art.spec, graph.initial_params(art.spec))
    cfg = TrainConfig(epochs=1, seed=1)
    with pytest.raises(TrainingError, match="shape"):
        train_local(art, w0, {"beat": x["beat"][:, :64], "rr": x["rr"]}, y, cfg)
    with pytest.raises(TrainingError, match="NaN"):
        train_local(art, w0, {"beat": x["beat"] * np.nan, "rr": x["rr"]}, y, cfg)
    with pytest.raises(TrainingError):
        train_local(art, w0[:-1], x, y, cfg)
    for bad in (dict(bins=1), dict(series_range=(1.0, -1.0)), dict(side_dim=0),
                dict(side_range=(2.0, 2.0)), dict(class_names=("N",))):
        with pytest.raises(ValueError):
            graph.param_shapes(dataclasses.replace(ECG_LINEAR, **bad))  # type: ignore[arg-type]


def test_cli_writes_its_artifacts_and_initial_parameters(tmp_path: Path) -> None:
    from models.cli import main

    assert main(["artifacts", "--model", "ecg-linear", "--cache", str(tmp_path / "c")]) == 0
    assert main(["init-params", "--model", "ecg-linear", "--out", str(tmp_path / "w.npy")]) == 0
    assert np.load(tmp_path / "w.npy").shape == (100_228,)
