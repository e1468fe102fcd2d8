"""The MQTT device link's throughput: simulated wearables -> broker -> gateway store, per second.

Run from the repo root: ``python benchmarks/bench_device_link.py [--quick]``. One gateway with
10 simulated ECG patches (C firmware, 360 Hz, 90 samples per frame) streams 120 s of signal each
(``--quick``: 30 s), as fast as the gateway takes the frames. Each repetition times, in rotating
order, the same devices (same seeds, so the same frames) through:

- ``link_embedded``: ``DevicePublisher`` -> the embedded amqtt broker (what ``fedgate sim`` starts
  by default) -> ``DeviceLink`` -> SQLite store, until every frame is stored;
- ``link_mosquitto``: the same over a Mosquitto broker on loopback (when the binary is installed);
- ``peer_direct``: the same devices fed straight into ``Ingestor.feed`` in-process, no MQTT: the
  data path ``fedgate sim`` had before the device link.

Figures are medians of wall-clock seconds per batch, as frames/s. ``mqtt_cost_*`` is link time /
direct time (the cost of the MQTT hop); ``ratios`` follow the benchmarks' convention, peer time /
our time (below 1: the link is slower than feeding the store in-process, as it must be).
``realtime_ecg_devices_*`` is how many real-time ECG patches (4 frames/s + STATUS) that rate would
serve. The broker and the simulated devices share the machine with the gateway, so this is a floor
for a gateway whose wearables sit on their own radios. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info

from edge_client.device_link import DeviceLink, LinkConfig
from edge_client.ingest import Ingestor
from edge_client.store import Store
from firmware_sim.devices import Device
from firmware_sim.publisher import DevicePublisher
from firmware_sim.signals import SyntheticCardiacSource
from native.broker import EmbeddedBroker, MosquittoBroker, find_mosquitto

DEVICES = 10
STATUS_EVERY = 40


def fleet() -> list[Device]:
    return [Device(i + 1, SyntheticCardiacSource(hr_bpm=60 + 3 * i, seed=i),
                   status_every_frames=STATUS_EVERY) for i in range(DEVICES)]


def direct(seconds: float, tmp: Path) -> int:
    devices = fleet()
    with Store(tmp / "direct.sqlite") as store:
        ingestor = Ingestor(store)
        t = 0.0
        while t < seconds:
            for dev in devices:
                for frame in dev.step(0.5):
                    ingestor.feed(frame)
            t += 0.5
        for dev in devices:
            for frame in dev.finish():
                ingestor.feed(frame)
        ingestor.flush()
        return sum(store.counters().values())


def over_link(url: str, seconds: float, tmp: Path) -> int:
    devices = fleet()
    path = tmp / "link.sqlite"
    link = DeviceLink(url, path, LinkConfig(devices=frozenset(d.device_id for d in devices),
                                            silence_s=0.3))
    link.start()
    pub = DevicePublisher(url, devices)
    pub.start()
    try:
        pub.run(seconds, chunk_s=0.5, taken=link.handled)
        if not link.wait_idle(120):
            raise RuntimeError("the link did not catch up")
    finally:
        pub.stop()
        link.stop()
    with Store(path) as store:
        return sum(store.counters().values())


def clean(tmp: Path) -> None:
    for p in tmp.glob("*.sqlite*"):
        p.unlink()


@contextmanager
def brokers() -> Iterator[dict[str, str]]:
    urls: dict[str, str] = {}
    embedded = EmbeddedBroker()
    urls["link_embedded"] = embedded.start()
    mosquitto = MosquittoBroker() if find_mosquitto() else None
    if mosquitto is not None:
        urls["link_mosquitto"] = mosquitto.start()
    try:
        yield urls
    finally:
        embedded.stop()
        if mosquitto is not None:
            mosquitto.close()


def measure(cases: dict[str, Callable[[], int]], reps: int, tmp: Path
            ) -> tuple[dict[str, list[float]], dict[str, int]]:
    names = list(cases)
    times: dict[str, list[float]] = {n: [] for n in names}
    frames: dict[str, int] = {}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            t0 = time.perf_counter()
            frames[name] = cases[name]()
            times[name].append(time.perf_counter() - t0)
            clean(tmp)
    return times, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="30 s of signal, 1 repetition")
    args = parser.parse_args()
    seconds, reps = (30.0, 1) if args.quick else (120.0, 5)
    with tempfile.TemporaryDirectory() as folder, brokers() as urls:
        tmp = Path(folder)
        cases: dict[str, Callable[[], int]] = {"peer_direct": lambda: direct(seconds, tmp)}
        for name, url in urls.items():
            cases[name] = lambda url=url: over_link(url, seconds, tmp)  # type: ignore[misc]
        times, counts = measure(cases, reps, tmp)
    med = {k: statistics.median(v) for k, v in times.items()}
    n = counts["peer_direct"]
    per_device = 4 * (1 + 1 / STATUS_EVERY)
    figures: dict[str, Any] = {"devices": DEVICES, "signal_seconds": seconds,
                               "frames": n, "repetitions": reps}
    ratios: dict[str, float] = {}
    for name, t in med.items():
        figures[f"{name}_s"] = round(t, 4)
        figures[f"{name}_frames_per_s"] = round(counts[name] / t)
        figures[f"realtime_ecg_devices_{name}"] = int(counts[name] / t / per_device)
        if name != "peer_direct":
            per_rep = [a / b for a, b in zip(times[name], times["peer_direct"], strict=True)]
            figures[f"mqtt_cost_{name.removeprefix('link_')}"] = round(
                statistics.median(per_rep), 2)
            ratios[f"peer_direct_over_{name}"] = round(statistics.median(1 / r for r in per_rep), 3)
    figures["outcomes_equal"] = len(set(counts.values())) == 1
    print(json.dumps({"area": "device_link", "machine": machine_info(), "figures": figures,
                      "ratios": ratios}))


if __name__ == "__main__":
    main()
