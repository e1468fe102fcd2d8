"""Privacy: what the signed ledger of a model version says was spent, recomputed where it can be.

From the verified manifests of the chain: the clip, the quantization bits, secure aggregation,
and the DP ledger entry (``aggregator.privacy.PrivacyLedger.spend``). The audit

- checks every entry's parameters are in range (noise multiplier, clip, sampling rate, delta,
  orders, a non-negative finite RDP curve, a positive exact variance);
- recomputes the cumulative epsilon from the stored RDP curve with ``native.accounting`` and
  flags a mismatch, and the noise multiplier from the variance and the sensitivity;
- checks the chain adds up: each DP round adds one to ``rounds`` and a non-negative RDP curve
  whose epsilon is the entry's ``epsilon_round``; a version made without a DP round carries its
  parent's curve unchanged;
- re-derives each DP round's RDP from its noise parameters (the most shares a sum can hold is
  the entry's signed ``max_participants``; for entries without it, the round's ``selected`` count
  from ``/v1/rounds``, an unsigned record, so a failure to fetch it is a note, not a finding);
- compares epsilon with the budget: above it is a finding.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np

from aggregator.audit.provenance import Chain, dp_entry, signed_dict
from native import accounting
from native.dp_params import MECHANISMS, NoiseParams
from native.errors import FedgateError

log = logging.getLogger(__name__)

RTOL = 1e-6
Selected = Callable[[int], int | None]


def _num(entry: dict[str, Any], name: str) -> float | None:
    value = entry.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def entry_problems(entry: dict[str, Any]) -> list[str]:
    """Out-of-range or malformed fields of one ledger entry."""
    out: list[str] = []
    ranges = {"noise_multiplier": (0, math.inf, False), "l2_clip": (0, math.inf, False),
              "sampling_rate": (0, 1, True), "delta": (0, 1, False),
              "l2_sensitivity_levels": (0, math.inf, False), "epsilon": (-1e-12, math.inf, False),
              "epsilon_round": (-1e-12, math.inf, False)}
    for name, (lo, hi, closed) in ranges.items():
        v = _num(entry, name)
        if v is None or not math.isfinite(v) or not lo < v or not (v <= hi if closed else v < hi):
            out.append(f"dp {name} {entry.get(name)!r} out of range")
    if entry.get("mechanism") not in MECHANISMS:
        out.append(f"dp mechanism {entry.get('mechanism')!r} unknown")
    budget = entry.get("epsilon_budget")
    if budget is not None and not (_num(entry, "epsilon_budget") or 0) > 0:
        out.append(f"dp epsilon_budget {budget!r} out of range")
    for name in ("rounds", "threshold", "dim"):
        v = entry.get(name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            out.append(f"dp {name} {v!r} must be an integer >= 1")
    try:
        if Fraction(str(entry.get("variance_levels2"))) <= 0:
            out.append("dp variance must be > 0")
    except (ValueError, ZeroDivisionError):
        out.append(f"dp variance {entry.get('variance_levels2')!r} is not an exact rational")
    out.extend(_curve_problems(entry))
    return out


def _curve_problems(entry: dict[str, Any]) -> list[str]:
    orders, rdp = entry.get("orders"), entry.get("rdp")
    if not isinstance(orders, list) or not isinstance(rdp, list) or len(orders) != len(rdp) \
            or not orders:
        return ["dp orders and rdp must be lists of one length"]
    if any(isinstance(a, bool) or not isinstance(a, int) or a < 2 for a in orders):
        return ["dp orders must be integers >= 2"]
    if any(isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
           or v < 0 for v in rdp):
        return ["dp rdp must be finite and >= 0 at every order"]
    return []


def _curve(entry: dict[str, Any] | None) -> np.ndarray[Any, Any] | None:
    if not entry:
        return None
    return np.asarray(entry["rdp"], dtype=np.float64)


def recomputed_epsilon(entry: dict[str, Any]) -> float:
    """Cumulative epsilon at the entry's delta from its stored RDP curve."""
    curve = _curve(entry)
    assert curve is not None
    return accounting.epsilon_from_rdp(entry["orders"], curve, float(entry["delta"]))


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-12)


def _check_entry(entry: dict[str, Any]) -> tuple[list[str], float | None]:
    """Range problems (then no epsilon), or consistency problems and the recomputed epsilon."""
    problems = entry_problems(entry)
    if problems:
        return problems, None
    eps = recomputed_epsilon(entry)
    if not _close(eps, float(entry["epsilon"])):
        problems.append(f"stored epsilon {entry['epsilon']:.6g} but the stored RDP gives "
                        f"{eps:.6g}")
    z = math.sqrt(Fraction(str(entry["variance_levels2"]))) / entry["l2_sensitivity_levels"]
    if not _close(z, float(entry["noise_multiplier"])):
        problems.append(f"stored noise multiplier {entry['noise_multiplier']:.6g} but "
                        f"sqrt(variance) / sensitivity is {z:.6g}")
    return problems, eps


def _rederive(entry: dict[str, Any], selected: int | None) -> np.ndarray[Any, Any] | str:
    # The signed entry names the most shares a sum can hold; older entries did not, and then
    # the round's (unsigned) selected count stands in.
    signed_most = entry.get("max_participants")
    if isinstance(signed_most, int) and not isinstance(signed_most, bool):
        selected = signed_most
    if selected is None:
        return "not re-derived: the round's selected count is not available"
    try:
        params = NoiseParams(Fraction(str(entry["variance_levels2"])), int(entry["threshold"]),
                             float(entry["l2_sensitivity_levels"]), int(entry["dim"]),
                             str(entry["mechanism"]), max(selected, int(entry["threshold"])))
        acc = accounting.PrivacyAccountant(orders=tuple(entry["orders"]))
        out: np.ndarray[Any, Any] = acc.round_rdp(params, float(entry["sampling_rate"]))
        return out
    except FedgateError as exc:
        return f"not re-derived: {exc}"


def _check_step(child: dict[str, Any], parent: dict[str, Any] | None,
                selected: int | None) -> tuple[list[str], str]:
    """Problems of one parent -> child step of the ledger, and how the round RDP was checked."""
    before = 0 if not parent else int(parent["rounds"])
    prev = _curve(parent)
    prev = np.zeros(len(child["rdp"])) if prev is None or prev.shape != (
        len(child["rdp"]),) else prev
    step = _curve(child)
    assert step is not None
    step = step - prev
    if child["rounds"] == before:
        same = np.allclose(step, 0.0, atol=1e-12)
        return ([] if same else ["ledger changed without a DP round"]), "carried"
    if child["rounds"] != before + 1:
        return [f"ledger jumps from {before} to {child['rounds']} DP rounds"], "n/a"
    if np.any(step < -1e-12):
        return ["the RDP curve decreased: a round was taken off the ledger"], "n/a"
    problems = []
    eps_round = accounting.epsilon_from_rdp(child["orders"], np.maximum(step, 0.0),
                                            float(child["delta"]))
    if not _close(eps_round, float(child["epsilon_round"])):
        problems.append(f"stored epsilon_round {child['epsilon_round']:.6g} but the RDP step "
                        f"gives {eps_round:.6g}")
    derived = _rederive(child, selected)
    if isinstance(derived, str):
        return problems, derived
    if not np.allclose(derived, step, rtol=RTOL, atol=1e-12):
        problems.append("the round's RDP differs from the one its noise parameters give")
        return problems, "differs"
    return problems, "re-derived from the noise parameters"


def privacy_section(chain: Chain, selected: Selected) -> dict[str, Any]:
    """The audit report's privacy section (without membership inference)."""
    target = chain.links[0]
    privacy = signed_dict(target.manifest, "privacy")
    out: dict[str, Any] = {"clip": privacy.get("clip"), "quant_bits": privacy.get("quant_bits"),
                           "secure_aggregation": privacy.get("secure_aggregation"),
                           "dp": None, "series": [], "steps": [], "problems": []}
    if target.manifest is None:
        out["problems"].append(f"version {target.version}'s manifest did not verify: "
                               "its privacy figures cannot be trusted")
    links = list(reversed(chain.links))  # root first
    for i, link in enumerate(links):
        _audit_link(out, link, links[i - 1] if i else None, selected)
    entry = dp_entry(target.manifest)
    if entry:
        out["dp"] = _dp_summary(entry, out)
    out["ok"] = not out["problems"]
    return out


def _audit_link(out: dict[str, Any], link: Any, parent: Any, selected: Selected) -> None:
    if link.manifest is None:
        return
    entry = dp_entry(link.manifest)
    if not entry:
        return
    problems, eps = _check_entry(entry)
    row: dict[str, Any] = {"version": link.version, "round": link.manifest.get("round"),
                           "rounds": entry.get("rounds"), "epsilon": entry.get("epsilon"),
                           "epsilon_recomputed": eps,
                           "epsilon_round": entry.get("epsilon_round"), "check": "n/a"}
    if eps is not None:  # the fields are in range: the step from the parent can be checked
        parent_entry = None
        if parent is not None and parent.manifest is not None:
            parent_entry = dp_entry(parent.manifest)
        if parent is not None and parent.manifest is None:
            row["check"] = "not checked: the parent's manifest did not verify"
        elif parent_entry and entry_problems(parent_entry):
            row["check"] = "not checked: the parent's entry is malformed"
        else:
            round_no = link.manifest.get("round")
            count = selected(round_no) if isinstance(round_no, int) else None
            more, row["check"] = _check_step(entry, parent_entry, count)
            problems += more
    out["series"].append(row)
    out["problems"] += [f"version {link.version}: {p}" for p in problems]


def _dp_summary(entry: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    keys = ("mechanism", "noise_multiplier", "l2_clip", "sampling_rate", "delta", "epsilon",
            "epsilon_round", "epsilon_budget", "rounds", "threshold", "dim",
            "l2_sensitivity_levels", "variance_levels2", "accountant")
    summary = {k: entry.get(k) for k in keys}
    rows = out["series"]
    summary["epsilon_recomputed"] = rows[-1]["epsilon_recomputed"] if rows else None
    budget, eps = _num(entry, "epsilon_budget"), _num(entry, "epsilon")
    if budget is None or eps is None:
        summary["budget"] = "no budget set"
    elif eps > budget * (1 + RTOL):
        summary["budget"] = "EXCEEDED"
        out["problems"].append(f"epsilon {eps:.6g} exceeds the budget {budget:.6g}")
    else:
        summary["budget"] = f"within budget ({budget - eps:.6g} left)"
    summary["remaining"] = None if budget is None or eps is None else max(0.0, budget - eps)
    return summary
