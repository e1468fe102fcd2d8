"""The gateway's global-model download over real HTTP: the version a signed round config names,
the cached checkpoint reused without a second download, refusals, and the prefetch after a round."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_client.config import TrainingSection
from edge_client.enroll import AggregatorClient, RefusedError, checkpoint_digest
from edge_client.localdata import ArrayData
from edge_client.training import RoundTrainer
from firmware_sim.sim import AggregatorService
from native.errors import IntegrityError

N = 10


@pytest.fixture
def agg(tmp_path: Path) -> Iterator[AggregatorService]:
    service = AggregatorService(tmp_path, "mqtt://127.0.0.1:1")  # rounds=0: no broker needed
    service.start()
    try:
        yield service
    finally:
        service.stop()


def register(agg: AggregatorService, values: float) -> tuple[int, bytes]:
    """A new version whose checkpoint holds N copies of ``values``."""
    state = agg.app.state
    blob = np.full(N, values, dtype="<f4").tobytes()
    with state.db.session() as session:
        parent = state.registry.latest(session)
        row = state.registry.register(session, inference=b"onnx-bytes", checkpoint=blob,
                                      parent=None if parent is None else parent.version,
                                      config={"model": "ecg"})
        return row.version, hashlib.sha256(blob).digest()


def checkpoint_requests(agg: AggregatorService) -> float:
    total = 0.0
    for line in agg.get("/metrics").decode().splitlines():
        if line.startswith("fedgate_http_requests_total{") and "checkpoint" in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_named_version_cached_and_refused(agg: AggregatorService) -> None:
    client = AggregatorClient(agg.url, 10.0)
    key = bytes(agg.app.state.registry.public_key)
    v1, sha1 = register(agg, 1.0)
    v2, sha2 = register(agg, 2.0)
    m1 = client.model_at(key, "ecg", N, v1, sha1)
    assert m1.version == v1 and np.all(m1.params == 1.0) and checkpoint_digest(m1) == sha1
    before = checkpoint_requests(agg)
    assert client.model_at(key, "ecg", N, v1, sha1, cached=m1) is m1
    assert checkpoint_requests(agg) == before  # no second download of the same checkpoint
    latest = client.latest_model(key, "ecg", N, cached=m1)
    assert latest.version == v2 and np.all(latest.params == 2.0)
    assert client.latest_model(key, "ecg", N, cached=latest) is latest
    assert checkpoint_requests(agg) == before + 1
    with pytest.raises(IntegrityError, match="not the one the round config names"):
        client.model_at(key, "ecg", N, v1, sha2)
    # A cache of another version is not used: v2 is downloaded and checked against its hash.
    assert client.model_at(key, "ecg", N, v2, sha2, cached=m1).version == v2
    with pytest.raises(RefusedError):
        client.model_at(key, "ecg", N, 99, sha1)
    with pytest.raises(IntegrityError):
        client.model_at(bytes(32), "ecg", N, v1, sha1)  # not the aggregator's key


def test_prefetch_picks_up_the_next_version(agg: AggregatorService) -> None:
    from models.artifacts import ensure

    client = AggregatorClient(agg.url, 10.0)
    key = bytes(agg.app.state.registry.public_key)
    v1, _ = register(agg, 1.0)
    trainer = RoundTrainer(client=client, server_key=key, model="ecg", artifacts=ensure("ecg"),
                           n_params=N, data=ArrayData({}, np.zeros(0, np.int64)),
                           training=TrainingSection())
    trainer.prefetch(after_version=v1, within_s=5.0)
    time.sleep(0.2)
    v2, sha2 = register(agg, 3.0)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (trainer._cached is None
                                           or trainer._cached.version != v2):
        time.sleep(0.05)
    assert trainer._cached is not None and trainer._cached.version == v2
    before = checkpoint_requests(agg)
    model = trainer._global_model((v2, sha2))
    assert model is trainer._cached and checkpoint_requests(agg) == before
