"""The federated driver of ``dp_tables.py``: the project's DP round, in memory, one round at a time.

Per round, exactly the parts a deployment runs (only the transport is left out; MQTT and HTTP
carry the same bytes and play no part in the privacy/utility trade-off):

- ``aggregator.privacy.poisson_select`` draws the participants (OS CSPRNG, rate q);
- the DP block is planned as ``Orchestrator._noise_config`` plans it (complete graph, threshold
  ``n // 2 + 1``, the rotated coordinate clip, ``PrivacyLedger.plan``), and the ledger's budget
  check runs before the round opens;
- ``SecAggServer`` signs the ROUND_CONFIG and every gateway core (``SecAggGateway``, with a
  ``dp_params.GatewayPolicy`` floor at the point's noise multiplier) checks it, trains with
  ``models.trainer.train_local`` on its own data, and answers with real wire messages;
- the server unmasks, ``AggregateResult.weighted_mean`` decodes the noisy sum,
  ``aggregator.strategy.apply`` (FedAvg) makes the next global model, ``PrivacyLedger.spend``
  composes the round.

Each gateway's contribution is also recomputed with ``plain_levels`` from the same rounding and
noise seeds (as ``fedgate sim`` does), so every round checks that the unmasked ring sum is exactly
the sum of the survivors' noisy levels.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nacl.signing
import numpy as np
import numpy.typing as npt

from aggregator.privacy import DPConfig, PrivacyLedger, poisson_select
from aggregator.secagg import Outbound, SecAggServer, ServerStage
from aggregator.strategy import OptimizerState, StrategyConfig, apply
from edge_client.secagg import GatewayPolicy, SecAggGateway, plain_levels
from native import accounting, dp_params, mask, round_noise, wire
from native.errors import FedgateError, InputError, ProtocolError, RoundAbortedError

log = logging.getLogger(__name__)

Dataset = tuple[dict[str, npt.NDArray[Any]], npt.NDArray[np.int64]]
F32 = npt.NDArray[np.float32]

# The bisection aims this far below the target: rounds with other participant counts round their
# variance to another multiple of the threshold (a relative change below 1e-5 in epsilon), and the
# ledger's budget (= the target) must never refuse one of the planned rounds for that.
CALIBRATION_SLACK = 1e-3


@dataclass(frozen=True)
class LocalSetup:
    """The gateways' local round (as ``fedgate sim`` configures its daemons)."""

    epochs: int = 2
    lr: float = 3e-3
    mu: float = 0.0
    batch_size: int = 64
    class_weights: tuple[float, ...] = (1.0, 8.0, 3.5, 9.5)


@dataclass(frozen=True)
class PointSetup:
    """One point of a table: the rounds, sampling, quantization and (for DP) the noise."""

    rounds: int
    sampling_rate: float
    clip: float  # per-value clip of a round without DP (the sim's --clip)
    noise_multiplier: float | None = None  # None: the no-DP baseline
    l2_clip: float = 1.0
    delta: float = 1e-5
    epsilon_budget: float | None = None
    quant_bits: int = 8
    min_participants: int = 3
    max_participants: int = 256
    seed: int = 0

    def dp_config(self) -> DPConfig | None:
        if self.noise_multiplier is None:
            return None
        return DPConfig(self.noise_multiplier, self.l2_clip, self.sampling_rate, self.delta,
                        self.epsilon_budget)


@dataclass
class RoundRecord:
    """What one round did (``skipped``: why no round ran, e.g. a Poisson draw out of range)."""

    round_no: int
    participants: tuple[int, ...] = ()
    exact: bool = False
    epsilon: float | None = None
    noise_multiplier: float | None = None
    update_norm_median: float = 0.0
    skipped: str = ""


def round_noise_params(noise_multiplier: float, l2_clip: float, *, quant_bits: int,
                       vector_len: int, participants: int) -> tuple[wire.RoundNoise, int, float]:
    """(DP block, threshold, coordinate clip) of a round among ``participants`` gateways,
    exactly as the orchestrator plans it for a complete graph."""
    threshold = participants // 2 + 1  # degree n - 1: (degree + 1) // 2 + 1
    cfg = DPConfig(noise_multiplier, l2_clip)
    clip = cfg.coordinate_clip(vector_len)
    noise = round_noise.plan(noise_multiplier, l2_clip, quant_bits=quant_bits, clip=clip,
                             vector_len=vector_len, threshold=threshold,
                             max_participants=participants)
    return noise, threshold, clip


def planned_epsilon(noise_multiplier: float, *, rounds: int, sampling_rate: float, delta: float,
                    l2_clip: float, quant_bits: int, vector_len: int, participants: int) -> float:
    """Epsilon after ``rounds`` releases of the round planned for ``participants`` gateways."""
    noise, threshold, _ = round_noise_params(noise_multiplier, l2_clip, quant_bits=quant_bits,
                                             vector_len=vector_len, participants=participants)
    acc = accounting.PrivacyAccountant()
    acc.spend(noise.params(threshold, vector_len), sampling_rate, rounds)
    return float(acc.epsilon(delta))


def calibrate(target: float, epsilon_of: Callable[[float], float], *, lo: float = 0.05,
              hi: float = 1.0, rel_tol: float = 1e-5) -> float:
    """The smallest noise multiplier z (to ``rel_tol``) with ``epsilon_of(z) <= target``.

    Bisection in log z on the accountant: epsilon falls as z grows. The bracket widens by
    doubling until it holds the target; the upper end, which meets the target, is returned.
    """
    if not (isinstance(target, float | int) and math.isfinite(target) and target > 0):
        raise InputError(f"epsilon target must be finite and > 0, got {target!r}")
    while epsilon_of(hi) > target:
        hi *= 2
        if hi > 1e4:
            raise InputError(f"no noise multiplier up to 1e4 reaches epsilon {target}")
    while lo > 1e-4 and epsilon_of(lo) <= target:
        lo /= 2
    while hi / lo > 1 + rel_tol:
        mid = math.sqrt(lo * hi)
        if epsilon_of(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def noise_for_budget(target: float, setup: PointSetup, vector_len: int, population: int) -> float:
    """z for a point: ``setup.rounds`` rounds at ``setup.sampling_rate`` land at <= ``target``.

    The rounds are planned for the expected number of participants, q x population.
    """
    expected = max(setup.min_participants, round(setup.sampling_rate * population))

    def eps(z: float) -> float:
        return planned_epsilon(z, rounds=setup.rounds, sampling_rate=setup.sampling_rate,
                               delta=setup.delta, l2_clip=setup.l2_clip,
                               quant_bits=setup.quant_bits, vector_len=vector_len,
                               participants=expected)

    return calibrate(target * (1 - CALIBRATION_SLACK), eps)


@dataclass
class FederatedRun:
    """One training run of a table point over a fleet of in-memory gateways."""

    artifacts: Any
    datasets: Mapping[int, Dataset]  # gateway id -> its local data
    local: LocalSetup
    point: PointSetup
    params: F32
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    optimizer: OptimizerState = field(default_factory=OptimizerState)
    members: set[int] = field(default_factory=set)
    records: list[RoundRecord] = field(default_factory=list)
    # The last round's inputs of each participant: its update and its rounding and noise seeds.
    last_inputs: dict[int, tuple[F32, bytes, bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        key = nacl.signing.SigningKey.generate()
        ids = {pid: nacl.signing.SigningKey.generate() for pid in self.datasets}
        self.server = SecAggServer(key, {p: bytes(k.verify_key) for p, k in ids.items()})
        dp = self.point.dp_config()
        self.ledger = None if dp is None else PrivacyLedger(dp)
        floor = None if dp is None else dp_params.GatewayPolicy(dp.noise_multiplier)
        policy = GatewayPolicy(min_participants=self.point.min_participants, privacy=floor)
        self.gateways = {p: SecAggGateway(p, k, bytes(key.verify_key), policy)
                         for p, k in ids.items()}

    def run(self, progress: Callable[[RoundRecord], None] | None = None) -> list[RoundRecord]:
        """All planned rounds; a skipped Poisson draw is recorded and the next round drawn."""
        for round_no in range(1, self.point.rounds + 1):
            record = self.run_round(round_no)
            self.records.append(record)
            if progress is not None:
                progress(record)
        return self.records

    def run_round(self, round_no: int) -> RoundRecord:
        """One round: sample, configure, train, aggregate securely, update, account."""
        pt = self.point
        try:
            pids = poisson_select(list(self.datasets), pt.sampling_rate, pt.min_participants,
                                  pt.max_participants)
        except RoundAbortedError as exc:
            return RoundRecord(round_no, skipped=str(exc))
        kwargs, params = self._round_config(len(pids))
        if self.ledger is not None and params is not None:
            self.ledger.check_budget(params)
        vector_len = int(self.params.size)
        self._deliver([self.server.open_round(pids, vector_len=vector_len, **kwargs)], pids)
        self.last_inputs = {}
        norms = [self._train_and_submit(pid, round_no) for pid in pids]
        for _ in range(4):
            if self.server.state.stage in (ServerStage.DONE, ServerStage.ABORTED):
                break
            self._deliver(self.server.close_stage(), pids)
        result = self.server.state.result
        if result is None:
            raise RoundAbortedError(f"round {round_no}: {self.server.state.abort_reason}")
        record = RoundRecord(round_no, result.included, self._exact(result.included),
                             update_norm_median=float(statistics.median(norms)))
        self.params, self.optimizer = apply(self.strategy, self.params, result.weighted_mean(),
                                            self.optimizer, round_no)
        self.members.update(result.included)
        if self.ledger is not None and params is not None:
            entry = self.ledger.spend(params)
            record.epsilon, record.noise_multiplier = entry["epsilon"], entry["noise_multiplier"]
        return record

    def _exact(self, included: Sequence[int]) -> bool:
        """Whether the unmasked sum is exactly the ring sum of the survivors' noisy levels."""
        st = self.server.state
        assert st.result is not None
        levels = []
        for pid in included:
            update, rounding_seed, noise_seed = self.last_inputs[pid]
            levels.append(plain_levels(update, st.config, st.round_id, rounding_seed, noise_seed))
        return bool(np.array_equal(st.result.total, mask.ring_sum(np.stack(levels),
                                                                  st.config.ring_bits)))

    def _round_config(self, n: int) -> tuple[dict[str, Any], dp_params.NoiseParams | None]:
        pt, d = self.point, int(self.params.size)
        base: dict[str, Any] = {"degree": n - 1, "quant_bits": pt.quant_bits, "max_weight": 1}
        if pt.noise_multiplier is None:
            return {**base, "clip": pt.clip}, None
        noise, threshold, clip = round_noise_params(pt.noise_multiplier, pt.l2_clip,
                                                    quant_bits=pt.quant_bits, vector_len=d,
                                                    participants=n)
        return ({**base, "threshold": threshold, "clip": clip, "noise": noise},
                noise.params(threshold, d))

    def _train_and_submit(self, pid: int, round_no: int) -> float:
        """Local training, then the update into the gateway core; returns the update's L2 norm."""
        from models.trainer import TrainConfig, train_local

        inputs, labels = self.datasets[pid]
        lc = self.local
        res = train_local(self.artifacts, self.params, inputs, labels, TrainConfig(
            epochs=lc.epochs, batch_size=lc.batch_size, lr=lc.lr, mu=lc.mu,
            class_weights=lc.class_weights, seed=_shuffle_seed(self.point.seed, round_no, pid)))
        # Fresh CSPRNG seeds, as the daemon draws them; kept here only to recompute the levels.
        rounding_seed, noise_seed = os.urandom(32), os.urandom(32)
        self.last_inputs[pid] = (res.delta, rounding_seed, noise_seed)
        replies = self.gateways[pid].provide_update(res.delta, 1, rounding_seed=rounding_seed,
                                                    noise_seed=noise_seed)
        for reply in replies:
            self.server.receive(reply)
        return float(res.metrics["delta_l2"])

    def _deliver(self, outs: Sequence[Outbound], pids: Sequence[int]) -> None:
        """Hand each message to its gateway(s) and every reply to the server; a refusal raises."""
        for out in outs:
            for pid in [out.recipient] if out.recipient is not None else pids:
                try:
                    replies = self.gateways[pid].handle(out.payload)
                except FedgateError as exc:
                    raise ProtocolError(f"gateway {pid} refused the round: {exc}") from exc
                for reply in replies:
                    self.server.receive(reply)


def _shuffle_seed(seed: int, round_no: int, pid: int) -> int:
    """Batch-order seed of one local round (not a secret: shuffling only)."""
    return int(np.random.SeedSequence([seed, round_no, pid]).generate_state(1)[0] >> 1)
