"""Fleet scenarios: which gateways, which wearables on each, what goes wrong and when.

A scenario is a TOML file (read with ``tomllib``; the format is in docs/firmware.md)::

    rounds = 4                      # optional; --rounds overrides
    seconds = 120                   # signal each device streams; --seconds overrides

    [[gateways]]
    name = "home"                   # count > 1 makes home-1, home-2, ...
    count = 3
    [[gateways.devices]]
    kind = "ecg"                    # ecg | ppg | acc | mitdb, keys as in build_device
    episodes = [[30, 40, "pvc"]]
    faults = { loss = 0.05, duplicate = 0.05 }

    [[dropouts]]                    # a gateway leaves at a protocol stage of a round
    round = 2
    gateway = "home-3"
    stage = "shared"                # advertised | shared | masked | unmasked
    mode = "kill"                   # kill: power cut (the broker sends its will); stop: SIGTERM

    [[stragglers]]                  # a gateway whose training is slow in a round
    round = 3
    gateway = "home-1"
    delay_s = 5.0

``load_scenario`` checks everything before anything runs and raises ``ConfigError`` naming the key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_sim import device_schema as ds
from native.errors import ConfigError

MAX_GATEWAYS = 256
MAX_DEVICES = 16
STAGES = ("advertised", "shared", "masked", "unmasked")
MODES = ("kill", "stop")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,24}")
_MAX_FILE = 1 << 20
BUILT_IN = Path(__file__).parent / "scenarios"


@dataclass(frozen=True)
class GatewaySpec:
    """One gateway and the ``build_device`` specs of its wearables (ids assigned)."""

    name: str
    devices: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Dropout:
    round: int
    gateway: str
    stage: str
    mode: str = "kill"
    rejoin: bool = False   # restarted before the next round, as its service manager would


@dataclass(frozen=True)
class Straggler:
    round: int
    gateway: str
    delay_s: float


@dataclass(frozen=True)
class Scenario:
    gateways: tuple[GatewaySpec, ...]
    dropouts: tuple[Dropout, ...] = ()
    stragglers: tuple[Straggler, ...] = ()
    rounds: int | None = None
    seconds: float | None = None
    seed: int | None = None
    holdout: tuple[str, ...] = ()        # MIT-BIH records to evaluate on (else synthetic)
    source: str = "built-in"

    def check_rounds(self, rounds: int) -> None:
        """Every event must fall inside the run."""
        events: list[Dropout | Straggler] = [*self.dropouts, *self.stragglers]
        late = [e for e in events if e.round > rounds]
        if late:
            raise ConfigError(f"scenario {self.source}: an event in round {late[0].round} of "
                              f"gateway {late[0].gateway!r}, but the run has {rounds} rounds")


_TOP: dict[str, ds.Check] = {
    "rounds": ds.integer(1, 1000), "seconds": ds.number(30, ds.MAX_SECONDS),
    "seed": ds.integer(0, 2**31 - 1), "gateways": lambda v, w: v, "dropouts": lambda v, w: v,
    "stragglers": lambda v, w: v, "holdout": lambda v, w: v,
}


def built_in_scenarios() -> list[str]:
    return sorted(p.stem for p in BUILT_IN.glob("*.toml"))


def scenario_path(value: str | Path) -> Path:
    """A scenario file, or the name of one shipped in ``firmware_sim/scenarios``."""
    path = Path(value)
    if path.is_file():
        return path
    shipped = BUILT_IN / f"{value}.toml"
    if _NAME.fullmatch(str(value)) and shipped.is_file():
        return shipped
    raise ConfigError(f"scenario {str(value)!r}: no such file (built-in scenarios: "
                      f"{', '.join(built_in_scenarios())})")


def load_scenario(path: str | Path, record_dir: Path | None = None) -> Scenario:
    """Read and check a scenario file (or a built-in's name); MIT-BIH records resolve in
    ``record_dir``, else beside the file."""
    path = scenario_path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"scenario {path}: cannot read it: {exc.strerror or exc}") from None
    if len(raw) > _MAX_FILE:
        raise ConfigError(f"scenario {path}: {len(raw)} bytes, at most {_MAX_FILE}")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"scenario {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"scenario {path}: not valid TOML: {exc}") from None
    try:
        return parse_scenario(data, source=str(path), record_dir=record_dir or path.parent)
    except ConfigError as exc:
        raise ConfigError(f"scenario {path}: {exc}") from None


def parse_scenario(data: Mapping[str, Any], *, source: str = "scenario",
                   record_dir: Path | None = None) -> Scenario:
    """Check a scenario given as the tables ``tomllib`` returns."""
    top = ds.check_keys(ds.table(data, source), _TOP, "")
    gateways = _gateways(data.get("gateways"), record_dir)
    names = {g.name for g in gateways}
    dropouts = tuple(_dropout(e, f"dropouts[{i}]", names) for i, e in
                     enumerate(_list(data.get("dropouts", []), "dropouts")))
    stragglers = tuple(_straggler(e, f"stragglers[{i}]", names) for i, e in
                       enumerate(_list(data.get("stragglers", []), "stragglers")))
    _check_dropouts(dropouts)
    holdout = tuple(ds.text(32)(h, f"holdout[{i}]") for i, h in
                    enumerate(_list(data.get("holdout", []), "holdout")))
    if len(holdout) > 64:
        raise ds.fail("holdout", f"at most 64 records, got {len(holdout)}")
    return Scenario(gateways, dropouts, stragglers, top.get("rounds"), top.get("seconds"),
                    top.get("seed"), holdout, source)


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ds.fail(where, f"expected a list of tables ([[{where}]]), got {value!r:.60}")
    return value


_GATEWAY: dict[str, ds.Check] = {"name": ds.text(24), "count": ds.integer(1, MAX_GATEWAYS),
                                 "devices": lambda v, w: v}


def _gateways(value: Any, record_dir: Path | None) -> tuple[GatewaySpec, ...]:
    if value is None:
        raise ConfigError("gateways: missing: a scenario needs [[gateways]] tables")
    out: list[GatewaySpec] = []
    for i, entry in enumerate(_list(value, "gateways")):
        where = f"gateways[{i}]"
        gw = ds.check_keys(ds.table(entry, where), _GATEWAY, where)
        name = gw.get("name", f"gw{i + 1}")
        if not _NAME.fullmatch(name):
            raise ds.fail(f"{where}.name", f"must match [A-Za-z0-9_-]{{1,24}}, got {name!r}")
        devices = _list(gw.get("devices", []), f"{where}.devices")
        if not 1 <= len(devices) <= MAX_DEVICES:
            raise ds.fail(f"{where}.devices", f"a gateway has 1..{MAX_DEVICES} devices, "
                                              f"got {len(devices)}")
        specs = [ds.check_device(d, f"{where}.devices[{k}]", record_dir)
                 for k, d in enumerate(devices)]
        if not any(s["kind"] in ("ecg", "mitdb") for s in specs):
            raise ds.fail(f"{where}.devices", "no ecg or mitdb device: the ECG model would "
                                              "have nothing to train on")
        count = gw.get("count", 1)
        if count > 1 and any("id" in spec for spec in specs):
            raise ds.fail(f"{where}.count", "a table with count > 1 cannot give device ids "
                                            "(every copy would reuse them)")
        for copy in range(count):
            label = name if count == 1 else f"{name}-{copy + 1}"
            out.append(GatewaySpec(label, tuple(dict(s) for s in specs)))
    if not 2 <= len(out) <= MAX_GATEWAYS:
        raise ConfigError(f"gateways: a fleet has 2..{MAX_GATEWAYS} gateways, got {len(out)}")
    seen = [g.name for g in out]
    dup = sorted({n for n in seen if seen.count(n) > 1})
    if dup:
        raise ConfigError(f"gateways: duplicate gateway names {dup}")
    return _assign_ids(out)


def _assign_ids(gateways: list[GatewaySpec]) -> tuple[GatewaySpec, ...]:
    """Explicit ids stay; the others get the lowest free ones. Seeds default to the id, so the
    copies made by ``count`` are different patients."""
    owner: dict[int, str] = {}
    for g in gateways:
        for d in g.devices:
            if "id" in d:
                if d["id"] in owner:
                    raise ConfigError(f"gateways: device id {d['id']} is used twice "
                                      f"({owner[d['id']]} and {g.name})")
                owner[d["id"]] = g.name
    next_id = 1
    for g in gateways:
        for d in g.devices:
            if "id" not in d:
                while next_id in owner:
                    next_id += 1
                d["id"] = next_id
                owner[next_id] = g.name
            d.setdefault("seed", d["id"])
    return tuple(gateways)


_EVENT: dict[str, ds.Check] = {"round": ds.integer(1, 1000), "gateway": ds.text(24)}
_DROPOUT = {**_EVENT, "stage": ds.choice(STAGES), "mode": ds.choice(MODES),
            "rejoin": ds.boolean}
_STRAGGLER = {**_EVENT, "delay_s": ds.number(0, 3600, open_lo=True)}


def _required(event: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        if key not in event:
            raise ds.fail(f"{where}.{key}", "missing")


def _known_gateway(event: dict[str, Any], where: str, names: set[str]) -> None:
    if event["gateway"] not in names:
        raise ds.fail(f"{where}.gateway", f"no gateway named {event['gateway']!r} "
                                          f"(have {', '.join(sorted(names)[:8])}...)")


def _dropout(value: Any, where: str, names: set[str]) -> Dropout:
    ev = ds.check_keys(ds.table(value, where), _DROPOUT, where)
    _required(ev, ("round", "gateway", "stage"), where)
    _known_gateway(ev, where, names)
    return Dropout(ev["round"], ev["gateway"], ev["stage"], ev.get("mode", "kill"),
                   ev.get("rejoin", False))


def _straggler(value: Any, where: str, names: set[str]) -> Straggler:
    ev = ds.check_keys(ds.table(value, where), _STRAGGLER, where)
    _required(ev, ("round", "gateway", "delay_s"), where)
    _known_gateway(ev, where, names)
    return Straggler(ev["round"], ev["gateway"], ev["delay_s"])


def _check_dropouts(dropouts: tuple[Dropout, ...]) -> None:
    """A gateway leaves at most once per round, and not again while it is gone."""
    gone: dict[str, int] = {}
    for i, d in sorted(enumerate(dropouts), key=lambda p: p[1].round):
        if d.gateway in gone and (gone[d.gateway] == d.round or gone[d.gateway] < 0):
            raise ds.fail(f"dropouts[{i}]", f"gateway {d.gateway!r} already leaves in round "
                                            f"{abs(gone[d.gateway])}"
                                            + ("" if gone[d.gateway] > 0 else " for good"))
        gone[d.gateway] = d.round if d.rejoin else -d.round
