"""Server update rules: FedAvg and the adaptive server optimizers FedAdam and FedYogi.

Reddi et al., "Adaptive Federated Optimization" (ICLR 2021), Algorithm 2: with the round's mean
client delta d, m <- b1 m + (1 - b1) d; v <- b2 v + (1 - b2) d^2 (Adam) or
v <- v - (1 - b2) d^2 sign(v - d^2) (Yogi); x <- x + lr * m / (sqrt(v) + tau). FedAvg is
x <- x + lr * d (lr = 1 is McMahan et al.'s FedAvg). Pure numpy, float32 in and out; the
optimizer state is an explicit dataclass the caller stores between rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from native.errors import InputError, InputTypeError

F32 = npt.NDArray[np.float32]
StrategyName = Literal["fedavg", "fedadam", "fedyogi"]


@dataclass(frozen=True)
class StrategyConfig:
    """Server-side hyperparameters; they travel in the model manifest's config."""

    name: StrategyName = "fedavg"
    server_lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    # Step decay: from round ``decay_from_round`` on (0 = never) the server lr is multiplied by
    # ``decay``. With FedAvg, x <- x + lr d at lr < 1 is an exponential average of the rounds'
    # client models, which damps the round-to-round swing of non-IID clients late in training.
    decay: float = 1.0
    decay_from_round: int = 0

    def lr_for(self, round_no: int) -> float:
        """The server learning rate of round ``round_no``."""
        late = self.decay_from_round > 0 and round_no >= self.decay_from_round
        return self.server_lr * (self.decay if late else 1.0)

    def __post_init__(self) -> None:
        if self.name not in ("fedavg", "fedadam", "fedyogi"):
            raise InputError(f"unknown strategy {self.name!r}")
        if not (np.isfinite(self.server_lr) and self.server_lr > 0):
            raise InputError(f"server_lr must be finite and > 0, got {self.server_lr}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.tau > 0):
            raise InputError("need 0 <= beta1, beta2 < 1 and tau > 0")
        if not (np.isfinite(self.decay) and 0 < self.decay <= 1) or not (
                isinstance(self.decay_from_round, int) and self.decay_from_round >= 0):
            raise InputError("need 0 < decay <= 1 and an integer decay_from_round >= 0")


@dataclass
class OptimizerState:
    """First and second moments of the adaptive optimizers (None until the first round)."""

    m: F32 | None = None
    v: F32 | None = None


def _check(name: str, x: object, size: int | None = None) -> F32:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 1:
        raise InputTypeError(f"{name} must be a 1-D float32 array")
    if size is not None and x.size != size:
        raise InputError(f"{name} has {x.size} values, expected {size}")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name} contains NaN or Inf")
    return x


def apply(config: StrategyConfig, params: F32, mean_delta: F32,
          state: OptimizerState, round_no: int = 0) -> tuple[F32, OptimizerState]:
    """New global parameters from the old ones and the round's mean client delta."""
    x = _check("params", params)
    d = _check("mean_delta", mean_delta, x.size)
    lr = np.float32(config.lr_for(round_no))
    if config.name == "fedavg":
        return (x + lr * d).astype(np.float32), state
    b1, b2 = np.float32(config.beta1), np.float32(config.beta2)
    m = np.zeros_like(x) if state.m is None else _check("m", state.m, x.size)
    # Reddi et al. initialise v to tau^2 so the first step is not a division by ~0.
    v = np.full_like(x, config.tau**2) if state.v is None else _check("v", state.v, x.size)
    m = b1 * m + (1 - b1) * d
    d2 = d * d
    adam = b2 * v + (1 - b2) * d2
    yogi = v - (1 - b2) * d2 * np.sign(v - d2)
    v = adam if config.name == "fedadam" else yogi
    new = x + lr * m / (np.sqrt(v) + np.float32(config.tau))
    return new.astype(np.float32), OptimizerState(m.astype(np.float32), v.astype(np.float32))
