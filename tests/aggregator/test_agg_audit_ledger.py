"""The audit's privacy checks on ledger entries the aggregator's own PrivacyLedger wrote, and on
the same entries with out-of-range noise parameters, a spent budget or a chain that does not
add up."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from aggregator.audit.ledger import entry_problems, privacy_section
from aggregator.audit.provenance import Chain, Link
from aggregator.privacy import DPConfig, PrivacyLedger

N_PARAMS = 10_964


def ledger_entries(rounds: int = 2, rate: float = 1.0, budget: float | None = None
                   ) -> list[dict[str, Any]]:
    dp = DPConfig(1.0, 0.5, sampling_rate=rate, epsilon_budget=budget)
    ledger = PrivacyLedger(dp)
    out = []
    for _ in range(rounds):
        noise = ledger.plan(quant_bits=10, clip=dp.coordinate_clip(N_PARAMS),
                            vector_len=N_PARAMS, threshold=3, participants=4)
        out.append(ledger.spend(noise.params(3, N_PARAMS)))
    return out


def chain_of(entries: list[dict[str, Any] | None]) -> Chain:
    """Root (version 1, no DP) then one version per entry; newest first, as verify_chain."""
    links = []
    for i, entry in enumerate([None, *entries], start=1):
        manifest = {"version": i, "round": None if i == 1 else i - 1,
                    "privacy": {"clip": 0.05, "quant_bits": 10, "secure_aggregation": True,
                                "dp": entry}}
        links.append(Link(i, manifest=manifest, parent=None if i == 1 else i - 1,
                          parent_verified=True, signature="verified"))
    return Chain(list(reversed(links)), [], [])


def audit(entries: list[dict[str, Any] | None], selected: int | None = 4) -> dict[str, Any]:
    return privacy_section(chain_of(entries), lambda _round: selected)


@pytest.mark.parametrize("rate", [1.0, 0.5])
def test_a_true_ledger_verifies_and_every_round_is_rederived(rate: float) -> None:
    entries = ledger_entries(rate=rate)
    out = audit(entries)
    assert out["ok"], out["problems"]
    assert [r["check"] for r in out["series"]] == ["re-derived from the noise parameters"] * 2
    assert out["dp"]["epsilon_recomputed"] == pytest.approx(entries[-1]["epsilon"], rel=1e-12)
    assert out["dp"]["budget"] == "no budget set" and out["clip"] == 0.05
    # The signed max_participants is enough: no round records needed.
    out = audit(entries, selected=None)
    assert out["ok"] and out["series"][0]["check"] == "re-derived from the noise parameters"
    # An older entry without it, and no round records: the re-derivation is a note, not a finding.
    for entry in entries:
        entry.pop("max_participants")
    out = audit(entries, selected=None)
    assert out["ok"] and out["series"][0]["check"].startswith("not re-derived")


def test_no_dp_lineage_has_no_ledger() -> None:
    out = audit([])
    assert out["ok"] and out["dp"] is None and out["series"] == []


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("noise_multiplier", -1.0, "noise_multiplier -1.0 out of range"),
    ("noise_multiplier", float("nan"), "noise_multiplier nan out of range"),
    ("noise_multiplier", "1", "noise_multiplier '1' out of range"),
    ("l2_clip", 0.0, "l2_clip 0.0 out of range"),
    ("sampling_rate", 1.5, "sampling_rate 1.5 out of range"),
    ("delta", 1.0, "delta 1.0 out of range"),
    ("delta", None, "delta None out of range"),
    ("epsilon", float("inf"), "epsilon inf out of range"),
    ("mechanism", "laplace", "mechanism 'laplace' unknown"),
    ("variance_levels2", "abc", "not an exact rational"),
    ("variance_levels2", "-4", "variance must be > 0"),
    ("threshold", 0, "threshold 0 must be an integer >= 1"),
    ("rounds", 1.5, "rounds 1.5 must be an integer >= 1"),
    ("epsilon_budget", -3.0, "epsilon_budget -3.0 out of range"),
    ("orders", [2, 3], "orders and rdp must be lists of one length"),
    ("rdp", "x", "orders and rdp must be lists of one length"),
])
def test_out_of_range_noise_parameters_are_findings(field: str, value: Any, needle: str) -> None:
    entries = ledger_entries()
    entries[-1][field] = value
    out = audit(entries)
    assert not out["ok"]
    assert any(needle in p and p.startswith("version 3:") for p in out["problems"]), \
        out["problems"]
    assert entry_problems(entries[0]) == []


def test_negative_rdp_is_a_finding() -> None:
    entries = ledger_entries()
    entries[0]["rdp"][5] = -1.0
    assert any("finite and >= 0" in p for p in audit(entries)["problems"])


def test_a_rewritten_epsilon_or_noise_multiplier_does_not_match_the_rdp() -> None:
    entries = ledger_entries()
    entries[-1]["epsilon"] *= 0.5
    problems = audit(entries)["problems"]
    assert any("but the stored RDP gives" in p for p in problems)
    entries = ledger_entries()
    entries[-1]["noise_multiplier"] = 2.0
    assert any("sqrt(variance) / sensitivity" in p for p in audit(entries)["problems"])


def test_a_chain_that_does_not_add_up() -> None:
    entries = ledger_entries(3)
    jumped = copy.deepcopy(entries)
    jumped[-1]["rounds"] = 5
    assert any("jumps from 2 to 5" in p for p in audit(jumped)["problems"])
    dropped = [entries[0], entries[2]]  # the middle round is missing from the ledger
    assert any("jumps from 1 to 3" in p for p in audit(dropped)["problems"])
    shrunk = copy.deepcopy(entries[:2])
    shrunk[1]["rdp"] = list(shrunk[0]["rdp"])
    shrunk[1]["rdp"][0] -= 1e-3
    assert any("decreased" in p for p in audit(shrunk)["problems"])
    wrong_round = copy.deepcopy(entries[:2])
    wrong_round[1]["epsilon_round"] *= 2
    assert any("epsilon_round" in p for p in audit(wrong_round)["problems"])
    # A version without a DP round carries its parent's ledger unchanged; a change is a finding.
    carried = [entries[0], copy.deepcopy(entries[0])]
    assert audit(carried)["ok"] and audit(carried)["series"][1]["check"] == "carried"
    carried[1]["rdp"] = [v * 1.1 for v in carried[1]["rdp"]]
    problems = audit(carried)["problems"]
    assert any("changed without a DP round" in p for p in problems)


def test_rdp_that_its_noise_parameters_do_not_give_is_a_finding() -> None:
    entries = ledger_entries()
    for entry in entries:
        entry["l2_sensitivity_levels"] *= 0.5  # claims half the sensitivity: less privacy loss
        entry["noise_multiplier"] *= 2
    out = audit(entries)
    assert any("differs from the one its noise parameters give" in p for p in out["problems"])


def test_a_spent_budget_is_reported_and_an_exceeded_one_is_a_finding() -> None:
    entries = ledger_entries(budget=100.0)
    out = audit(entries)
    assert out["ok"] and out["dp"]["budget"].startswith("within budget")
    assert out["dp"]["remaining"] == pytest.approx(100.0 - entries[-1]["epsilon"])
    entries[-1]["epsilon_budget"] = entries[-1]["epsilon"] / 2
    out = audit(entries)
    assert out["dp"]["budget"] == "EXCEEDED"
    assert any("exceeds the budget" in p for p in out["problems"])


def test_an_unverified_manifest_is_never_trusted_for_privacy() -> None:
    chain = chain_of(ledger_entries())
    chain.links[0].manifest = None
    out = privacy_section(chain, lambda _r: 4)
    assert not out["ok"] and "did not verify" in out["problems"][0]
    chain = chain_of(ledger_entries())
    chain.links[1].manifest = None  # the parent of the audited version
    out = privacy_section(chain, lambda _r: 4)
    assert out["series"][-1]["check"].startswith("not checked")
