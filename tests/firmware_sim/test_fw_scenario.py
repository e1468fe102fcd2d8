"""Fleet scenario files: the shipped ones load, ids and names are assigned, and every kind of
garbage is a ConfigError that names the key."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.devices import build_device
from firmware_sim.scenario import (
    BUILT_IN,
    Dropout,
    Straggler,
    built_in_scenarios,
    load_scenario,
    parse_scenario,
)
from native.errors import ConfigError

BASE: dict[str, Any] = {
    "rounds": 3,
    "gateways": [
        {"name": "a", "devices": [{"kind": "ecg", "hr_bpm": 70, "episodes": [[10, 20, "pvc"]],
                                   "faults": {"loss": 0.05, "disconnects": [[5, 2]]}}]},
        {"name": "b", "count": 2, "devices": [{"kind": "ecg"}, {"kind": "acc",
                                                                 "schedule": [[30, "walk"]]}]},
    ],
    "dropouts": [{"round": 2, "gateway": "b-1", "stage": "shared"}],
    "stragglers": [{"round": 1, "gateway": "a", "delay_s": 2.5}],
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """BASE with the value at a dotted path (``gateways.0.devices.0.hr_bpm``) replaced; the
    value ``...`` deletes the key."""
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


def test_a_scenario_expands_counts_assigns_ids_and_seeds() -> None:
    sc = parse_scenario(BASE)
    assert [g.name for g in sc.gateways] == ["a", "b-1", "b-2"]
    ids = [d["id"] for g in sc.gateways for d in g.devices]
    assert ids == [1, 2, 3, 4, 5] and all(d["seed"] == d["id"] for g in sc.gateways
                                          for d in g.devices)
    assert sc.dropouts == (Dropout(2, "b-1", "shared", "kill", False),)
    assert sc.stragglers == (Straggler(1, "a", 2.5),)
    assert sc.rounds == 3 and sc.seconds is None
    for g in sc.gateways:
        for spec in g.devices:
            build_device(spec)  # every checked entry builds
    sc.check_rounds(3)
    with pytest.raises(ConfigError, match=r"round 2 .* has 1 rounds"):
        sc.check_rounds(1)


def test_explicit_ids_stay_and_the_rest_fill_around_them() -> None:
    data = with_change("gateways.0.devices.0.id", 2)
    sc = parse_scenario(data)
    assert [d["id"] for g in sc.gateways for d in g.devices] == [2, 1, 3, 4, 5]


@pytest.mark.parametrize("name", ["ward", "dropouts", "mitdb"])
def test_the_shipped_scenarios_load(name: str, mitdb_dir_or_none: Path | None) -> None:
    assert name in built_in_scenarios()
    if name == "mitdb":
        if mitdb_dir_or_none is None:
            pytest.skip("MIT-BIH records not present")
        sc = load_scenario(name, mitdb_dir_or_none)
        assert sc.holdout == ("208",) and all(
            Path(d["record"]).parent == mitdb_dir_or_none for g in sc.gateways
            for d in g.devices if d["kind"] == "mitdb")
        return
    sc = load_scenario(name)
    assert sc.source == str(BUILT_IN / f"{name}.toml")
    assert len(sc.gateways) >= 5 and sc.rounds is not None
    sc.check_rounds(sc.rounds)
    if name == "dropouts":
        assert len(sc.gateways) == 10 and len([d for d in sc.dropouts if d.round == 2]) == 3


@pytest.fixture
def mitdb_dir_or_none() -> Path | None:
    shared = Path(os.environ.get("FEDGATE_SHARED", Path(__file__).resolve().parents[3] / "shared"))
    path = shared / "data" / "mitdb"
    return path if (path / "101.hea").is_file() else None


GARBAGE = [
    # (dotted path, value, words the message must contain)
    ("rounds", "3", "rounds: expected an integer"),
    ("rounds", 0, "rounds: expected an integer in [1, 1000]"),
    ("rounds", True, "rounds: expected an integer"),
    ("seconds", 5, "seconds: expected a number in [30"),
    ("seconds", float("nan"), "seconds: expected a number"),
    ("colour", "red", "colour: unknown key (known: dropouts, gateways, "),
    ("gateways", ..., "gateways: missing"),
    ("gateways", {"name": "x"}, "gateways: expected a list of tables"),
    ("gateways", [BASE["gateways"][0]], "a fleet has 2..256 gateways, got 1"),
    ("gateways.0", "gw", "gateways[0]: expected a table"),
    ("gateways.0.name", "a b", "gateways[0].name: must match"),
    ("gateways.0.name", "b-1", "duplicate gateway names ['b-1']"),
    ("gateways.0.name", 7, "gateways[0].name: expected a non-empty string"),
    ("gateways.0.count", 0, "gateways[0].count: expected an integer in [1, 256]"),
    ("gateways.1.count", 300, "gateways[1].count"),
    ("gateways.0.devices", [], "gateways[0].devices: a gateway has 1..16 devices, got 0"),
    ("gateways.0.devices", [{"kind": "acc"}], "gateways[0].devices: no ecg or mitdb device"),
    ("gateways.0.devices.0", 3, "gateways[0].devices[0]: expected a table"),
    ("gateways.0.devices.0.kind", ..., "gateways[0].devices[0].kind: missing"),
    ("gateways.0.devices.0.kind", "eeg", "gateways[0].devices[0].kind: expected one of"),
    ("gateways.0.devices.0.hr_bpm", "fast", "gateways[0].devices[0].hr_bpm: expected a number"),
    ("gateways.0.devices.0.hr_bpm", 400, "gateways[0].devices[0].hr_bpm: expected a number in"),
    ("gateways.0.devices.0.record", "101", "gateways[0].devices[0].record: unknown key"),
    ("gateways.0.devices.0.id", -1, "gateways[0].devices[0].id: expected an integer"),
    ("gateways.0.devices.0.id", 2**32, "gateways[0].devices[0].id"),
    ("gateways.0.devices.0.seed", 1.5, "gateways[0].devices[0].seed"),
    ("gateways.0.devices.0.samples_per_frame", 481, "samples_per_frame"),
    ("gateways.0.devices.0.episodes", [[10, 20]], "episodes[0]: expected a list of 3 values"),
    ("gateways.0.devices.0.episodes", [[10, 20, "flutter"]], "episodes[0][2]: expected one of"),
    ("gateways.0.devices.0.episodes", [[-1, 20, "pvc"]], "episodes[0][0]: expected a number"),
    ("gateways.0.devices.0.episodes", "pvc", "episodes: expected a list"),
    ("gateways.0.devices.0.faults", [], "faults: expected a table"),
    ("gateways.0.devices.0.faults.loss", 1.5, "faults.loss: expected a number in [0.0, 1.0]"),
    ("gateways.0.devices.0.faults.loss", "high", "faults.loss: expected a number"),
    ("gateways.0.devices.0.faults.jitter", 1, "faults.jitter: unknown key"),
    ("gateways.0.devices.0.faults.reorder_max_delay", "4", "faults.reorder_max_delay"),
    ("gateways.0.devices.0.faults.disconnects", [[5, 0]], "disconnects[0][1]: expected a number"),
    ("gateways.0.devices.0.faults.battery_life_s", 0, "battery_life_s: expected a number"),
    ("gateways.0.devices.0.faults.clock_jumps", [[1, 2.5]], "clock_jumps[0][1]: expected an int"),
    ("gateways.1.devices.1.schedule", [[30, "swim"]], "gateways[1].devices[1].schedule[0][1]"),
    ("gateways.1.devices.1.hr_bpm", 60, "gateways[1].devices[1].hr_bpm: unknown key"),
    ("gateways.1.devices.0.id", 9, "gateways[1].count: a table with count > 1 cannot give"),
    ("dropouts", {"round": 1}, "dropouts: expected a list of tables"),
    ("dropouts.0.round", 0, "dropouts[0].round: expected an integer in [1, 1000]"),
    ("dropouts.0.gateway", "b", "dropouts[0].gateway: no gateway named 'b'"),
    ("dropouts.0.stage", "training", "dropouts[0].stage: expected one of advertised, shared"),
    ("dropouts.0.stage", ..., "dropouts[0].stage: missing"),
    ("dropouts.0.mode", "crash", "dropouts[0].mode: expected one of kill, stop"),
    ("dropouts.0.rejoin", "yes", "dropouts[0].rejoin: expected true or false"),
    ("dropouts.0.when", 1, "dropouts[0].when: unknown key"),
    ("stragglers.0.delay_s", 0, "stragglers[0].delay_s: expected a number in (0"),
    ("stragglers.0.delay_s", ..., "stragglers[0].delay_s: missing"),
    ("stragglers.0.gateway", "zz", "stragglers[0].gateway: no gateway named 'zz'"),
    ("holdout", "208", "holdout: expected a list"),
    ("holdout", [208], "holdout[0]: expected a non-empty string"),
]


@pytest.mark.parametrize("path, value, words", GARBAGE)
def test_garbage_is_a_config_error_naming_the_key(path: str, value: Any, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_scenario(with_change(path, value))
    assert words in str(exc.value)


def test_duplicate_ids_and_repeated_dropouts() -> None:
    data = with_change("gateways.0.devices.0.id", 4)
    data["gateways"][1]["count"] = 1
    data["gateways"][1]["devices"][0]["id"] = 4
    data["dropouts"][0]["gateway"] = "b"
    with pytest.raises(ConfigError, match="device id 4 is used twice"):
        parse_scenario(data)
    data = copy.deepcopy(BASE)
    data["dropouts"].append({"round": 3, "gateway": "b-1", "stage": "masked"})
    with pytest.raises(ConfigError, match=r"dropouts\[1\].*already leaves in round 2 for good"):
        parse_scenario(data)
    data["dropouts"][0]["rejoin"] = True
    assert len(parse_scenario(data).dropouts) == 2  # back after round 2, leaves again in 3
    data["dropouts"].append({"round": 3, "gateway": "b-1", "stage": "shared"})
    with pytest.raises(ConfigError, match="already leaves in round 3"):
        parse_scenario(data)


def test_mitdb_records_must_exist(tmp_path: Path) -> None:
    data = with_change("gateways.0.devices.0", {"kind": "mitdb", "record": "101"})
    with pytest.raises(ConfigError, match=r"gateways\[0\].devices\[0\].record: MIT-BIH record"):
        parse_scenario(data, record_dir=tmp_path)
    for ext in ("hea", "dat", "atr"):
        (tmp_path / f"101.{ext}").write_bytes(b"")
    sc = parse_scenario(data, record_dir=tmp_path)
    assert sc.gateways[0].devices[0]["record"] == str(tmp_path / "101")
    with pytest.raises(ConfigError, match="record: missing"):
        parse_scenario(with_change("gateways.0.devices.0", {"kind": "mitdb"}))


@pytest.mark.parametrize("content, words", [
    (b"rounds = ", "not valid TOML"),
    (b"[[gateways]\nname = 1", "not valid TOML"),
    (b"\xff\xfe\x00r", "not UTF-8"),
    (b"rounds = 2\n", "gateways: missing"),
    (b"rounds = 2\nrounds = 3\n", "not valid TOML"),
    (b"x" * (1 << 20 + 1), "bytes, at most"),
])
def test_garbage_files(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        load_scenario(path)
    assert words in str(exc.value) and str(path) in str(exc.value)


def test_missing_files_and_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file .*built-in scenarios: dropouts"):
        load_scenario(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="no such file"):
        load_scenario("../ward")
    with pytest.raises(ConfigError, match="no such file"):
        load_scenario(tmp_path)  # a folder
