"""Centralised training of the ECG model on MIT-BIH DS1 with a patient-wise validation split.

Training and validation patients never share a beat. The validation patients are fixed before
training (chosen because together they hold S, V and F beats); class weights are computed from the
training patients only. Prints one JSON object on its last line.

    python benchmarks/train_centralised.py [--quick] [--epochs N] [--weights balanced|sqrt|none]
    python benchmarks/train_centralised.py --validation 106,114,116,209,215,220
    python benchmarks/train_centralised.py --folds 4   # leave-patients-out, pooled predictions
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# The installed fedgate, never the checkout's source folders (they lack the built modules).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_info

from models import artifacts, graph
from models.ecg import beat_dataset
from models.evaluate import classification_metrics, evaluate
from models.trainer import LocalTrainer

MITDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "mitdb"
DS1 = "101 106 108 109 112 114 115 116 118 119 122 124 201 203 205 207 208 209 215 220 223 230"
VALIDATION = ("118", "124", "201", "205", "207", "223")


def load(records: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    parts = [beat_dataset(MITDB / r) for r in records]
    x = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    return x, np.concatenate([p[1] for p in parts])


def class_weights(y: np.ndarray, mode: str, n_classes: int) -> np.ndarray:
    """Inverse class frequency ('balanced'), its square root ('sqrt'), or ones ('none')."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = y.size / (n_classes * np.maximum(counts, 1.0))
    if mode == "sqrt":
        w = np.sqrt(w)
    elif mode == "none":
        w = np.ones(n_classes)
    return (w / w[0]).astype(np.float32)


def fit(
    art: artifacts.Artifacts, x: dict[str, np.ndarray], y: np.ndarray, args: argparse.Namespace
) -> tuple[LocalTrainer, list[float], np.ndarray]:
    """Train a fresh model from the initial weights; returns trainer, loss history, weights."""
    w = class_weights(y, args.weights, art.spec.n_classes)
    trainer = LocalTrainer(art, threads=1)
    trainer.set_proximal(graph.flatten(art.spec, graph.initial_params(art.spec)), 0.0)
    rng = np.random.default_rng(args.seed)
    history = []
    for epoch in range(args.epochs):
        # step decay: the last third of the epochs at a tenth of the rate
        trainer.optimizer.set_learning_rate(args.lr * (0.1 if epoch >= 2 * args.epochs // 3 else 1))
        loss, _ = trainer.train_epoch(x, y, args.batch, w, rng)
        history.append(round(loss, 5))
    return trainer, history, w


def fold_assignment(records: list[str], folds: int) -> list[list[str]]:
    """Patients dealt round-robin in order of S-beat count, so every fold holds some S beats."""
    s_count = {r: int(np.sum(load([r])[1] == 1)) for r in records}
    ranked = sorted(records, key=lambda r: (-s_count[r], r))
    return [ranked[i::folds] for i in range(folds)]


def cross_validate(art: artifacts.Artifacts, args: argparse.Namespace) -> dict[str, object]:
    """Leave-patients-out K-fold: every DS1 beat is predicted by a model that never saw its
    patient; metrics are computed on the pooled predictions."""
    records = DS1.split()
    groups = fold_assignment(records, args.folds)
    y_all, p_all, per_fold = [], [], []
    for held in groups:
        xtr, ytr = load([r for r in records if r not in held])
        xva, yva = load(held)
        trainer, _, _ = fit(art, xtr, ytr, args)
        pred = np.argmax(trainer.logits(xva), axis=1)
        y_all.append(yva)
        p_all.append(pred)
        fold = classification_metrics(yva, pred, art.spec.class_names)
        per_fold.append({"held_out": held, "macro_f1": round(fold.macro_f1, 4)})
    pooled = classification_metrics(
        np.concatenate(y_all), np.concatenate(p_all), art.spec.class_names
    )
    return {"folds": per_fold, "validation": pooled.to_dict()}


def holdout(art: artifacts.Artifacts, args: argparse.Namespace) -> dict[str, object]:
    """Train on DS1 minus the validation patients, evaluate on them."""
    validation = tuple(args.validation.split(",")) if args.validation else VALIDATION
    if not set(validation) <= set(DS1.split()):
        raise SystemExit(f"validation records must be DS1 records: {DS1}")
    train_ids = [r for r in DS1.split() if r not in validation]
    xtr, ytr = load(train_ids)
    xva, yva = load(list(validation))
    t1 = time.perf_counter()
    trainer, history, w = fit(art, xtr, ytr, args)
    t_train = time.perf_counter() - t1
    params = trainer.get_parameters()
    train = evaluate(art, params, xtr, ytr, trainer=trainer)
    return {
        "split": {
            "train": train_ids,
            "validation": list(validation),
            "train_counts": np.bincount(ytr, minlength=4).tolist(),
            "validation_counts": np.bincount(yva, minlength=4).tolist(),
        },
        "class_weights": w.round(3).tolist(),
        "figures": {"train_s": round(t_train, 2), "loss_per_epoch": history},
        "validation": evaluate(art, params, xva, yva, trainer=trainer).to_dict(),
        "train": {"accuracy": round(train.accuracy, 4), "macro_f1": round(train.macro_f1, 4)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 epochs")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weights", choices=("balanced", "sqrt", "none"), default="sqrt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation", help="comma-separated held-out DS1 records")
    parser.add_argument("--folds", type=int, default=0, help="leave-patients-out K-fold instead")
    args = parser.parse_args()
    if not (MITDB / "101.hea").is_file():
        raise SystemExit(f"MIT-BIH records not found in {MITDB}")
    if args.quick:
        args.epochs = 2
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        art = artifacts.ensure("ecg", Path(cache))
        out = cross_validate(art, args) if args.folds > 1 else holdout(art, args)
    config = {k: getattr(args, k) for k in ("epochs", "batch", "lr", "weights", "seed", "folds")}
    result = {
        "area": "training_centralised",
        "machine": machine_info(),
        "config": {**config, "threads": 1, "optimizer": "AdamW"},
        **out,
        "figures": {**out.get("figures", {}), "total_s": round(time.perf_counter() - t0, 1)},  # type: ignore[dict-item]
        "ratios": {},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
