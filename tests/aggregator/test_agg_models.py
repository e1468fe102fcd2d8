from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from aggregator.app import create_app
from aggregator.db import Blob, Database, ModelVersion
from aggregator.registry import ModelRegistry
from aggregator.settings import AggregatorSettings
from aggregator.signing import (
    MANIFEST_DOMAIN,
    load_or_create_signing_key,
    verify_blob,
    verify_manifest,
)
from native.errors import ConfigError, InputError, IntegrityError, WireError

TOKEN = "admin-token-0123456789"


def make_settings(tmp_path: Path) -> AggregatorSettings:
    return AggregatorSettings(admin_token=TOKEN, database_url=f"sqlite:///{tmp_path}/agg.db",
                              signing_key_path=tmp_path / "keys" / "signing.key")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path))) as test_client:
        yield test_client


def register_chain(client: TestClient, n: int) -> list[int]:
    registry: ModelRegistry = client.app.state.registry  # type: ignore[attr-defined]
    db: Database = client.app.state.db  # type: ignore[attr-defined]
    versions: list[int] = []
    with db.session() as session:
        for i in range(n):
            row = registry.register(
                session, inference=f"onnx-{i}".encode() * 50,
                checkpoint=None if i == 0 else f"ckpt-{i}".encode() * 80,
                parent=versions[-1] if versions else None, round_id=None if i == 0 else i,
                participants=3 * i, config={"strategy": "fedavg", "lr": 0.5, "k_bits": 16},
                privacy={"clip_norm": 1.0, "noise_multiplier": 0.8, "quant_bits": 8},
            )
            versions.append(row.version)
    return versions


def test_versions_carry_lineage_and_verifiable_signatures(client: TestClient) -> None:
    assert register_chain(client, 3) == [1, 2, 3]
    key = bytes.fromhex(client.get("/v1/signing-key").json()["public_key"])
    latest = client.get("/v1/models/latest").json()
    assert latest["version"] == 3 and latest["lineage"] == [3, 2, 1]
    assert latest["privacy"]["noise_multiplier"] == 0.8 and latest["participants"] == 6
    manifest = verify_manifest(base64.b64decode(latest["manifest"]),
                               bytes.fromhex(latest["signature"]), key)
    assert (manifest["version"], manifest["parent"], manifest["round"]) == (3, 2, 2)
    for kind in ("inference", "checkpoint"):
        response = client.get(f"/v1/models/3/{kind}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        verify_blob(response.content, manifest[kind]["sha256"])
        assert response.headers["x-fedgate-sha256"] == manifest[kind]["sha256"]
    listed = client.get("/v1/models", params={"limit": 2, "offset": 1}).json()["models"]
    assert [m["version"] for m in listed] == [2, 3]
    first = client.get("/v1/models/1").json()
    assert first["parent"] is None and first["checkpoint"] is None
    response = client.get("/v1/models/1/checkpoint")
    assert response.status_code == 404 and response.json()["error"] == "checkpoint_not_found"


@pytest.mark.parametrize("path", ["/v1/models/9", "/v1/models/9/inference",
                                  "/v1/models/9/checkpoint", "/v1/models/latest"])
def test_missing_models_are_404_with_reason(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404 and response.json()["error"] == "model_not_found"


@pytest.mark.parametrize("path", ["/v1/models/0", "/v1/models/-1", "/v1/models/abc",
                                  f"/v1/models/{2**64}", "/v1/models/1.5/inference",
                                  "/v1/models?limit=0", "/v1/models?offset=-1"])
def test_bad_model_paths_are_422(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 422


def test_tampered_blob_or_manifest_is_refused_not_served(client: TestClient) -> None:
    register_chain(client, 2)
    db: Database = client.app.state.db  # type: ignore[attr-defined]
    with db.session() as session:
        row = session.get(ModelVersion, 2)
        assert row is not None
        session.execute(update(Blob).where(Blob.sha256 == row.inference_sha256)
                        .values(data=b"evil" * 10))
        session.execute(update(ModelVersion).where(ModelVersion.version == 1)
                        .values(manifest=b'{"format":"fedgate-model-manifest/1","version":1}'))
    response = client.get("/v1/models/2/inference")
    assert response.status_code == 500 and response.json()["error"] == "IntegrityError"
    response = client.get("/v1/models/1")
    assert response.status_code == 500 and response.json()["error"] == "IntegrityError"
    assert 'reason="IntegrityError"' in client.get("/metrics").text


def test_tampering_after_a_version_was_served_is_still_refused(client: TestClient) -> None:
    # The registry keeps what it verified once (a version never changes): a row altered in the
    # database afterwards must not be served on the strength of the earlier check.
    register_chain(client, 3)
    for _ in range(2):
        assert client.get("/v1/models/latest").json()["lineage"] == [3, 2, 1]
    db: Database = client.app.state.db  # type: ignore[attr-defined]
    with db.session() as session:
        row = session.get(ModelVersion, 3)
        assert row is not None
        session.execute(update(ModelVersion).where(ModelVersion.version == 3)
                        .values(signature=bytes(64)))
    response = client.get("/v1/models/latest")
    assert response.status_code == 500 and response.json()["error"] == "IntegrityError"
    registry: ModelRegistry = client.app.state.registry  # type: ignore[attr-defined]
    with db.session() as session:
        row = registry.register(session, inference=b"next" * 40, parent=2)
        assert registry.lineage(session, row.version) == [4, 2, 1]
        assert registry.lineage(session, 99) == []


def test_registry_refuses_bad_input(client: TestClient) -> None:
    registry: ModelRegistry = client.app.state.registry  # type: ignore[attr-defined]
    db: Database = client.app.state.db  # type: ignore[attr-defined]
    cases = [{"inference": b""}, {"inference": "text"}, {"inference": b"x", "parent": 7},
             {"inference": b"x", "participants": -1}, {"inference": b"x", "participants": True},
             {"inference": b"x", "config": {"lr": float("nan")}},
             {"inference": b"x", "privacy": {"eps": object()}}]
    for kwargs in cases:
        with pytest.raises((InputError, WireError)), db.session() as session:
            registry.register(session, **kwargs)  # type: ignore[arg-type]
    with db.session() as session:
        assert registry.latest(session) is None


def test_verify_helpers_reject_garbage() -> None:
    key = nacl.signing.SigningKey.generate()
    pub = bytes(key.verify_key)
    manifest = b'{"format":"fedgate-model-manifest/1","version":1}'
    sig = key.sign(MANIFEST_DOMAIN + manifest).signature
    assert verify_manifest(manifest, sig, pub)["version"] == 1
    with pytest.raises(IntegrityError):
        verify_manifest(manifest + b" ", sig, pub)
    with pytest.raises(IntegrityError):
        verify_manifest(manifest, key.sign(manifest).signature, pub)  # no domain separation
    for args in ((manifest, sig[:63], pub), (manifest, sig, pub[:31]), ("text", sig, pub),
                 (b"x" * (2 << 20), sig, pub)):
        with pytest.raises(WireError):
            verify_manifest(*args)  # type: ignore[arg-type]
    bad = b"[1, 2]"
    with pytest.raises(WireError):
        verify_manifest(bad, key.sign(MANIFEST_DOMAIN + bad).signature, pub)
    verify_blob(b"abc", hashlib.sha256(b"abc").hexdigest())
    with pytest.raises(IntegrityError):
        verify_blob(b"abd", hashlib.sha256(b"abc").hexdigest())


def test_signing_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "k" / "signing.key"
    key = load_or_create_signing_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert bytes(load_or_create_signing_key(path)) == bytes(key)
    path.write_bytes(b"short")
    with pytest.raises(ConfigError):
        load_or_create_signing_key(path)


def enroll_body(key: nacl.signing.SigningKey, code: str) -> dict[str, str]:
    proof = key.sign(b"fedgate/enroll/v1\x00" + code.encode()).signature.hex()
    return {"code": code, "public_key": bytes(key.verify_key).hex(), "proof": proof}


def test_restart_keeps_enrollments_and_model_history(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings)) as first:
        register_chain(first, 2)
        code = first.post("/v1/enrollment-codes", json={},
                          headers={"Authorization": f"Bearer {TOKEN}"}).json()["code"]
        gw = first.post("/v1/gateways", json=enroll_body(nacl.signing.SigningKey.generate(),
                                                          code)).json()["gateway_id"]
        before = first.get("/v1/models").json()
    with TestClient(create_app(settings)) as second:
        assert second.get("/v1/models").json() == before
        listed = second.get("/v1/gateways", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert [g["gateway_id"] for g in listed] == [gw]
        reuse = second.post("/v1/gateways", json=enroll_body(nacl.signing.SigningKey.generate(),
                                                              code))
        assert reuse.status_code == 409
        assert "fedgate_model_versions 2.0" in second.get("/metrics").text
        assert register_chain(second, 1) == [3]
