"""Whether this gateway should take part in a round right now.

A round costs energy and CPU; a gateway on a dying battery, or one busy with its real job, should
sit it out, and one with too little new data would only add noise. Host readings come from
``/sys/class/power_supply`` (Linux) and ``os.getloadavg``; a simulator injects its own
``HostReadings`` instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_client.config import EligibilitySection

POWER_SUPPLY = Path("/sys/class/power_supply")


@dataclass(frozen=True)
class HostReadings:
    """What the gateway knows about itself. ``battery_pct`` None means mains powered."""

    battery_pct: float | None
    charging: bool
    load_per_cpu: float


@dataclass(frozen=True)
class Decision:
    eligible: bool
    reasons: tuple[str, ...]


def read_host(root: Path = POWER_SUPPLY) -> HostReadings:
    """Battery and charger state from sysfs, load from ``os.getloadavg`` (1-minute average)."""
    battery: float | None = None
    charging = False
    mains = False
    if root.is_dir():
        for supply in sorted(root.iterdir()):
            kind = _read(supply / "type")
            if kind == "Battery":
                capacity = _read(supply / "capacity")
                if capacity is not None and capacity.isdigit():
                    battery = float(capacity) if battery is None else min(battery, float(capacity))
                charging = charging or _read(supply / "status") in ("Charging", "Full")
            elif kind in ("Mains", "USB") and _read(supply / "online") == "1":
                mains = True
    load = os.getloadavg()[0] / max(1, os.cpu_count() or 1)
    return HostReadings(battery, charging or (mains and battery is not None), load)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def check(policy: EligibilitySection, new_samples: int, host: HostReadings) -> Decision:
    """Every reason this gateway should skip the round (none: it takes part)."""
    reasons = []
    if new_samples < policy.min_new_samples:
        reasons.append(f"{new_samples} new samples < {policy.min_new_samples}")
    if host.battery_pct is not None:
        if host.battery_pct < policy.min_battery_pct and not host.charging:
            reasons.append(f"battery {host.battery_pct:.0f}% < {policy.min_battery_pct:.0f}%")
        if policy.require_charging and not host.charging:
            reasons.append("not charging")
    if host.load_per_cpu > policy.max_load_per_cpu:
        reasons.append(f"load {host.load_per_cpu:.2f} per CPU > {policy.max_load_per_cpu}")
    return Decision(not reasons, tuple(reasons))


HostProbe = Callable[[], HostReadings]
