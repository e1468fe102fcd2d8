"""The same service against the PostgreSQL on this machine, in a schema of its own per run."""

from __future__ import annotations

import base64
import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from aggregator.app import create_app
from aggregator.db import Round
from aggregator.settings import AggregatorSettings
from aggregator.signing import verify_manifest

TOKEN = "admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
URLS = [os.environ.get("FEDGATE_TEST_PG_URL", ""),
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "postgresql+psycopg://root@127.0.0.1:5432/test"]


def _reachable_url() -> str | None:
    pytest.importorskip("psycopg", reason="psycopg not installed")
    for url in filter(None, URLS):
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


@pytest.fixture(scope="module")
def pg_url() -> Iterator[tuple[str, str]]:
    url = _reachable_url()
    if url is None:
        pytest.skip("no PostgreSQL at 127.0.0.1:5432 (database 'test'); set FEDGATE_TEST_PG_URL")
    schema = f"fedgate_test_{uuid.uuid4().hex[:12]}"
    try:
        yield url, schema
    finally:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def settings_for(pg_url: tuple[str, str], tmp_path: Path) -> AggregatorSettings:
    return AggregatorSettings(admin_token=TOKEN, database_url=pg_url[0],
                              database_schema=pg_url[1], signing_key_path=tmp_path / "sk")


def enroll(client: TestClient) -> tuple[int, str]:
    code = client.post("/v1/enrollment-codes", json={}, headers=ADMIN).json()["code"]
    key = nacl.signing.SigningKey.generate()
    body = {"code": code, "public_key": bytes(key.verify_key).hex(),
            "proof": key.sign(b"fedgate/enroll/v1\x00" + code.encode()).signature.hex()}
    response = client.post("/v1/gateways", json=body)
    return response.status_code, code


def test_postgres_full_flow_and_restart(pg_url: tuple[str, str], tmp_path: Path) -> None:
    settings = settings_for(pg_url, tmp_path)
    with TestClient(create_app(settings)) as client:
        status, code = enroll(client)
        assert status == 201
        key = nacl.signing.SigningKey.generate()
        reuse = {"code": code, "public_key": bytes(key.verify_key).hex(),
                 "proof": key.sign(b"fedgate/enroll/v1\x00" + code.encode()).signature.hex()}
        assert client.post("/v1/gateways", json=reuse).json()["error"] == "enrollment_code_used"
        app = client.app
        with app.state.db.session() as session:  # type: ignore[attr-defined]
            registry = app.state.registry  # type: ignore[attr-defined]
            first = registry.register(session, inference=b"m1" * 4000, privacy={"eps": 1.5})
            registry.register(session, inference=b"m2" * 4000, checkpoint=b"c" * 70_000,
                              parent=first.version, round_id=1, participants=5)
            now = dt.datetime.now(dt.UTC)
            session.add(Round(id=1, stage="done", outcome="completed", created_at=now,
                              updated_at=now, participants=5, dropouts=1,
                              timings={"training": 1.25}))
        assert client.get(f"/v1/rounds/{2**63 - 1}").status_code == 404
        before = client.get("/v1/models").json()
    with TestClient(create_app(settings)) as again:
        assert again.get("/v1/models").json() == before
        latest = again.get("/v1/models/latest").json()
        assert latest["lineage"] == [2, 1]
        verify_manifest(base64.b64decode(latest["manifest"]), bytes.fromhex(latest["signature"]),
                        bytes.fromhex(again.get("/v1/signing-key").json()["public_key"]))
        assert len(again.get("/v1/models/2/checkpoint").content) == 70_000
        assert again.get("/v1/rounds/1").json()["timings"] == {"training": 1.25}
        assert len(again.get("/v1/gateways", headers=ADMIN).json()) == 1
        assert again.get("/health").json()["database"] == "ok"


def test_schema_setting_is_refused_on_sqlite(tmp_path: Path) -> None:
    from native.errors import ConfigError

    cfg = AggregatorSettings(admin_token=TOKEN, database_url=f"sqlite:///{tmp_path}/x.db",
                             database_schema="abc", signing_key_path=tmp_path / "sk")
    with pytest.raises(ConfigError), TestClient(create_app(cfg)):
        pass


@pytest.mark.parametrize("schema", ["Bad", "a-b", "x;drop", "1abc", "a" * 70])
def test_schema_names_are_validated(schema: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        AggregatorSettings(admin_token=TOKEN, database_schema=schema)
