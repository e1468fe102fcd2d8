"""Gateway daemons against a real Mosquitto and the real aggregator over HTTP: rounds with a
gateway process killed mid-round, a broker restart between rounds, and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_client.localdata import StoreData
from firmware_sim.rounds import RoundDriver
from firmware_sim.sim import AggregatorService, Fleet, SimConfig, gateway_config
from firmware_sim.simdata import fill_store, patient_spec
from native import topics
from native.broker import MosquittoBroker, find_mosquitto
from native.transport import PRESENCE_OFFLINE, PRESENCE_ONLINE, Transport, TransportConfig

SECONDS = 60.0


@dataclass
class Deployment:
    broker: MosquittoBroker
    agg: AggregatorService
    workdir: Path
    cfg: SimConfig


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not installed")
    workdir = tmp_path
    with MosquittoBroker() as broker:
        agg = AggregatorService(workdir, broker.url)
        agg.start()
        try:
            yield Deployment(broker, agg, workdir, SimConfig(out=workdir / "out", epochs=1))
        finally:
            agg.stop()


def toml_of(tables: dict[str, dict[str, Any]]) -> str:
    """Enough TOML for the gateway config tables (strings, numbers, lists of numbers)."""
    def value(v: Any) -> str:
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)
    return "".join(f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in body.items())
                   for name, body in tables.items())


def gateway_process(dep: Deployment, index: int, epochs: int) -> tuple[subprocess.Popen[str], Path]:
    """`fedgate gateway run --config FILE` as its own process, with a filled local store."""
    tables = gateway_config(index, dep.workdir, dep.broker.url, dep.agg, dep.cfg, 4)
    tables["training"]["epochs"] = epochs
    data_dir = Path(tables["gateway"]["data_dir"])
    data_dir.mkdir(parents=True, mode=0o700)
    fill_store(data_dir / "store.sqlite", patient_spec(index, 1, 2 * SECONDS), 2 * SECONDS)
    path = dep.workdir / f"gateway-{index}.toml"
    path.write_text(toml_of(tables))
    proc = subprocess.Popen([sys.executable, "-m", "firmware_sim.cli", "gateway", "run",
                             "--config", str(path)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, data_dir


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    """Lines of the process's stderr up to the first containing ``needle``."""
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if needle in line:
                done.set()
                return
    threading.Thread(target=read, daemon=True).start()
    assert done.wait(timeout), "".join(lines[-20:])
    return lines


def in_process_fleet(dep: Deployment, indices: range) -> Fleet:
    fleet = Fleet()
    for i in indices:
        tables = gateway_config(i, dep.workdir, dep.broker.url, dep.agg, dep.cfg, 4)
        data_dir = Path(tables["gateway"]["data_dir"])
        data_dir.mkdir(parents=True, mode=0o700)
        fill_store(data_dir / "store.sqlite", patient_spec(i, 1, SECONDS), SECONDS)
        fleet.add(tables, StoreData(data_dir / "store.sqlite"))
    fleet.wait_ready(60)
    return fleet


@pytest.mark.parametrize("leave", ["kill", "sigterm"])
def test_gateway_leaving_mid_round_is_a_dropout_and_the_sum_stays_exact(
        deployment: Deployment, leave: str) -> None:
    """SIGKILL (power cut: the broker sends the last will) or SIGTERM (the daemon says offline
    itself and exits 0) after the gateway advertised its keys and before its masked update; then,
    after a kill, the broker restarts and the next round runs without anyone's help."""
    dep = deployment
    # The process gateway trains slowly, so the signal lands after its keys and before its update.
    victim, victim_dir = gateway_process(dep, 10, epochs=100)
    fleet = in_process_fleet(dep, range(3))
    driver: RoundDriver | None = None
    try:
        wait_for_line(victim, "ready", 60)
        holdout = StoreData(Path(fleet.daemons[0].config.data_dir) / "store.sqlite").dataset()
        driver = RoundDriver(dep.agg, fleet, dep.cfg, dep.broker.url, holdout)
        driver.start()
        first = driver.run_round()
        assert (first["outcome"], first["participants"], first["dropouts"]) == ("completed", 4, 0)
        victim_pid = int(json.loads((victim_dir / "enrollment.json").read_text())["pid"])

        rows: list[dict[str, Any]] = []
        previous = driver.server.state.round_id
        runner = threading.Thread(target=lambda: rows.append(driver.run_round()))  # type: ignore[union-attr]
        runner.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = driver.server.state
            if state.round_id != previous and victim_pid in state.advertised:
                break
            time.sleep(0.005)
        assert victim_pid not in driver.server.state.masked_from  # keys sent, update not
        if leave == "kill":
            victim.kill()
        else:
            victim.send_signal(signal.SIGTERM)
            assert victim.wait(30) == 0
        runner.join(60)
        second = rows[0]
        assert second["outcome"] == "completed", second
        assert (second["participants"], second["dropouts"]) == (3, 1)
        assert second["aggregate_exact"] is True  # exactly the survivors' quantized sum
        shown = json.loads(dep.agg.get(f"/v1/rounds/{second['round']}"))
        assert (shown["outcome"], shown["participants"], shown["dropouts"]) == ("completed", 3, 1)

        if leave == "sigterm":
            return
        dep.broker.restart()  # the gateways and the aggregator reconnect on their own
        third = driver.run_round()
        assert (third["outcome"], third["participants"]) == ("completed", 3)
        assert third["aggregate_exact"] is True
        assert third["model_version"] == second["model_version"] + 1
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.wait(10)
        if driver is not None:
            driver.transport.stop()
        fleet.stop()


def test_sigterm_stops_the_gateway_gracefully(deployment: Deployment) -> None:
    dep = deployment
    proc, data_dir = gateway_process(dep, 20, epochs=1)
    observer = Transport(TransportConfig.from_url(dep.broker.url, "observer", presence=False))
    try:
        wait_for_line(proc, "ready", 60)
        gw_id = json.loads((data_dir / "enrollment.json").read_text())["gateway_id"]
        observer.subscribe(topics.status(gw_id))
        observer.start()
        seen = []
        deadline = time.monotonic() + 10
        while PRESENCE_ONLINE not in seen and time.monotonic() < deadline:
            got = observer.receive(0.1)
            if got is not None:
                seen.append(got.payload)
        assert PRESENCE_ONLINE in seen
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        deadline = time.monotonic() + 10
        while PRESENCE_OFFLINE not in seen and time.monotonic() < deadline:
            got = observer.receive(0.1)
            if got is not None:
                seen.append(got.payload)
        assert seen[-1] == PRESENCE_OFFLINE  # said goodbye itself, before disconnecting
        assert (data_dir / "identity.key").stat().st_mode & 0o777 == 0o600
    finally:
        observer.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def round_stage(dep: Deployment, round_no: int) -> str:
    """The stage the aggregator's rounds table shows ("" before the round exists)."""
    import urllib.error

    try:
        return str(json.loads(dep.agg.get(f"/v1/rounds/{round_no}"))["stage"])
    except urllib.error.HTTPError:
        return ""


def test_aggregator_restart_mid_round_then_the_next_round_is_exact(
        deployment: Deployment) -> None:
    """The round process dies mid-round; its successor aborts the open round with a signed
    abort, the daemons drop it, and the next round runs with all of them."""
    from aggregator.round_runner import RunnerStopped
    from edge_client.secagg import GatewayStage

    dep = deployment
    fleet = in_process_fleet(dep, range(3))
    drivers: list[RoundDriver] = []
    try:
        holdout = StoreData(Path(fleet.daemons[0].config.data_dir) / "store.sqlite").dataset()
        first = RoundDriver(dep.agg, fleet, dep.cfg, dep.broker.url, holdout)
        drivers.append(first)
        first.start()
        failure: list[BaseException] = []

        def doomed() -> None:
            try:
                first.run_round()
            except BaseException as exc:
                failure.append(exc)
        thread = threading.Thread(target=doomed)
        thread.start()
        deadline = time.monotonic() + 30
        while round_stage(dep, 1) in ("", "collect_keys") and time.monotonic() < deadline:
            time.sleep(0.005)
        assert round_stage(dep, 1) in ("collect_shares", "collect_masked")  # mid-round
        first.runner.cancel()  # the aggregator's round process dies here
        thread.join(30)
        first.transport.stop()
        assert len(failure) == 1 and isinstance(failure[0], RunnerStopped)

        second = RoundDriver(dep.agg, fleet, dep.cfg, dep.broker.url, holdout)
        drivers.append(second)
        second.start()
        assert second.orch.recover() == [1]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
                d.core is not None and d.core.state.stage is not GatewayStage.ABORTED
                for d in fleet.daemons):
            time.sleep(0.05)
        assert all(d.core is not None and d.core.state.stage is GatewayStage.ABORTED
                   for d in fleet.daemons)
        row = second.run_round()
        assert (row["round"], row["outcome"], row["participants"]) == (2, "completed", 3)
        assert row["aggregate_exact"] is True and row["model_version"] == 2
        old = json.loads(dep.agg.get("/v1/rounds/1"))
        assert old["outcome"] == "aborted" and "restarted" in old["error"]
    finally:
        for driver in drivers:
            driver.transport.stop()
        fleet.stop()


def test_forged_and_garbage_announcements_do_not_disturb_a_round(deployment: Deployment) -> None:
    """Mid-round, a rogue client announces a newer round signed with the wrong key and sends
    junk on every gateway topic; the daemons count it as errors and finish the real round."""
    import nacl.signing

    from native import wire

    dep = deployment
    fleet = in_process_fleet(dep, range(3))
    rogue = Transport(TransportConfig.from_url(dep.broker.url, "rogue", presence=False))
    driver: RoundDriver | None = None
    try:
        holdout = StoreData(Path(fleet.daemons[0].config.data_dir) / "store.sqlite").dataset()
        driver = RoundDriver(dep.agg, fleet, dep.cfg, dep.broker.url, holdout)
        driver.start()
        rogue.start()
        rows: list[dict[str, Any]] = []
        runner = threading.Thread(target=lambda: rows.append(driver.run_round()))  # type: ignore[union-attr]
        runner.start()
        deadline = time.monotonic() + 30
        while round_stage(dep, 1) in ("", "collect_keys") and time.monotonic() < deadline:
            time.sleep(0.005)
        listed = tuple(wire.Participant(d.enrollment.pid, bytes(d.identity.verify_key))
                       for d in fleet.daemons if d.enrollment and d.identity)
        forged = wire.encode(wire.RoundConfig(2, 2, 8, 16, 1, 0.05, 10964, os.urandom(32),
                                              tuple(sorted(listed, key=lambda p: p.pid))),
                             os.urandom(16), 0, nacl.signing.SigningKey.generate())
        gw = fleet.daemons[0].gateway_id
        for seq, (topic, payload) in enumerate([
                (topics.announce(), forged), (topics.announce(), b"junk"),
                (topics.broadcast(1), b"\x01" * 300), (topics.down(1, gw), forged)]):
            assert rogue.publish(topic, payload, round_id=99 if seq == 0 else 1,
                                 sequence=seq).wait(5)
        runner.join(60)
        row = rows[0]
        assert (row["outcome"], row["participants"], row["aggregate_exact"]) == (
            "completed", 3, True)
        assert all(t.is_alive() for t in fleet.threads)
        deadline = time.monotonic() + 5  # the junk broadcast was seen and refused, not lost
        while time.monotonic() < deadline and not all(
                "WireError" in d.stats[1].error for d in fleet.daemons):
            time.sleep(0.05)
        assert all("WireError" in d.stats[1].error for d in fleet.daemons)
    finally:
        rogue.stop()
        if driver is not None:
            driver.transport.stop()
        fleet.stop()
