"""End to end: whole federated rounds of 20 gateways over a real Mosquitto, timed and checked.

Run from the repo root: ``python benchmarks/bench_e2e.py [--quick]``. Each case is a complete
``fedgate sim`` deployment (``firmware_sim.sim.run_sim``) on this machine: a Mosquitto started
on a free loopback port, the aggregator's FastAPI app over real HTTP, 20 gateway daemons that
enroll, download signed models, train with onnxruntime-training on their own stores of
simulated ECG (240 s of signal each, streamed through the C firmware and the gateway's
ingestion) and run secure aggregation over MQTT; every recovered sum is checked against the
exact sum of the survivors' quantized updates. Cases:

- ``ecg_full`` (issue 5, line A): the ECG CNN (10,964 parameters), complete-graph SecAgg,
  8-bit quantization, 10 rounds;
- ``linear_plus`` (issue 5, line B): the ``ecg-linear`` model (100,228 parameters, a binned
  linear classifier of the same beats), SecAgg+ with 10 neighbours, 8-bit quantization, 5 rounds.

``--quick`` runs 3 rounds of each. Figures are medians over the completed rounds of the report's
per-round split (``firmware_sim.roundtiming.DEFINITIONS``, copied into the JSON): wall, training,
protocol (CPU time inside the secure-aggregation cores), transport (the rest), and bytes. No peer
runs here: Flower's deployment runtime figures for the line-B setup are the issue's reference
for scale (``reference``), not a measurement of this script. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info

from firmware_sim.roundtiming import DEFINITIONS
from firmware_sim.sim import SimConfig, run_sim
from native.broker import MosquittoBroker, find_mosquitto
from native.errors import ConfigError

GATEWAYS = 20
CASES: dict[str, dict[str, Any]] = {
    "ecg_full": {"model": "ecg", "secagg": "full", "rounds": 10},
    "linear_plus": {"model": "ecg-linear", "secagg": "plus", "neighbours": 10, "rounds": 5},
}
REFERENCE = {
    "flower_deployment_linear_plus": {
        "round_s": 144.0, "uplink_bytes_per_param": 9.0,
        "setup": "SuperLink + 20 SuperNodes, SecAgg+, d = 1e5 linear model",
        "source": "issue 5 (for scale); not measured by this script",
    },
}


def case_config(name: str, spec: dict[str, Any], rounds: int, seconds: float,
                work: Path) -> SimConfig:
    """The sim configuration of one case (``ConfigError`` for values it cannot run with)."""
    cfg = SimConfig(out=work / name, gateways=GATEWAYS, rounds=rounds, seconds=seconds,
                    model=spec["model"], secagg=spec["secagg"],
                    neighbours=spec.get("neighbours"), quant_bits=8)
    cfg.check()
    return cfg


def run_case(name: str, spec: dict[str, Any], rounds: int, seconds: float,
             work: Path) -> dict[str, Any]:
    """One deployment on its own Mosquitto; returns its summary and critical-path medians."""
    started = time.monotonic()
    with MosquittoBroker() as broker:
        cfg = case_config(name, spec, rounds, seconds, work)
        cfg.broker = broker.url
        report = run_sim(cfg, progress=lambda line: print(f"[{name}] {line}", file=sys.stderr))
    rows = [r for r in report["rounds"] if r["outcome"] == "completed"]
    path = {key: round(statistics.median(r["critical_path"][key] or 0.0 for r in rows), 4)
            for key in rows[0]["critical_path"]} if rows else {}
    cpu = {key: round(statistics.median(r[key] for r in rows), 4) for key in (
        "fit_cpu_max_s", "fit_cpu_total_s", "protocol_server_s", "protocol_gateway_max_s",
        "protocol_cpu_total_s", "protocol_wall_gateway_max_s", "download_max_s")} if rows else {}
    final = report["final"]["metrics"]
    return {
        "model": spec["model"], "secagg": spec["secagg"], "neighbours": spec.get("neighbours"),
        "gateways": GATEWAYS, "rounds": rounds, "parameters": report["parameters"],
        "signal_seconds_per_gateway": seconds, **report["summary"],
        "median_critical_path": path, "median_cpu": cpu,
        "round_walls_s": [r["wall_s"] for r in report["rounds"]],
        "final_macro_f1": final.get("macro_f1"), "command_s": round(time.monotonic() - started, 1),
    }


def acceptance(figures: dict[str, Any]) -> dict[str, bool]:
    """Issue 5's two lines, as measured here."""
    out: dict[str, bool] = {}
    a, b = figures.get("ecg_full"), figures.get("linear_plus")
    if a:
        out["a_protocol_plus_transport_le_20pct"] = a["protocol_plus_transport_share"] <= 0.20
    if b:
        out["b_median_round_le_5s"] = b["median_wall_s"] <= 5.0
        out["b_uplink_le_2_1_bytes_per_param"] = b["uplink_bytes_per_param_per_gateway"] <= 2.1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 rounds per case")
    parser.add_argument("--case", choices=sorted(CASES), action="append",
                        help="run only this case (repeatable; default: all)")
    parser.add_argument("--seconds", type=float, default=240.0,
                        help="seconds of ECG per gateway (default 240, the sim's default)")
    args = parser.parse_args()
    names = args.case or sorted(CASES)
    try:
        for name in names:  # refuse bad values before anything starts
            case_config(name, CASES[name], 1, args.seconds, Path("."))
    except ConfigError as exc:
        parser.error(str(exc))
    if find_mosquitto() is None:
        raise SystemExit("bench_e2e needs the mosquitto binary (apt install mosquitto)")
    load_before = os.getloadavg()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fedgate-e2e-") as tmp:
        for name in names:
            spec = CASES[name]
            rounds = 3 if args.quick else int(spec["rounds"])
            figures[name] = run_case(name, spec, rounds, args.seconds, Path(tmp))
    result = {
        "area": "e2e",
        "machine": machine_info(load_average_before=[round(v, 2) for v in load_before],
                                load_average_after=[round(v, 2) for v in os.getloadavg()]),
        "figures": figures,
        "acceptance": acceptance(figures),
        "ratios": {},  # no peer runs in this script; see "reference"
        "reference": REFERENCE,
        "definitions": DEFINITIONS,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
