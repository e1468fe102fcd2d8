"""Fairness section of the audit: the stored federated evaluations of a version, re-verified.

Reads ``GET /v1/models/{v}/evaluations`` (all pages) and the enrolled gateways' keys (both need
the admin token), re-verifies every report's signature against its gateway's key, recomputes
the metrics from the signed counts (not from the served ones), and names the worst decile.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from aggregator.audit.client import AuditClient, HttpRefusal
from aggregator.audit.fairness import confusion_metrics, pooled, worst_decile
from native import evalreport
from native.errors import ConfigError, FedgateError, TransportError

log = logging.getLogger(__name__)

PAGE = 1000


def _pages(client: AuditClient, version: int) -> tuple[list[str], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    while True:
        page = client.obj(f"/v1/models/{version}/evaluations?limit={PAGE}&offset={len(rows)}",
                          admin=True)
        classes, batch, total = page.get("classes"), page.get("evaluations"), page.get("total")
        if not isinstance(classes, list) or not isinstance(batch, list) or not isinstance(
                total, int) or not all(isinstance(r, dict) for r in batch):
            raise TransportError("the evaluations answer is malformed")
        rows.extend(batch)
        if not batch or len(rows) >= total:
            return [str(c) for c in classes], rows


def _keys(client: AuditClient) -> dict[str, bytes]:
    listed = client.json("/v1/gateways", admin=True)
    try:
        return {str(gw["gateway_id"]): bytes.fromhex(str(gw["public_key"])) for gw in listed}
    except (TypeError, KeyError, ValueError):
        raise TransportError("the gateways answer is malformed") from None


def _verify(row: dict[str, Any], keys: dict[str, bytes], version: int
            ) -> tuple[evalreport.EvalReport | None, str]:
    gid = str(row.get("gateway_id"))
    key = keys.get(gid)
    if key is None:
        return None, f"report of {gid}: gateway not enrolled"
    try:
        data = base64.b64decode(str(row.get("report")), validate=True)
        report = evalreport.verify(data, bytes.fromhex(str(row.get("signature"))), key)
    except (binascii.Error, ValueError, FedgateError) as exc:
        return None, f"report of {gid}: {exc}"
    if report.gateway_id != gid or report.model_version != version:
        return None, f"report of {gid}: signed for {report.gateway_id}, version " \
                     f"{report.model_version}"
    if [list(r) for r in report.confusion] != row.get("confusion") or \
            report.samples != row.get("samples"):
        return None, f"report of {gid}: served counts differ from the signed ones"
    return report, ""


def fairness_section(client: AuditClient, version: int) -> dict[str, Any]:
    """Per-gateway Se / +P / macro-F1 of ``version`` and its worst decile."""
    if not client.admin_token:
        return {"available": False, "ok": True, "problems": [],
                "reason": "per-gateway metrics need the admin token "
                          "(FEDGATE_ADMIN_TOKEN or --admin-token-file)"}
    try:
        classes, rows = _pages(client, version)
        keys = _keys(client)
    except HttpRefusal as exc:
        if exc.status in (401, 403):
            raise ConfigError(f"the aggregator refused the admin token: {exc.reason}") from None
        if exc.status == 409:  # the version's model takes no evaluations
            return {"available": False, "ok": True, "problems": [],
                    "reason": f"{exc.reason}: {exc.detail}"}
        return {"available": False, "ok": False, "problems": [f"evaluations not served: {exc}"],
                "reason": f"{exc.reason}: {exc.detail}"}
    problems: list[str] = []
    gateways: list[dict[str, Any]] = []
    for row in rows:
        report, why = _verify(row, keys, version)
        if report is None:
            problems.append(why)
            continue
        m = confusion_metrics(report.confusion, classes)
        gateways.append({"gateway_id": report.gateway_id, "samples": report.samples,
                         "loss": report.loss_sum / report.samples, **m,
                         "confusion": [list(r) for r in report.confusion],
                         "signature": "verified"})
    scores = {g["gateway_id"]: g["macro_f1"] for g in gateways}
    worst = worst_decile(scores)
    fleet = confusion_metrics(pooled([g["confusion"] for g in gateways], len(classes)),
                              classes) if gateways else None
    return {"available": True, "ok": not problems, "problems": problems, "classes": classes,
            "gateways": gateways, "reports": len(rows), "pooled": fleet,
            "worst_decile": [{"gateway_id": g, "macro_f1": scores[g]} for g in worst]}

