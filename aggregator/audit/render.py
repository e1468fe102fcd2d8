"""The audit's outputs: ``audit.json``, ``audit.png`` and a self-contained ``audit.html``.

The HTML holds everything it shows (inline style, the PNG as a data URI, no scripts, no external
assets), so it can be mailed or archived with the JSON. Every value from the aggregator is
escaped: a model's config is the aggregator's data, not trusted markup.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .5em;
text-align:left;vertical-align:top}th{background:#f2f2f2}.ok{color:#176f2c;font-weight:600}
.bad{color:#b00020;font-weight:600}.worst{background:#fde8e8}code{font-size:12px}
img{max-width:100%}"""


def write_outputs(out: Path, report: dict[str, Any]) -> dict[str, str]:
    """Write the three files into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": str(out / "audit.json"), "png": str(out / "audit.png"),
             "html": str(out / "audit.html")}
    report["outputs"] = paths
    _atomic(out / "audit.json", json.dumps(report, indent=2, allow_nan=False, default=str) + "\n")
    plot(report, out / "audit.png")
    png = (out / "audit.png").read_bytes()
    _atomic(out / "audit.html", page(report, png))
    return paths


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def plot(report: dict[str, Any], path: Path) -> None:
    """Chain status, epsilon over the lineage, and per-gateway macro-F1 (worst decile red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (chain_ax, eps_ax, f1_ax) = plt.subplots(1, 3, figsize=(15, 4))
    links = list(reversed(report["provenance"]["links"]))
    chain_ax.bar([link["version"] for link in links], [1] * len(links),
                 color=["#2e8b57" if link["ok"] else "#b00020" for link in links])
    chain_ax.set_yticks([])
    for ax in (chain_ax, eps_ax):  # a long lineage must not print a thousand labels
        ax.xaxis.set_major_locator(MaxNLocator(nbins=20, integer=True))
    chain_ax.set_xlabel("model version (root first)")
    chain_ax.set_title("lineage: green verified, red broken")
    series = report["privacy"].get("series") or []
    if series:
        xs = [row["version"] for row in series]
        eps_ax.plot(xs, [row["epsilon"] for row in series], "o-", label="cumulative epsilon")
        eps_ax.bar(xs, [row["epsilon_round"] or 0.0 for row in series], alpha=0.4,
                   label="epsilon of the round")
        dp = report["privacy"].get("dp") or {}
        if dp.get("epsilon_budget"):
            eps_ax.axhline(dp["epsilon_budget"], color="#b00020", ls="--", label="budget")
        eps_ax.set_xlabel("model version")
        eps_ax.set_ylabel(f"epsilon at delta {dp.get('delta')}")
        eps_ax.legend()
    else:
        eps_ax.text(0.5, 0.5, "no differential privacy\non this lineage", ha="center",
                    va="center", transform=eps_ax.transAxes)
    eps_ax.set_title("privacy spent")
    _plot_fairness(f1_ax, report.get("fairness") or {})
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_fairness(ax: Any, fair: dict[str, Any]) -> None:
    rows = sorted(fair.get("gateways") or [], key=lambda g: (g["macro_f1"] is None,
                                                             g["macro_f1"] or 0.0))
    worst = {w["gateway_id"] for w in fair.get("worst_decile") or []}
    if rows:
        ax.bar(range(len(rows)), [g["macro_f1"] or 0.0 for g in rows],
               color=["#b00020" if g["gateway_id"] in worst else "#4682b4" for g in rows])
        ax.set_xticks(range(len(rows)), [g["gateway_id"][-6:] for g in rows], rotation=90,
                      fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("macro-F1 on the gateway's hold-out")
    else:
        ax.text(0.5, 0.5, fair.get("reason") or "no federated evaluations", ha="center",
                va="center", wrap=True, transform=ax.transAxes)
    ax.set_title("per-gateway macro-F1 (red: worst decile)")


def _e(value: Any) -> str:
    if isinstance(value, float):
        return html.escape(f"{value:.4g}")
    if isinstance(value, dict | list):
        return f"<code>{html.escape(json.dumps(value, default=str))}</code>"
    return html.escape("" if value is None else str(value))


def _table(head: list[str], rows: list[list[Any]], marks: list[str] | None = None) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{marks[i]}"' if marks and marks[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>")
    return f"<table><tr>{cells}</tr>{''.join(body)}</table>"


def _verdict(report: dict[str, Any]) -> str:
    v = report["verdict"]
    head = ('<p class="ok">Everything verified.</p>' if v["ok"] else
            '<p class="bad">The audit found problems:</p>')
    items = "".join(f"<li>{_e(p)}</li>" for p in v["problems"])
    return head + (f"<ul>{items}</ul>" if items else "")


def _provenance(report: dict[str, Any]) -> str:
    p = report["provenance"]
    rows = [[link["version"], link["parent"], link["round"], link["participants"],
             link["signature"], ", ".join(f"{k}: {s}" for k, s in link["blobs"].items()),
             (link.get("inference") or {}).get("sha256"), "; ".join(link["problems"]) or "ok"]
            for link in p["links"]]
    marks = ["" if link["ok"] else "worst" for link in p["links"]]
    key = report["signing_key"]
    return (f"<p>Trusted key <code>{_e(key['public_key'])}</code> (id {_e(key['key_id'])}, "
            f"{'pinned by the operator' if key['pinned'] else 'declared by the aggregator'})."
            f" Chain of {len(p['links'])} versions, root {_e(p['root'])}: "
            f"{'<span class=ok>intact</span>' if p['ok'] else '<span class=bad>BROKEN</span>'}"
            "</p>" + _table(["version", "parent", "round", "participants", "signature",
                             "blobs", "inference sha256", "findings"], rows, marks))


def _privacy(report: dict[str, Any]) -> str:
    pv = report["privacy"]
    dp = pv.get("dp")
    base = _table(["clip", "quant bits", "secure aggregation"],
                  [[pv.get("clip"), pv.get("quant_bits"), pv.get("secure_aggregation")]])
    if not dp:
        text = "<p>No differential privacy: the ledger of this version is empty.</p>"
    else:
        keys = ["mechanism", "noise_multiplier", "l2_clip", "sampling_rate", "delta", "epsilon",
                "epsilon_recomputed", "epsilon_budget", "budget", "rounds"]
        text = _table(keys, [[dp.get(k) for k in keys]]) + _table(
            ["version", "round", "DP rounds", "epsilon", "recomputed", "round epsilon", "check"],
            [[r["version"], r["round"], r["rounds"], r["epsilon"], r["epsilon_recomputed"],
              r["epsilon_round"], r["check"]] for r in pv.get("series") or []])
    return base + text + _membership(pv.get("membership_inference"))


def _membership(mia: dict[str, Any] | None) -> str:
    if not mia:
        return "<p>No membership-inference test (pass --members and --nonmembers).</p>"
    rows = []
    for name in ("audited", "baseline"):
        r = mia.get(name)
        if r:
            tpr = r["tpr_at_fpr"]
            rows.append([name, r["version"], r.get("epsilon"), r["members"], r["nonmembers"],
                         r["auc"], ", ".join(f"{k}: {v:.4g}" for k, v in tpr.items()),
                         r["member_loss_mean"], r["nonmember_loss_mean"]])
    return (f"<p>{_e(mia['attack'])}; members: {_e(', '.join(mia['member_records']))}; "
            f"non-members: {_e(', '.join(mia['nonmember_records']))}.</p>" +
            _table(["model", "version", "epsilon", "member beats", "non-member beats", "AUC",
                    "TPR at FPR", "member loss", "non-member loss"], rows))


def _fairness(report: dict[str, Any]) -> str:
    f = report.get("fairness") or {}
    if not f.get("available"):
        return f"<p>Not available: {_e(f.get('reason'))}</p>"
    classes = f["classes"]
    worst = {w["gateway_id"] for w in f["worst_decile"]}
    head = ["gateway", "beats", "macro-F1"] + [f"Se {c}" for c in classes] + \
        [f"+P {c}" for c in classes]
    rows = [[g["gateway_id"], g["samples"], g["macro_f1"],
             *[g["sensitivity"][c] for c in classes], *[g["ppv"][c] for c in classes]]
            for g in f["gateways"]]
    marks = ["worst" if g["gateway_id"] in worst else "" for g in f["gateways"]]
    names = ", ".join(w["gateway_id"] for w in f["worst_decile"]) or "none"
    return (f"<p>{len(f['gateways'])} gateways reported; worst decile: {_e(names)}.</p>"
            + _table(head, rows, marks))


def page(report: dict[str, Any], png: bytes) -> str:
    """The HTML report (one string, no external references)."""
    img = base64.b64encode(png).decode("ascii")
    title = f"fedgate audit of model version {report['version']}"
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>"
            f"<p>Aggregator {_e(report['aggregator'])}, {_e(report['generated_at'])}.</p>"
            f"{_verdict(report)}<img alt='audit figures' src='data:image/png;base64,{img}'>"
            f"<h2>Provenance</h2>{_provenance(report)}<h2>Privacy</h2>{_privacy(report)}"
            f"<h2>Fairness (federated evaluation)</h2>{_fairness(report)}</body></html>\n")
