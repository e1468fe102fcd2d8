"""The gateway daemon: identity, enrollment, then one federated round after another.

One worker thread owns everything that touches the protocol core (``edge_client.secagg``): it
takes verified deliveries from the transport's inbox, feeds them to the core and publishes the
replies. The MQTT network thread only decodes and enqueues (``native.transport``). Training runs
on a second thread while the key exchange proceeds, and its result is handed to the core by the
worker, so the core is never touched by two threads.

Per round: the signed ROUND_CONFIG arrives (retained on the announce topic); the gateway checks
that it is listed, that the config meets its policy minimums (the core's ``GatewayPolicy`` plus
``max_clip``) and that it is eligible (new samples, battery, charging, load), advertises its
keys, downloads the latest global model over REST and verifies the aggregator's signature,
trains with ``models.trainer.train_local`` on its local data, and hands the delta to the core,
which clips, quantizes and masks it. Broker restarts are absorbed by the transport's reconnect
(persistent session, QoS 1); an aggregator restart arrives as a signed abort, after which the
gateway simply waits for the next announcement. ``stop()`` (SIGTERM) leaves at once: the
transport publishes ``offline``, so the aggregator counts this gateway as a dropout.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

import nacl.signing
import numpy as np
import numpy.typing as npt

from edge_client import eligibility
from edge_client.config import GatewayConfig
from edge_client.enroll import AggregatorClient
from edge_client.evaluation import LocalEvaluation, split
from edge_client.identity import (
    KEY_FILE,
    Enrollment,
    load_enrollment,
    load_or_create_identity,
    save_enrollment,
)
from edge_client.localdata import LocalData, StoreData
from edge_client.secagg import GatewayPolicy, GatewayStage, SecAggGateway, plain_levels
from edge_client.training import RoundTrainer, Trained
from native import dp_params, keys, topics, wire
from native.errors import FedgateError, ProtocolError, TransportError
from native.transport import Delivery, Transport, TransportConfig

log = logging.getLogger(__name__)

_IN_ROUND = (GatewayStage.ADVERTISED, GatewayStage.SHARED, GatewayStage.MASKING,
             GatewayStage.MASKED, GatewayStage.UNMASKED)
_AWAITING_UPDATE = (GatewayStage.ADVERTISED, GatewayStage.SHARED, GatewayStage.MASKING)
_FRAME_HEADER = 104
# Put into the inbox when training finishes, so the worker hands the update over at once.
_WAKE = Delivery("", b"", -1, "", 0, False)


@dataclass
class RoundStats:
    """What this gateway spent on one round (for logs and the simulator's report)."""

    round_no: int
    stage: str = "advertised"
    samples: int = 0
    model_version: int = 0
    download_s: float = 0.0
    train_s: float = 0.0
    fit_cpu_s: float = 0.0
    protocol_s: float = 0.0  # CPU seconds inside the secure-aggregation core (thread CPU time)
    protocol_wall_s: float = 0.0  # wall seconds inside the core (includes waiting for a CPU)
    bytes_up: int = 0
    bytes_down: int = 0
    model_bytes: int = 0
    train_metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    # time.monotonic() of the round's milestones on this gateway: config, train_start,
    # downloaded, trained, masked (MASKED_INPUT published), end.
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.monotonic())


class GatewayDaemon:
    """One gateway. ``run()`` blocks until ``stop()``; everything else is for tests and the sim."""

    def __init__(self, config: GatewayConfig, *, data: LocalData | None = None,
                 host_probe: eligibility.HostProbe | None = None,
                 record_updates: bool = False, train_pool: Executor | None = None) -> None:
        self.config = config
        self.data = data or StoreData(config.data_dir / "store.sqlite")
        self.host_probe = host_probe or eligibility.read_host
        # Kept only when asked (tests, the simulator's exactness check): the quantized update
        # is what the aggregator must never see alone, so a production gateway does not hold it.
        self.record_updates = record_updates
        self.quantized: dict[int, npt.NDArray[Any]] = {}
        self.stats: dict[int, RoundStats] = {}
        self.ready = threading.Event()
        self.identity: nacl.signing.SigningKey | None = None
        self.enrollment: Enrollment | None = None
        self.transport: Transport | None = None
        self.core: SecAggGateway | None = None
        self._stop = threading.Event()
        self._round_no = -1
        self._training: Future[Trained] | None = None
        self._trainer: RoundTrainer | None = None
        # None: fit on the training thread; a process pool: fit there (see edge_client.training).
        self.train_pool = train_pool
        self._client = AggregatorClient(config.gateway.aggregator_url,
                                        config.gateway.http_timeout_s)
        self.evaluation = LocalEvaluation(config.evaluation, self._client)
        self._n_params = 0
        self._artifacts: Any = None
        self._trained_through = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the daemon to leave (safe from a signal handler or another thread)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> int:
        """Start up, then serve rounds until ``stop()``; returns a process exit status."""
        try:
            self._start_up()
            if self._stop.is_set():
                return 0
            self.ready.set()
            log.info("gateway %s ready", self.gateway_id)
            while not self._stop.is_set():
                self._step()
        finally:
            self._shut_down()
        return 0

    @property
    def gateway_id(self) -> str:
        return self.enrollment.gateway_id if self.enrollment else ""

    def _start_up(self) -> None:
        from models.artifacts import ensure

        folder = self.config.data_dir
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.identity = load_or_create_identity(folder / KEY_FILE)
        self.enrollment = load_enrollment(folder) or self._enroll()
        if self.enrollment is None:
            return
        self._artifacts = ensure(self.config.gateway.model)
        self._n_params = int(self._artifacts.manifest.parameter_count)
        self._trainer = RoundTrainer(
            client=self._client, server_key=self.enrollment.server_key,
            model=self.config.gateway.model, artifacts=self._artifacts, n_params=self._n_params,
            data=self.data, training=self.config.training, pool=self.train_pool,
            holdout_fraction=self.evaluation.fraction, score=self._score)
        self.core = self._new_core()
        self.transport = self._connect()

    def _enroll(self) -> Enrollment | None:
        assert self.identity is not None
        delay = 1.0
        while not self._stop.is_set():
            try:
                rec = self._client.enroll(self.identity, self.config.gateway.enrollment_code,
                                          self.config.gateway.label)
                save_enrollment(self.config.data_dir, rec)
                return rec
            except TransportError as exc:  # aggregator not up yet: keep trying
                log.warning("enrollment: %s; retrying in %.0f s", exc, delay)
                self._stop.wait(delay)
                delay = min(30.0, delay * 2)
        return None

    def _new_core(self) -> SecAggGateway:
        assert self.identity is not None and self.enrollment is not None
        pol = self.config.policy
        policy = GatewayPolicy(min_participants=pol.min_participants, min_degree=pol.min_degree,
                               min_threshold_fraction=pol.min_threshold_fraction,
                               min_quant_bits=pol.min_quant_bits,
                               max_quant_bits=pol.max_quant_bits,
                               privacy=None if pol.min_noise_multiplier == 0 else
                               dp_params.GatewayPolicy(pol.min_noise_multiplier,
                                                       pol.min_dp_threshold))
        return SecAggGateway(self.enrollment.pid, self.identity, self.enrollment.server_key,
                             policy)

    def _connect(self) -> Transport | None:
        g = self.config.gateway
        tconf = TransportConfig.from_url(
            g.broker_url, self.gateway_id, root=g.topic_root, ca_certs=g.ca_file or None,
            reconnect_max_s=g.reconnect_max_s, keepalive_s=g.keepalive_s)
        transport = Transport(tconf)
        for topic_filter in (topics.announce(g.topic_root), topics.all_broadcasts(g.topic_root),
                             topics.gateway_downlinks(self.gateway_id, g.topic_root)):
            transport.subscribe(topic_filter)
        delay = 1.0
        while not self._stop.is_set():
            try:
                transport.start(timeout=10.0)
                return transport
            except TransportError as exc:  # broker away: paho's backoff starts once connected
                log.warning("broker: %s; retrying in %.0f s", exc, delay)
                self._stop.wait(delay)
                delay = min(float(g.reconnect_max_s), delay * 2)
        return None

    def _shut_down(self) -> None:
        if self._training is not None:
            self._training.cancel()
        if self.core is not None:
            _wipe(self.core)
        if self.transport is not None:
            self.transport.stop()
        log.info("gateway %s stopped", self.gateway_id)

    # -- the worker loop -------------------------------------------------------------------------

    def _step(self) -> None:
        assert self.transport is not None
        self._collect_training()
        delivery = self.transport.receive(timeout=0.05)
        if delivery is None or delivery is _WAKE:
            return
        try:
            self._on_delivery(delivery)
        except FedgateError as exc:
            log.warning("round %d: %s: %s", delivery.round_id, type(exc).__name__, exc)
            self._note_error(delivery.round_id, f"{type(exc).__name__}: {exc}")

    def _on_delivery(self, delivery: Delivery) -> None:
        env = wire.decode(delivery.payload)
        if env.msg_type is wire.MsgType.ROUND_CONFIG:
            self._on_config(delivery, env)
            return
        if delivery.round_id != self._round_no:
            return  # another round's traffic (old broadcasts, rounds this gateway sat out)
        self._feed(delivery.round_id, len(delivery.payload),
                   lambda core: core.handle(delivery.payload))

    def _on_config(self, delivery: Delivery, env: wire.Envelope) -> None:
        assert self.core is not None and self.enrollment is not None
        cfg = env.message
        assert isinstance(cfg, wire.RoundConfig)
        if delivery.round_id <= self._round_no:
            return  # the retained announcement of a round this gateway has already seen
        # Verified before anything else: a forged announcement must not end the open round.
        env.verify(self.enrollment.server_key)
        if self.core.state.stage in _IN_ROUND:
            log.warning("round %d announced while round %d was open: leaving the old one",
                        delivery.round_id, self._round_no)
            self._abandon()
        if self.enrollment.pid not in {p.pid for p in cfg.participants}:
            log.debug("round %d: not selected", delivery.round_id)
            return
        if cfg.clip > self.config.policy.max_clip:
            raise ProtocolError(f"round config clip {cfg.clip} > policy max_clip "
                                f"{self.config.policy.max_clip}")
        if cfg.vector_len != self._n_params:
            raise ProtocolError(f"round wants {cfg.vector_len} values, the model has "
                                f"{self._n_params}")
        samples = self.data.sample_count()
        decision = eligibility.check(self.config.eligibility, samples - self._trained_through,
                                     self.host_probe())
        if not decision.eligible:
            log.info("round %d: sitting out (%s)", delivery.round_id, "; ".join(decision.reasons))
            return
        self._round_no = delivery.round_id
        self.stats[self._round_no] = RoundStats(self._round_no)
        self.stats[self._round_no].mark("config")
        self._feed(delivery.round_id, len(delivery.payload),
                   lambda core: core.handle(delivery.payload))
        if self.core.state.stage is GatewayStage.ADVERTISED and self._trainer is not None:
            self._training = self._trainer.start(self._round_no, self.stats[self._round_no].mark,
                                                 (cfg.model_version, cfg.model_sha256))
            inbox = self.transport.inbox if self.transport is not None else None
            if inbox is not None:
                self._training.add_done_callback(lambda _f: inbox.put(_WAKE))

    def _feed(self, round_no: int, incoming: int, call: Any) -> None:
        assert self.core is not None
        stats = self.stats.get(round_no)
        started, cpu = time.perf_counter(), keys.caller_cpu_s()
        try:
            replies: list[bytes] = call(self.core)
        finally:
            if stats is not None:
                stats.protocol_s += keys.caller_cpu_s() - cpu
                stats.protocol_wall_s += time.perf_counter() - started
                stats.bytes_down += incoming + (_FRAME_HEADER if incoming else 0)
                stats.stage = self.core.state.stage.value
        self._publish(round_no, replies)
        if self.core.state.stage in (GatewayStage.DONE, GatewayStage.ABORTED):
            self._end_round()

    def _publish(self, round_no: int, replies: list[bytes]) -> None:
        assert self.transport is not None
        stats = self.stats.get(round_no)
        for reply in replies:
            # Sequence = the wire message type: a reply re-sent after a crash has the same key.
            self.transport.publish(topics.up(round_no, self.gateway_id,
                                             self.config.gateway.topic_root), reply,
                                   round_id=round_no, sequence=reply[6])
            if stats is not None:
                stats.bytes_up += len(reply) + _FRAME_HEADER
                if reply[6] == wire.MsgType.MASKED_INPUT:
                    stats.mark("masked")

    def _end_round(self) -> None:
        assert self.core is not None
        stats = self.stats.get(self._round_no)
        if stats is not None:
            stats.mark("end")
        if stats is not None and self.core.state.stage is GatewayStage.ABORTED:
            stats.error = stats.error or self.core.state.abort_reason
        if self._training is not None:
            self._training.cancel()
            self._training = None
        if (self.core.state.stage is GatewayStage.DONE and stats is not None
                and stats.model_version > 0 and self._trainer is not None):
            self._trainer.prefetch(stats.model_version)  # the next round's model, off its path
        log.info("round %d: %s", self._round_no, self.core.state.stage.value)

    def _abandon(self) -> None:
        assert self.core is not None
        old = self.core
        _wipe(old)
        self.core = self._new_core()
        self.core.state.seen_rounds = set(old.state.seen_rounds)
        if self._training is not None:
            self._training.cancel()
            self._training = None

    def _note_error(self, round_no: int, message: str) -> None:
        stats = self.stats.get(round_no)
        if stats is not None:
            stats.error = message

    def _score(self, model: Any, holdout: Any) -> None:
        """Federated evaluation of the round's global model, before the fit (training thread)."""
        assert self.identity is not None
        self.evaluation.report(artifacts=self._artifacts, identity=self.identity,
                               gateway_id=self.gateway_id, model=model, holdout=holdout)

    def evaluate_latest(self) -> None:
        """Score the newest global model on the hold-out without training: a version no later
        round downloads (a fleet's final model) is evaluated this way. Safe from another thread
        while no round trains; returns once the report is delivered or delivery failed."""
        assert self.enrollment is not None and self.identity is not None
        model = self._client.latest_model(self.enrollment.server_key, self.config.gateway.model,
                                          self._n_params)
        _, holdout = split(self.data, self.evaluation.fraction)
        self.evaluation.report(artifacts=self._artifacts, identity=self.identity,
                               gateway_id=self.gateway_id, model=model, holdout=holdout)
        self.evaluation.wait_delivered(2 * self.config.gateway.http_timeout_s)

    # -- training ----------------------------------------------------------------------------------

    def _collect_training(self) -> None:
        future = self._training
        if future is None or not future.done():
            return
        self._training = None
        stats = self.stats.get(self._round_no)
        try:
            trained = future.result()
        except Exception as exc:  # the round goes on without this gateway's update
            log.warning("round %d: no update: %s", self._round_no, exc)
            self._note_error(self._round_no, f"{type(exc).__name__}: {exc}")
            return
        assert self.core is not None
        if stats is not None:
            stats.samples, stats.model_version = trained.samples, trained.version
            stats.download_s, stats.train_s = trained.download_s, trained.train_s
            stats.fit_cpu_s = trained.fit_cpu_s
            stats.model_bytes, stats.train_metrics = trained.model_bytes, trained.metrics
        if self.core.state.stage not in _AWAITING_UPDATE:
            return
        seed, noise_seed = os.urandom(32), os.urandom(32)
        weight = self._weight(trained.samples)
        if self.record_updates and self.core.state.config is not None:
            cfg = self.core.state.config
            levels = plain_levels(trained.delta, cfg, self.core.state.round_id, seed, noise_seed)
            # As it enters the sum: weighted in the ring.
            self.quantized[self._round_no] = (
                (levels.astype(np.uint64) * np.uint64(weight)) & np.uint64((1 << cfg.ring_bits) - 1)
            ).astype(levels.dtype)
        self._trained_through = self.data.sample_count()
        self._feed(self._round_no, 0,
                   lambda core: core.provide_update(trained.delta, weight, rounding_seed=seed,
                                                    noise_seed=noise_seed))

    def _weight(self, samples: int) -> int:
        """This gateway's weight in the round's average (the round caps it at max_weight)."""
        cfg = self.core.state.config if self.core is not None else None
        if cfg is None or self.config.training.weighting == "equal":
            return 1
        return max(1, min(int(samples), cfg.max_weight))


def _wipe(core: SecAggGateway) -> None:
    """Drop a core's round secrets when the daemon leaves it (its own wipe is private)."""
    st = core.state
    if st.round_keys is not None:
        st.round_keys.wipe()
    keys.wipe(st.self_seed)
    st.held_shares.clear()
    st.enc_keys.clear()
    st.pending_update = None
