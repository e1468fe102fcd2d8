"""Empirical membership inference against a published model (Yeom et al. 2018 loss attack).

The attacker holds the model and a pool of beats, some from patients whose gateways trained the
model (members) and some from patients who never took part (non-members), and scores each beat by
its loss under the model: a lower loss says "member". The attack's success is the ROC of that
score: its AUC (0.5 = no better than a coin) and its true-positive rate at low false-positive
rates (Carlini et al. 2022: the regime that matters). Members and non-members are whole patients,
so the test measures what the user-level guarantee is about.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from native.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["attack", "audit_version", "load_beats", "model_losses", "per_sample_loss",
           "record_paths", "roc_auc", "tpr_at_fpr"]

DEFAULT_FPRS = (0.01, 0.001)


def per_sample_loss(logits: NDArray[Any], labels: NDArray[Any]) -> NDArray[np.float64]:
    """Softmax cross-entropy of each sample (float64, numerically stable)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or y.shape != (z.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise InputError("need logits (n, k) and integer labels (n,)")
    if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
        raise InputError("labels outside the logits' classes")
    if not np.isfinite(z).all():
        raise InputError("logits contain NaN or Inf")
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    out: NDArray[np.float64] = -logp[np.arange(y.size), y]
    return out


def _scores(members: Sequence[float] | NDArray[Any], nonmembers: Sequence[float] | NDArray[Any]
            ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    m = np.asarray(members, dtype=np.float64).ravel()
    n = np.asarray(nonmembers, dtype=np.float64).ravel()
    if m.size == 0 or n.size == 0:
        raise InputError("membership inference needs members and non-members")
    if not (np.isfinite(m).all() and np.isfinite(n).all()):
        raise InputError("scores contain NaN or Inf")
    return m, n


def roc_auc(member_scores: Any, nonmember_scores: Any) -> float:
    """P(score of a random member > score of a random non-member), ties counted half."""
    m, n = _scores(member_scores, nonmember_scores)
    both = np.concatenate([m, n])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(both.size, dtype=np.float64)
    ranks[order] = np.arange(1, both.size + 1)
    # Average ranks within ties.
    sorted_vals = both[order]
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    for start, count in zip(first, counts, strict=True):
        if count > 1:
            ranks[order[start:start + count]] = start + (count + 1) / 2
    rank_sum = ranks[: m.size].sum()
    return float((rank_sum - m.size * (m.size + 1) / 2) / (m.size * n.size))


def tpr_at_fpr(member_scores: Any, nonmember_scores: Any, fpr: float) -> float:
    """The largest share of members flagged when at most ``fpr`` of non-members are."""
    m, n = _scores(member_scores, nonmember_scores)
    if not 0 <= fpr < 1:
        raise InputError(f"fpr must be in [0, 1), got {fpr!r}")
    allowed = math.floor(fpr * n.size)  # non-members that may score above the threshold
    ranked = np.sort(n)[::-1]
    threshold = ranked[allowed] if allowed < n.size else -np.inf
    return float(np.mean(m > threshold))


def attack(member_losses: Any, nonmember_losses: Any,
           fprs: Sequence[float] = DEFAULT_FPRS) -> dict[str, Any]:
    """The loss attack's AUC and TPR at each FPR; the score is minus the loss."""
    m, n = _scores(member_losses, nonmember_losses)
    out: dict[str, Any] = {"attack": "loss (Yeom et al. 2018)", "members": int(m.size),
                           "nonmembers": int(n.size), "auc": roc_auc(-m, -n)}
    out["tpr_at_fpr"] = {f"{f:g}": tpr_at_fpr(-m, -n, f) for f in fprs}
    return out


def model_losses(artifacts: Any, params: Any, inputs: Mapping[str, Any], labels: Any
                 ) -> NDArray[np.float64]:
    """Per-sample losses of flat ``params`` on labelled data (the artifacts' eval graph)."""
    from models.trainer import LocalTrainer, check_data, check_params

    flat = check_params(params, artifacts.manifest.parameter_count)
    data, y = check_data(artifacts, inputs, labels)
    assert y is not None
    trainer = LocalTrainer(artifacts, threads=1)
    trainer.set_parameters(flat)
    return per_sample_loss(trainer.logits(data), y)


def record_paths(specs: Sequence[str | Path]) -> list[Path]:
    """MIT-BIH record paths (no extension) named directly or as every record of a folder.

    A name may carry its ``.hea``/``.dat``/``.atr`` extension. Anything that names no readable
    record is an ``InputError`` naming it: an audit on fewer patients than asked is not the
    audit that was asked for.
    """
    out: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p.with_suffix("") for p in path.glob("*.hea")
                           if p.with_suffix(".dat").is_file() and p.with_suffix(".atr").is_file())
            if not found:
                raise InputError(f"no MIT-BIH records (.hea + .dat + .atr) in folder {path}")
            out.extend(found)
            continue
        base = path.with_suffix("") if path.suffix in (".hea", ".dat", ".atr") else path
        missing = [s for s in (".hea", ".dat", ".atr") if not base.with_suffix(s).is_file()]
        if missing:
            raise InputError(f"record {base}: missing {', '.join(missing)}")
        out.append(base)
    if not out:
        raise InputError("no records named")
    return list(dict.fromkeys(out))


def load_beats(specs: Sequence[str | Path]) -> tuple[dict[str, NDArray[Any]], NDArray[Any],
                                                     list[str]]:
    """Every classifiable beat of the named records (``models.ecg.beat_dataset``), pooled."""
    from models.ecg import beat_dataset

    parts = [(p.name, *beat_dataset(p)) for p in record_paths(specs)]
    parts = [p for p in parts if p[2].size]
    if not parts:
        raise InputError("the named records hold no classifiable beats")
    inputs = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    return inputs, np.concatenate([p[2] for p in parts]), [p[0] for p in parts]


def audit_version(artifacts: Any, params: Any, members: tuple[Any, Any],
                  nonmembers: tuple[Any, Any], fprs: Sequence[float] = DEFAULT_FPRS
                  ) -> dict[str, Any]:
    """The loss attack on one model version: ROC figures and the two groups' mean losses."""
    m = model_losses(artifacts, params, *members)
    n = model_losses(artifacts, params, *nonmembers)
    out = attack(m, n, fprs)
    out["member_loss_mean"] = float(m.mean())
    out["nonmember_loss_mean"] = float(n.mean())
    return out
