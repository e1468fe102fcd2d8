"""Secure-aggregation rounds over a real Mosquitto: the server core driven by RoundRunner, each
gateway core driven by its own transport on its own thread, exactly as separate processes would."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import numpy as np
import pytest
from fastapi.testclient import TestClient

from aggregator.app import create_app
from aggregator.db import Database
from aggregator.metrics import Metrics
from aggregator.round_runner import RoundRunner
from aggregator.secagg import SecAggServer
from aggregator.settings import AggregatorSettings
from edge_client.secagg import GatewayPolicy, GatewayStage, SecAggGateway
from native import mask, quant, topics, wire
from native.broker import MosquittoBroker, find_mosquitto
from native.errors import FedgateError
from native.transport import Transport, TransportConfig

D = 257
CLIP = 1.0
QBITS = 8


@pytest.fixture
def mosquitto() -> Iterator[MosquittoBroker]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not installed")
    with MosquittoBroker() as broker:
        yield broker


class GatewaySim(threading.Thread):
    """One gateway: its protocol core, its MQTT connection, and an optional crash point."""

    def __init__(self, port: int, pid: int, key: nacl.signing.SigningKey, server_key: bytes,
                 crash_in: GatewayStage | None = None,
                 hang_in: GatewayStage | None = None, gw_id: str | None = None) -> None:
        super().__init__(daemon=True)
        self.hang_in = hang_in
        self.resume = threading.Event()
        self.gw_id = gw_id or f"gw-{pid}-{uuid.uuid4().hex[:6]}"
        self.pid = pid
        self.core = SecAggGateway(pid, key, server_key, GatewayPolicy(min_participants=3))
        self.update = np.random.default_rng(pid).uniform(-1, 1, D).astype(np.float32)
        self.seed = os.urandom(32)
        self.crash_in = crash_in
        self.errors: list[str] = []
        self.stop_flag = threading.Event()
        self.transport = Transport(TransportConfig(client_id=self.gw_id, port=port,
                                                   reconnect_max_s=2, keepalive_s=5))
        for topic_filter in (topics.announce(), topics.all_broadcasts(),
                             topics.gateway_downlinks(self.gw_id)):
            self.transport.subscribe(topic_filter)
        self.transport.start()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            delivery = self.transport.receive(timeout=0.05)
            if delivery is None:
                continue
            try:
                replies = self.core.handle(delivery.payload)
                if self.core.state.stage is GatewayStage.ADVERTISED:
                    replies += self.core.provide_update(self.update, 1, rounding_seed=self.seed)
            except FedgateError as exc:
                self.errors.append(type(exc).__name__)
                continue
            for reply in replies:
                msg_type = reply[6]  # the wire header's message-type byte: one key per stage
                self.transport.publish(topics.up(delivery.round_id, self.gw_id), reply,
                                       round_id=delivery.round_id, sequence=msg_type)
            if self.crash_in is not None and self.core.state.stage is self.crash_in:
                self.crash()
                return
            if self.hang_in is not None and self.core.state.stage is self.hang_in:
                self.resume.wait(60)  # connected but silent: only a deadline notices
                self.hang_in = None

    def crash(self) -> None:
        """Power loss: the TCP connection dies without DISCONNECT; the broker sends the will."""
        time.sleep(0.2)  # let the last reply leave first
        self.transport._client.loop_stop()
        sock = self.transport._client.socket()
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.stop_flag.set()
        self.join(5)
        if self.crash_in is None:
            self.transport.stop()


def expected_total(gateways: list[GatewaySim], included: tuple[int, ...],
                   ring_bits: int) -> object:
    chosen = [g for g in gateways if g.pid in included]
    qs = [quant.quantize(g.update, CLIP, QBITS, g.seed, ring_bits=ring_bits) for g in chosen]
    return mask.ring_sum(np.stack(qs), ring_bits)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[TestClient]:
    cfg = AggregatorSettings(admin_token="admin-token-0123456789",
                             database_url=f"sqlite:///{tmp_path}/agg.db",
                             signing_key_path=tmp_path / "signing.key")
    with TestClient(create_app(cfg)) as client:
        yield client


def run_round(mosquitto: MosquittoBroker, service: TestClient, n: int,
              crashes: dict[int, GatewayStage], timeout_s: float = 8.0,
              rogue: bool = False) -> tuple[object, list[GatewaySim]]:
    server_key = nacl.signing.SigningKey.generate()
    keys = {pid: nacl.signing.SigningKey.generate() for pid in range(1, n + 1)}
    server = SecAggServer(server_key, {pid: bytes(k.verify_key) for pid, k in keys.items()})
    sims = [GatewaySim(mosquitto.port, pid, k, bytes(server_key.verify_key), crashes.get(pid))
            for pid, k in keys.items()]
    db: Database = service.app.state.db  # type: ignore[attr-defined]
    metrics: Metrics = service.app.state.metrics  # type: ignore[attr-defined]
    agg = Transport(TransportConfig(client_id=f"agg-{uuid.uuid4().hex[:6]}",
                                    port=mosquitto.port, presence=False),
                    on_reject=lambda reason, _topic: metrics.reject("transport", reason))
    runner = RoundRunner(agg, server, {s.pid: s.gw_id for s in sims}, db, metrics)
    agg.start()
    for sim in sims:
        sim.start()
    time.sleep(0.3)
    if rogue:
        send_garbage(mosquitto.port, sims[0].gw_id)
    try:
        outcome = runner.run(7, list(keys), stage_timeout_s=timeout_s, vector_len=D,
                             quant_bits=QBITS, clip=CLIP)
    finally:
        for sim in sims:
            sim.close()
        agg.stop()
    return outcome, sims


def send_garbage(port: int, victim: str) -> None:
    """What an enrolled-but-hostile or broken client can put on the uplinks."""
    rogue = Transport(TransportConfig(client_id="rogue", port=port, presence=False))
    rogue.start()
    key = nacl.signing.SigningKey.generate()
    forged = wire.encode(wire.AdvertiseKeys(bytes(32), bytes(32)), bytes(16), 1, key)
    for seq, (topic, payload, round_no) in enumerate((
        (topics.up(7, "rogue"), b"not a wire message", 7),  # -> malformed
        (topics.up(7, "rogue"), forged, 7),  # right shape, wrong key -> bad_signature
        (topics.up(7, victim), b"x", 7),  # topic names another gateway -> sender_mismatch
        (topics.up(8, "rogue"), b"x", 8),  # another round -> wrong_round
    )):
        assert rogue.publish(topic, payload, round_id=round_no, sequence=seq).wait(5)
    rogue._client.publish(topics.up(7, "rogue"), b"junk", qos=1).wait_for_publish(5)
    rogue.stop()


def test_full_round_over_mosquitto_is_exact(mosquitto: MosquittoBroker,
                                           service: TestClient) -> None:
    outcome, sims = run_round(mosquitto, service, 5, {}, rogue=True)
    result = outcome.result  # type: ignore[attr-defined]
    assert result is not None and result.included == (1, 2, 3, 4, 5)
    cfg_bits = sims[0].core.state.config.ring_bits  # type: ignore[union-attr]
    assert np.array_equal(result.total, expected_total(sims, result.included, cfg_bits))
    assert result.weight_total == 5
    assert all(not s.errors for s in sims)
    shown = service.get("/v1/rounds/7").json()
    assert (shown["stage"], shown["outcome"], shown["participants"], shown["dropouts"]) == (
        "done", "completed", 5, 0)
    assert set(shown["timings"]) == {"collect_keys", "collect_shares", "collect_masked",
                                     "collect_unmask"}
    text = service.get("/metrics").text
    for component, reason in (("secagg", "malformed"), ("secagg", "bad_signature"),
                              ("secagg", "sender_mismatch"), ("secagg", "wrong_round"),
                              ("transport", "truncated")):
        line = f'fedgate_rejections_total{{component="{component}",reason="{reason}"}} 1.0'
        assert line in text, (line, [t for t in text.splitlines() if "rejections_total{" in t])


@pytest.mark.parametrize("stage", [GatewayStage.ADVERTISED, GatewayStage.MASKED])
def test_gateway_crash_is_a_dropout_and_the_sum_stays_exact(
    mosquitto: MosquittoBroker, service: TestClient, stage: GatewayStage
) -> None:
    # Long deadlines: the round can only finish quickly if the last will is honoured.
    started = time.monotonic()
    outcome, sims = run_round(mosquitto, service, 5, {3: stage}, timeout_s=60.0)
    assert time.monotonic() - started < 50, "the stage waited for its deadline"
    result = outcome.result  # type: ignore[attr-defined]
    assert result is not None
    want = (1, 2, 4, 5) if stage is GatewayStage.ADVERTISED else (1, 2, 3, 4, 5)
    assert result.included == want
    cfg_bits = sims[0].core.state.config.ring_bits  # type: ignore[union-attr]
    assert np.array_equal(result.total, expected_total(sims, result.included, cfg_bits))
    shown = service.get("/v1/rounds/7").json()
    assert shown["outcome"] == "completed" and shown["dropouts"] == 5 - len(want)


def test_too_many_crashes_abort_cleanly(mosquitto: MosquittoBroker, service: TestClient) -> None:
    crashes = {pid: GatewayStage.ADVERTISED for pid in (1, 2, 3)}
    outcome, _ = run_round(mosquitto, service, 4, crashes, timeout_s=60.0)
    assert outcome.result is None and "threshold" in outcome.abort_reason  # type: ignore[attr-defined]
    shown = service.get("/v1/rounds/7").json()
    assert shown["outcome"] == "aborted" and "threshold" in shown["error"]
    assert 'fedgate_rounds_total{outcome="aborted"} 1.0' in service.get("/metrics").text


def test_orchestrated_rounds_produce_signed_lineage(mosquitto: MosquittoBroker,
                                                    service: TestClient) -> None:
    from aggregator.orchestrator import Orchestrator, SelectionConfig
    from aggregator.strategy import OptimizerState, StrategyConfig, apply
    from models import graph
    from models.zoo import get_spec

    spec = get_spec("ecg")
    n_params = graph.parameter_count(spec)
    initial = graph.flatten(spec, graph.initial_params(spec))
    server_key = nacl.signing.SigningKey.generate()
    keys = {pid: nacl.signing.SigningKey.generate() for pid in range(1, 5)}
    server = SecAggServer(server_key, {pid: bytes(k.verify_key) for pid, k in keys.items()})
    sims = [GatewaySim(mosquitto.port, pid, k, bytes(server_key.verify_key))
            for pid, k in keys.items()]
    for sim in sims:  # a small local delta within the clip range
        sim.update = np.random.default_rng(sim.pid).uniform(-0.05, 0.05, n_params).astype(
            np.float32)
    app = service.app
    agg = Transport(TransportConfig(client_id=f"agg-{uuid.uuid4().hex[:6]}",
                                    port=mosquitto.port, presence=False))
    runner = RoundRunner(agg, server, {s.pid: s.gw_id for s in sims}, app.state.db,  # type: ignore[attr-defined]
                         app.state.metrics)  # type: ignore[attr-defined]
    strategy = StrategyConfig(name="fedadam", server_lr=0.01)
    orch = Orchestrator(runner, app.state.db, app.state.registry, "ecg", strategy,  # type: ignore[attr-defined]
                        SelectionConfig(min_participants=3), {"quant_bits": 8, "clip": 0.1})
    assert orch.ensure_initial(initial) == 1
    agg.start()
    for sim in sims:
        sim.start()
    time.sleep(0.3)
    try:
        reports = [orch.run_round(list(keys), stage_timeout_s=10.0) for _ in range(2)]
    finally:
        for sim in sims:
            sim.close()
        agg.stop()
    assert [(r.base_version, r.new_version) for r in reports] == [(1, 2), (2, 3)]
    # Version 2 is exactly FedAdam applied to version 1 with the securely recovered mean...
    result = reports[0].outcome.result
    assert result is not None and result.included == (1, 2, 3, 4)
    want, _ = apply(strategy, initial, result.weighted_mean(), OptimizerState())
    assert np.array_equal(orch.params_of(2), want)
    # ...and that mean is the mean of the gateways' deltas up to one quantization step.
    true_mean = np.mean([s.update for s in sims], axis=0)
    assert np.max(np.abs(result.weighted_mean() - true_mean)) <= 2 * 0.1 / 255 + 1e-6
    latest = service.get("/v1/models/latest").json()
    assert latest["lineage"] == [3, 2, 1] and latest["round_id"] == 2
    assert latest["config"]["strategy"]["name"] == "fedadam"
    assert latest["privacy"] == {"clip": 0.1, "quant_bits": 8, "secure_aggregation": True,
                                 "dp": None}
    assert service.get("/v1/rounds/2").json()["model_version"] == 3
    import onnx

    model = onnx.load_from_string(service.get("/v1/models/3/inference").content)
    assert model.graph.input


def test_aggregator_restart_mid_round_aborts_cleanly_then_retries(
    mosquitto: MosquittoBroker, service: TestClient
) -> None:
    from aggregator.round_runner import RunnerStopped

    app = service.app
    db, metrics = app.state.db, app.state.metrics  # type: ignore[attr-defined]
    server_key = nacl.signing.SigningKey.generate()
    keys = {pid: nacl.signing.SigningKey.generate() for pid in range(1, 5)}
    enrolled = {pid: bytes(k.verify_key) for pid, k in keys.items()}
    sims = [GatewaySim(mosquitto.port, pid, k, bytes(server_key.verify_key),
                       hang_in=GatewayStage.MASKED if pid == 4 else None)
            for pid, k in keys.items()]
    gateways = {s.pid: s.gw_id for s in sims}
    agg_id = f"agg-{uuid.uuid4().hex[:6]}"

    def runner_for() -> tuple[RoundRunner, Transport]:
        transport = Transport(TransportConfig(client_id=agg_id, port=mosquitto.port,
                                              presence=False))
        runner = RoundRunner(transport, SecAggServer(server_key, enrolled), gateways, db, metrics)
        transport.start()
        return runner, transport

    first, t1 = runner_for()
    for sim in sims:
        sim.start()
    time.sleep(0.3)
    failure: list[BaseException] = []

    def run_first() -> None:
        try:
            first.run(1, list(keys), stage_timeout_s=60.0, vector_len=D, quant_bits=QBITS,
                      clip=CLIP)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run_first, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # gateway 4 sits silent in the unmasking stage
            if service.get("/v1/rounds/1").json().get("stage") == "collect_unmask":
                break
            time.sleep(0.05)
        assert service.get("/v1/rounds/1").json()["stage"] == "collect_unmask"
        first.cancel()  # the aggregator process dies here
        thread.join(5)
        t1.stop()
        assert len(failure) == 1 and isinstance(failure[0], RunnerStopped)

        second, t2 = runner_for()  # a new process: same key, same database, empty memory
        try:
            assert second.recover_unfinished() == [1]
            sims[3].resume.set()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(
                s.core.state.stage is not GatewayStage.ABORTED for s in sims
            ):
                time.sleep(0.05)
            assert all(s.core.state.stage is GatewayStage.ABORTED for s in sims)
            outcome = second.run(2, list(keys), stage_timeout_s=10.0, vector_len=D,
                                 quant_bits=QBITS, clip=CLIP)
        finally:
            t2.stop()
    finally:
        for sim in sims:
            sim.resume.set()
            sim.close()
    assert outcome.result is not None and outcome.result.included == (1, 2, 3, 4)
    bits = sims[0].core.state.config.ring_bits  # type: ignore[union-attr]
    assert np.array_equal(outcome.result.total, expected_total(sims, (1, 2, 3, 4), bits))
    old = service.get("/v1/rounds/1").json()
    assert old["outcome"] == "aborted" and "restarted during collect_unmask" in old["error"]
    assert service.get("/v1/rounds/2").json()["outcome"] == "completed"


def test_service_runs_rounds_unattended(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """`fedgate aggregator serve` with rounds enabled: enroll over REST, come online, get models."""
    from models import graph
    from models.zoo import get_spec

    token = "admin-token-0123456789"
    cfg = AggregatorSettings(
        admin_token=token, database_url=f"sqlite:///{tmp_path}/svc.db",
        signing_key_path=tmp_path / "svc.key", mqtt_url=mosquitto.url, rounds=2,
        min_participants=4, stage_timeout_s=10, round_pause_s=0.2, clip=0.1,
        strategy="fedyogi", server_lr=0.01,
    )
    n_params = graph.parameter_count(get_spec("ecg"))
    sims: list[GatewaySim] = []
    with TestClient(create_app(cfg)) as client:
        for _ in range(4):
            key = nacl.signing.SigningKey.generate()
            code = client.post("/v1/enrollment-codes", json={},
                               headers={"Authorization": f"Bearer {token}"}).json()["code"]
            proof = key.sign(b"fedgate/enroll/v1\x00" + code.encode()).signature.hex()
            body = client.post("/v1/gateways", json={
                "code": code, "proof": proof, "public_key": bytes(key.verify_key).hex()}).json()
            sim = GatewaySim(mosquitto.port, body["pid"], key,
                             bytes.fromhex(body["aggregator_public_key"]),
                             gw_id=body["gateway_id"])
            sim.update = np.random.default_rng(body["pid"]).uniform(
                -0.05, 0.05, n_params).astype(np.float32)
            sims.append(sim)
        for sim in sims:
            sim.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                rounds = client.get("/v1/rounds").json()["rounds"]
                if sum(r["outcome"] == "completed" for r in rounds) >= 2:
                    break
                time.sleep(0.2)
            rounds = client.get("/v1/rounds").json()["rounds"]
            assert [r["outcome"] for r in rounds] == ["completed", "completed"], rounds
            assert all(r["participants"] == 4 and r["dropouts"] == 0 for r in rounds)
            latest = client.get("/v1/models/latest").json()
            assert latest["lineage"] == [3, 2, 1]
            assert latest["config"]["strategy"]["name"] == "fedyogi"
            assert "fedgate_model_versions 3.0" in client.get("/metrics").text
        finally:
            for sim in sims:
                sim.close()
    assert all(s.core.state.stage is GatewayStage.DONE for s in sims)


def test_broker_restart_mid_round_keeps_the_round_exact(mosquitto: MosquittoBroker,
                                                        service: TestClient) -> None:
    app = service.app
    server_key = nacl.signing.SigningKey.generate()
    keys = {pid: nacl.signing.SigningKey.generate() for pid in range(1, 5)}
    server = SecAggServer(server_key, {pid: bytes(k.verify_key) for pid, k in keys.items()})
    sims = [GatewaySim(mosquitto.port, pid, k, bytes(server_key.verify_key),
                       hang_in=GatewayStage.MASKED if pid == 4 else None)
            for pid, k in keys.items()]
    agg = Transport(TransportConfig(client_id=f"agg-{uuid.uuid4().hex[:6]}",
                                    port=mosquitto.port, presence=False, reconnect_max_s=1))
    runner = RoundRunner(agg, server, {s.pid: s.gw_id for s in sims}, app.state.db,  # type: ignore[attr-defined]
                         app.state.metrics)  # type: ignore[attr-defined]
    agg.start()
    for sim in sims:
        sim.start()
    time.sleep(0.3)
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(runner.run(
        3, list(keys), stage_timeout_s=30.0, vector_len=D, quant_bits=QBITS, clip=CLIP)))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if service.get("/v1/rounds/3").json().get("stage") == "collect_unmask":
                break
            time.sleep(0.05)
        mosquitto.restart()  # every client loses its connection mid-round
        sims[3].resume.set()  # gateway 4's unmask reply leaves once it has reconnected
        thread.join(40)
        deadline = time.monotonic() + 15  # the result reaches everyone through their sessions
        while time.monotonic() < deadline and any(
            s.core.state.stage is not GatewayStage.DONE for s in sims
        ):
            time.sleep(0.05)
    finally:
        for sim in sims:
            sim.resume.set()
            sim.close()
        agg.stop()
    (result,) = [o.result for o in outcome]  # type: ignore[attr-defined]
    assert result is not None and result.included == (1, 2, 3, 4)
    bits = sims[0].core.state.config.ring_bits  # type: ignore[union-attr]
    assert np.array_equal(result.total, expected_total(sims, (1, 2, 3, 4), bits))
    assert agg.connects >= 2 and sims[3].transport.connects >= 2
    assert all(s.core.state.stage is GatewayStage.DONE for s in sims)


def test_full_round_over_the_embedded_broker(service: TestClient) -> None:
    """The broker `fedgate sim` starts by default (amqtt) carries a whole round too."""
    pytest.importorskip("amqtt")
    from native.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        outcome, sims = run_round(broker, service, 4, {3: GatewayStage.MASKED})  # type: ignore[arg-type]
    result = outcome.result  # type: ignore[attr-defined]
    assert result is not None and result.included == (1, 2, 3, 4)
    bits = sims[0].core.state.config.ring_bits  # type: ignore[union-attr]
    assert np.array_equal(result.total, expected_total(sims, result.included, bits))


def test_refused_round_parameters_leave_an_ended_round(service: TestClient) -> None:
    # open_round refuses before anything is published: the round is recorded as aborted with
    # the reason, not left open for a restarted aggregator to "recover".
    server_key = nacl.signing.SigningKey.generate()
    keys = {pid: nacl.signing.SigningKey.generate() for pid in (1, 2, 3)}
    server = SecAggServer(server_key, {pid: bytes(k.verify_key) for pid, k in keys.items()})
    db: Database = service.app.state.db  # type: ignore[attr-defined]
    never_started = Transport(TransportConfig(client_id="agg-idle", port=1, presence=False))
    runner = RoundRunner(never_started, server, {pid: f"gw-{pid}" for pid in keys}, db)
    with pytest.raises(FedgateError):
        runner.run(9, list(keys), stage_timeout_s=1.0, vector_len=D, quant_bits=QBITS,
                   clip=CLIP, degree=7)
    shown = service.get("/v1/rounds/9").json()
    assert (shown["stage"], shown["outcome"], shown["selected"]) == ("aborted", "aborted", 3)
    assert shown["error"] and shown["ended_at"] is not None
    assert runner.recover_unfinished() == []
