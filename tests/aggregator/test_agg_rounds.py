from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from aggregator.app import create_app
from aggregator.db import Database, Round
from aggregator.settings import AggregatorSettings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    cfg = AggregatorSettings(admin_token="admin-token-0123456789",
                             database_url=f"sqlite:///{tmp_path}/agg.db",
                             signing_key_path=tmp_path / "signing.key")
    with TestClient(create_app(cfg)) as test_client:
        yield test_client


def add_rounds(client: TestClient) -> None:
    db: Database = client.app.state.db  # type: ignore[attr-defined]
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with db.session() as session:
        session.add(Round(id=1, stage="done", outcome="completed", created_at=t0, updated_at=t0,
                          ended_at=t0 + dt.timedelta(seconds=9), selected=10, participants=9,
                          dropouts=1, timings={"training": 6.5, "masked_input": 0.25},
                          model_version=None))
        session.add(Round(id=2, stage="share_keys", created_at=t0, updated_at=t0, selected=12))


def test_rounds_list_and_detail(client: TestClient) -> None:
    assert client.get("/v1/rounds").json() == {"total": 0, "rounds": []}
    add_rounds(client)
    listed = client.get("/v1/rounds").json()
    assert listed["total"] == 2 and [r["round_id"] for r in listed["rounds"]] == [2, 1]
    one = client.get("/v1/rounds/1").json()
    assert (one["stage"], one["outcome"], one["participants"], one["dropouts"]) == (
        "done", "completed", 9, 1)
    assert one["timings"] == {"training": 6.5, "masked_input": 0.25}
    assert one["ended_at"].startswith("2026-01-01T00:00:09")
    running = client.get("/v1/rounds/2").json()
    assert running["ended_at"] is None and running["outcome"] is None
    assert [r["round_id"] for r in client.get("/v1/rounds?limit=1&offset=1").json()["rounds"]] \
        == [1]


@pytest.mark.parametrize("path", ["/v1/rounds/3", f"/v1/rounds/{2**63 - 1}"])
def test_unknown_round_is_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404 and response.json()["error"] == "round_not_found"


@pytest.mark.parametrize("path", ["/v1/rounds/-1", f"/v1/rounds/{2**63}", "/v1/rounds/x",
                                  "/v1/rounds?limit=0", "/v1/rounds?limit=100000",
                                  "/v1/rounds?offset=-5", "/v1/rounds?limit=%00"])
def test_bad_round_queries_are_422(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 422


def test_health_and_metrics(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "database": "ok"}
    client.get("/v1/rounds/99")
    text = client.get("/metrics").text
    assert 'fedgate_rejections_total{component="http",reason="round_not_found"} 1.0' in text
    assert 'route="/v1/rounds/{round_id}",status="404"' in text
    # The database becomes unreachable (its file's folder does not exist): 503, not 500.
    client.app.state.db = Database("sqlite:////nonexistent/dir/agg.db")  # type: ignore[attr-defined]
    response = client.get("/health")
    assert response.status_code == 503 and response.json()["database"] == "unreachable"
