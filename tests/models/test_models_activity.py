"""The activity model through the same pipeline: the trainer is model-agnostic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models import artifacts, graph
from models.activity import synthetic_windows, windows_from_stream
from models.evaluate import evaluate
from models.trainer import TrainConfig, train_local
from native.errors import InputError


def test_activity_round_generalises_to_another_subject(tmp_path: Path) -> None:
    art = artifacts.ensure("activity", tmp_path)
    assert art.manifest.class_names == ["still", "walk", "run", "cycle"]
    rng = np.random.default_rng(5)
    x, y = synthetic_windows(1200, rng, subject_scale=0.9)
    xt, yt = synthetic_windows(400, rng, subject_scale=1.15)
    w0 = graph.flatten(art.spec, graph.initial_params(art.spec))
    res = train_local(art, w0, x, y, TrainConfig(epochs=6, lr=3e-3, mu=0.001))
    before, after = evaluate(art, w0, xt, yt), evaluate(art, w0 + res.delta, xt, yt)
    assert after.accuracy > 0.7 and after.accuracy > before.accuracy + 0.3
    assert after.macro_f1 > 0.65


def test_windows_from_stream() -> None:
    stream = np.zeros((640, 3), dtype=np.float32)
    stream[:, 2] = 1.0
    win = windows_from_stream(stream)
    assert win["accel"].shape == (9, 128, 3)
    np.testing.assert_array_equal(win["accel"][1], stream[64:192])


@pytest.mark.parametrize(
    "stream, step",
    [
        (np.zeros((100, 2)), 64),
        (np.full((300, 3), np.nan), 64),
        (np.zeros((300, 3)), 0),
        (np.zeros(300), 64),
    ],
)
def test_windows_from_stream_garbage(stream: np.ndarray, step: int) -> None:
    with pytest.raises(InputError):
        windows_from_stream(stream, step)


def test_generator_garbage() -> None:
    with pytest.raises(InputError):
        synthetic_windows(0, np.random.default_rng(0))
    with pytest.raises(InputError):
        synthetic_windows(5, np.random.default_rng(0), subject_scale=float("nan"))
