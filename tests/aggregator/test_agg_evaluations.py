"""``/v1/models/{v}/evaluations``: signed federated-evaluation reports in, per-gateway metrics out;
every garbage class refused with its reason and counted; SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import os
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.signing
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text, update

from aggregator.app import create_app
from aggregator.db import Gateway, utcnow
from aggregator.settings import AggregatorSettings
from models.evaluate import classification_metrics
from native import evalreport

TOKEN = "admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ECG = {"model": "ecg"}


def make_client(settings: AggregatorSettings) -> TestClient:
    return TestClient(create_app(settings))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    cfg = AggregatorSettings(admin_token=TOKEN, database_url=f"sqlite:///{tmp_path}/agg.db",
                             signing_key_path=tmp_path / "signing.key")
    with make_client(cfg) as test_client:
        setup(test_client)
        yield test_client


def setup(client: TestClient) -> None:
    """Versions 1 (ecg), 2 (ecg, child of 1) and 3 (no model named)."""
    app: Any = client.app
    with app.state.db.session() as session:
        v1 = app.state.registry.register(session, inference=b"m1" * 100, checkpoint=b"c" * 400,
                                         config=ECG)
        app.state.registry.register(session, inference=b"m2" * 100, checkpoint=b"d" * 400,
                                    parent=v1.version, round_id=1, participants=3, config=ECG)
        app.state.registry.register(session, inference=b"m3" * 100, parent=v1.version)


def enroll(client: TestClient) -> tuple[nacl.signing.SigningKey, str]:
    code = client.post("/v1/enrollment-codes", json={}, headers=ADMIN).json()["code"]
    key = nacl.signing.SigningKey.generate()
    body = {"code": code, "public_key": bytes(key.verify_key).hex(),
            "proof": key.sign(b"fedgate/enroll/v1\x00" + code.encode()).signature.hex()}
    answer = client.post("/v1/gateways", json=body)
    assert answer.status_code == 201, answer.text
    return key, str(answer.json()["gateway_id"])


def body_of(data: bytes, signature: bytes, gid: str) -> dict[str, str]:
    return {"gateway_id": gid, "report": base64.b64encode(data).decode(),
            "signature": signature.hex()}


def signed(key: nacl.signing.SigningKey, gid: str, version: int = 2,
           confusion: list[list[int]] | None = None, loss: float = 3.5,
           sender: str | None = None) -> dict[str, str]:
    conf = confusion or [[40, 2, 1, 0], [3, 5, 0, 0], [1, 0, 7, 0], [0, 0, 1, 0]]
    rep = evalreport.EvalReport.of(version, gid, conf, loss)
    return body_of(*evalreport.sign(key, rep), sender or gid)


def raw_report(gid: str, k: int, samples: int, counts: list[int], loss: float = 1.0,
               version: int = 2) -> bytes:
    g = gid.encode()
    return (b"FGEV" + struct.pack("<HBBIQd", 1, k, len(g), version, samples, loss) + g
            + struct.pack(f"<{len(counts)}Q", *counts))


def rejections(client: TestClient, reason: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("fedgate_rejections_total{") and f'reason="{reason}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_report_stored_once_and_served_with_metrics(client: TestClient) -> None:
    key, gid = enroll(client)
    body = signed(key, gid)
    first = client.post("/v1/models/2/evaluations", json=body)
    assert first.status_code == 201, first.text
    assert first.json()["duplicate"] is False and first.json()["samples"] == 60
    again = client.post("/v1/models/2/evaluations", json=body)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    other = client.post("/v1/models/2/evaluations", json=signed(key, gid, loss=9.0))
    assert other.status_code == 409 and other.json()["error"] == "duplicate_evaluation"
    assert rejections(client, "duplicate_evaluation") == 1
    listed = client.get("/v1/models/2/evaluations", headers=ADMIN).json()
    assert listed["total"] == 1 and listed["classes"] == ["N", "S", "V", "F"]
    row = listed["evaluations"][0]
    assert row["gateway_id"] == gid and row["samples"] == 60 and row["loss"] == 3.5 / 60
    # The served metrics are the ones models.evaluate computes from the same beats.
    conf = np.array(row["confusion"])
    truth = np.repeat(np.repeat(np.arange(4), 4), conf.ravel())
    pred = np.repeat(np.tile(np.arange(4), 4), conf.ravel())
    ref = classification_metrics(truth, pred, ("N", "S", "V", "F")).to_dict()
    assert row["macro_f1"] == pytest.approx(ref["macro_f1"])
    for name in ("sensitivity", "ppv", "f1"):
        assert row[name] == pytest.approx(ref[name] if name != "ppv" else ref["ppv"])
    # What is served can be re-verified against the gateway's enrolled key.
    data = base64.b64decode(row["report"])
    assert evalreport.verify(data, bytes.fromhex(row["signature"]), bytes(key.verify_key)) \
        .confusion == tuple(map(tuple, row["confusion"]))
    assert client.get("/v1/models/1/evaluations", headers=ADMIN).json()["total"] == 0


@pytest.mark.parametrize(("headers", "status"), [({}, 401), (
    {"Authorization": "Bearer not-the-token-at-all"}, 403)])
def test_reading_evaluations_needs_the_admin_token(client: TestClient, headers: dict[str, str],
                                                    status: int) -> None:
    assert client.get("/v1/models/2/evaluations", headers=headers).status_code == status


def test_unknown_revoked_and_forged_gateways_are_refused(client: TestClient) -> None:
    key, gid = enroll(client)
    other_key, other = enroll(client)
    stranger = nacl.signing.SigningKey.generate()
    data, sig = evalreport.sign(key, evalreport.EvalReport.of(2, gid, [[1, 0, 0, 0]] + [[0] * 4]
                                                               * 3, 0.5))
    cases = [
        (signed(stranger, "gw-ffffffffffffffff"), 403, "unknown_gateway"),
        (signed(stranger, gid), 403, "bad_signature"),  # someone else's key, this id
        (body_of(data, bytes(key.sign(data).signature), gid), 403, "bad_signature"),  # no domain
        (body_of(data, sig, other), 403, "bad_signature"),  # sent in another gateway's name
        (signed(other_key, gid, sender=other), 422, "gateway_mismatch"),  # names someone else
    ]
    for body, status, reason in cases:
        answer = client.post("/v1/models/2/evaluations", json=body)
        assert (answer.status_code, answer.json()["error"]) == (status, reason)
    app: Any = client.app
    with app.state.db.session() as session:
        session.execute(update(Gateway).where(Gateway.id == gid).values(revoked_at=utcnow()))
    answer = client.post("/v1/models/2/evaluations", json=body_of(data, sig, gid))
    assert (answer.status_code, answer.json()["error"]) == (403, "gateway_revoked")
    for reason, count in (("unknown_gateway", 1), ("bad_signature", 3), ("gateway_revoked", 1),
                          ("gateway_mismatch", 1)):
        assert rejections(client, reason) == count
    assert client.get("/v1/models/2/evaluations", headers=ADMIN).json()["total"] == 0


def test_wrong_versions_and_shapes(client: TestClient) -> None:
    key, gid = enroll(client)
    checks = [
        ("/v1/models/9/evaluations", signed(key, gid, version=9), 404, "model_not_found"),
        ("/v1/models/1/evaluations", signed(key, gid, version=2), 422, "version_mismatch"),
        ("/v1/models/3/evaluations", signed(key, gid, version=3), 409, "model_unknown"),
        ("/v1/models/2/evaluations", signed(key, gid, confusion=[[5, 1, 0], [0, 2, 0],
                                                                   [0, 0, 1]]), 422,
         "wrong_shape"),
    ]
    for path, body, status, reason in checks:
        answer = client.post(path, json=body)
        assert (answer.status_code, answer.json()["error"]) == (status, reason), answer.text
        assert rejections(client, reason) >= 1


@pytest.mark.parametrize(("report", "reason"), [
    (lambda g: raw_report(g, 4, 61, [60] + [0] * 15), "bad_counts"),  # sum != samples
    (lambda g: raw_report(g, 1, 2**63, [2**63]), "bad_counts"),  # "negative" as unsigned
    (lambda g: raw_report(g, 1, 10**9 + 1, [10**9 + 1]), "bad_counts"),  # oversized
    (lambda g: raw_report(g, 1, 1, [1], loss=float("nan")), "bad_counts"),
    (lambda g: raw_report(g, 1, 1, [1], loss=float("inf")), "bad_counts"),
    (lambda g: raw_report(g, 1, 1, [1], loss=-2.0), "bad_counts"),
    (lambda g: raw_report(g, 4, 16, [1] * 16)[:-3], "malformed_report"),  # truncated
    (lambda g: raw_report(g, 4, 16, [1] * 16) + b"x", "malformed_report"),
    (lambda g: b"FGSA" + raw_report(g, 1, 1, [1])[4:], "malformed_report"),
    (lambda g: raw_report(g, 0, 0, []), "malformed_report"),
    (lambda g: raw_report(g, 1, 1, [1], version=0), "malformed_report"),
    (lambda g: b"\x00" * 10, "malformed_report"),
])
def test_garbage_reports_are_refused_and_counted(client: TestClient, report: Any,
                                                 reason: str) -> None:
    key, gid = enroll(client)
    data = report(gid)
    answer = client.post("/v1/models/2/evaluations",
                         json=body_of(data, bytes(key.sign(evalreport.REPORT_DOMAIN + data)
                                                  .signature), gid))
    assert (answer.status_code, answer.json()["error"]) == (422, reason), answer.text
    assert rejections(client, reason) == 1


@pytest.mark.parametrize("body", [
    {}, {"report": "AAAA"}, {"signature": "00" * 64},
    {"gateway_id": "gw-a", "report": "!!notbase64!!", "signature": "00" * 64},
    {"gateway_id": "gw-a", "report": "AAA", "signature": "00" * 64},
    {"gateway_id": "gw-a", "report": "AAAA", "signature": "zz" * 64},
    {"gateway_id": "gw-a", "report": "AAAA", "signature": "00" * 63},
    {"gateway_id": "gw-a", "report": "", "signature": "00" * 64},
    {"gateway_id": "gw a", "report": "AAAA", "signature": "00" * 64},
    {"gateway_id": "g" * 33, "report": "AAAA", "signature": "00" * 64},
    {"gateway_id": "gw-a", "report": "A" * 50_000, "signature": "00" * 64},
    {"gateway_id": "gw-a", "report": "AAAA", "signature": "00" * 64, "extra": 1},
    {"gateway_id": "gw-a", "report": 5, "signature": "00" * 64}, [], "text",
])
def test_garbage_bodies_are_4xx(client: TestClient, body: Any) -> None:
    answer = client.post("/v1/models/2/evaluations", json=body)
    assert 400 <= answer.status_code < 500


@pytest.mark.parametrize("path", ["/v1/models/0/evaluations", "/v1/models/-1/evaluations",
                                  "/v1/models/abc/evaluations",
                                  f"/v1/models/{2**31}/evaluations"])
def test_garbage_versions_are_422(client: TestClient, path: str) -> None:
    assert client.post(path, json={"report": "AAAA", "signature": "00" * 64}) \
        .status_code == 422
    assert client.get(path, headers=ADMIN).status_code == 422


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(min_size=3, max_size=300), signed_by_sender=st.booleans())
def test_random_report_bytes_never_5xx(client: TestClient, data: bytes,
                                       signed_by_sender: bool) -> None:
    key = getattr(client, "_fuzz_key", None)
    if key is None:
        key = enroll(client)
        client._fuzz_key = key  # type: ignore[attr-defined]
    sig = key[0].sign(evalreport.REPORT_DOMAIN + data).signature if signed_by_sender \
        else b"\x01" * 64
    answer = client.post("/v1/models/2/evaluations", json=body_of(data, sig, key[1]))
    assert answer.status_code in ((422,) if signed_by_sender else (403,)), answer.text


def _pg_url() -> str | None:
    pytest.importorskip("psycopg", reason="psycopg not installed")
    for url in filter(None, [os.environ.get("FEDGATE_TEST_PG_URL", ""),
                             "postgresql+psycopg://postgres@127.0.0.1:5432/test",
                             "postgresql+psycopg://root@127.0.0.1:5432/test"]):
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return url
        except Exception:
            continue
        finally:
            engine.dispose()
    return None


def test_postgres_stores_reports_and_keeps_them_across_restarts(tmp_path: Path) -> None:
    url = _pg_url()
    if url is None:
        pytest.skip("no PostgreSQL at 127.0.0.1:5432 (database 'test')")
    schema = f"fedgate_test_{uuid.uuid4().hex[:12]}"
    cfg = AggregatorSettings(admin_token=TOKEN, database_url=url, database_schema=schema,
                             signing_key_path=tmp_path / "sk")
    try:
        with make_client(cfg) as client:
            setup(client)
            key, gid = enroll(client)
            body = signed(key, gid, loss=0.1 + 0.2)  # a float that only survives exactly
            assert client.post("/v1/models/2/evaluations", json=body).status_code == 201
            assert client.post("/v1/models/2/evaluations", json=body).status_code == 200
        with make_client(cfg) as again:
            listed = again.get("/v1/models/2/evaluations", headers=ADMIN).json()
            assert listed["total"] == 1
            assert listed["evaluations"][0]["loss"] == (0.1 + 0.2) / 60
            assert listed["evaluations"][0]["report"] == body["report"]
    finally:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()
