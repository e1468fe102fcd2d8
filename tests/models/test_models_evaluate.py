"""Classification metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.evaluate import classification_metrics, cross_entropy


def test_metrics_by_hand() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    p = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    r = classification_metrics(y, p, ["N", "S", "V", "F"])
    assert r.confusion == [[3, 1, 0, 0], [0, 1, 1, 0], [0, 0, 2, 0], [0, 0, 0, 0]]
    assert r.sensitivity["N"] == 0.75 and r.ppv["N"] == 1.0
    assert r.sensitivity["S"] == 0.5 and r.ppv["S"] == 0.5
    assert r.sensitivity["V"] == 1.0 and r.ppv["V"] == pytest.approx(2 / 3)
    assert math.isnan(r.sensitivity["F"]) and math.isnan(r.f1["F"])
    f1 = [2 * 3 / (4 + 3), 2 * 1 / (2 + 2), 2 * 2 / (2 + 3)]
    assert r.macro_f1 == pytest.approx(np.mean(f1))
    assert r.accuracy == 0.75
    d = r.to_dict()
    assert d["sensitivity"]["F"] is None and d["n_samples"] == 8


def test_cross_entropy() -> None:
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]], dtype=np.float32))
    assert cross_entropy(logits, np.array([0, 1])) == pytest.approx(
        -(np.log(0.5) + np.log(0.8)) / 2, rel=1e-6
    )
