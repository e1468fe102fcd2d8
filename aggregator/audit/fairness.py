"""Per-gateway model quality from federated evaluations, and the gateways it serves worst.

Each gateway's report holds the confusion counts of one model version on its own hold-out (one
wearer per gateway, so per gateway is per patient). From the counts alone: sensitivity (Se,
recall) and positive predictivity (+P, precision) of each class, F1, macro-F1 over the classes
whose F1 is defined (as ``models.evaluate``: undefined when a class has no true and no predicted
beat). The worst decile is the ceil(10 %) of gateways with the lowest macro-F1 (at least one),
named by their pseudonymous gateway id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from native.errors import InputError

__all__ = ["confusion_metrics", "pooled", "worst_decile"]


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def confusion_metrics(confusion: Sequence[Sequence[int]], classes: Sequence[str]
                      ) -> dict[str, Any]:
    """Se, +P and F1 per class, macro-F1 and accuracy of a k x k confusion (rows = truth)."""
    k = len(classes)
    if len(confusion) != k or any(len(row) != k for row in confusion):
        raise InputError(f"confusion must be {k} x {k} for classes {list(classes)}")
    if any(v < 0 for row in confusion for v in row):
        raise InputError("confusion counts must be >= 0")
    support = [sum(row) for row in confusion]
    predicted = [sum(confusion[i][j] for i in range(k)) for j in range(k)]
    tp = [confusion[i][i] for i in range(k)]
    se = {c: _ratio(tp[i], support[i]) for i, c in enumerate(classes)}
    ppv = {c: _ratio(tp[i], predicted[i]) for i, c in enumerate(classes)}
    f1 = {c: _ratio(2 * tp[i], support[i] + predicted[i]) for i, c in enumerate(classes)}
    defined = [v for v in f1.values() if v is not None]
    total = sum(support)
    return {"sensitivity": se, "ppv": ppv, "f1": f1,
            "macro_f1": sum(defined) / len(defined) if defined else None,
            "accuracy": _ratio(sum(tp), total), "support": dict(zip(classes, support,
                                                                     strict=True))}


def pooled(confusions: Sequence[Sequence[Sequence[int]]], k: int) -> list[list[int]]:
    """The element-wise sum of k x k confusion matrices (the fleet's pooled hold-out)."""
    out = [[0] * k for _ in range(k)]
    for conf in confusions:
        if len(conf) != k or any(len(row) != k for row in conf):
            raise InputError(f"every confusion must be {k} x {k}")
        for i in range(k):
            for j in range(k):
                out[i][j] += int(conf[i][j])
    return out


def worst_decile(macro_f1: dict[str, float | None]) -> list[str]:
    """Gateway ids of the lowest-macro-F1 tenth (at least one; undefined scores sort first).

    Ties at the cut are broken by gateway id, so the list is reproducible.
    """
    if not macro_f1:
        return []
    count = max(1, math.ceil(len(macro_f1) / 10))
    ranked = sorted(macro_f1, key=lambda g: (-1.0 if macro_f1[g] is None else macro_f1[g], g))
    return ranked[:count]
