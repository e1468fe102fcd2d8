"""The real app over real HTTP (uvicorn on a free loopback port), and schemathesis against it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nacl.signing
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings

from aggregator.app import create_app
from aggregator.settings import AggregatorSettings
from aggregator.signing import verify_blob, verify_manifest

TOKEN = "admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    tmp: Path = tmp_path_factory.mktemp("agg-http")
    cfg = AggregatorSettings(admin_token=TOKEN, database_url=f"sqlite:///{tmp}/agg.db",
                             signing_key_path=tmp / "signing.key")
    app = create_app(cfg)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        srv.should_exit = True
        thread.join(10)


def test_enroll_and_download_over_http(server: tuple[str, object]) -> None:
    base, app = server
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/health").json()["status"] == "ok"
        code = http.post("/v1/enrollment-codes", json={"label": "bed 4"}, headers=ADMIN)
        assert code.status_code == 201
        key = nacl.signing.SigningKey.generate()
        proof = key.sign(b"fedgate/enroll/v1\x00" + code.json()["code"].encode()).signature
        body = {"code": code.json()["code"], "public_key": bytes(key.verify_key).hex(),
                "proof": proof.hex()}
        enrolled = http.post("/v1/gateways", json=body)
        assert enrolled.status_code == 201, enrolled.text
        assert http.post("/v1/gateways", json=body).status_code == 409
        db, registry = app.state.db, app.state.registry  # type: ignore[attr-defined]
        with db.session() as session:
            registry.register(session, inference=b"\x08\x07" * 5000, checkpoint=b"c" * 9000,
                              participants=4, privacy={"clip_norm": 2.0})
        meta = http.get("/v1/models/latest").json()
        pinned = bytes.fromhex(enrolled.json()["aggregator_public_key"])
        import base64

        manifest = verify_manifest(base64.b64decode(meta["manifest"]),
                                   bytes.fromhex(meta["signature"]), pinned)
        blob = http.get(f"/v1/models/{meta['version']}/inference")
        verify_blob(blob.content, manifest["inference"]["sha256"])
        spec = http.get("/openapi.json").json()
        assert {"/v1/gateways", "/v1/rounds/{round_id}", "/v1/models/{version}/checkpoint",
                "/health", "/metrics"} <= set(spec["paths"])
        metrics = http.get("/metrics").text
        assert 'reason="enrollment_code_used"' in metrics


def test_schemathesis_no_5xx_and_responses_conform(server: tuple[str, object]) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    base, _ = server
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        for headers in ({}, ADMIN):
            _fuzz(operation, headers)


def _fuzz(operation: object, headers: dict[str, str]) -> None:
    @settings(max_examples=12, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())  # type: ignore[attr-defined]
    def run(case: object) -> None:
        # Every default check: no 5xx, documented status codes, content types, headers and
        # bodies that conform to the schema.
        case.call_and_validate(headers=headers)  # type: ignore[attr-defined]

    run()
