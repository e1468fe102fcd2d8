"""Fault injection: reproducible by seed, per device, and refused when misconfigured."""

from __future__ import annotations

from typing import Any

import pytest

from firmware_sim.devices import Device
from firmware_sim.faults import FaultConfig, LinkChannel, Window, device_rng
from firmware_sim.signals import SyntheticCardiacSource
from native.errors import ConfigError

LINK_FAULTS = dict(loss=0.1, duplicate=0.1, reorder=0.1, bit_flip=0.05, truncate=0.05)


def _stream(device_id: int, faults: FaultConfig) -> list[bytes]:
    return list(Device(device_id, SyntheticCardiacSource(seed=device_id), faults).run(30))


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    a = _stream(1, FaultConfig(seed=11, **LINK_FAULTS))
    b = _stream(1, FaultConfig(seed=11, **LINK_FAULTS))
    c = _stream(1, FaultConfig(seed=12, **LINK_FAULTS))
    assert a == b
    assert a != c


def test_faults_are_per_device() -> None:
    cfg = FaultConfig(seed=11, **LINK_FAULTS)
    a = Device(1, SyntheticCardiacSource(seed=1), cfg)
    b = Device(2, SyntheticCardiacSource(seed=1), cfg)
    list(a.run(30))
    list(b.run(30))
    assert a.link.counts != b.link.counts


def test_link_accounting() -> None:
    link = LinkChannel(FaultConfig(seed=3, **LINK_FAULTS), device_rng(3, 1, 1))
    frames = [bytes([i % 256]) * 64 for i in range(2000)]
    out = [f for frame in frames for f in link.transmit(frame)] + link.flush()
    c = link.counts
    assert c["sent"] == 2000
    assert len(out) == c["delivered"] == c["sent"] - c["lost"] + c["duplicated"]
    assert 150 < c["lost"] < 250 and c["reordered"] > 100
    # A truncated frame may also be duplicated, so it can arrive twice.
    short = sum(1 for f in out if len(f) < 64)
    assert c["truncated"] <= short <= c["truncated"] + c["duplicated"]


def test_clean_link_is_transparent() -> None:
    link = LinkChannel(FaultConfig(), device_rng(0, 0, 1))
    frames = [bytes([i]) * 8 for i in range(100)]
    assert [f for x in frames for f in link.transmit(x)] == frames


@pytest.mark.parametrize("bad", [
    dict(loss=1.5), dict(duplicate=-0.1), dict(reorder="x"), dict(reorder_max_delay=0),
    dict(clock_drift_ppm=10**6), dict(battery_life_s=0), dict(saturation_gain=0.5),
    dict(clock_jumps=((-1.0, 5),)),
])
def test_bad_fault_config(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        FaultConfig(**bad)


def test_from_mapping() -> None:
    cfg = FaultConfig.from_mapping({"loss": 0.05, "disconnects": [[10, 5]], "lead_off": [[1, 2]],
                                    "clock_jumps": [[3, -1000]], "seed": 4})
    assert cfg.disconnects == (Window(10.0, 5.0),) and not cfg.link_up(12.0) and cfg.link_up(15.0)
    assert cfg.lead_off_at(2.5) and not cfg.lead_off_at(3.0)
    for bad in ({"lose": 0.1}, {"disconnects": [[1]]}, {"disconnects": [[-1, 2]]}, [1, 2]):
        with pytest.raises(ConfigError):
            FaultConfig.from_mapping(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Window(0, 0)
