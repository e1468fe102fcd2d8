"""Utility and empirical privacy of user-level distributed DP (issue 7): one table per scenario.

Run from the repository root (after ``pip install .``)::

    python benchmarks/dp_tables.py [--quick] [--scenario mitdb|fleet|both]
        [--budgets none,32,8,2] [--rounds R] [--sampling-rate q] [--seed S] [--out DIR] ...

For every budget point (``none`` = the no-DP baseline; a number = an epsilon target at
``--delta`` over the whole training) the same federated driver (``_dp_rounds.FederatedRun``)
trains the ECG model from its initial weights: Poisson sampling, the signed round config with the
planned DP block, the gateway and server cores of secure aggregation exchanging real wire
messages, local training with onnxruntime-training, decoding, FedAvg and the privacy ledger. The
noise multiplier z of a point is found before training by bisection on the accountant so that
the planned rounds at rate q land at (or just below) the target. Each point reports z, the
rounds released, q, the ledger's final epsilon, held-out macro-F1, per-class sensitivity and
accuracy, and the loss-based membership-inference attack on the final model (members: beats of
gateways that took part; non-members: beats of held-out patients), next to the same attack
on the initial model, which shows what the two populations' difference alone gives. The last
line of stdout is one JSON object; ``--out`` also gets it as ``dp_tables_<scenarios>.json`` and
the tables as ``dp_tables_<scenarios>.md``. Progress goes to stderr.
"""

# ruff: noqa: E402  (the thread caps below must precede the numpy import)
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import logging
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dp_data import Scenario, evaluation, fleet_scenario, losses, membership, mitdb_scenario
from _dp_rounds import FederatedRun, LocalSetup, PointSetup, RoundRecord, noise_for_budget
from _machine import machine_info

from native.errors import ConfigError, FedgateError

log = logging.getLogger("dp_tables")

CLASSES = ("N", "S", "V", "F")
F32 = npt.NDArray[np.float32]
SCENARIOS = ("mitdb", "fleet")
MITDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "mitdb"
# Per scenario: (rounds, sampling rate, epochs, lr, FedProx mu, per-value clip without DP, L2 clip).
# MIT-BIH: the settings of the `fedgate sim --data mitdb` run in docs/gateway.md; fleet: the sim's
# synthetic defaults (epochs, lr, clip), with Poisson sampling at 5 %.
DEFAULTS: dict[str, dict[str, Any]] = {
    "mitdb": {"rounds": 40, "sampling_rate": 1.0, "epochs": 2, "lr": 4e-3, "mu": 0.01,
              "clip": 0.5, "l2_clip": 1.0},
    "fleet": {"rounds": 30, "sampling_rate": 0.05, "epochs": 2, "lr": 3e-3, "mu": 0.0,
              "clip": 0.05, "l2_clip": 1.0},
}
# The fleet gets one more point, 0.5, to show where its utility starts to go.
BUDGETS: dict[str, tuple[float | None, ...]] = {"mitdb": (None, 32.0, 8.0, 2.0),
                                               "fleet": (None, 32.0, 8.0, 2.0, 0.5)}
QUICK: dict[str, dict[str, Any]] = {"mitdb": {"rounds": 2},
                                    "fleet": {"rounds": 3, "sampling_rate": 0.25}}
_SETUP_FLAGS = ("rounds", "sampling_rate", "epochs", "lr", "mu", "clip", "l2_clip")


@dataclass(frozen=True)
class Options:
    """The validated command line."""

    scenarios: tuple[str, ...] = SCENARIOS
    # None: each scenario's own (BUDGETS); given, the same points for every scenario.
    budgets: tuple[float | None, ...] | None = None
    out: Path = Path("dp-out")
    data_dir: Path = MITDB
    gateways: int = 1000
    holdout_patients: int = 100
    seconds: float = 180.0
    delta: float = 1e-5
    seed: int = 0
    quick: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)

    def scenario_setup(self, name: str) -> tuple[LocalSetup, PointSetup]:
        """The local round and the point template of one scenario."""
        v = {**DEFAULTS[name], **(QUICK[name] if self.quick else {}), **self.overrides}
        local = LocalSetup(epochs=v["epochs"], lr=v["lr"], mu=v["mu"])
        point = PointSetup(rounds=v["rounds"], sampling_rate=v["sampling_rate"], clip=v["clip"],
                           l2_clip=v["l2_clip"], delta=self.delta, seed=self.seed)
        return local, point


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"dp_tables: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dp_tables.py", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2-3 rounds, a 40-gateway fleet, budgets none,8")
    p.add_argument("--scenario", default="both", help="mitdb, fleet or both (default)")
    p.add_argument("--budgets", help="comma-separated epsilon targets, 'none' = no DP "
                                     "(mitdb none,32,8,2; fleet none,32,8,2,0.5)")
    p.add_argument("--rounds", help="rounds per point (mitdb 40, fleet 30)")
    p.add_argument("--sampling-rate", help="Poisson rate q (mitdb 1, fleet 0.05)")
    p.add_argument("--epochs", help="local epochs (2)")
    p.add_argument("--lr", help="local learning rate (mitdb 4e-3, fleet 3e-3)")
    p.add_argument("--mu", help="FedProx mu (mitdb 0.01, fleet 0)")
    p.add_argument("--clip", help="per-value clip of a no-DP round (mitdb 0.5, fleet 0.05)")
    p.add_argument("--l2-clip", help="L2 clip C of a DP update (1.0)")
    p.add_argument("--delta", default="1e-5", help="delta of every budget (1e-5)")
    p.add_argument("--gateways", help="fleet size (1000; --quick 40)")
    p.add_argument("--holdout-patients", help="held-out synthetic patients (100; --quick 4)")
    p.add_argument("--seconds", help="seconds of signal per synthetic patient (180; --quick 60)")
    p.add_argument("--seed", default="0", help="synthetic patients and batch order (0)")
    p.add_argument("--data-dir", default=str(MITDB),
                   help="MIT-BIH records (default ../shared/data/mitdb beside the checkout)")
    p.add_argument("--out", default="dp-out", help="results and the fleet's data cache")
    return p


def _number(text: str, flag: str, lo: float, hi: float, integer: bool = False) -> Any:
    """``text`` as a number in [lo, hi] (an int if ``integer``), or ConfigError naming ``flag``."""
    try:
        value: float = int(text) if integer else float(text)
    except ValueError:
        raise ConfigError(f"--{flag} must be a{'n integer' if integer else ' number'}, "
                          f"got {text!r}") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ConfigError(f"--{flag} must be in [{lo:g}, {hi:g}], got {text!r}")
    return value


def _budgets(text: str) -> tuple[float | None, ...]:
    out: list[float | None] = []
    for item in (t.strip() for t in text.split(",")):
        value = None if item.lower() == "none" else _number(item, "budgets", 1e-3, 1e4)
        if value in out:
            raise ConfigError(f"--budgets lists {item!r} twice")
        out.append(value)
    return tuple(out)


_RANGES: dict[str, tuple[float, float, bool]] = {
    "rounds": (1, 1000, True), "sampling_rate": (1e-4, 1.0, False), "epochs": (1, 100, True),
    "lr": (1e-6, 1.0, False), "mu": (0.0, 100.0, False), "clip": (1e-6, 100.0, False),
    "l2_clip": (1e-6, 100.0, False),
}


def parse_options(argv: list[str] | None) -> Options:
    """The command line, checked before anything runs; ConfigError on garbage."""
    a = _parser().parse_args(argv)
    if a.scenario not in (*SCENARIOS, "both"):
        raise ConfigError(f"--scenario must be mitdb, fleet or both, got {a.scenario!r}")
    overrides = {k: _number(getattr(a, k), k.replace("_", "-"), *_RANGES[k])
                 for k in _SETUP_FLAGS if getattr(a, k) is not None}
    scenarios = SCENARIOS if a.scenario == "both" else (a.scenario,)
    given = {"gateways": "1000", "holdout_patients": "100", "seconds": "180"}
    if a.quick:
        given.update(gateways="40", holdout_patients="4", seconds="60")
    # "is None", not "or": an empty --budgets "" is garbage, not a request for the defaults.
    given.update({k: getattr(a, k) for k in given if getattr(a, k) is not None})
    budgets = a.budgets if a.budgets is not None else "none,8" if a.quick else None
    opts = Options(
        scenarios=scenarios, out=Path(a.out),
        budgets=None if budgets is None else _budgets(budgets),
        gateways=_number(given["gateways"], "gateways", 4, 100_000, True),
        holdout_patients=_number(given["holdout_patients"], "holdout-patients", 1, 10_000, True),
        seconds=_number(given["seconds"], "seconds", 30, 3600),
        delta=_number(a.delta, "delta", 1e-12, 0.1),
        seed=_number(a.seed, "seed", 0, 2**31 - 1, True),
        quick=a.quick, overrides=overrides, data_dir=Path(a.data_dir))
    if "mitdb" in scenarios and not (opts.data_dir / "101.hea").is_file():
        raise ConfigError(f"--data-dir {opts.data_dir} holds no MIT-BIH records")
    return opts


def load_scenario(name: str, opts: Options) -> Scenario:
    if name == "mitdb":
        return mitdb_scenario(opts.data_dir)
    return fleet_scenario(opts.out / "fleet-cache", opts.gateways, opts.holdout_patients,
                          opts.seed, opts.seconds, log.info)


def gateway_losses(art: Any, params: F32, scn: Scenario, pids: list[int]
                   ) -> dict[int, npt.NDArray[np.float64]]:
    """Per-beat losses of each listed gateway's data under ``params``."""
    flat = losses(art, params, [scn.gateways[p] for p in pids])
    out, start = {}, 0
    for pid in pids:
        n = int(scn.gateways[pid][1].size)
        out[pid] = flat[start:start + n]
        start += n
    return out


def run_point(scn: Scenario, art: Any, init: F32, local: LocalSetup, setup: PointSetup,
              budget: float | None, control: dict[str, Any]) -> dict[str, Any]:
    """Train one point of the table and measure it."""
    started = time.monotonic()
    d = int(init.size)
    z = None if budget is None else noise_for_budget(budget, setup, d, len(scn.gateways))
    point = replace(setup, noise_multiplier=z, epsilon_budget=budget)
    label = "no DP" if budget is None else f"eps {budget:g} (z {z:.4g})"
    log.info("%s: %s, %d rounds at q = %g", scn.name, label, point.rounds, point.sampling_rate)
    run = FederatedRun(art, scn.gateways, local, point, init.copy())

    def progress(rec: RoundRecord) -> None:
        eps = "" if rec.epsilon is None else f", epsilon {rec.epsilon:.3f}"
        if rec.skipped:
            log.info("  round %d skipped: %s", rec.round_no, rec.skipped)
        elif rec.round_no % 5 == 0 or rec.round_no == point.rounds:
            log.info("  round %d: %d gateways, exact %s, median |update| %.3f%s", rec.round_no,
                     len(rec.participants), rec.exact, rec.update_norm_median, eps)

    records = run.run(progress)
    train_s = time.monotonic() - started
    released = [r for r in records if not r.skipped]
    members = sorted(run.members)
    scores = gateway_losses(art, run.params, scn, members)
    held = losses(art, run.params, [scn.holdout])
    member_labels = np.concatenate([scn.gateways[p][1] for p in members])
    classes = art.spec.class_names
    mia = membership(np.concatenate([scores[p] for p in members]), held, member_labels,
                     scn.holdout[1], classes)
    base = membership(np.concatenate([control["members"][p] for p in members]),
                      control["holdout"], member_labels, scn.holdout[1], classes)
    ledger_eps = None if run.ledger is None else run.ledger.epsilon()
    return {
        "epsilon_target": budget, "noise_multiplier": z,
        "noise_multiplier_config": released[-1].noise_multiplier if released else None,
        "rounds": len(released), "rounds_skipped": len(records) - len(released),
        "sampling_rate": point.sampling_rate, "delta": point.delta if budget else None,
        "epsilon": ledger_eps, "l2_clip": point.l2_clip if budget else None,
        "participants_mean": statistics.fmean(len(r.participants) for r in released),
        "members": len(members), "exact_rounds": sum(r.exact for r in released),
        "update_norm_median": statistics.median(r.update_norm_median for r in released),
        "eval": evaluation(art, run.params, scn.holdout), "mia": mia,
        "mia_initial_model_auc": base["auc"],
        "mia_initial_model_auc_class_mean": base["auc_class_mean"], "train_s": round(train_s, 1),
        "round_s_mean": round(train_s / max(1, len(records)), 3),
        "wall_s": round(time.monotonic() - started, 1),
    }


def run_scenario(name: str, opts: Options) -> dict[str, Any]:
    from models import artifacts, graph

    started, cpu = time.monotonic(), time.process_time()
    art = artifacts.ensure("ecg")
    init = graph.flatten(art.spec, graph.initial_params(art.spec)).astype(np.float32)
    scn = load_scenario(name, opts)
    local, setup = opts.scenario_setup(name)
    log.info("%s: %d gateways (%d beats), %d held-out beats", name, len(scn.gateways),
             scn.beats(), int(scn.holdout[1].size))
    control = {"members": gateway_losses(art, init, scn, sorted(scn.gateways)),
               "holdout": losses(art, init, [scn.holdout])}
    initial = evaluation(art, init, scn.holdout)
    budgets = BUDGETS[name] if opts.budgets is None else opts.budgets
    points = [run_point(scn, art, init, local, setup, b, control) for b in budgets]
    return {"gateways": len(scn.gateways), "gateway_names": sorted(scn.names.values())
            if name == "mitdb" else None, "beats": scn.beats(),
            "holdout_beats": int(scn.holdout[1].size), "local": asdict(local),
            "rounds": setup.rounds, "sampling_rate": setup.sampling_rate,
            "quant_bits": setup.quant_bits, "clip_no_dp": setup.clip,
            "l2_clip": setup.l2_clip, "delta": setup.delta, "initial_model": initial,
            "points": points, "wall_s": round(time.monotonic() - started, 1),
            "cpu_s": round(time.process_time() - cpu, 1)}


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def markdown(name: str, table: dict[str, Any]) -> str:
    """The table of one scenario as docs/privacy.md shows it."""
    head = ("| epsilon target | z | rounds | q | epsilon (ledger) | macro-F1 | Se N | Se S | Se V "
            "| Se F | accuracy | MIA AUC | TPR @ 1% FPR | TPR @ 0.1% FPR | per-class AUC "
            "| AUC, initial model | per-class AUC, initial |")
    lines = [f"**{name}**", "", head, "|" + "---|" * 17]
    for p in table["points"]:
        ev, mia, se = p["eval"], p["mia"], p["eval"]["sensitivity"]
        lines.append("| " + " | ".join([
            "no DP" if p["epsilon_target"] is None else f"{p['epsilon_target']:g}",
            _fmt(p["noise_multiplier"], ".3f"), str(p["rounds"]), f"{p['sampling_rate']:g}",
            _fmt(p["epsilon"], ".2f"), _fmt(ev["macro_f1"]),
            *(_fmt(se.get(c)) for c in CLASSES), _fmt(ev["accuracy"]), _fmt(mia["auc"]),
            _fmt(mia["tpr_at_fpr_1e-2"]), _fmt(mia["tpr_at_fpr_1e-3"]),
            _fmt(mia["auc_class_mean"]), _fmt(p["mia_initial_model_auc"]),
            _fmt(p["mia_initial_model_auc_class_mean"])]) + " |")
    ev, se = table["initial_model"], table["initial_model"]["sensitivity"]
    lines.append("| initial model (untrained) | — | 0 | — | — | " + " | ".join([
        _fmt(ev["macro_f1"]), *(_fmt(se.get(c)) for c in CLASSES), _fmt(ev["accuracy"])])
        + " | — | — | — | — | — | — |")
    return "\n".join(lines) + "\n"


def figures_of(tables: dict[str, dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per point and per round; ratios: no-DP round time / DP round time."""
    figures: dict[str, float] = {}
    ratios: dict[str, float] = {}
    for name, table in tables.items():
        figures[f"{name}_wall_s"] = table["wall_s"]
        figures[f"{name}_cpu_s"] = table["cpu_s"]
        base = next((p for p in table["points"] if p["epsilon_target"] is None), None)
        for p in table["points"]:
            tag = "no_dp" if p["epsilon_target"] is None else f"eps{p['epsilon_target']:g}"
            figures[f"{name}_{tag}_round_s"] = p["round_s_mean"]
            if base is not None and p is not base:
                ratios[f"{name}_{tag}_no_dp_round_over_dp_round"] = (
                    base["round_s_mean"] / p["round_s_mean"])
    return figures, ratios


def run(opts: Options) -> dict[str, Any]:
    started = time.monotonic()
    load0 = os.getloadavg()
    tables = {name: run_scenario(name, opts) for name in opts.scenarios}
    figures, ratios = figures_of(tables)
    wall = time.monotonic() - started
    figures["total_wall_s"] = round(wall, 1)
    doc = {"area": "dp_tables",
           "machine": machine_info(quick=opts.quick, seed=opts.seed,
                                   loadavg_start=[round(x, 2) for x in load0],
                                   loadavg_end=[round(x, 2) for x in os.getloadavg()]),
           "figures": figures, "ratios": ratios, "tables": tables}
    opts.out.mkdir(parents=True, exist_ok=True)
    stem = "dp_tables_" + "_".join(opts.scenarios)  # one command per scenario keeps both files
    (opts.out / f"{stem}.json").write_text(json.dumps(doc, indent=1))
    (opts.out / f"{stem}.md").write_text(
        "\n".join(markdown(name, t) for name, t in tables.items()))
    return doc


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    # One line per local round and per skipped quantization would bury the progress.
    for name in ("models.trainer", "edge_client.secagg", "aggregator.secagg"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        opts = parse_options(argv)
        doc = run(opts)
    except FedgateError as exc:
        print(f"dp_tables: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    for name, table in doc["tables"].items():
        print(markdown(name, table), file=sys.stderr)
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
