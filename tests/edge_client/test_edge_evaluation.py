"""Federated evaluation on the gateway: the time-ordered hold-out, the ``[evaluation]`` keys, and
signed reports delivered to a real aggregator over HTTP (queued while it is away, never twice)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.signing
import numpy as np
import pytest
import uvicorn

from aggregator.app import create_app
from aggregator.settings import AggregatorSettings
from edge_client.config import EvaluationSection, config_from_dict
from edge_client.enroll import AggregatorClient, GlobalModel
from edge_client.evaluation import LocalEvaluation, holdout_mask, split
from edge_client.localdata import ArrayData, StoreData
from firmware_sim.simdata import fill_store, patient_spec
from native import evalreport
from native.broker import free_port
from native.errors import ConfigError, InputError

TOKEN = "admin-token-0123456789"


def test_holdout_is_the_newest_share_of_each_stream() -> None:
    groups = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2])
    times = np.array([5, 1, 4, 2, 3, 10, 19, 11, 18, 12, 17, 13, 16, 14, 15, 7])
    held = holdout_mask(groups, times, 0.2)
    assert held.tolist() == [True] + [False] * 5 + [True, False, True] + [False] * 7
    assert not holdout_mask(groups, times, 0.0).any()
    # Equal times: the later row is the newer one, so the split is reproducible.
    assert holdout_mask(np.zeros(4), np.zeros(4), 0.5).tolist() == [False, False, True, True]
    for bad in (lambda: holdout_mask(groups, times[:-1], 0.1),
                lambda: holdout_mask(groups, times, 1.0),
                lambda: holdout_mask(groups, times, -0.1),
                lambda: holdout_mask(groups.reshape(4, 4), times.reshape(4, 4), 0.1)):
        with pytest.raises(InputError):
            bad()


def beats(n: int, seed: int = 0) -> ArrayData:
    rng = np.random.default_rng(seed)
    inputs = {"beat": rng.standard_normal((n, 128, 2)).astype(np.float32),
              "rr": rng.uniform(0.5, 1.5, (n, 5)).astype(np.float32)}
    return ArrayData(inputs, rng.integers(0, 4, n))


def test_array_data_holds_out_its_last_rows() -> None:
    data = beats(50)
    (train_x, train_y), held = split(data, 0.1)
    assert held is not None and held[1].size == 5 and train_y.size == 45
    assert np.array_equal(held[0]["beat"], data.inputs["beat"][45:])
    assert np.array_equal(train_x["rr"], data.inputs["rr"][:45])
    whole, none = split(data, 0.0)
    assert none is None and whole[1].size == 50


def test_store_data_holds_out_the_newest_beats_of_each_device(tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    fill_store(store, patient_spec(1, seed=4, seconds=60.0), 60.0)
    data = StoreData(store)
    inputs, labels, groups, times = data.timed_dataset()
    plain = data.dataset()
    assert np.array_equal(plain[1], labels) and np.array_equal(plain[0]["beat"], inputs["beat"])
    assert len(set(groups.tolist())) == 1 and labels.size > 40
    (_, train_y), held = split(data, 0.25)
    assert held is not None
    cut = np.sort(times)[-held[1].size]
    # Every held-out beat is newer than every training beat of the same device.
    assert held[1].size == int(0.25 * labels.size)
    assert np.array_equal(np.sort(held[0]["rr"], axis=0),
                          np.sort(inputs["rr"][times >= cut], axis=0))
    assert train_y.size + held[1].size == labels.size


def test_evaluation_keys_and_their_garbage() -> None:
    cfg = config_from_dict({"evaluation": {"enabled": True, "holdout_fraction": 0.2}}, {})
    assert cfg.evaluation == EvaluationSection(True, 0.2, 20)
    assert config_from_dict({}, {}).evaluation.enabled is False
    env = {"FEDGATE_EVALUATION__ENABLED": "yes", "FEDGATE_EVALUATION__MIN_SAMPLES": "5"}
    assert config_from_dict({}, env).evaluation == EvaluationSection(True, 0.1, 5)
    for section, env in [
        ({"holdout_fraction": 0.0}, {}), ({"holdout_fraction": 0.6}, {}),
        ({"holdout_fraction": float("nan")}, {}), ({"holdout_fraction": "0.1"}, {}),
        ({"enabled": 1}, {}), ({"min_samples": 0}, {}), ({"min_samples": 2.5}, {}),
        ({"share": 0.1}, {}), ({}, {"FEDGATE_EVALUATION__ENABLED": "maybe"}),
        ({}, {"FEDGATE_EVALUATION__HOLDOUT": "0.1"}),
    ]:
        with pytest.raises(ConfigError):
            config_from_dict({"evaluation": section}, env)


@pytest.fixture
def aggregator(tmp_path: Path) -> Iterator[tuple[Any, int]]:
    """A real aggregator app and the port it will be served on (not started yet)."""
    app = create_app(AggregatorSettings(admin_token=TOKEN,
                                        database_url=f"sqlite:///{tmp_path}/agg.db",
                                        signing_key_path=tmp_path / "signing.key"))
    yield app, free_port()


def serve(app: Any, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    return server, thread


def issue_code(port: int) -> str:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/enrollment-codes", data=b"{}", method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return str(json.loads(resp.read())["code"])


def stored(app: Any, version: int) -> list[dict[str, Any]]:
    from fastapi.testclient import TestClient

    with TestClient(app) as client:  # a second lifespan on the same database file
        answer = client.get(f"/v1/models/{version}/evaluations",
                            headers={"Authorization": f"Bearer {TOKEN}"})
        rows: list[dict[str, Any]] = answer.json()["evaluations"]
        return rows


def test_reports_reach_a_real_aggregator_once_even_across_an_outage(
        aggregator: tuple[Any, int]) -> None:
    from models import artifacts, graph

    app, port = aggregator
    art = artifacts.ensure("ecg")
    params = graph.flatten(art.spec, graph.initial_params(art.spec)).astype(np.float32)
    key = nacl.signing.SigningKey.generate()
    gid = "gw-" + hashlib.sha256(bytes(key.verify_key)).hexdigest()[:16]
    client = AggregatorClient(f"http://127.0.0.1:{port}", timeout_s=5)
    section = EvaluationSection(True, 0.2, 10)
    ev = LocalEvaluation(section, client)
    data = beats(100)
    _, held = split(data, ev.fraction)

    def model(version: int) -> GlobalModel:
        return GlobalModel(version, params, {})

    # The aggregator is away: the report waits; the caller (training) is not held up.
    out = ev.report(artifacts=art, identity=key, gateway_id=gid, model=model(2), holdout=held)
    assert out is not None and out.status == "queued" and out.samples == 20
    assert ev.wait_delivered(10) is False
    assert ev.outcomes[2].status == "pending" and "unreachable" in ev.outcomes[2].detail
    server, thread = serve(app, port)
    try:
        with app.state.db.session() as session:
            v1 = app.state.registry.register(session, inference=b"m" * 99, config={"model": "ecg"})
            for _ in range(2):
                app.state.registry.register(session, inference=b"n" * 99, parent=v1.version,
                                            config={"model": "ecg"})
        assert client.enroll(key, issue_code(port)).gateway_id == gid
        # A new report wakes the sender: the queued one goes first, then the new one.
        assert ev.report(artifacts=art, identity=key, gateway_id=gid, model=model(3),
                         holdout=held) is not None
        assert ev.wait_delivered(20)
        assert ev.outcomes[2].status == "stored" and ev.outcomes[3].status == "stored"
        assert ev.report(artifacts=art, identity=key, gateway_id=gid, model=model(3),
                         holdout=held) is None  # each version once

        def once(ev: LocalEvaluation, identity: nacl.signing.SigningKey, sender: str,
                 holdout: Any) -> Any:
            ev.report(artifacts=art, identity=identity, gateway_id=sender, model=model(3),
                      holdout=holdout)
            assert ev.wait_delivered(20)
            return ev.outcomes[3]

        out = once(LocalEvaluation(section, client), key, gid, held)  # a restart, same beats
        assert out.status == "already_stored"
        _, other = split(beats(100, seed=1), 0.2)
        out = once(LocalEvaluation(section, client), key, gid, other)
        assert out.status == "refused" and "409" in out.detail
        stranger = nacl.signing.SigningKey.generate()
        out = once(LocalEvaluation(section, client), stranger, "gw-0000000000000000", held)
        assert out.status == "refused" and "unknown_gateway" in out.detail
        few = LocalEvaluation(EvaluationSection(True, 0.2, 50), client)
        out = few.report(artifacts=art, identity=key, gateway_id=gid, model=model(1),
                         holdout=held)
        assert out is not None and out.status == "skipped"
    finally:
        server.should_exit = True
        thread.join(10)
    rows = {v: stored(app, v) for v in (1, 2, 3)}
    assert [len(rows[v]) for v in (1, 2, 3)] == [0, 1, 1]
    from models.evaluate import evaluate

    truth = evaluate(art, params, held[0], held[1])
    assert rows[2][0]["confusion"] == truth.confusion and rows[2][0]["samples"] == 20
    assert rows[3][0]["loss"] == pytest.approx(truth.loss)
    signed = evalreport.verify(base64.b64decode(rows[3][0]["report"]),
                               bytes.fromhex(rows[3][0]["signature"]), bytes(key.verify_key))
    assert signed.gateway_id == gid and signed.model_version == 3
