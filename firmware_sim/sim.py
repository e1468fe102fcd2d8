"""``fedgate sim``: a whole deployment on one machine, run for R rounds.

The parts are the real ones, wired as they are in production: an MQTT broker (the embedded amqtt
broker, or an external Mosquitto given by ``--broker``), simulated wearables (C firmware) that
stream their frames over the MQTT device link into each gateway's local store
(``firmware_sim.collect``), the aggregator's FastAPI app served by uvicorn over real HTTP, and N
gateway daemons (``edge_client.daemon``, one thread each; their fits run in a pool of worker
processes, because onnxruntime-training holds the GIL) that enroll over REST with one-time codes,
download and verify signed models, train on their own local store and take part in secure
aggregation over MQTT. The fleet comes from a
scenario file (``--scenario``, ``firmware_sim.scenario``) or from the data mode; a scenario's
dropouts and stragglers are enacted on the daemons (``firmware_sim.churn``). The simulator plays
the operator: it issues enrollment codes and drives the aggregator's orchestrator round by round
(instead of its background loop) so that it can time each round and check each aggregate. Because
it is a simulation it may also look inside the gateways: each one records its quantized update, and
the simulator checks that the securely recovered sum equals the exact sum of the survivors'
updates.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge_client.config import config_from_dict
from edge_client.daemon import GatewayDaemon
from edge_client.eligibility import HostReadings
from edge_client.localdata import LocalData, StoreData
from edge_client.training import process_pool
from firmware_sim.churn import DelayedData, SimGateway
from firmware_sim.scenario import Scenario, load_scenario
from native.broker import EmbeddedBroker, free_port, wait_for_port
from native.errors import ConfigError, TransportError

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class SimConfig:
    """Everything ``fedgate sim`` can be told."""

    out: Path = Path("sim-out")
    gateways: int = 4
    devices: int = 1
    scenario: Path | None = None
    rounds: int = 10
    broker: str | None = None
    data: str = "synthetic"
    data_dir: Path | None = None
    holdout: list[str] = field(default_factory=list)
    seed: int = 0
    quant_bits: int = 8
    secagg: str = "full"
    neighbours: int | None = None
    clip: float = 0.05
    epochs: int = 2
    lr: float = 3e-3
    mu: float = 0.0
    class_weights: tuple[float, ...] = (1.0, 8.0, 3.5, 9.5)  # inverse-frequency-like, AAMI order
    seconds: float | None = None  # signal per device: 240 s, a MIT-BIH record to its end
    holdout_patients: int = 3
    stage_timeout_s: float = 60.0
    strategy: Literal["fedavg", "fedadam", "fedyogi"] = "fedavg"
    server_lr: float = 1.0
    model: str = "ecg"  # any zoo model that reads ECG beats (ecg, ecg-linear)
    server_lr_decay: float = 1.0
    server_lr_decay_from: int = 0
    weighting: Literal["equal", "samples"] = "equal"
    # Distributed DP (None: off); the gateways' floor is set to the same noise multiplier.
    dp_noise_multiplier: float | None = None
    dp_l2_clip: float = 1.0
    dp_sampling_rate: float = 1.0
    dp_delta: float = 1e-5
    dp_epsilon_budget: float | None = None
    # Federated evaluation: share of each gateway's newest beats held out of training and
    # scored on every new global model (0 = off; edge_client.evaluation).
    eval_holdout: float = 0.1

    def dp_config(self) -> Any:
        """The aggregator's DPConfig for these flags, or None."""
        if self.dp_noise_multiplier is None:
            return None
        from aggregator.privacy import DPConfig
        from native.errors import InputError

        try:
            return DPConfig(self.dp_noise_multiplier, self.dp_l2_clip, self.dp_sampling_rate,
                            self.dp_delta, self.dp_epsilon_budget)
        except InputError as exc:
            raise ConfigError(f"--dp-*: {exc}") from exc

    def check(self) -> None:
        """Raise ConfigError on anything the simulation cannot run with."""
        if self.data not in ("synthetic", "mitdb"):
            raise ConfigError(f"--data must be synthetic or mitdb, got {self.data!r}")
        if self.data == "mitdb" and self.data_dir is None:
            raise ConfigError("--data mitdb needs --data-dir DIR")
        if self.data == "synthetic" and not 2 <= self.gateways <= 256:
            raise ConfigError("--gateways must be 2..256")
        if not 1 <= self.devices <= 16:
            raise ConfigError("--devices must be 1..16")
        if self.data == "mitdb" and (self.devices != 1 or self.scenario is not None):
            raise ConfigError("--data mitdb streams one record per gateway: no --devices, and "
                              "a --scenario names its records itself")
        if not 1 <= self.rounds <= 1000:
            raise ConfigError("--rounds must be 1..1000")
        if not 2 <= self.quant_bits <= 16:
            raise ConfigError("--quant-bits must be 2..16")
        if self.strategy not in ("fedavg", "fedadam", "fedyogi") or not 0 < self.server_lr <= 100:
            raise ConfigError("--strategy must be fedavg, fedadam or fedyogi, "
                              "and 0 < --server-lr <= 100")
        if not 0 < self.server_lr_decay <= 1 or self.server_lr_decay_from < 0:
            raise ConfigError("need 0 < --server-lr-decay <= 1 and --server-lr-decay-from >= 0")
        if self.weighting not in ("equal", "samples"):
            raise ConfigError("--weighting must be equal or samples")
        if self.weighting == "samples" and self.dp_noise_multiplier is not None:
            raise ConfigError("DP rounds are unweighted: --weighting samples needs no --dp-*")
        if self.secagg not in ("full", "plus"):
            raise ConfigError("--secagg must be full or plus")
        if self.neighbours is not None and (self.neighbours < 2 or self.neighbours % 2):
            raise ConfigError("--neighbours must be an even number >= 2")
        if self.seconds is not None and not 30.0 <= self.seconds <= 86400:
            raise ConfigError("--seconds of signal per device must be 30..86400")
        if not 0 < self.clip <= 100:
            raise ConfigError("--clip must be in (0, 100]")
        if not 1 <= self.epochs <= 100 or not 0 < self.lr <= 1 or not 0 <= self.mu <= 100:
            raise ConfigError("need 1 <= --epochs <= 100, 0 < --lr <= 1, 0 <= --mu <= 100")
        if self.broker is not None and not self.broker.startswith(("mqtt://", "mqtts://")):
            raise ConfigError(f"--broker must be mqtt://host:port, got {self.broker!r}")
        _check_model(self.model)
        if not 0 <= self.eval_holdout <= 0.5:
            raise ConfigError(f"--eval-holdout must be in [0, 0.5], got {self.eval_holdout!r}")
        self.dp_config()

    @classmethod
    def from_scenario(cls, path: Path, **overrides: Any) -> SimConfig:
        """The scenario's rounds, seconds and seed, unless ``overrides`` (flags) say otherwise."""
        sc = load_scenario(path, overrides.get("data_dir"))
        own = {k: v for k, v in (("rounds", sc.rounds), ("seconds", sc.seconds),
                                 ("seed", sc.seed)) if v is not None}
        return cls(scenario=path, **{**own, **overrides})


def _check_model(name: str) -> None:
    """The gateways hold ECG beats: the model must read exactly those inputs."""
    from models.zoo import ECG, MODELS

    spec = MODELS.get(name) if isinstance(name, str) else None
    if spec is None or spec.input_shapes() != ECG.input_shapes():
        usable = sorted(n for n, s in MODELS.items() if s.input_shapes() == ECG.input_shapes())
        raise ConfigError(f"--model must be one of {', '.join(usable)} (models of ECG beats), "
                          f"got {name!r}")


@contextmanager
def broker_for(url: str | None) -> Iterator[str]:
    """The given external broker, or an embedded one for the duration of the block."""
    if url is not None:
        yield url
        return
    broker = EmbeddedBroker()
    broker.start()
    try:
        yield broker.url
    finally:
        broker.stop()


class AggregatorService:
    """The aggregator's app served by uvicorn on a loopback port, in a thread of this process."""

    def __init__(self, workdir: Path, mqtt_url: str, dp: dict[str, Any] | None = None) -> None:
        from aggregator.app import create_app
        from aggregator.settings import AggregatorSettings

        self.admin_token = secrets.token_urlsafe(24)
        # rounds=0: the simulator drives the orchestrator itself, round by round.
        self.settings = AggregatorSettings.model_validate({
            "admin_token": self.admin_token,
            "database_url": f"sqlite:///{workdir / 'aggregator.db'}",
            "signing_key_path": workdir / "aggregator-signing.key", "mqtt_url": mqtt_url,
            "rounds": 0, **(dp or {})})
        self.app = create_app(self.settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> None:
        import uvicorn

        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fedgate-aggregator",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started or not wait_for_port("127.0.0.1", self.port, 1.0):
            raise TransportError(f"the aggregator did not start on {self.url}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)

    def enrollment_code(self, label: str) -> str:
        """Issue a one-time enrollment code, as the operator would."""
        req = urllib.request.Request(
            self.url + "/v1/enrollment-codes", data=json.dumps({"label": label}).encode(),
            headers={"Authorization": f"Bearer {self.admin_token}",
                     "Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return str(json.loads(resp.read())["code"])

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as resp:
            data: bytes = resp.read()
        return data


def gateway_config(index: int, workdir: Path, broker_url: str, agg: AggregatorService,
                   cfg: SimConfig, n_gateways: int) -> dict[str, Any]:
    """The TOML tables of one simulated gateway (what its config file would say)."""
    return {
        "gateway": {"data_dir": str(workdir / f"gateway-{index:03d}"), "broker_url": broker_url,
                    "aggregator_url": agg.url, "label": f"sim-{index}",
                    "enrollment_code": agg.enrollment_code(f"sim-{index}"),
                    "reconnect_max_s": 5, "model": cfg.model},
        "policy": {"min_participants": min(3, n_gateways), "max_clip": max(1.0, cfg.clip),
                   "min_noise_multiplier": cfg.dp_noise_multiplier or 0.0},
        # A recorded data set has no "new" samples; the sim's host is always eligible.
        "eligibility": {"min_new_samples": 0, "max_load_per_cpu": 1e6},
        "training": {"epochs": cfg.epochs, "lr": cfg.lr, "mu": cfg.mu, "batch_size": 64,
                     "class_weights": list(cfg.class_weights), "weighting": cfg.weighting},
        "evaluation": {"enabled": cfg.eval_holdout > 0, "holdout_fraction": cfg.eval_holdout or
                       0.1, "min_samples": 10},
    }


def _host() -> HostReadings:
    return HostReadings(battery_pct=80.0, charging=True, load_per_cpu=0.0)


class Fleet:
    """The running gateways: one daemon thread each, by name (their fits in ``train_pool``)."""

    def __init__(self, train_pool: Executor | None = None) -> None:
        self.daemons: list[GatewayDaemon] = []
        self.threads: list[threading.Thread] = []
        self.train_pool = train_pool
        self._by_name: dict[str, tuple[SimGateway, DelayedData, dict[str, Any]]] = {}

    def add(self, tables: dict[str, Any], data: LocalData | None,
            name: str | None = None) -> GatewayDaemon:
        if data is None:
            data = StoreData(Path(tables["gateway"]["data_dir"]) / "store.sqlite")
        delayed = DelayedData(data)
        daemon = SimGateway(config_from_dict(tables, {}), data=delayed, host_probe=_host,
                            record_updates=True, train_pool=self.train_pool)
        thread = threading.Thread(target=daemon.run, name=f"gateway-{len(self.daemons)}",
                                  daemon=True)
        self.daemons.append(daemon)
        self.threads.append(thread)
        self._by_name[name or f"gateway-{len(self._by_name)}"] = (daemon, delayed, tables)
        thread.start()
        return daemon

    def gateway(self, name: str) -> SimGateway:
        return self._by_name[name][0]

    def data_of(self, name: str) -> DelayedData:
        return self._by_name[name][1]

    def restart(self, name: str, timeout: float = 60.0) -> SimGateway:
        """A new daemon on the gateway's data folder (identity and enrollment are kept)."""
        old, delayed, tables = self._by_name[name]
        old.stop()
        self.threads[self.daemons.index(old)].join(30)
        self.add(tables, delayed.inner, name)
        self.wait_ready(timeout)
        return self.gateway(name)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for daemon, thread in zip(self.daemons, self.threads, strict=True):
            if daemon.stopping:
                continue
            while not daemon.ready.wait(0.1):
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise TransportError(f"gateway {thread.name} did not come up "
                                         "(see its log: enrollment, broker or model artifacts)")

    def evaluate_latest(self) -> None:
        """Every gateway scores the newest model on its hold-out (between rounds only)."""
        from native.errors import FedgateError

        for daemon in self.daemons:
            try:
                daemon.evaluate_latest()
            except FedgateError as exc:
                log.warning("%s: no evaluation of the final model: %s", daemon.gateway_id, exc)

    def stop(self) -> None:
        for _, delayed, _ in self._by_name.values():
            delayed.cancel()  # a straggler's delay must not hold up the shutdown
        for daemon in self.daemons:
            daemon.stop()
        for thread in self.threads:
            thread.join(30)
        if self.train_pool is not None:
            self.train_pool.shutdown(cancel_futures=True)


def fleet_of(cfg: SimConfig) -> tuple[Scenario, Any]:
    """The scenario the run plays (a file, or the data mode's fleet) and its held-out data."""
    from firmware_sim import simdata

    seconds = cfg.seconds or simdata.DEFAULT_SECONDS
    if cfg.scenario is not None:
        sc = load_scenario(cfg.scenario, cfg.data_dir)
        sc.check_rounds(cfg.rounds)
        if sc.holdout:
            where = cfg.data_dir or cfg.scenario.parent
            return sc, lambda _w: simdata.record_holdout(where, list(sc.holdout))
    elif cfg.data == "mitdb":
        assert cfg.data_dir is not None
        train, held = simdata.split_records(simdata.mitdb_records(cfg.data_dir), cfg.holdout)
        sc = simdata.mitdb_scenario(cfg.data_dir, train)
        return sc, lambda _w: simdata.mitdb_holdout(cfg.data_dir, held)
    else:
        sc = simdata.synthetic_scenario(cfg.gateways, cfg.devices, cfg.seed, seconds)
    return sc, lambda w: simdata.synthetic_holdout(w, cfg.holdout_patients, cfg.seed, seconds)


def run_sim(cfg: SimConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run the simulation; writes report.json, learning_curves.png and global_model.onnx."""
    from firmware_sim.churn import ScenarioDriver
    from firmware_sim.collect import collect

    cfg.check()
    say = progress or log.info
    started = time.monotonic()
    scenario, holdout_of = fleet_of(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    workdir = cfg.out / "work"
    if workdir.exists():  # a fresh deployment each run: no old enrollments or model versions
        shutil.rmtree(workdir)
    workdir.mkdir(mode=0o700)
    from models.artifacts import ensure

    ensure(cfg.model)  # generated once here, not by every gateway thread at once
    with broker_for(cfg.broker) as broker_url:
        say(f"broker {broker_url}; fleet {scenario.source}: {len(scenario.gateways)} gateways")
        ingestion = collect(scenario, workdir, broker_url, cfg.seconds, say)
        holdout = holdout_of(workdir)
        agg = AggregatorService(workdir, broker_url, _dp_settings(cfg))
        agg.start()
        # onnxruntime-training holds the GIL while it trains: fits go to worker processes.
        fleet = Fleet(process_pool())
        try:
            for i, gw in enumerate(scenario.gateways):
                tables = gateway_config(i, workdir, broker_url, agg, cfg, len(scenario.gateways))
                fleet.add(tables, None, gw.name)
            fleet.wait_ready(120)
            pids = {g.name: fleet.gateway(g.name).enrollment.pid  # type: ignore[union-attr]
                    for g in scenario.gateways}
            say(f"aggregator {agg.url}; {len(fleet.daemons)} gateways enrolled and online")
            driver = ScenarioDriver(agg, fleet, cfg, broker_url, holdout, scenario)
            report = driver.run(say)
            if cfg.eval_holdout:
                fleet.evaluate_latest()  # the final version: no later round downloads it
        finally:
            fleet.stop()
            agg.stop()
    report["gateways"] = [g.name for g in scenario.gateways]
    report["gateway_pids"] = pids
    report["ingestion"] = ingestion
    report["scenario"] = scenario_summary(scenario)
    report["wall_s"] = round(time.monotonic() - started, 3)
    from firmware_sim.report import write_outputs

    write_outputs(cfg.out, report)
    say(f"done in {report['wall_s']:.1f} s: {cfg.out / 'report.json'}")
    return report


def scenario_summary(sc: Scenario) -> dict[str, Any]:
    return {"source": sc.source,
            "devices": {g.name: [{"id": d["id"], "kind": d["kind"]} for d in g.devices]
                        for g in sc.gateways},
            "dropouts": [asdict(d) for d in sc.dropouts],
            "stragglers": [asdict(s) for s in sc.stragglers]}


def _dp_settings(cfg: SimConfig) -> dict[str, Any]:
    """The aggregator settings of the DP flags (so /v1/privacy reports the policy)."""
    if cfg.dp_noise_multiplier is None:
        return {}
    return {"dp_noise_multiplier": cfg.dp_noise_multiplier, "dp_l2_clip": cfg.dp_l2_clip,
            "dp_sampling_rate": cfg.dp_sampling_rate, "dp_delta": cfg.dp_delta,
            "dp_epsilon_budget": cfg.dp_epsilon_budget}
