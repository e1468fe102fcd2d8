"""Local training on the gateway with onnxruntime-training: FedProx, class weights, flat deltas.

FedProx lives in the training graph: the loss is ``CE_w(logits, y) + mu/2 * ||w - w_global||^2``
with ``w_global`` and ``mu`` fed as graph inputs, so its gradient ``mu * (w - w_global)`` reaches
the optimizer (AdamW) exactly as the paper's proximal term does; ``mu = 0`` is plain FedAvg.

Flat parameter vectors follow the manifest's ``parameters`` order (onnxruntime's contiguous buffer
order, checked when artifacts are generated). ``trainable_only`` is passed explicitly on every
buffer call because ``get_contiguous_parameters`` defaults to False and
``copy_buffer_to_parameters`` to True.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models import graph
from models.artifacts import CLASS_WEIGHTS, LABELS, Artifacts
from models.ort import runtime, session_options, training_api
from native.errors import TrainingError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one local round (they travel in the signed round config)."""

    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    mu: float = 0.0
    class_weights: tuple[float, ...] | None = None
    seed: int = 0

    def check(self, n_classes: int) -> None:
        """``TrainingError`` for values no round may use."""
        if not (1 <= self.epochs <= 1000 and 1 <= self.batch_size <= 65536):
            raise TrainingError(f"epochs {self.epochs} / batch size {self.batch_size} out of range")
        if not (np.isfinite(self.lr) and 0 < self.lr <= 10 and np.isfinite(self.mu)):
            raise TrainingError(f"learning rate {self.lr} or mu {self.mu} invalid")
        if self.mu < 0:
            raise TrainingError(f"FedProx mu must be >= 0, got {self.mu}")
        w = self.class_weights
        if w is not None and (
            len(w) != n_classes or not all(np.isfinite(v) and v >= 0 for v in w) or sum(w) <= 0
        ):
            raise TrainingError(f"class weights {w} must be {n_classes} finite values >= 0")


@dataclass(frozen=True)
class TrainResult:
    """What a local round returns: the flat update, how many samples made it, and metrics."""

    delta: NDArray[Any]
    n_samples: int
    metrics: dict[str, float]


def check_params(flat: Any, count: int) -> NDArray[Any]:
    """A float32 copy of a flat parameter vector, or ``TrainingError`` (length, dtype, NaN/Inf)."""
    arr = np.asarray(flat)
    if arr.ndim != 1 or arr.shape[0] != count:
        raise TrainingError(f"parameter vector has shape {arr.shape}, expected ({count},)")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TrainingError(f"parameter vector dtype {arr.dtype} is not floating point")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise TrainingError("parameter vector contains NaN or Inf")
    return arr


def check_data(
    artifacts: Artifacts, inputs: Mapping[str, Any], labels: Any | None
) -> tuple[dict[str, NDArray[Any]], NDArray[Any] | None]:
    """Inputs as float32 arrays of the manifest's shapes, labels as int64 class ids."""
    spec = artifacts.spec
    shapes = spec.input_shapes()
    if not isinstance(inputs, Mapping) or set(inputs) != set(shapes):
        got = sorted(inputs) if isinstance(inputs, Mapping) else type(inputs).__name__
        raise TrainingError(f"inputs must be {sorted(shapes)}, got {got}")
    out, n = {}, None
    for name, shape in shapes.items():
        arr = np.asarray(inputs[name])
        if arr.ndim != len(shape) or list(arr.shape[1:]) != shape[1:]:
            raise TrainingError(f"input {name} has shape {arr.shape}, expected {shape}")
        if n is not None and arr.shape[0] != n:
            raise TrainingError("inputs have different numbers of samples")
        n = arr.shape[0]
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.all(np.isfinite(arr)):
            raise TrainingError(f"input {name} contains NaN or Inf")
        out[name] = arr
    if not n:
        raise TrainingError("no samples")
    if labels is None:
        return out, None
    y = np.asarray(labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise TrainingError(f"labels must be {n} integers, got {y.dtype} {y.shape}")
    if y.min() < 0 or y.max() >= spec.n_classes:
        raise TrainingError(f"labels must lie in 0..{spec.n_classes - 1}")
    return out, y.astype(np.int64)


class LocalTrainer:
    """One onnxruntime-training session (model + AdamW state) over verified artifacts."""

    def __init__(self, artifacts: Artifacts, *, threads: int = 1) -> None:
        api = training_api()
        self.artifacts = artifacts
        self.spec = artifacts.spec
        self.count = artifacts.manifest.parameter_count
        try:
            state = api.CheckpointState.load_checkpoint(str(artifacts.checkpoint))
            self.module = api.Module(
                str(artifacts.training_model),
                state,
                str(artifacts.eval_model),
                session_options=session_options(threads),
            )
            self.optimizer = api.Optimizer(str(artifacts.optimizer_model), self.module)
        except Exception as exc:
            raise TrainingError(f"cannot load training artifacts {artifacts.root}: {exc}") from exc
        if self.module.get_parameters_size(trainable_only=True) != self.count:
            raise TrainingError("artifacts' parameter count differs from the manifest")
        self._names = {True: list(self.module.input_names())}
        self.module.eval()
        self._names[False] = list(self.module.input_names())
        self.module.train()
        self._globals: dict[str, NDArray[Any]] = {}
        self._mu = np.array(0.0, dtype=np.float32)

    def get_parameters(self) -> NDArray[Any]:
        """The current flat float32 parameters."""
        buf = self.module.get_contiguous_parameters(trainable_only=True)
        return np.array(buf.numpy(), dtype=np.float32, copy=True)

    def set_parameters(self, flat: Any) -> None:
        """Load a flat parameter vector (length and finiteness checked)."""
        arr = check_params(flat, self.count)
        # the binding wants the C OrtValue, not the Python wrapper
        value = runtime().OrtValue.ortvalue_from_numpy(arr)._ortvalue
        self.module.copy_buffer_to_parameters(value, trainable_only=True)

    def set_proximal(self, global_flat: NDArray[Any], mu: float) -> None:
        """Anchor of the FedProx term: the round's global model and its strength."""
        self._globals = {
            name + graph.GLOBAL_SUFFIX: value
            for name, value in graph.unflatten(
                self.spec, check_params(global_flat, self.count)
            ).items()
        }
        self._mu = np.array(mu, dtype=np.float32)

    def _feeds(
        self, batch: dict[str, NDArray[Any]], y: NDArray[Any], weights: NDArray[Any]
    ) -> list[Any]:
        values: dict[str, Any] = {**batch, **self._globals, LABELS: y, CLASS_WEIGHTS: weights}
        values[graph.PROX_MU] = self._mu
        return [values[name] for name in self._names[self.module.training]]

    def train_epoch(
        self,
        data: dict[str, NDArray[Any]],
        labels: NDArray[Any],
        batch_size: int,
        weights: NDArray[Any],
        rng: np.random.Generator,
    ) -> tuple[float, float]:
        """One shuffled pass; returns (mean loss, accuracy) over the epoch."""
        if not self._globals:
            raise TrainingError("set_proximal must be called before training")
        self.module.train()
        order = rng.permutation(labels.shape[0])
        loss_sum, correct = 0.0, 0
        for start in range(0, order.size, batch_size):
            idx = np.sort(order[start : start + batch_size])
            y = labels[idx]
            loss, logits = self.module(
                *self._feeds({k: v[idx] for k, v in data.items()}, y, weights)
            )
            if not np.isfinite(loss):
                raise TrainingError("training diverged: loss is NaN or Inf")
            self.optimizer.step()
            self.module.lazy_reset_grad()
            loss_sum += float(loss) * idx.size
            correct += int(np.count_nonzero(np.argmax(logits, axis=1) == y))
        return loss_sum / order.size, correct / order.size

    def logits(self, data: dict[str, NDArray[Any]], batch_size: int = 1024) -> NDArray[Any]:
        """Class scores of the current parameters (eval graph, no FedProx)."""
        if not self._globals:
            self.set_proximal(self.get_parameters(), 0.0)
        mu, self._mu = self._mu, np.array(0.0, dtype=np.float32)
        self.module.eval()
        n = next(iter(data.values())).shape[0]
        dummy = np.ones(self.spec.n_classes, dtype=np.float32)
        out = []
        try:
            for s in range(0, n, batch_size):
                batch = {k: v[s : s + batch_size] for k, v in data.items()}
                y = np.zeros(next(iter(batch.values())).shape[0], dtype=np.int64)
                out.append(self.module(*self._feeds(batch, y, dummy))[1])
        finally:
            self._mu = mu
            self.module.train()
        logits: NDArray[Any] = np.concatenate(out).astype(np.float32)
        return logits


def _weights(config: TrainConfig, n_classes: int) -> NDArray[Any]:
    w = config.class_weights if config.class_weights is not None else (1.0,) * n_classes
    return np.asarray(w, dtype=np.float32)


def train_local(
    artifacts: Artifacts,
    global_params: Any,
    inputs: Mapping[str, Any],
    labels: Any,
    config: TrainConfig,
    *,
    threads: int = 1,
) -> TrainResult:
    """One local round: start from ``global_params``, train, return ``w_local - w_global``.

    Deterministic for a given ``config.seed`` (shuffling) with ``threads=1``. The optimizer state
    starts fresh every round. Raises ``TrainingError`` on bad parameters, data or divergence.
    """
    spec = artifacts.spec
    config.check(spec.n_classes)
    w_global = check_params(global_params, artifacts.manifest.parameter_count)
    data, y = check_data(artifacts, inputs, labels)
    assert y is not None
    trainer = LocalTrainer(artifacts, threads=threads)
    trainer.set_parameters(w_global)
    trainer.set_proximal(w_global, config.mu)
    trainer.optimizer.set_learning_rate(float(config.lr))
    rng = np.random.default_rng(config.seed)  # shuffling only; not a secret
    weights = _weights(config, spec.n_classes)
    losses = []
    for _ in range(config.epochs):
        loss, acc = trainer.train_epoch(data, y, config.batch_size, weights, rng)
        losses.append(loss)
    delta = trainer.get_parameters() - w_global
    if not np.all(np.isfinite(delta)):
        raise TrainingError("training produced NaN or Inf parameters")
    metrics = {
        "loss_first_epoch": losses[0],
        "loss": losses[-1],
        "accuracy": acc,
        "epochs": float(config.epochs),
        "delta_l2": float(np.linalg.norm(delta)),
    }
    logger.info("local round: %d samples, loss %.4f -> %.4f", y.size, losses[0], losses[-1])
    return TrainResult(delta=delta.astype(np.float32), n_samples=int(y.size), metrics=metrics)
