"""Evaluation: loss, accuracy, per-class sensitivity / positive predictivity, macro-F1.

A class with no true and no predicted samples has undefined Se, +P and F1 (NaN here, ``None`` in
``to_dict``); macro-F1 averages the defined per-class F1 values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.artifacts import Artifacts
from models.trainer import LocalTrainer, check_data, check_params


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one model on one labelled set."""

    n_samples: int
    loss: float
    accuracy: float
    sensitivity: dict[str, float]
    ppv: dict[str, float]
    f1: dict[str, float]
    macro_f1: float
    confusion: list[list[int]]  # rows: true class, columns: predicted class

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; undefined values become ``None``."""

        def clean(v: Any) -> Any:
            if isinstance(v, float):
                return None if math.isnan(v) else round(v, 6)
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return v

        return {k: clean(v) for k, v in self.__dict__.items()}


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else math.nan


def cross_entropy(logits: NDArray[Any], labels: NDArray[Any]) -> float:
    """Mean softmax cross-entropy (float64, numerically stable)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(labels.size), labels].mean())


def classification_metrics(
    y_true: NDArray[Any], y_pred: NDArray[Any], class_names: Sequence[str], loss: float = math.nan
) -> EvalResult:
    """Metrics from true and predicted class ids."""
    k = len(class_names)
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (y_true, y_pred), 1)
    tp = np.diag(conf).astype(np.float64)
    support, predicted = conf.sum(axis=1), conf.sum(axis=0)
    se = {c: _ratio(tp[i], support[i]) for i, c in enumerate(class_names)}
    ppv = {c: _ratio(tp[i], predicted[i]) for i, c in enumerate(class_names)}
    f1 = {c: _ratio(2 * tp[i], support[i] + predicted[i]) for i, c in enumerate(class_names)}
    defined = [v for v in f1.values() if not math.isnan(v)]
    return EvalResult(
        n_samples=int(y_true.size),
        loss=loss,
        accuracy=_ratio(tp.sum(), y_true.size),
        sensitivity=se,
        ppv=ppv,
        f1=f1,
        macro_f1=float(np.mean(defined)) if defined else math.nan,
        confusion=conf.tolist(),
    )


def evaluate(
    artifacts: Artifacts,
    params: Any,
    inputs: Mapping[str, Any],
    labels: Any,
    *,
    threads: int = 1,
    trainer: LocalTrainer | None = None,
) -> EvalResult:
    """Evaluate flat ``params`` on labelled data with the artifacts' eval graph.

    Pass an existing ``trainer`` to reuse its session (its parameters are replaced).
    """
    flat = check_params(params, artifacts.manifest.parameter_count)
    data, y = check_data(artifacts, inputs, labels)
    assert y is not None
    trainer = trainer or LocalTrainer(artifacts, threads=threads)
    trainer.set_parameters(flat)
    logits = trainer.logits(data)
    pred = np.argmax(logits, axis=1)
    return classification_metrics(y, pred, artifacts.spec.class_names, cross_entropy(logits, y))
