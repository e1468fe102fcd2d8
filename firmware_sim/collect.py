"""The collection phase of ``fedgate sim``: every wearable streams into its gateway's store.

For each gateway of the scenario: its devices (``build_device``: signal source, faults, C firmware)
run on a ``DevicePublisher`` that publishes their frames on the broker, and the gateway's
``DeviceLink`` ingests them (validation, dedup, reorder, gaps, resend requests) into
``gateway-NNN/store.sqlite``, the store its daemon trains on. All gateways stream at once, each on
its own thread, as fast as their links take the frames. The figures returned are what the report
shows per gateway: frames published and lost on the radio, accepted, rejected by reason, gaps,
beats stored, resend traffic, battery.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_client.device_link import DeviceLink, LinkConfig, ingestion_figures
from edge_client.store import Store
from firmware_sim.devices import Device, build_device
from firmware_sim.publisher import DevicePublisher
from firmware_sim.scenario import GatewaySpec, Scenario
from firmware_sim.signals import MitbihSource
from firmware_sim.simdata import DEFAULT_SECONDS
from native.errors import FedgateError, TransportError

log = logging.getLogger(__name__)

# Tighter than a production gateway's: the simulated devices go quiet only when their run ends.
_SILENCE_S = 0.5
_LINGER_S = 1.0


def store_path(workdir: Path, index: int) -> Path:
    return workdir / f"gateway-{index:03d}" / "store.sqlite"


def signal_seconds(devices: list[Device], seconds: float | None) -> float:
    """What to stream: ``seconds`` if given, else 240 s, or a MIT-BIH record to its end."""
    if seconds is not None:
        return seconds
    records = [float(d.source.n_total) / d.source.sample_rate_hz for d in devices
               if isinstance(d.source, MitbihSource)]
    return max([DEFAULT_SECONDS, *records])


class _GatewayFeed:
    """One gateway's half of the collection: its link, its publisher, the thread that runs it."""

    def __init__(self, index: int, spec: GatewaySpec, workdir: Path, broker_url: str,
                 seconds: float | None) -> None:
        self.spec = spec
        self.path = store_path(workdir, index)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.devices = [build_device(d) for d in spec.devices]
        self.seconds = signal_seconds(self.devices, seconds)
        ids = frozenset(d.device_id for d in self.devices)
        self.link = DeviceLink(broker_url, self.path, LinkConfig(devices=ids, silence_s=_SILENCE_S))
        self.publisher = DevicePublisher(broker_url, self.devices)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"fedgate-radio-{index}",
                                       daemon=True)

    def start(self) -> None:
        self.link.start()
        self.publisher.start()
        self.thread.start()

    def _run(self) -> None:
        try:
            self.publisher.run(self.seconds, chunk_s=0.5, taken=self.link.handled,
                               linger_s=_LINGER_S)
        except BaseException as exc:  # re-raised on the caller's thread
            self.error = exc

    def finish(self, timeout: float) -> dict[str, Any]:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TransportError(f"gateway {self.spec.name}: its devices did not finish "
                                 f"streaming within {timeout:.0f} s")
        if self.error is not None:
            raise self.error
        self.link.wait_idle(30.0)
        self.publisher.stop()
        self.link.stop()
        return self.figures()

    def close(self) -> None:
        """Best-effort teardown after a failure elsewhere."""
        for stop in (self.publisher.stop, self.link.stop):
            try:
                stop()
            except (FedgateError, OSError):
                log.debug("teardown of %s", self.spec.name, exc_info=True)

    def figures(self) -> dict[str, Any]:
        sent = self.publisher.figures()
        with Store(self.path) as store:
            got = ingestion_figures(store, [d.device_id for d in self.devices])
        for dev_id, row in got["devices"].items():
            row["radio"] = sent["devices"][dev_id]
        got["resend_requests"] = {"sent_by_gateway": self.link.resends_sent, **sent["resend"]}
        got["signal_s"] = self.seconds
        got["beats"] = sum(row["beats"] for row in got["devices"].values())
        return got


def collect(scenario: Scenario, workdir: Path, broker_url: str, seconds: float | None,
            say: Callable[[str], None]) -> dict[str, Any]:
    """Stream every device into its gateway's store; per-gateway ingestion figures by name."""
    started = time.monotonic()
    feeds: list[_GatewayFeed] = []
    try:
        for i, spec in enumerate(scenario.gateways):
            feed = _GatewayFeed(i, spec, workdir, broker_url, seconds)
            feeds.append(feed)
            feed.start()
        longest = max(f.seconds for f in feeds)
        # Generous: a 30-minute record takes seconds here; this only stops a hung run.
        figures = {f.spec.name: f.finish(timeout=600.0 + longest) for f in feeds}
    except BaseException:
        for feed in feeds:
            feed.close()
        raise
    frames = sum(row["accepted"] for g in figures.values() for row in g["devices"].values())
    say(f"devices: {sum(len(s.devices) for s in scenario.gateways)} wearables on "
        f"{len(feeds)} gateways streamed {frames} frames over the MQTT device link in "
        f"{time.monotonic() - started:.1f} s")
    return figures
