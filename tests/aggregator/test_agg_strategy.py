from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.orchestrator import SelectionConfig, select_participants
from aggregator.strategy import OptimizerState, StrategyConfig, apply
from native.errors import InputError, InputTypeError, RoundAbortedError


def reference(name: str, x: np.ndarray, deltas: list[np.ndarray], lr: float, b1: float,
              b2: float, tau: float) -> np.ndarray:
    """Reddi et al. 2021, Algorithm 2, in float64, written out independently."""
    x = x.astype(np.float64)
    m = np.zeros_like(x)
    v = np.full_like(x, tau**2)
    for d in deltas:
        d = d.astype(np.float64)
        if name == "fedavg":
            x = x + lr * d
            continue
        m = b1 * m + (1 - b1) * d
        v = b2 * v + (1 - b2) * d * d if name == "fedadam" else v - (1 - b2) * d * d * np.sign(
            v - d * d)
        x = x + lr * m / (np.sqrt(v) + tau)
    return x


@pytest.mark.parametrize("name", ["fedavg", "fedadam", "fedyogi"])
def test_matches_the_paper_over_several_rounds(name: str) -> None:
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=500).astype(np.float32)
    deltas = [rng.normal(scale=0.1, size=500).astype(np.float32) for _ in range(5)]
    cfg = StrategyConfig(name=name, server_lr=0.3)  # type: ignore[arg-type]
    x, state = x0, OptimizerState()
    for d in deltas:
        x, state = apply(cfg, x, d, state)
    want = reference(name, x0, deltas, 0.3, cfg.beta1, cfg.beta2, cfg.tau)
    np.testing.assert_allclose(x, want, rtol=1e-4, atol=1e-5)
    assert x.dtype == np.float32


def test_fedavg_with_unit_lr_adds_the_mean_delta() -> None:
    x = np.arange(4, dtype=np.float32)
    d = np.full(4, 0.5, dtype=np.float32)
    assert np.array_equal(apply(StrategyConfig(), x, d, OptimizerState())[0], x + d)


@pytest.mark.parametrize(
    ("params", "delta"),
    [(np.zeros(3, np.float64), np.zeros(3, np.float32)),
     (np.zeros(3, np.float32), np.zeros(4, np.float32)),
     (np.zeros(3, np.float32), np.array([0, np.nan, 0], np.float32)),
     (np.zeros((3, 1), np.float32), np.zeros(3, np.float32)),
     ([0.0, 0.0], np.zeros(2, np.float32))],
)
def test_bad_vectors_are_refused(params: object, delta: object) -> None:
    with pytest.raises((InputError, InputTypeError)):
        apply(StrategyConfig(name="fedadam"), params, delta, OptimizerState())  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"name": "sgd"}, {"server_lr": 0.0},
                                    {"server_lr": float("inf")}, {"beta1": 1.0}, {"tau": 0.0}])
def test_bad_configs_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        StrategyConfig(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 300), fraction=st.floats(0.01, 1.0), lo=st.integers(1, 20),
       span=st.integers(0, 100), over=st.floats(0.0, 1.0))
def test_selection_sizes(n: int, fraction: float, lo: int, span: int, over: float) -> None:
    cfg = SelectionConfig(fraction=fraction, min_participants=lo, max_participants=lo + span,
                          over_selection=over)
    pool = list(range(1, n + 1))
    if n < lo:
        with pytest.raises(RoundAbortedError):
            select_participants(pool, cfg)
        return
    chosen = select_participants(pool, cfg)
    assert chosen == sorted(set(chosen)) and set(chosen) <= set(pool)
    assert lo <= len(chosen) <= min(n, lo + span)
    assert len(chosen) >= min(n, lo + span, int(fraction * n))


@pytest.mark.parametrize("kwargs", [{"fraction": 0.0}, {"fraction": 1.5}, {"over_selection": -1},
                                    {"min_participants": 0}, {"min_participants": 5,
                                                              "max_participants": 4}])
def test_bad_selection_configs(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        SelectionConfig(**kwargs)  # type: ignore[arg-type]


def test_step_decay_of_the_server_lr() -> None:
    cfg = StrategyConfig("fedavg", server_lr=1.0, decay=0.1, decay_from_round=5)
    assert [cfg.lr_for(r) for r in (1, 4, 5, 9)] == [1.0, 1.0, pytest.approx(0.1),
                                                   pytest.approx(0.1)]
    x = np.ones(4, np.float32)
    d = np.full(4, 2.0, np.float32)
    early, _ = apply(cfg, x, d, OptimizerState(), round_no=4)
    late, _ = apply(cfg, x, d, OptimizerState(), round_no=5)
    assert np.allclose(early, 3.0) and np.allclose(late, 1.2)
    assert StrategyConfig().lr_for(10**6) == 1.0  # no decay unless asked
    for bad in (dict(decay=0.0), dict(decay=1.5), dict(decay=float("nan")),
                dict(decay_from_round=-1), dict(decay_from_round=2.5)):
        with pytest.raises(InputError):
            StrategyConfig(**bad)  # type: ignore[arg-type]
