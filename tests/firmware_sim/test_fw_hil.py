"""Hardware-in-the-loop: the C firmware of simulated wearables, the MQTT device link, ingestion,
the gateway stores, training and secure aggregation, end to end.

1. a lossy, duplicating radio gives exactly the clean run's samples and beats wherever frames
   arrived (with and without resend repair);
2. a gateway whose wearable's battery dies mid-collection still takes part with what it has;
3. a fleet in which 30 % of the gateways leave mid-round (killed or stopped at three protocol
   stages) still produces exactly the survivors' aggregate, and a restarted one rejoins;
4. bit-flipped and truncated frames never reach the store, hence never the training data.

(2)-(4) share one fleet simulation (module fixture) to keep the suite's time down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_client.device_link import DeviceLink, LinkConfig
from edge_client.ingest import Ingestor
from edge_client.localdata import StoreData
from edge_client.store import Store
from firmware_sim.devices import build_device
from firmware_sim.publisher import DevicePublisher
from firmware_sim.sim import SimConfig, run_sim
from native.broker import EmbeddedBroker

pytestmark = pytest.mark.hil

SECONDS = 60
FLEET = f"""
rounds = 2
seconds = {SECONDS}

[[gateways]]
name = "home"
count = 6
[[gateways.devices]]
kind = "ecg"
hr_bpm = 72
episodes = [[10, 25, "pvc"]]
faults = {{ loss = 0.02 }}

[[gateways]]
name = "battery"                 # the patch dies 25 s into a 60 s collection
[[gateways.devices]]
kind = "ecg"
hr_bpm = 66
episodes = [[5, 15, "apc"]]
faults = {{ battery_life_s = 25 }}

[[gateways]]
name = "noisy"                   # a radio that corrupts frames
[[gateways.devices]]
kind = "ecg"
seed = 77
hr_bpm = 80
episodes = [[20, 30, "pvc"]]
faults = {{ bit_flip = 0.08, truncate = 0.04 }}

[[gateways]]
name = "afib"
count = 2
[[gateways.devices]]
kind = "ecg"
hr_bpm = 90
episodes = [[10, 30, "afib"]]

[[dropouts]]
round = 1
gateway = "home-2"
stage = "advertised"
mode = "kill"

[[dropouts]]
round = 1
gateway = "home-4"
stage = "shared"
mode = "stop"
rejoin = true

[[dropouts]]
round = 1
gateway = "afib-1"
stage = "masked"
mode = "kill"
"""


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("hil")
    path = folder / "fleet.toml"
    path.write_text(FLEET)
    cfg = SimConfig.from_scenario(path, out=folder / "out", holdout_patients=1, epochs=1)
    report = run_sim(cfg)
    report["_out"] = cfg.out
    return report


def stream(broker_url: str, tmp: Path, name: str, spec: dict[str, Any],
           resend_tries: int = 3) -> Path:
    """One device through the firmware, the MQTT device link and ingestion into a store."""
    path = tmp / f"{name}.sqlite"
    link = DeviceLink(broker_url, path, LinkConfig(devices=frozenset({spec["id"]}),
                                                   silence_s=0.3, resend_tries=resend_tries))
    link.start()
    pub = DevicePublisher(broker_url, [build_device(spec)])
    pub.start()
    try:
        pub.run(120.0, taken=link.handled, linger_s=0.8)
        assert link.wait_idle(20)
    finally:
        pub.stop()
        link.stop()
    return path


def samples_and_beats(path: Path, dev: int) -> tuple[dict[int, int], dict[int, tuple[str, int]]]:
    with Store(path) as store:
        idx, vals = store.signal(dev)
        beats = {s: (lb, aux) for s, lb, aux in store.beats(dev)}
    return dict(zip(idx.tolist(), vals[:, 0].tolist(), strict=True)), beats


def assert_same_wherever_arrived(clean: Path, other: Path, dev: int) -> int:
    """Every stored sample and beat equals the clean run's; a clean beat is missing only where
    its frame did not arrive. Returns how many beats are missing."""
    c_samples, c_beats = samples_and_beats(clean, dev)
    o_samples, o_beats = samples_and_beats(other, dev)
    assert o_samples.keys() <= c_samples.keys()
    assert all(c_samples[i] == v for i, v in o_samples.items())
    assert all(c_beats.get(s) == b for s, b in o_beats.items())
    missing = [s for s in c_beats if s not in o_beats]
    assert all(s not in o_samples for s in missing)
    with Store(clean) as a, Store(other) as b:  # training windows: a subset, byte for byte
        wa, la = a.beat_windows(dev, 90, 126)
        wb, lb = b.beat_windows(dev, 90, 126)
    rows = {(bytes(w), lab) for w, lab in zip(wa, la, strict=True)}
    assert all((bytes(w), lab) in rows for w, lab in zip(wb, lb, strict=True))
    return len(missing)


def test_loss_and_duplicates_give_the_clean_beats_wherever_frames_arrived(tmp_path: Path) -> None:
    spec = {"id": 31, "kind": "ecg", "seed": 31, "hr_bpm": 76,
            "episodes": [[20, 30, "pvc"], [70, 30, "apc"]]}
    lossy = {**spec, "faults": {"loss": 0.05, "duplicate": 0.05}}
    with EmbeddedBroker() as broker:
        clean = stream(broker.url, tmp_path, "clean", spec)
        repaired = stream(broker.url, tmp_path, "repaired", lossy)
        holes = stream(broker.url, tmp_path, "holes", lossy, resend_tries=0)
    with Store(holes) as store:
        counts, gaps = store.counters(31), store.gaps(31)
    assert counts["duplicate"] > 0 and len(gaps) > 5  # no repair: the losses stay holes
    assert assert_same_wherever_arrived(clean, holes, 31) > 0
    with Store(repaired) as store:
        counts, gaps = store.counters(31), store.gaps(31)
    assert counts["duplicate"] > 0 and counts.get("late", 0) + counts["accepted"] > 0
    # Resends can be lost too; three losses of one frame in a row (p ~ 1e-4) leave a gap.
    assert len(gaps) <= 1
    missing = assert_same_wherever_arrived(clean, repaired, 31)
    if not gaps:  # fully repaired: the training set is the clean one, beat for beat
        assert missing == 0
        (ci, cl), (ri, rl) = StoreData(clean).dataset(), StoreData(repaired).dataset()
        assert np.array_equal(cl, rl) and all(np.array_equal(ci[k], ri[k]) for k in ci)


def test_a_gateway_whose_wearable_dies_takes_part_with_what_it_has(
        fleet_run: dict[str, Any]) -> None:
    row = fleet_run["ingestion"]["battery"]
    (dev,) = row["devices"].values()
    assert dev["device"]["shutdown"] == 1 and dev["radio"]["state"] == "shutdown"
    assert dev["radio"]["battery_pct"] == 0 and 20 <= dev["radio"]["signal_s"] <= 30
    full = fleet_run["ingestion"]["home-1"]["beats"]
    assert 0 < row["beats"] < 0.6 * full  # what it recorded before the battery went
    store = fleet_run["_out"] / "work" / f"gateway-{fleet_run['gateways'].index('battery'):03d}"
    assert StoreData(store / "store.sqlite").sample_count() > 10
    pid = fleet_run["gateway_pids"]["battery"]
    for r in fleet_run["rounds"]:
        assert r["outcome"] == "completed" and r["aggregate_exact"] is True
        assert pid in r["included"]


def test_thirty_percent_leaving_mid_round_leave_the_exact_sum_of_the_survivors(
        fleet_run: dict[str, Any]) -> None:
    pids = fleet_run["gateway_pids"]
    first, second = fleet_run["rounds"]
    assert first["selected"] == 10 and first["outcome"] == "completed"
    assert first["aggregate_exact"] is True
    events = {d["gateway"]: d for d in first["scenario"]["dropouts"]}
    assert first["scenario"]["as_planned"] is True and all(e["left"] for e in events.values())
    # Keys only, or shares but no masked input: out. Masked input sent, then dead: in.
    assert set(first["included"]) == set(pids.values()) - {pids["home-2"], pids["home-4"]}
    assert first["participants"] == 8
    # The stopped one came back (its service manager restarted it); the killed ones did not.
    assert second["outcome"] == "completed" and second["aggregate_exact"] is True
    assert set(second["included"]) == set(pids.values()) - {pids["home-2"], pids["afib-1"]}


def test_corrupt_frames_never_reach_the_training_data(fleet_run: dict[str, Any],
                                                      tmp_path: Path) -> None:
    row = fleet_run["ingestion"]["noisy"]
    (dev_id, dev), = row["devices"].items()
    radio = dev["radio"]["link"]
    assert radio["bit_flipped"] > 5 and radio["truncated"] > 2
    rejected = row["unattributed_rejected"]
    assert rejected.get("crc", 0) >= 1 and sum(rejected.values()) >= radio["bit_flipped"]
    # The same patient streamed over a perfect radio: the reference for every stored byte.
    clean = tmp_path / "clean.sqlite"
    with Store(clean) as store:
        ingestor = Ingestor(store)
        device = build_device({"id": int(dev_id), "kind": "ecg", "seed": 77, "hr_bpm": 80,
                               "episodes": [[20, 30, "pvc"]]})
        for frame in device.run(SECONDS):
            ingestor.feed(frame)
        ingestor.flush()
    index = fleet_run["gateways"].index("noisy")
    noisy = fleet_run["_out"] / "work" / f"gateway-{index:03d}" / "store.sqlite"
    assert_same_wherever_arrived(clean, noisy, int(dev_id))
    pid = fleet_run["gateway_pids"]["noisy"]
    assert all(pid in r["included"] for r in fleet_run["rounds"])  # it trained on what is left
