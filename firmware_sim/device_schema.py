"""Validation of one wearable entry of a fleet scenario (and of its faults), key by key.

``check_device(table, where)`` returns a clean spec for ``firmware_sim.devices.build_device`` or
raises ``ConfigError`` naming the offending key by its path in the file, e.g.
``gateways[2].devices[0].faults.loss: expected a number in [0, 1], got "high"``. TOML's types are
kept strict: a string where a number belongs is an error, never converted; a boolean is not a
number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from native.errors import ConfigError

Check = Callable[[Any, str], Any]

KINDS = ("ecg", "ppg", "acc", "mitdb")
EPISODES = ("pvc", "apc", "afib", "tachy", "brady")
ACTIVITIES = ("rest", "walk", "run", "sleep")
MAX_SECONDS = 7 * 86400.0


def fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def integer(lo: int, hi: int) -> Check:
    def check(value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise fail(where, f"expected an integer in [{lo}, {hi}], got {_shown(value)}")
        return value
    return check


def number(lo: float, hi: float, *, open_lo: bool = False) -> Check:
    def check(value: Any, where: str) -> float:
        ok = (not isinstance(value, bool) and isinstance(value, int | float)
              and math.isfinite(value) and (lo < value if open_lo else lo <= value) and value <= hi)
        if not ok:
            bound = f"({lo}, {hi}]" if open_lo else f"[{lo}, {hi}]"
            raise fail(where, f"expected a number in {bound}, got {_shown(value)}")
        return float(value)
    return check


def choice(options: tuple[str, ...]) -> Check:
    def check(value: Any, where: str) -> str:
        if not isinstance(value, str) or value not in options:
            raise fail(where, f"expected one of {', '.join(options)}, got {_shown(value)}")
        return value
    return check


def text(max_len: int = 4096) -> Check:
    def check(value: Any, where: str) -> str:
        if not isinstance(value, str) or not 0 < len(value) <= max_len:
            raise fail(where, f"expected a non-empty string, got {_shown(value)}")
        return value
    return check


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise fail(where, f"expected true or false, got {_shown(value)}")
    return value


def tuples(*items: Check, max_len: int = 1000) -> Check:
    """A list of fixed-length lists, e.g. windows ``[[start_s, duration_s], ...]``."""
    def check(value: Any, where: str) -> list[list[Any]]:
        if not isinstance(value, list) or len(value) > max_len:
            raise fail(where, f"expected a list (at most {max_len} entries), got {_shown(value)}")
        out = []
        for i, entry in enumerate(value):
            if not isinstance(entry, list) or len(entry) != len(items):
                raise fail(f"{where}[{i}]", f"expected a list of {len(items)} values, "
                                            f"got {_shown(entry)}")
            out.append([c(v, f"{where}[{i}][{j}]") for j, (c, v) in
                        enumerate(zip(items, entry, strict=True))])
        return out
    return check


def table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise fail(where, f"expected a table, got {_shown(value)}")
    return value


def check_keys(value: Mapping[str, Any], allowed: Mapping[str, Check], where: str
               ) -> dict[str, Any]:
    """Every key known and well-typed; returns the checked values."""
    out = {}
    for key, item in value.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in allowed:
            raise fail(path, f"unknown key (known: {', '.join(sorted(allowed))})")
        out[key] = allowed[key](item, path)
    return out


_WINDOWS = tuples(number(0, MAX_SECONDS), number(0, MAX_SECONDS, open_lo=True))
_FAULTS: dict[str, Check] = {
    **{p: number(0.0, 1.0) for p in ("loss", "duplicate", "reorder", "bit_flip", "truncate")},
    "reorder_max_delay": integer(1, 1000), "bit_flip_max_bits": integer(1, 64),
    "disconnects": _WINDOWS, "saturation": _WINDOWS, "lead_off": _WINDOWS,
    "clock_drift_ppm": integer(-100_000, 100_000),
    "clock_jumps": tuples(number(0, MAX_SECONDS), integer(-(2**40), 2**40)),
    "battery_life_s": number(0, MAX_SECONDS, open_lo=True),
    "saturation_gain": number(1.0, 1000.0),
}

_COMMON: dict[str, Check] = {
    "kind": choice(KINDS), "id": integer(0, 2**32 - 1), "seed": integer(0, 2**32 - 1),
    "faults": table, "samples_per_frame": integer(1, 480),
}
_BY_KIND: dict[str, dict[str, Check]] = {
    "ecg": {"hr_bpm": number(20, 250), "hrv": number(0, 0.3),
            "episodes": tuples(number(0, MAX_SECONDS), number(0, MAX_SECONDS, open_lo=True),
                               choice(EPISODES)),
            "sample_rate_hz": integer(50, 10_000)},
    "acc": {"schedule": tuples(number(0, MAX_SECONDS, open_lo=True), choice(ACTIVITIES)),
            "sample_rate_hz": integer(1, 1000)},
    "mitdb": {"record": text(), "lead": text(16)},
}
_BY_KIND["ppg"] = _BY_KIND["ecg"]


def check_faults(value: Any, where: str) -> dict[str, Any]:
    """A device's fault table, typed and range-checked (``FaultConfig.from_mapping`` form)."""
    from firmware_sim.faults import FaultConfig

    faults = check_keys(table(value, where), _FAULTS, where)
    try:
        FaultConfig.from_mapping(faults)  # the cross-field rules live there
    except ConfigError as exc:
        raise fail(where, str(exc)) from None
    return faults


def check_device(value: Any, where: str, record_dir: Path | None = None) -> dict[str, Any]:
    """A clean ``build_device`` spec from one device table (``id`` may still be missing).

    ``record_dir`` resolves a ``mitdb`` device's ``record`` given as a bare record name."""
    entry = table(value, where)
    if "kind" not in entry:
        raise fail(f"{where}.kind", f"missing (one of {', '.join(KINDS)})")
    kind = choice(KINDS)(entry["kind"], f"{where}.kind")
    spec = check_keys(entry, {**_COMMON, **_BY_KIND[kind]}, where)
    if "faults" in spec:
        spec["faults"] = check_faults(spec["faults"], f"{where}.faults")
    if kind == "mitdb":
        if "record" not in spec:
            raise fail(f"{where}.record", "missing: a mitdb device streams a MIT-BIH record")
        spec["record"] = str(resolve_record(spec["record"], record_dir, f"{where}.record"))
    return spec


def resolve_record(record: str, record_dir: Path | None, where: str) -> Path:
    """A record name in ``record_dir`` or a path (without extension) whose files exist."""
    path = Path(record)
    if not path.is_absolute() and record_dir is not None:
        path = record_dir / path
    missing = [ext for ext in ("hea", "dat", "atr") if not path.with_suffix(f".{ext}").is_file()]
    if missing:
        raise fail(where, f"MIT-BIH record {str(path)!r} has no {', '.join(missing)} file "
                          "(give --data-dir or a path)")
    return path
