"""Federated (``fedgate sim --data mitdb``) against centralised training of the same ECG model,
leave-patients-out over all 22 DS1 patients, on the pooled predictions of every fold.

The 22 records are dealt into K folds exactly as ``train_centralised.py --folds K`` deals them
(round-robin in order of S-beat count). For each fold a full simulation runs: the other patients
are one gateway each (secure aggregation, 8-bit quantization, MQTT, real training), the fold's
patients are held out and the final global model is evaluated on them. The folds' confusion
matrices are summed, so every DS1 beat is classified by a model that never saw its patient, and
the pooled metrics compare directly with the centralised K-fold figures.

The same run then trains the centralised baseline (``train_centralised.py``'s K-fold, same folds)
once per ``--central-seeds`` seed, so the JSON holds both and their difference.

Run from the repo root: ``python benchmarks/federated_vs_centralised.py [--folds 4] [sim flags]``
(prints progress on stderr, one JSON object on the last line of stdout).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# The installed fedgate, never the checkout's source folders (they lack the built modules).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info

from firmware_sim.sim import SimConfig, run_sim
from models.ecg import beat_dataset
from models.evaluate import EvalResult
from models.zoo import get_spec

DS1 = ["101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124", "201",
       "203", "205", "207", "208", "209", "215", "220", "223", "230"]
MITDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "mitdb"


def fold_assignment(data_dir: Path, folds: int) -> list[list[str]]:
    """As train_centralised.py: patients dealt round-robin in order of S-beat count."""
    s_count = {r: int(np.sum(beat_dataset(str(data_dir / r))[1] == 1)) for r in DS1}
    ranked = sorted(DS1, key=lambda r: (-s_count[r], r))
    return [ranked[i::folds] for i in range(folds)]


def pooled(confusions: list[list[list[int]]]) -> dict[str, object]:
    """Metrics of the summed confusion matrix (rows: true class)."""
    from models.evaluate import classification_metrics

    total = np.sum(np.asarray(confusions, dtype=np.int64), axis=0)
    names = get_spec("ecg").class_names
    y_true = np.repeat(np.repeat(np.arange(len(names)), len(names)), total.ravel())
    y_pred = np.repeat(np.tile(np.arange(len(names)), len(names)), total.ravel())
    res: EvalResult = classification_metrics(y_true, y_pred, names)
    out: dict[str, object] = res.to_dict()
    return out


def centralised(folds: int, seeds: list[int]) -> list[dict[str, object]]:
    """train_centralised.py's K-fold on the same folds, once per seed (pooled metrics each)."""
    import train_centralised

    from models import artifacts

    out = []
    with tempfile.TemporaryDirectory() as cache:
        art = artifacts.ensure("ecg", Path(cache))
        for seed in seeds:
            args = argparse.Namespace(epochs=12, batch=128, lr=2e-3, weights="sqrt", seed=seed,
                                      folds=folds)
            res = train_centralised.cross_validate(art, args)
            val: dict[str, object] = res["validation"]  # type: ignore[assignment]
            out.append({"seed": seed, "macro_f1": val["macro_f1"], "f1": val["f1"],
                        "folds": res["folds"]})
            print(f"centralised seed {seed}: macro-F1 {val['macro_f1']}", file=sys.stderr)
    return out


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(MITDB))
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--clip", type=float, default=0.5)
    parser.add_argument("--mu", type=float, default=0.01)
    parser.add_argument("--weighting", choices=["equal", "samples"], default="samples")
    parser.add_argument("--server-lr-decay", type=float, default=0.3)
    parser.add_argument("--server-lr-decay-from", type=int, default=45)
    parser.add_argument("--central-seeds", default="0,1,2",
                        help="seeds of the centralised K-fold runs (train_centralised.py)")
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    started = time.monotonic()
    groups = fold_assignment(data_dir, args.folds)
    folds = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, held in enumerate(groups):
            cfg = SimConfig(out=Path(tmp) / f"fold{i}", data="mitdb", data_dir=data_dir,
                            holdout=held, rounds=args.rounds, epochs=args.epochs, lr=args.lr,
                            clip=args.clip, mu=args.mu, weighting=args.weighting,
                            server_lr_decay=args.server_lr_decay,
                            server_lr_decay_from=args.server_lr_decay_from,
                            # the same beats as centralised training: no local evaluation hold-out
                            eval_holdout=0.0)
            report = run_sim(cfg, progress=lambda line: print(line, file=sys.stderr))
            final = report["final"]["metrics"]
            folds.append({"held_out": held, "macro_f1": final["macro_f1"],
                          "confusion": final["confusion"],
                          "exact": all(r.get("aggregate_exact") for r in report["rounds"]),
                          "wall_s": report["wall_s"]})
    federated = pooled([f["confusion"] for f in folds])
    central = centralised(args.folds, [int(x) for x in args.central_seeds.split(",") if x])
    central_mean = float(np.mean([c["macro_f1"] for c in central]))
    result = {
        "area": "federated_vs_centralised", "machine": machine_info(),
        "config": vars(args) | {"quant_bits": 8, "secagg": "full"},
        "folds": [{k: v for k, v in f.items() if k != "confusion"} for f in folds],
        "pooled": federated, "centralised": central,
        "figures": {"total_s": round(time.monotonic() - started, 1),
                    "federated_macro_f1": federated["macro_f1"],
                    "centralised_macro_f1_mean": round(central_mean, 6),
                    "federated_minus_centralised": round(
                        float(federated["macro_f1"]) - central_mean, 6)},
        "ratios": {},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
