"""DP rounds orchestrated over a real Mosquitto: noise in the signed config, the ledger in the
signed lineage, the budget stop, /v1/privacy, and garbage into the privacy settings."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from aggregator.app import create_app
from aggregator.orchestrator import Orchestrator, SelectionConfig
from aggregator.privacy import BudgetExhaustedError, DPConfig, PrivacyLedger, poisson_select
from aggregator.round_runner import RoundRunner
from aggregator.secagg import SecAggServer
from aggregator.settings import AggregatorSettings
from aggregator.strategy import StrategyConfig
from edge_client.secagg import GatewayPolicy, GatewayStage, SecAggGateway
from native import accounting, dp_params, topics, wire
from native.broker import MosquittoBroker, find_mosquitto
from native.errors import FedgateError, InputError, RoundAbortedError
from native.transport import Transport, TransportConfig


@pytest.fixture
def mosquitto() -> Iterator[MosquittoBroker]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not installed")
    with MosquittoBroker() as broker:
        yield broker


def _settings(tmp_path: Path, **dp: object) -> AggregatorSettings:
    return AggregatorSettings.model_validate({
        "admin_token": "admin-token-0123456789", "database_url": f"sqlite:///{tmp_path}/agg.db",
        "signing_key_path": tmp_path / "signing.key", **dp})


class Gateway(threading.Thread):
    """One gateway core on its own MQTT connection, answering every round it is listed in."""

    def __init__(self, port: int, pid: int, key: nacl.signing.SigningKey, server_key: bytes,
                 update: np.ndarray, policy: GatewayPolicy) -> None:
        super().__init__(daemon=True)
        self.pid, self.update = pid, update
        self.gw_id = f"gw-{pid}-{uuid.uuid4().hex[:6]}"
        self.core = SecAggGateway(pid, key, server_key, policy)
        self.refusals: list[str] = []
        self.halt = threading.Event()
        self.transport = Transport(TransportConfig(client_id=self.gw_id, port=port,
                                                   reconnect_max_s=2, keepalive_s=5))
        for topic_filter in (topics.announce(), topics.all_broadcasts(),
                             topics.gateway_downlinks(self.gw_id)):
            self.transport.subscribe(topic_filter)
        self.transport.start()

    def run(self) -> None:
        while not self.halt.is_set():
            delivery = self.transport.receive(timeout=0.05)
            if delivery is None:
                continue
            try:
                replies = self.core.handle(delivery.payload)
                if self.core.state.stage is GatewayStage.ADVERTISED:
                    replies += self.core.provide_update(self.update)
            except FedgateError as exc:
                self.refusals.append(str(exc))
                continue
            for reply in replies:
                self.transport.publish(topics.up(delivery.round_id, self.gw_id), reply,
                                       round_id=delivery.round_id, sequence=reply[6])

    def close(self) -> None:
        self.halt.set()
        self.join(5)
        self.transport.stop()


class Deployment:
    """An aggregator app, its MQTT round runner and orchestrator, and n gateways."""

    def __init__(self, port: int, client: TestClient, dp: DPConfig, n: int,
                 policy: GatewayPolicy) -> None:
        from models import graph
        from models.zoo import get_spec

        spec = get_spec("ecg")
        self.initial = graph.flatten(spec, graph.initial_params(spec))
        server_key = nacl.signing.SigningKey.generate()
        keys = {pid: nacl.signing.SigningKey.generate() for pid in range(1, n + 1)}
        self.server = SecAggServer(server_key, {p: bytes(k.verify_key) for p, k in keys.items()})
        rng = np.random.default_rng(3)
        self.gateways = [
            Gateway(port, pid, k, bytes(server_key.verify_key),
                    rng.uniform(-0.02, 0.02, self.initial.size).astype(np.float32), policy)
            for pid, k in keys.items()]
        state = client.app.state  # type: ignore[attr-defined]
        self.transport = Transport(TransportConfig(client_id=f"agg-{uuid.uuid4().hex[:6]}",
                                                   port=port, presence=False))
        runner = RoundRunner(self.transport, self.server,
                             {g.pid: g.gw_id for g in self.gateways}, state.db, state.metrics)
        self.orch = Orchestrator(runner, state.db, state.registry, "ecg",
                                 StrategyConfig("fedavg"), SelectionConfig(min_participants=3),
                                 {"quant_bits": 8, "clip": 1.0}, privacy=dp)
        self.orch.ensure_initial(self.initial)
        self.transport.start()
        for g in self.gateways:
            g.start()
        time.sleep(0.3)

    def round(self) -> object:
        return self.orch.run_round([g.pid for g in self.gateways], stage_timeout_s=10.0)

    def close(self) -> None:
        for g in self.gateways:
            g.close()
        self.transport.stop()


def test_dp_rounds_record_the_ledger_and_stop_at_the_budget(
        mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    dp = DPConfig(noise_multiplier=2.0, l2_clip=0.5, sampling_rate=1.0, delta=1e-5)
    one_round = PrivacyLedger(dp)
    probe = one_round.plan(quant_bits=8, clip=dp.coordinate_clip(10_964), vector_len=10_964,
                           threshold=3, participants=4).params(3, 10_964)
    eps1 = one_round.epsilon_after(probe)
    dp = DPConfig(2.0, 0.5, 1.0, 1e-5, epsilon_budget=eps1 * 1.2)  # room for one round only
    settings = _settings(tmp_path, dp_noise_multiplier=2.0, dp_l2_clip=0.5,
                         dp_epsilon_budget=eps1 * 1.2)
    floor = GatewayPolicy(min_participants=3,
                          privacy=dp_params.GatewayPolicy(min_noise_multiplier=1.5))
    with TestClient(create_app(settings)) as client:
        fleet = Deployment(mosquitto.port, client, dp, 4, floor)
        try:
            first = fleet.round()
            cfg = fleet.server.state.config
            with pytest.raises(BudgetExhaustedError, match="budget"):
                fleet.round()
        finally:
            fleet.close()
        assert first.new_version == 2  # type: ignore[attr-defined]
        assert cfg.noise is not None and cfg.max_weight == 1 and cfg.masked_len == 16_385
        assert dp_params.noise_multiplier(cfg.noise.params(cfg.threshold, 10_964)) >= 2.0
        assert not any(g.refusals for g in fleet.gateways)
        latest = client.get("/v1/models/latest").json()
        entry = latest["privacy"]["dp"]
        assert latest["version"] == 2 and entry["rounds"] == 1
        assert entry["epsilon"] == pytest.approx(eps1, rel=1e-9)
        acc = accounting.PrivacyAccountant()
        acc.spend(cfg.noise.params(cfg.threshold, 10_964), 1.0)
        assert entry["rdp"] == pytest.approx(list(acc.rdp))
        shown = client.get("/v1/privacy").json()
        assert shown["enabled"] and shown["rounds"] == 1 and shown["model_version"] == 2
        assert shown["epsilon"] == pytest.approx(eps1) and shown["remaining"] == pytest.approx(
            eps1 * 0.2)
        # The refused round never started: no second round row, no third version.
        assert [r["round_id"] for r in client.get("/v1/rounds").json()["rounds"]] == [1]
        # A restarted aggregator rebuilds the ledger from the signed lineage.
        ledger = PrivacyLedger(dp, client.get("/v1/models/latest").json()["privacy"])
        assert ledger.epsilon() == pytest.approx(eps1) and ledger.accountant.rounds == 1


def test_gateways_refuse_a_round_below_their_floor(mosquitto: MosquittoBroker,
                                                   tmp_path: Path) -> None:
    dp = DPConfig(noise_multiplier=0.3, l2_clip=0.5)
    floor = GatewayPolicy(min_participants=3,
                          privacy=dp_params.GatewayPolicy(min_noise_multiplier=1.0))
    with TestClient(create_app(_settings(tmp_path, dp_noise_multiplier=0.3))) as client:
        fleet = Deployment(mosquitto.port, client, dp, 3, floor)
        try:
            report = fleet.round()
        finally:
            fleet.close()
        assert report.new_version is None  # type: ignore[attr-defined]
        assert "threshold" in report.outcome.abort_reason  # type: ignore[attr-defined]
        assert all(any("below this gateway's minimum" in r for r in g.refusals)
                   for g in fleet.gateways)
        assert not fleet.server.state.advertised  # nobody sent a key
        assert client.get("/v1/models/latest").json()["version"] == 1
        assert client.get("/v1/privacy").json()["rounds"] == 0


def test_poisson_selection_and_dp_config_garbage() -> None:
    assert poisson_select(list(range(1, 101)), 1.0, 3, 256) == list(range(1, 101))
    drawn = [len(poisson_select(list(range(1, 1001)), 0.1, 1, 1000)) for _ in range(20)]
    assert 60 < np.mean(drawn) < 140
    with pytest.raises(RoundAbortedError, match="outside"):
        poisson_select([1, 2, 3], 1.0, 4, 10)
    with pytest.raises(RoundAbortedError):
        poisson_select(list(range(1, 50)), 1.0, 2, 10)
    for bad in [dict(noise_multiplier=0), dict(noise_multiplier=float("nan")),
                dict(noise_multiplier=1, l2_clip=-1), dict(noise_multiplier=1, sampling_rate=0),
                dict(noise_multiplier=1, sampling_rate=1.5), dict(noise_multiplier=1, delta=1),
                dict(noise_multiplier=1, epsilon_budget=float("inf")),
                dict(noise_multiplier=1, mechanism="laplace"),
                dict(noise_multiplier=1, coordinate_sigmas=0)]:
        with pytest.raises(InputError):
            DPConfig(**bad)  # type: ignore[arg-type]


def test_a_malformed_stored_ledger_is_refused() -> None:
    dp = DPConfig(1.0)
    good = {"dp": {"orders": list(accounting.ORDERS), "rdp": [0.0] * len(accounting.ORDERS),
                   "rounds": 0}}
    PrivacyLedger(dp, good)
    for broken in ({"orders": [2, 3], "rdp": [0.1, 0.2]},
                   {"orders": list(accounting.ORDERS), "rdp": [-1.0] * len(accounting.ORDERS)},
                   {"orders": list(accounting.ORDERS), "rdp": [float("nan")] * 3}):
        with pytest.raises(InputError, match="malformed"):
            PrivacyLedger(dp, {"dp": broken})


@pytest.mark.parametrize("field, value", [
    ("dp_noise_multiplier", -1), ("dp_noise_multiplier", "lots"), ("dp_l2_clip", 0),
    ("dp_sampling_rate", 2), ("dp_delta", 0), ("dp_epsilon_budget", -3),
    ("dp_mechanism", "gauss")])
def test_privacy_settings_garbage_is_a_validation_error(tmp_path: Path, field: str,
                                                        value: object) -> None:
    with pytest.raises(ValidationError):
        _settings(tmp_path, **{field: value})


def test_privacy_endpoint_without_dp(tmp_path: Path) -> None:
    with TestClient(create_app(_settings(tmp_path))) as client:
        shown = client.get("/v1/privacy").json()
    assert shown["enabled"] is False and shown["epsilon"] == 0.0 and shown["rounds"] == 0


def test_wire_round_config_carries_the_planned_noise() -> None:
    dp = DPConfig(1.0, 0.5)
    noise = PrivacyLedger(dp).plan(quant_bits=8, clip=dp.coordinate_clip(1000), vector_len=1000,
                                   threshold=3, participants=5)
    assert isinstance(noise, wire.RoundNoise) and noise.max_participants == 5
