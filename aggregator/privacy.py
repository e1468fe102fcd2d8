"""Differential privacy of a deployment: round noise, participant sampling, and the budget.

The operator sets a noise multiplier z, the L2 clip of a gateway update, the participant sampling
rate q, delta and (optionally) an epsilon budget. Each DP round then

- samples its participants by Poisson sampling at rate q (each online gateway independently, from
  the OS CSPRNG), which is what the accountant's amplification bound assumes;
- states its noise in the signed round config (``native.round_noise.plan``), so every gateway can
  check it against its own floor before it trains;
- is refused before it starts when completing it would spend more than the budget;
- records, in the signed manifest of the model version it produces, the round's epsilon, the
  cumulative epsilon and the cumulative Renyi-DP curve, so the ledger is rebuilt from the signed
  lineage after a restart and an auditor can recompute it.

Privacy unit: one gateway (one wearer), add/remove adjacency of its whole contribution to the
summed update. What is covered is the sequence of published models; the number of survivors of
each round is recorded in the lineage and is not covered.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from native import accounting, round_noise, wire
from native.dp_params import MECHANISMS, NoiseParams, noise_multiplier
from native.errors import InputError, ProtocolError, RoundAbortedError

log = logging.getLogger(__name__)

__all__ = ["BudgetExhaustedError", "DPConfig", "PrivacyLedger", "poisson_select"]


class BudgetExhaustedError(ProtocolError):
    """The next round would spend more than the deployment's epsilon budget."""


@dataclass(frozen=True)
class DPConfig:
    """The operator's privacy policy for every round of the deployment."""

    noise_multiplier: float
    l2_clip: float = 1.0
    sampling_rate: float = 1.0
    delta: float = 1e-5
    epsilon_budget: float | None = None
    mechanism: str = "ddg"
    # The quantizer's range after rotation, in standard deviations of a rotated coordinate of an
    # update at the L2 clip (about C / sqrt(d')): at 4, a coordinate is clipped with p ~ 6e-5.
    coordinate_sigmas: float = 4.0

    def coordinate_clip(self, vector_len: int) -> float:
        """The per-coordinate clip of the quantizer for a rotated update of this length."""
        return self.coordinate_sigmas * self.l2_clip / math.sqrt(
            round_noise.padded_length(vector_len))

    def __post_init__(self) -> None:
        for name in ("noise_multiplier", "l2_clip", "coordinate_sigmas"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise InputError(f"dp {name} must be a finite number > 0, got {value!r}")
        if not 0 < self.sampling_rate <= 1:
            raise InputError(f"dp sampling_rate must be in (0, 1], got {self.sampling_rate!r}")
        if not 0 < self.delta < 1:
            raise InputError(f"dp delta must be in (0, 1), got {self.delta!r}")
        budget = self.epsilon_budget
        if budget is not None and not (math.isfinite(budget) and budget > 0):
            raise InputError(f"dp epsilon_budget must be finite and > 0, got {budget!r}")
        if self.mechanism not in MECHANISMS:
            raise InputError(f"dp mechanism must be one of {MECHANISMS}, got {self.mechanism!r}")


def poisson_select(candidates: Sequence[int], rate: float, minimum: int,
                   maximum: int) -> list[int]:
    """Each candidate independently with probability ``rate`` (CSPRNG); too few or too many abort.

    A capped or topped-up sample would no longer be the Poisson sample the accountant assumes,
    so a draw outside [minimum, maximum] is not run at all (it releases nothing).
    """
    draw = secrets.SystemRandom()
    chosen = sorted(p for p in set(candidates) if draw.random() < rate)
    if not minimum <= len(chosen) <= maximum:
        raise RoundAbortedError(
            f"Poisson sampling at rate {rate} drew {len(chosen)} of {len(set(candidates))} "
            f"gateways, outside {minimum}..{maximum}; the round is skipped")
    return chosen


class PrivacyLedger:
    """The cumulative RDP of a deployment's DP rounds and the decisions that depend on it."""

    def __init__(self, config: DPConfig, latest_privacy: dict[str, Any] | None = None) -> None:
        self.config = config
        self.accountant = accounting.PrivacyAccountant()
        stored = (latest_privacy or {}).get("dp")
        if stored:
            self._restore(stored)

    def _restore(self, stored: dict[str, Any]) -> None:
        orders = tuple(int(a) for a in stored.get("orders", ()))
        rdp = np.asarray(stored.get("rdp", ()), dtype=np.float64)
        if orders != self.accountant.orders or rdp.shape != (len(orders),) or not np.all(
                np.isfinite(rdp)) or np.any(rdp < 0):
            raise InputError("the latest model version's privacy ledger is malformed")
        self.accountant.rdp = rdp
        self.accountant.rounds = int(stored.get("rounds", 0))

    def plan(self, *, quant_bits: int, clip: float, vector_len: int, threshold: int,
             participants: int) -> wire.RoundNoise:
        """The noise of a round with these parameters."""
        cfg = self.config
        return round_noise.plan(cfg.noise_multiplier, cfg.l2_clip, quant_bits=quant_bits,
                                clip=clip, vector_len=vector_len, threshold=threshold,
                                max_participants=participants, mechanism=cfg.mechanism)

    def epsilon(self) -> float:
        return self.accountant.epsilon(self.config.delta)

    def epsilon_after(self, params: NoiseParams) -> float:
        """Cumulative epsilon if one more round with ``params`` were released."""
        rdp = self.accountant.rdp + self.accountant.round_rdp(params, self.config.sampling_rate)
        return accounting.epsilon_from_rdp(self.accountant.orders, rdp, self.config.delta)

    def check_budget(self, params: NoiseParams) -> float:
        """The cumulative epsilon after this round; BudgetExhaustedError if over budget."""
        after = self.epsilon_after(params)
        budget = self.config.epsilon_budget
        if budget is not None and after > budget:
            raise BudgetExhaustedError(
                f"privacy budget spent: epsilon {self.epsilon():.4g} so far, {after:.4g} after "
                f"one more round, budget {budget:.4g} at delta {self.config.delta:g}")
        return after

    def spend(self, params: NoiseParams) -> dict[str, Any]:
        """Compose one released round; returns the ledger entry for the model's manifest."""
        cfg = self.config
        round_eps = self.accountant.round_epsilon(params, cfg.sampling_rate, cfg.delta)
        self.accountant.spend(params, cfg.sampling_rate)
        return {
            "mechanism": params.mechanism, "noise_multiplier": noise_multiplier(params),
            "l2_clip": cfg.l2_clip, "l2_sensitivity_levels": params.l2_sensitivity,
            "variance_levels2": str(params.variance), "threshold": params.threshold,
            "max_participants": params.max_participants,
            "dim": params.dim, "sampling_rate": cfg.sampling_rate, "delta": cfg.delta,
            "epsilon_round": round_eps, "epsilon": self.epsilon(),
            "epsilon_budget": cfg.epsilon_budget, "rounds": self.accountant.rounds,
            "orders": list(self.accountant.orders),
            "rdp": [float(v) for v in self.accountant.rdp],
            "accountant": "RDP (Kairouz-Liu-Steinke / Agarwal-Kairouz-Liu), Zhu-Wang Poisson "
                          "subsampling, dp-accounting conversion",
        }

    def status(self) -> dict[str, Any]:
        """What ``GET /v1/privacy`` reports."""
        cfg = self.config
        spent = self.epsilon()
        budget = cfg.epsilon_budget
        return {"enabled": True, "mechanism": cfg.mechanism,
                "noise_multiplier": cfg.noise_multiplier, "l2_clip": cfg.l2_clip,
                "sampling_rate": cfg.sampling_rate, "delta": cfg.delta, "epsilon": spent,
                "epsilon_budget": budget, "rounds": self.accountant.rounds,
                "remaining": None if budget is None else max(0.0, budget - spent)}
