"""The loss attack's ROC figures against known cases, and garbage."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.audit import membership
from native.errors import InputError


def test_auc_and_tpr_on_known_cases() -> None:
    assert membership.roc_auc([3, 4], [1, 2]) == 1.0
    assert membership.roc_auc([1, 2], [3, 4]) == 0.0
    assert membership.roc_auc([1, 1], [1, 1]) == 0.5  # all tied
    assert membership.roc_auc([1, 3], [2]) == 0.5
    assert membership.tpr_at_fpr([5, 6, 0], [1, 2, 3, 4], 0.0) == pytest.approx(2 / 3)
    # Same distribution: AUC near 0.5, TPR near the FPR.
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(20_000), rng.standard_normal(20_000)
    assert abs(membership.roc_auc(a, b) - 0.5) < 0.01
    assert abs(membership.tpr_at_fpr(a, b, 0.01) - 0.01) < 0.005
    # Shifted members: AUC = Phi(shift / sqrt 2).
    assert membership.roc_auc(a + 1.0, b) == pytest.approx(0.7602, abs=0.01)


def test_attack_uses_low_loss_as_membership() -> None:
    res = membership.attack([0.1, 0.2, 0.3], [1.0, 2.0, 3.0])
    assert res["auc"] == 1.0 and res["tpr_at_fpr"]["0.01"] == 1.0
    assert res["members"] == 3 and res["nonmembers"] == 3


def test_per_sample_loss_matches_the_definition() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 0.0]])
    loss = membership.per_sample_loss(logits, np.array([0, 1]))
    assert loss == pytest.approx([np.log1p(np.exp(-2.0)), np.log(2.0)])


@pytest.mark.parametrize("call", [
    lambda: membership.roc_auc([], [1.0]),
    lambda: membership.roc_auc([float("nan")], [1.0]),
    lambda: membership.tpr_at_fpr([1.0], [2.0], 1.5),
    lambda: membership.per_sample_loss(np.zeros((2, 3)), np.array([0, 3])),
    lambda: membership.per_sample_loss(np.zeros((2, 3)), np.array([0.0, 1.0])),
    lambda: membership.per_sample_loss(np.full((1, 2), np.inf), np.array([0])),
    lambda: membership.per_sample_loss(np.zeros(3), np.array([0])),
])
def test_garbage_is_an_input_error(call: object) -> None:
    with pytest.raises(InputError):
        call()  # type: ignore[operator]
