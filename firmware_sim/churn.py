"""Dropouts and stragglers of a scenario, enacted on the running gateway daemons.

A dropout is real: the gateway's daemon leaves right after its protocol core has reached the
scenario's stage and that stage's reply has been acknowledged by the broker. ``mode = "kill"`` is
a power cut: paho's network thread stops and the TCP connection is torn down without a DISCONNECT,
so the broker publishes the gateway's last will (``offline``) as it would for a dead Raspberry Pi;
``mode = "stop"`` is a SIGTERM: ``GatewayDaemon.stop()``, which says ``offline`` itself. A straggler
trains for real, after the scenario's extra delay, so it reaches the masked-input stage late (or
after the aggregator's deadline, and then it is a dropout too).

``ScenarioDriver`` runs the rounds like ``RoundDriver``, arming each round's events first and
checking afterwards that the round's outcome matches them: a gateway that left before sending its
masked input is not in the aggregate, one that left after is, and the aggregate is exact over the
survivors either way (``RoundDriver.exact``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edge_client.daemon import GatewayDaemon
from edge_client.localdata import Inputs, LocalData
from firmware_sim.rounds import RoundDriver
from firmware_sim.scenario import Dropout, Scenario, Straggler
from native.errors import TransportError

if TYPE_CHECKING:
    from firmware_sim.sim import AggregatorService, Fleet, SimConfig

log = logging.getLogger(__name__)

_BEFORE_MASKED_INPUT = ("advertised", "shared")


class DelayedData:
    """A gateway's local data whose training starts ``delay_s`` late (a straggler's slow CPU)."""

    def __init__(self, inner: LocalData) -> None:
        self.inner = inner
        self.delay_s = 0.0
        self._cancel = threading.Event()

    def sample_count(self) -> int:
        return self.inner.sample_count()

    def dataset(self) -> tuple[Inputs, npt.NDArray[np.int64]]:
        # Called on the daemon's training thread, so the protocol keeps running meanwhile.
        if self.delay_s > 0:
            self._cancel.wait(self.delay_s)
        return self.inner.dataset()

    def cancel(self) -> None:
        self._cancel.set()


@dataclass(frozen=True)
class _Leave:
    stage: str
    mode: str


class SimGateway(GatewayDaemon):
    """A gateway daemon that can be told to leave at a protocol stage of the next round."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._leave: _Leave | None = None
        self.left_in: int | None = None
        self.left_stage = ""

    def arm(self, stage: str, mode: str) -> None:
        self._leave = _Leave(stage, mode)

    def disarm(self) -> None:
        self._leave = None

    def _publish(self, round_no: int, replies: list[bytes]) -> None:
        super()._publish(round_no, replies)
        plan = self._leave
        if plan is None or self.core is None or self.core.state.stage.value != plan.stage:
            return
        self._leave = None
        self.left_in, self.left_stage = round_no, plan.stage
        self._await_acks(5.0)  # the stage's reply is out: the aggregator saw the stage
        log.info("gateway %s leaves round %d after %s (%s)", self.gateway_id, round_no,
                 plan.stage, plan.mode)
        if plan.mode == "kill":
            self._power_cut()
        self.stop()

    def _await_acks(self, timeout: float) -> None:
        client = self.transport._client if self.transport is not None else None
        deadline = time.monotonic() + timeout
        # paho keeps a QoS 1 message in _out_messages until its PUBACK arrives.
        while client is not None and client._out_messages and time.monotonic() < deadline:
            time.sleep(0.005)

    def _power_cut(self) -> None:
        transport, self.transport = self.transport, None  # nothing is sent after a power cut
        if transport is None:
            return
        client = transport._client
        client.loop_stop()
        sock = client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):  # already reset by the peer
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class ScenarioDriver(RoundDriver):
    """``RoundDriver`` plus the scenario's dropouts and stragglers, round by round."""

    def __init__(self, agg: AggregatorService, fleet: Fleet, cfg: SimConfig, broker_url: str,
                 holdout: Any, scenario: Scenario) -> None:
        super().__init__(agg, fleet, cfg, broker_url, holdout)
        self.fleet: Fleet = fleet
        self.scenario = scenario
        self.round_index = 0
        self._included: tuple[int, ...] = ()

    def exact(self, round_no: int, result: Any) -> bool:
        self._included = tuple(result.included)  # who the aggregate is over, for the report
        return super().exact(round_no, result)

    def run_round(self) -> dict[str, Any]:
        self.round_index += 1
        k = self.round_index
        drops = [d for d in self.scenario.dropouts if d.round == k]
        slow = [s for s in self.scenario.stragglers if s.round == k]
        for d in drops:
            self.fleet.gateway(d.gateway).arm(d.stage, d.mode)
        for s in slow:
            self.fleet.data_of(s.gateway).delay_s = s.delay_s
        self._included = ()
        try:
            row = super().run_round()
            row["included"] = sorted(self._included)
        finally:
            for d in drops:
                self.fleet.gateway(d.gateway).disarm()
            for s in slow:
                self.fleet.data_of(s.gateway).delay_s = 0.0
        if drops or slow:
            row["scenario"] = self._events(row, drops, slow)
        for d in drops:
            if d.rejoin:
                self._rejoin(d.gateway)
        return row

    def _events(self, row: dict[str, Any], drops: list[Dropout], slow: list[Straggler]
                ) -> dict[str, Any]:
        included = set(row["included"])
        out: dict[str, Any] = {"dropouts": [], "stragglers": []}
        ok = True
        for d in drops:
            gw = self.fleet.gateway(d.gateway)
            pid = gw.enrollment.pid if gw.enrollment else -1
            left = gw.left_in == row["round"]
            counted = pid in included
            want = d.stage not in _BEFORE_MASKED_INPUT
            ok &= left and (row["outcome"] != "completed" or counted == want)
            out["dropouts"].append({"gateway": d.gateway, "pid": pid, "stage": d.stage,
                                    "mode": d.mode, "left": left, "in_aggregate": counted})
        for s in slow:
            gw = self.fleet.gateway(s.gateway)
            pid = gw.enrollment.pid if gw.enrollment else -1
            out["stragglers"].append({"gateway": s.gateway, "pid": pid, "delay_s": s.delay_s,
                                      "in_aggregate": pid in included})
        out["as_planned"] = bool(ok)
        return out

    def _rejoin(self, name: str) -> None:
        """Start the gateway again from its data folder, as its service manager would."""
        gw = self.fleet.restart(name)
        pid = gw.enrollment.pid if gw.enrollment else -1
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            self.runner.idle(0.2)
            if pid in self.runner.online:
                return
        raise TransportError(f"gateway {name} did not come back online after restarting")
