from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from aggregator.app import create_app
from aggregator.db import EnrollmentCode
from aggregator.routers.enroll import ENROLL_DOMAIN, gateway_id_for
from aggregator.settings import AggregatorSettings

TOKEN = "admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    cfg = AggregatorSettings(admin_token=TOKEN, database_url=f"sqlite:///{tmp_path}/agg.db",
                             signing_key_path=tmp_path / "signing.key")
    with TestClient(create_app(cfg)) as test_client:
        yield test_client


def new_code(client: TestClient, **body: Any) -> str:
    response = client.post("/v1/enrollment-codes", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return str(response.json()["code"])


def enroll_body(key: nacl.signing.SigningKey, code: str) -> dict[str, str]:
    proof = key.sign(ENROLL_DOMAIN + code.encode()).signature.hex()
    return {"code": code, "public_key": bytes(key.verify_key).hex(), "proof": proof}


def rejections(client: TestClient, reason: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("fedgate_rejections_total{") and f'reason="{reason}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_enrollment_happy_path(client: TestClient) -> None:
    key = nacl.signing.SigningKey.generate()
    response = client.post("/v1/gateways", json=enroll_body(key, new_code(client, label="ward 3")))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["gateway_id"] == gateway_id_for(bytes(key.verify_key))
    assert body["aggregator_public_key"] == client.get("/v1/signing-key").json()["public_key"]
    listed = client.get("/v1/gateways", headers=ADMIN).json()
    assert [g["gateway_id"] for g in listed] == [body["gateway_id"]]
    one = client.get(f"/v1/gateways/{body['gateway_id']}", headers=ADMIN).json()
    assert one["public_key"] == bytes(key.verify_key).hex() and not one["revoked"]
    assert "fedgate_enrollments_total 1.0" in client.get("/metrics").text


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [({}, 401, "missing_admin_token"),
     ({"Authorization": "Bearer wrong-token-000000000"}, 403, "bad_admin_token"),
     ({"Authorization": "Basic " + TOKEN}, 401, "missing_admin_token"),
     ({"Authorization": "Bearer " + TOKEN + "x"}, 403, "bad_admin_token"),
     ({"Authorization": "Bearer"}, 401, "missing_admin_token")],
)
def test_admin_routes_refuse_bad_tokens(client: TestClient, headers: dict[str, str], status: int,
                                        reason: str) -> None:
    for method, path in (("post", "/v1/enrollment-codes"), ("get", "/v1/gateways"),
                         ("get", "/v1/gateways/gw-1")):
        response = client.request(method, path, json={}, headers=headers)
        assert response.status_code == status
        assert response.json()["error"] == reason
    assert rejections(client, reason) == 3


def test_enrollment_code_is_one_use(client: TestClient) -> None:
    code = new_code(client)
    first = nacl.signing.SigningKey.generate()
    assert client.post("/v1/gateways", json=enroll_body(first, code)).status_code == 201
    second = nacl.signing.SigningKey.generate()
    response = client.post("/v1/gateways", json=enroll_body(second, code))
    assert response.status_code == 409 and response.json()["error"] == "enrollment_code_used"
    assert "already used" in response.json()["detail"]
    assert rejections(client, "enrollment_code_used") == 1


def test_expired_and_unknown_codes(client: TestClient) -> None:
    code = new_code(client, ttl_s=60)
    db = client.app.state.db  # type: ignore[attr-defined]
    with db.session() as session:
        session.execute(update(EnrollmentCode).values(
            expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    key = nacl.signing.SigningKey.generate()
    response = client.post("/v1/gateways", json=enroll_body(key, code))
    assert response.status_code == 410 and response.json()["error"] == "enrollment_code_expired"
    response = client.post("/v1/gateways", json=enroll_body(key, "not-a-code"))
    assert response.status_code == 403 and response.json()["error"] == "enrollment_code_invalid"


def test_same_key_twice_is_refused_and_keeps_the_code(client: TestClient) -> None:
    key = nacl.signing.SigningKey.generate()
    assert client.post("/v1/gateways", json=enroll_body(key, new_code(client))).status_code == 201
    code = new_code(client)
    response = client.post("/v1/gateways", json=enroll_body(key, code))
    assert response.status_code == 409
    assert response.json()["error"] == "public_key_already_enrolled"
    other = nacl.signing.SigningKey.generate()  # the refused attempt did not burn the code
    assert client.post("/v1/gateways", json=enroll_body(other, code)).status_code == 201


@pytest.mark.parametrize(
    ("patch", "status", "reason"),
    [({"public_key": "zz" * 32}, 422, "invalid_public_key"),
     ({"public_key": "ab" * 31}, 422, "invalid_public_key"),
     ({"public_key": ""}, 422, "invalid_public_key"),
     ({"public_key": 5}, 422, "invalid_public_key"),
     ({"proof": "00" * 64}, 403, "bad_proof"),
     ({"proof": "00" * 63}, 422, "invalid_proof"),
     ({"proof": "not hex"}, 422, "invalid_proof"),
     ({"code": ""}, 422, "invalid_code")],
)
def test_malformed_keys_and_proofs(client: TestClient, patch: dict[str, object], status: int,
                                   reason: str) -> None:
    body = enroll_body(nacl.signing.SigningKey.generate(), new_code(client)) | patch
    response = client.post("/v1/gateways", json=body)
    assert response.status_code == status, response.text
    field = reason.removeprefix("invalid_")
    if status == 422:  # FastAPI's validation body: names the field and what it must look like
        assert response.json()["detail"][0]["loc"] == ["body", field]
        assert response.json()["detail"][0]["msg"]
    else:
        assert response.json()["error"] == reason and response.json()["detail"]
    assert rejections(client, reason) == 1


def test_proof_from_another_key_is_refused(client: TestClient) -> None:
    code = new_code(client)
    body = enroll_body(nacl.signing.SigningKey.generate(), code)
    body["public_key"] = bytes(nacl.signing.SigningKey.generate().verify_key).hex()
    response = client.post("/v1/gateways", json=body)
    assert response.status_code == 403 and response.json()["error"] == "bad_proof"


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[]", b"null", b'{"code": 1}', b'{"code": "x"}', b"\xff\xfe",
     b'{"code": "' + b"a" * 10_000 + b'", "public_key": "", "proof": ""}'],
)
def test_garbage_bodies_are_4xx(client: TestClient, raw: bytes) -> None:
    for path, headers in (("/v1/gateways", {}), ("/v1/enrollment-codes", ADMIN)):
        response = client.post(path, content=raw,
                               headers={"Content-Type": "application/json", **headers})
        assert response.status_code == 422, (path, raw[:20], response.text[:200])
    text = client.get("/metrics").text
    counted = [line for line in text.splitlines() if line.startswith("fedgate_rejections_total{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in counted) == 2, counted


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(["code", "public_key", "proof", "label", "x"]),
                            st.one_of(st.text(max_size=140), st.integers(), st.none()), max_size=5))
def test_enroll_fuzz_never_5xx(client: TestClient, body: dict[str, object]) -> None:
    response = client.post("/v1/gateways", json=body)
    assert 400 <= response.status_code < 500, response.text
