"""The simulator's outputs: ``report.json`` and ``learning_curves.png``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def write_outputs(out: Path, report: dict[str, Any]) -> None:
    """Write the report (atomically) and its plot into ``out``."""
    report.setdefault("plot", str(out / "learning_curves.png"))
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, allow_nan=False, default=_plain) + "\n",
                   encoding="utf-8")
    os.replace(tmp, out / "report.json")
    plot_learning_curves(report, out / "learning_curves.png")


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _curve(report: dict[str, Any], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [0], [report["initial"]["metrics"].get(key)]
    for i, row in enumerate(report["rounds"], start=1):
        value = (row.get("metrics") or {}).get(key)
        if value is not None:
            xs.append(i)
            ys.append(value)
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
    return [p[0] for p in pairs], [float(p[1]) for p in pairs]


def plot_learning_curves(report: dict[str, Any], path: Path) -> None:
    """Held-out macro-F1, accuracy and loss per round; round wall time split by part."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a gateway or a CI runner
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, style in (("macro_f1", "o-"), ("accuracy", "s-")):
        xs, ys = _curve(report, key)
        left.plot(xs, ys, style, label=key.replace("_", "-"))
    xs, ys = _curve(report, "loss")
    twin = left.twinx()
    twin.plot(xs, ys, "x--", color="grey", label="loss")
    twin.set_ylabel("held-out loss")
    left.set_xlabel("round")
    left.set_ylabel("held-out score")
    left.set_ylim(0, 1)
    left.legend(loc="lower right")
    left.set_title("global model on held-out patients")
    rounds = report["rounds"]
    idx = list(range(1, len(rounds) + 1))
    bottom = [0.0] * len(rounds)
    for key in ("training_s", "protocol_s", "transport_s"):
        vals = [float(r.get(key, 0.0)) for r in rounds]
        right.bar(idx, vals, bottom=bottom, label=key[:-2])
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    right.set_xlabel("round")
    right.set_ylabel("seconds")
    right.legend()
    right.set_title("round wall time")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
