"""Drives one secure-aggregation round of ``aggregator.secagg.SecAggServer`` over MQTT.

The server core decides everything about the protocol; this module only moves its messages:
the signed round config goes out retained on the announce topic, per-stage messages on the
round's broadcast topic or a gateway's downlink, and gateway messages come in from the uplinks.
A stage closes at its deadline, or earlier once every gateway still expected in it has answered;
a gateway whose last will says ``offline`` is no longer expected once it has stayed offline for
``offline_grace_s`` (a broker restart fires every will, and the gateways come back within seconds).
Progress (stage, counts, seconds per stage, outcome) is written to the ``rounds`` table as it
happens, so ``/v1/rounds`` shows it: the round's row with its secure-aggregation round id before
the config is published, each stage's progress by a recorder thread in order (a commit is
milliseconds of fsync that the next stage's answers need not wait for), the outcome once the
recorder is drained. The protocol runs on the caller's thread, never on the MQTT network thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from aggregator.db import Database, Round, utcnow
from aggregator.metrics import Metrics
from aggregator.secagg import AggregateResult, Outbound, SecAggServer, ServerStage
from native import topics, wire
from native.errors import FedgateError, InputError, WireError
from native.transport import PRESENCE_OFFLINE, PRESENCE_ONLINE, Delivery, Transport

log = logging.getLogger(__name__)

_OPEN = (ServerStage.COLLECT_KEYS, ServerStage.COLLECT_SHARES, ServerStage.COLLECT_MASKED,
         ServerStage.COLLECT_UNMASK)
_BROADCAST = 0xFFFFFFFF


class RunnerStopped(FedgateError):
    """``cancel()`` interrupted a round; nothing more was sent or recorded for it."""


@dataclass(frozen=True)
class RoundOutcome:
    """What one round produced: the aggregate (None when aborted) and who took part."""

    round_no: int
    result: AggregateResult | None
    selected: int
    dropouts: int
    abort_reason: str
    timings: dict[str, float]


class RoundRunner:
    """Runs rounds for one server core over one connected transport."""

    def __init__(self, transport: Transport, server: SecAggServer, gateways: dict[int, str],
                 db: Database, metrics: Metrics | None = None,
                 offline_grace_s: float = 3.0) -> None:
        unknown = set(gateways) - set(server.enrolled)
        if unknown:
            raise InputError(f"participant ids without an enrolled key: {sorted(unknown)}")
        self.transport = transport
        self.server = server
        self.gateways = dict(gateways)
        self.pids = {gw: pid for pid, gw in gateways.items()}
        self.db = db
        self.metrics = metrics
        self.offline_grace_s = offline_grace_s
        self.root = transport.config.root
        self._stop = threading.Event()
        self._online_ids: set[str] = set()
        # One thread, so progress records are written in order.
        self._recorder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedgate-record")
        self._pending: list[Future[None]] = []
        transport.subscribe(topics.all_uplinks(self.root))
        transport.subscribe(topics.all_status(self.root))

    def run(self, round_no: int, participants: Sequence[int], *, stage_timeout_s: float,
            **config: Any) -> RoundOutcome:
        """Run round ``round_no`` with ``participants`` (pids); ``config`` goes to open_round."""
        selected = sorted(participants)
        try:
            opening = self.server.open_round(selected, **config)
        except FedgateError as exc:
            self._record(round_no, create=True, stage="aborted", outcome="aborted",
                         selected=len(selected), error=str(exc), ended=True)
            raise
        # Durable before the config goes out, so that an aggregator restarted mid-round can
        # tell the gateways it is over (recover_unfinished).
        self._record(round_no, create=True, stage="collect_keys", selected=len(selected),
                     config={"secagg_round_id": self.server.state.round_id.hex(),
                             "participants": selected})
        self._publish(round_no, 0, [opening], announce=True)
        offline: dict[int, float] = {}
        timings: dict[str, float] = {}
        stage_no = 0
        while self.server.state.stage in _OPEN:
            stage = self.server.state.stage
            started = time.monotonic()
            self._collect(round_no, selected, offline, started + stage_timeout_s)
            outbound = self.server.close_stage()
            timings[stage.value] = round(time.monotonic() - started, 6)
            stage_no += 1
            self._publish(round_no, stage_no, outbound)
            # Progress only (what /v1/rounds shows): written by the recorder thread, so that
            # the next stage's answers are not kept waiting behind a database commit.
            self._progress(round_no, stage=self.server.state.stage.value, timings=dict(timings))
        return self._finish(round_no, selected, timings)

    @property
    def online(self) -> set[int]:
        """Participant ids of the enrolled gateways whose last presence message said online."""
        return {pid for gw, pid in self.pids.items() if gw in self._online_ids}

    def set_gateways(self, gateways: dict[int, str], enrolled: dict[int, bytes]) -> None:
        """Refresh the enrolled fleet between rounds (new enrollments join the next round)."""
        self.server.enrolled = dict(enrolled)
        self.gateways = dict(gateways)
        self.pids = {gw: pid for pid, gw in gateways.items()}

    def idle(self, seconds: float) -> None:
        """Between rounds: follow presence; anything else that arrives is stale and counted."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stop.is_set():
            delivery = self.transport.receive(timeout=min(0.05, seconds))
            if delivery is not None:
                self._on_delivery(-1, delivery, {})

    def cancel(self) -> None:
        """Stop a running round at once, as a crash would (used by shutdown and tests)."""
        self._stop.set()

    def recover_unfinished(self) -> list[int]:
        """Abort the rounds a previous process left open: tell their gateways, record why.

        Secure-aggregation state (keys, shares, the masked sum) lives only in memory, so a round
        cannot resume after a restart; the gateways get a signed abort and join the next round.
        """
        with self.db.session() as session:
            open_rounds = list(session.scalars(select(Round).where(Round.ended_at.is_(None))))
            pending = [(r.id, r.stage, (r.config or {}).get("secagg_round_id"))
                       for r in open_rounds]
        recovered = []
        for round_no, stage, rid_hex in pending:
            reason = f"aggregator restarted during {stage or 'setup'}"
            if isinstance(rid_hex, str) and len(rid_hex) == 32:
                abort = wire.encode(wire.RoundResult(1, (), reason), bytes.fromhex(rid_hex), 0,
                                    self.server.identity)
                self.transport.publish(topics.broadcast(round_no, self.root), abort,
                                       round_id=round_no, sequence=(0xFF << 32) | _BROADCAST)
            self._record(round_no, stage="aborted", outcome="aborted", error=reason, ended=True)
            if self.metrics is not None:
                self.metrics.rounds.labels(outcome="aborted").inc()
            recovered.append(round_no)
        return recovered

    # -- stages --------------------------------------------------------------------------------

    def _expected(self, selected: list[int], offline: dict[int, float]) -> set[int]:
        st = self.server.state
        pool = {
            ServerStage.COLLECT_KEYS: set(selected),
            ServerStage.COLLECT_SHARES: set(st.advertised),
            ServerStage.COLLECT_MASKED: set(st.relayed),
            ServerStage.COLLECT_UNMASK: set(st.survivors),
        }[st.stage]
        cutoff = time.monotonic() - self.offline_grace_s
        return pool - {pid for pid, since in offline.items() if since <= cutoff}

    def _answered(self) -> set[int]:
        st = self.server.state
        answered: dict[ServerStage, set[int]] = {
            ServerStage.COLLECT_KEYS: set(st.advertised),
            ServerStage.COLLECT_SHARES: set(st.shares_in),
            ServerStage.COLLECT_MASKED: set(st.masked_from),
            ServerStage.COLLECT_UNMASK: set(st.unmask_in),
        }
        return answered[st.stage]

    def _collect(self, round_no: int, selected: list[int], offline: dict[int, float],
                 deadline: float) -> None:
        while time.monotonic() < deadline:
            if self._stop.is_set():
                raise RunnerStopped(f"round {round_no} interrupted")
            if self._expected(selected, offline) <= self._answered():
                return
            wait = min(0.05, max(0.0, deadline - time.monotonic()))
            delivery = self.transport.receive(timeout=wait)
            if delivery is not None:
                self._on_delivery(round_no, delivery, offline)

    def _on_delivery(self, round_no: int, delivery: Delivery,
                     offline: dict[int, float]) -> None:
        try:
            where = topics.parse(delivery.topic, self.root)
        except WireError:
            self._reject("bad_topic")
            return
        if where.kind == "status":
            # Presence is kept by gateway id: it may arrive before the enrollment is loaded.
            node = where.node_id or ""
            if delivery.payload == PRESENCE_OFFLINE:
                self._online_ids.discard(node)
                pid = self.pids.get(node)
                if pid is not None:
                    log.info("gateway %s went offline in round %d", node, round_no)
                    offline.setdefault(pid, time.monotonic())
            elif delivery.payload == PRESENCE_ONLINE:
                self._online_ids.add(node)
                pid = self.pids.get(node)
                if pid is not None:
                    offline.pop(pid, None)  # back after a network or broker outage
            return
        if where.kind != "up" or where.node_id != delivery.sender:
            self._reject("sender_mismatch")
            return
        if where.round_id != round_no or delivery.round_id != round_no:
            self._reject("wrong_round")
            return
        before = self.server.state.rejected.copy()
        try:
            self.server.receive(delivery.payload)
        except FedgateError as exc:
            # The core counts each rejection under its own label; export exactly that label.
            labels = list(self.server.state.rejected - before)
            self._reject(labels[0] if labels else type(exc).__name__)

    def _publish(self, round_no: int, stage_no: int, outbound: list[Outbound],
                 announce: bool = False) -> None:
        for out in outbound:
            recipient = _BROADCAST if out.recipient is None else out.recipient
            # Deterministic keys: a re-sent stage message is the same message to the receivers.
            sequence = (stage_no << 32) | recipient
            if announce:
                topic = topics.announce(self.root)
            elif out.recipient is None:
                topic = topics.broadcast(round_no, self.root)
            else:
                topic = topics.down(round_no, self.gateways[out.recipient], self.root)
            self.transport.publish(topic, out.payload, round_id=round_no, sequence=sequence,
                                   retain=announce)

    # -- bookkeeping ---------------------------------------------------------------------------

    def _progress(self, round_no: int, **fields: Any) -> None:
        self._pending.append(self._recorder.submit(self._record, round_no, **fields))

    def _drain(self) -> None:
        """Wait for the recorder; a failed progress write surfaces here."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def _finish(self, round_no: int, selected: list[int],
                timings: dict[str, float]) -> RoundOutcome:
        self._drain()  # the final record below must be the last word on this round
        st = self.server.state
        result = st.result if st.stage is ServerStage.DONE else None
        included = len(result.included) if result is not None else 0
        outcome = "completed" if result is not None else "aborted"
        self._record(round_no, stage=st.stage.value, outcome=outcome, ended=True,
                     participants=included, dropouts=len(selected) - included,
                     error=st.abort_reason or None, timings=timings)
        if self.metrics is not None:
            self.metrics.rounds.labels(outcome=outcome).inc()
        return RoundOutcome(round_no, result, len(selected), len(selected) - included,
                            st.abort_reason, timings)

    def _record(self, round_no: int, *, create: bool = False, ended: bool = False,
                **fields: Any) -> None:
        now = utcnow()
        with self.db.session() as session:
            row = session.get(Round, round_no)
            if row is None:
                if not create:
                    return
                row = Round(id=round_no, created_at=now, stage="", timings={})
                session.add(row)
            for name, value in fields.items():
                setattr(row, name, dict(value) if isinstance(value, dict) else value)
            row.updated_at = now
            if ended:
                row.ended_at = now

    def _reject(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.reject("secagg", reason)
