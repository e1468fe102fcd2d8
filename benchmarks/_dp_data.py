"""Scenario data of ``dp_tables.py`` and how a trained model is judged on it.

``mitdb``: the 16 training patients of split A of MIT-BIH DS1 (docs/benchmarks.md, "Centralised
ECG training") are one gateway each, with that record's beats exactly as ``fedgate sim --data
mitdb`` gives them (``firmware_sim.simdata.mitdb_data``); the six held-out patients of split A
are the evaluation set and the membership-inference non-members.

``fleet``: N synthetic gateways, each with its own simulated ECG patch streamed through the C
firmware and the gateway's ingestion into a store (``simdata.patient_spec`` and ``fill_store``,
the path of ``fedgate sim``), read back with ``StoreData.dataset``. The held-out patients are
further patients of the same generator (indices N, N + 1, ...), not ``simdata.synthetic_holdout``:
those all carry both ectopic kinds, a different mix from the fleet's, and a loss attack would
then separate members from non-members by their data alone, not by membership. Each patient's
dataset is cached as one ``.npz`` (keyed by seed, signal length and patient index), so a rerun
does not regenerate it.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from native.errors import ConfigError, InputError

log = logging.getLogger(__name__)

Dataset = tuple[dict[str, npt.NDArray[Any]], npt.NDArray[np.int64]]

DS1 = ("101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124", "201",
       "203", "205", "207", "208", "209", "215", "220", "223", "230")
SPLIT_A = ("118", "124", "201", "205", "207", "223")
# Beats per call of the eval graph when losses are computed over many gateways at once.
_LOSS_CHUNK = 50_000


@dataclass
class Scenario:
    """Gateways (id -> local data), the held-out set, and what each gateway id stands for."""

    name: str
    gateways: dict[int, Dataset]
    holdout: Dataset
    names: dict[int, str]

    def beats(self) -> int:
        return sum(int(y.size) for _, y in self.gateways.values())


def mitdb_scenario(data_dir: Path) -> Scenario:
    """16 DS1 gateways (split A) and the 6 held-out patients of split A."""
    from firmware_sim import simdata

    found = set(simdata.mitdb_records(data_dir))
    missing = sorted(set(DS1) - found)
    if missing:
        raise ConfigError(f"MIT-BIH DS1 records missing in {data_dir}: {missing}")
    train, held = simdata.split_records(list(DS1), list(SPLIT_A))
    gateways = {i + 1: simdata.mitdb_data(data_dir, r).dataset() for i, r in enumerate(train)}
    holdout = _concat([simdata.mitdb_data(data_dir, r).dataset() for r in held])
    return Scenario("mitdb", gateways, holdout, {i + 1: r for i, r in enumerate(train)})


def fleet_scenario(cache: Path, gateways: int, holdout: int, seed: int, seconds: float,
                   progress: Callable[[str], None]) -> Scenario:
    """N synthetic gateways and ``holdout`` further patients of the same generator."""
    folder = cache / f"seed{seed}-{seconds:g}s"
    folder.mkdir(parents=True, exist_ok=True)
    data: dict[int, Dataset] = {}
    for index in range(gateways + holdout):
        data[index] = patient_dataset(folder, index, seed, seconds)
        if (index + 1) % 100 == 0:
            progress(f"fleet data: {index + 1}/{gateways + holdout} patients")
    fleet = {i + 1: data[i] for i in range(gateways)}
    held = _concat([data[i] for i in range(gateways, gateways + holdout)])
    return Scenario("fleet", fleet, held, {i + 1: f"synthetic-{i}" for i in range(gateways)})


def patient_dataset(folder: Path, index: int, seed: int, seconds: float) -> Dataset:
    """One synthetic patient's beats as its gateway holds them (cached in ``folder``)."""
    from edge_client.localdata import StoreData
    from firmware_sim import simdata

    path = folder / f"patient-{index:05d}.npz"
    if path.exists():
        cached = _load_cached(path)
        if cached is not None:
            return cached
        log.warning("cache entry %s is unreadable; generating it again", path)
    store = folder / f"patient-{index:05d}.sqlite"
    store.unlink(missing_ok=True)
    try:
        simdata.fill_store(store, simdata.patient_spec(index, seed, seconds), seconds)
        inputs, labels = StoreData(store).dataset()
    finally:
        store.unlink(missing_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, labels=labels, **{f"in_{k}": v for k, v in inputs.items()})
    tmp.replace(path)  # a run killed mid-write leaves no half file behind
    return inputs, labels


def _load_cached(path: Path) -> Dataset | None:
    """A cached dataset, or None when the file is not one (truncated, foreign, damaged)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            inputs = {k[3:]: z[k] for k in z.files if k.startswith("in_")}
            labels = z["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if not inputs or labels.dtype != np.int64 or any(v.shape[:1] != labels.shape
                                                     for v in inputs.values()):
        return None
    return inputs, labels


def _concat(parts: Sequence[Dataset]) -> Dataset:
    inputs = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    return inputs, np.concatenate([p[1] for p in parts])


def evaluation(artifacts: Any, params: npt.NDArray[np.float32], holdout: Dataset
               ) -> dict[str, Any]:
    """Held-out macro-F1, accuracy and per-class sensitivity (None: class absent)."""
    from models.evaluate import evaluate

    inputs, labels = holdout
    res = evaluate(artifacts, params, inputs, labels).to_dict()
    return {"macro_f1": res["macro_f1"], "accuracy": res["accuracy"],
            "sensitivity": res["sensitivity"], "f1": res["f1"], "loss": res["loss"],
            "beats": int(labels.size)}


def losses(artifacts: Any, params: npt.NDArray[np.float32], parts: Sequence[Dataset]
           ) -> npt.NDArray[np.float64]:
    """Per-beat loss of the model over several datasets, in order."""
    from aggregator.audit.membership import model_losses

    out, batch, size = [], [], 0
    for part in parts:
        batch.append(part)
        size += int(part[1].size)
        if size >= _LOSS_CHUNK:
            out.append(model_losses(artifacts, params, *_concat(batch)))
            batch, size = [], 0
    if batch:
        out.append(model_losses(artifacts, params, *_concat(batch)))
    return np.concatenate(out)


def membership(member_losses: npt.NDArray[np.float64], nonmember_losses: npt.NDArray[np.float64],
               member_labels: npt.NDArray[np.int64], nonmember_labels: npt.NDArray[np.int64],
               class_names: Sequence[str]) -> dict[str, Any]:
    """The loss attack (``aggregator.audit.membership.attack``) on per-beat losses, and its AUC
    within each class.

    Members and non-members are different patients with different class mixes; a rare class has
    a high loss under any model, so the pooled AUC moves with the mix alone. The per-class AUC
    (the same score, members and non-members of one class only) takes the mix out.
    """
    from aggregator.audit.membership import attack, roc_auc

    if member_labels.shape != member_losses.shape or (
            nonmember_labels.shape != nonmember_losses.shape):
        raise InputError("need one label per loss, for members and for non-members")
    res = attack(member_losses, nonmember_losses)
    per_class = {}
    for k, name in enumerate(class_names):
        m, n = member_labels == k, nonmember_labels == k
        if m.any() and n.any():
            per_class[name] = roc_auc(-member_losses[m], -nonmember_losses[n])
    return {"auc": res["auc"], "tpr_at_fpr_1e-2": res["tpr_at_fpr"]["0.01"],
            "tpr_at_fpr_1e-3": res["tpr_at_fpr"]["0.001"], "members": res["members"],
            "nonmembers": res["nonmembers"], "auc_per_class": per_class,
            "auc_class_mean": float(np.mean(list(per_class.values()))) if per_class else None}
