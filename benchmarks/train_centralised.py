"""Centralised training of the ECG model on MIT-BIH DS1 with a patient-wise validation split.

Training and validation patients never share a beat. The validation patients are fixed before
training (chosen because together they hold S, V and F beats); class weights are computed from the
training patients only. Prints one JSON object on its last line.

    python benchmarks/train_centralised.py [--quick] [--epochs N] [--weights balanced|sqrt|none]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import machine_info
from models import artifacts, graph
from models.ecg import beat_dataset
from models.evaluate import evaluate
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 epochs")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weights", choices=("balanced", "sqrt", "none"), default="sqrt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation", help="comma-separated held-out DS1 records")
    args = parser.parse_args()
    if not (MITDB / "101.hea").is_file():
        raise SystemExit(f"MIT-BIH records not found in {MITDB}")
    validation = tuple(args.validation.split(",")) if args.validation else VALIDATION
    if not set(validation) <= set(DS1.split()):
        raise SystemExit(f"validation records must be DS1 records: {DS1}")
    train_ids = [r for r in DS1.split() if r not in validation]
    t0 = time.perf_counter()
    xtr, ytr = load(train_ids)
    xva, yva = load(list(validation))
    t_load = time.perf_counter() - t0
    epochs = 2 if args.quick else args.epochs
    with tempfile.TemporaryDirectory() as cache:
        art = artifacts.ensure("ecg", Path(cache))
        w = class_weights(ytr, args.weights, art.spec.n_classes)
        trainer = LocalTrainer(art, threads=1)
        trainer.set_proximal(graph.flatten(art.spec, graph.initial_params(art.spec)), 0.0)
        rng = np.random.default_rng(args.seed)
        t1, history = time.perf_counter(), []
        for epoch in range(epochs):
            # step decay: the last third of the epochs at a tenth of the rate
            trainer.optimizer.set_learning_rate(args.lr * (0.1 if epoch >= 2 * epochs // 3 else 1))
            loss, _ = trainer.train_epoch(xtr, ytr, args.batch, w, rng)
            history.append(round(loss, 5))
        t_train = time.perf_counter() - t1
        params = trainer.get_parameters()
        val = evaluate(art, params, xva, yva, trainer=trainer)
        train = evaluate(art, params, xtr, ytr, trainer=trainer)
    result = {
        "area": "training_centralised",
        "machine": machine_info(),
        "split": {
            "train": train_ids,
            "validation": list(validation),
            "train_counts": np.bincount(ytr, minlength=4).tolist(),
            "validation_counts": np.bincount(yva, minlength=4).tolist(),
        },
        "config": {
            "epochs": epochs,
            "batch": args.batch,
            "lr": args.lr,
            "weights": args.weights,
            "class_weights": w.round(3).tolist(),
            "seed": args.seed,
            "threads": 1,
            "optimizer": "AdamW",
        },
        "figures": {
            "load_s": round(t_load, 2),
            "train_s": round(t_train, 2),
            "loss_per_epoch": history,
        },
        "validation": val.to_dict(),
        "train": {"accuracy": round(train.accuracy, 4), "macro_f1": round(train.macro_f1, 4)},
        "ratios": {},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
