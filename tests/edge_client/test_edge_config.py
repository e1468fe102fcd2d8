"""Gateway configuration, identity, enrollment record, eligibility, model verification, local
data: every entry point fed garbage raises a clear error from the tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nacl.signing
import numpy as np
import pytest

from edge_client import eligibility
from edge_client.config import EligibilitySection, config_from_dict, load_config
from edge_client.enroll import MANIFEST_DOMAIN, verify_manifest
from edge_client.identity import (
    Enrollment,
    load_enrollment,
    load_or_create_identity,
    save_enrollment,
)
from edge_client.localdata import StoreData
from firmware_sim.simdata import fill_store, patient_spec
from native.errors import ConfigError, InputError, IntegrityError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_file_and_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, """
[gateway]
data_dir = "/srv/gw"
broker_url = "mqtt://broker:1883"
[training]
epochs = 3
class_weights = [1, 8, 3.5, 9.5]
[eligibility]
require_charging = true
""")
    cfg = load_config(path, env={"FEDGATE_GATEWAY__BROKER_URL": "mqtts://other:8883",
                                 "FEDGATE_TRAINING__LR": "0.01",
                                 "FEDGATE_ELIGIBILITY__REQUIRE_CHARGING": "no",
                                 "UNRELATED": "x"})
    assert cfg.gateway.broker_url == "mqtts://other:8883"
    assert cfg.gateway.data_dir == "/srv/gw" and cfg.data_dir == Path("/srv/gw")
    assert cfg.training.epochs == 3 and cfg.training.lr == 0.01
    assert cfg.training.class_weights == [1.0, 8.0, 3.5, 9.5]
    assert cfg.eligibility.require_charging is False
    assert load_config(None, env={}).policy.min_participants == 3


@pytest.mark.parametrize("text, needle", [
    ("[gateway\nbroker_url = 1", "not valid TOML"),
    ("\x00\x01", "not valid TOML"),
    ("[gatway]\n", "unknown config sections"),
    ("gateway = 3\n", "must be a table"),
    ("[gateway]\nbrokr_url = 'mqtt://x'\n", "unknown keys"),
    ("[gateway]\nbroker_url = 1883\n", "broker_url must be str"),
    ("[training]\nepochs = '2'\n", "epochs must be int"),
    ("[training]\nepochs = true\n", "epochs must be int"),
    ("[training]\nepochs = 2.5\n", "epochs must be int"),
    ("[training]\nclass_weights = ['a']\n", "class_weights must be"),
    ("[eligibility]\nrequire_charging = 1\n", "require_charging must be bool"),
    ("[gateway]\nbroker_url = 'http://x'\n", "broker_url"),
    ("[training]\nweighting = 'by-age'\n", "weighting must be"),
    ("[policy]\nmin_noise_multiplier = -1.0\n", "min_noise_multiplier"),
    ("[policy]\nmin_dp_threshold = 0\n", "min_dp_threshold"),
    ("[gateway]\naggregator_url = 'ftp://x'\n", "aggregator_url"),
    ("[gateway]\ntopic_root = 'a/+/b'\n", "topic_root"),
    ("[training]\nepochs = 0\n", "epochs must be 1..100"),
    ("[training]\nlr = -1.0\n", "lr"),
    ("[policy]\nmin_quant_bits = 9\nmax_quant_bits = 8\n", "quant_bits"),
    ("[eligibility]\nmin_battery_pct = 120\n", "min_battery_pct"),
])
def test_garbage_file_is_a_config_error(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("+", r"\+")):
        load_config(write(tmp_path, text), env={})


@pytest.mark.parametrize("env, needle", [
    ({"FEDGATE_TRAINING__EPOCHS": "two"}, "FEDGATE_TRAINING__EPOCHS"),
    ({"FEDGATE_TRAINING__LR": "fast"}, "FEDGATE_TRAINING__LR"),
    ({"FEDGATE_ELIGIBILITY__REQUIRE_CHARGING": "maybe"}, "not a boolean"),
    ({"FEDGATE_GATEWAY__NOPE": "1"}, "has no key 'nope'"),
    ({"FEDGATE_GATEWAY__BROKER_URL": "tcp://x"}, "broker_url"),
    ({"FEDGATE_TRAINING__CLASS_WEIGHTS": "1,x"}, "CLASS_WEIGHTS"),
])
def test_garbage_environment_is_a_config_error(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        config_from_dict({}, env)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml", env={})


def test_identity_is_created_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "state" / "identity.key"
    key = load_or_create_identity(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert bytes(load_or_create_identity(path)) == bytes(key)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o666])
def test_identity_with_wider_mode_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "identity.key"
    load_or_create_identity(path)
    os.chmod(path, mode)
    with pytest.raises(ConfigError, match="must not be readable"):
        load_or_create_identity(path)


def test_damaged_identity_and_enrollment_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"short")
    os.close(fd)
    with pytest.raises(IntegrityError, match="32-byte"):
        load_or_create_identity(path)
    (tmp_path / "dir.key").mkdir()
    with pytest.raises(ConfigError, match="regular file"):
        load_or_create_identity(tmp_path / "dir.key")
    assert load_enrollment(tmp_path) is None
    save_enrollment(tmp_path, Enrollment("gw-1", 7, "ab" * 32))
    assert load_enrollment(tmp_path) == Enrollment("gw-1", 7, "ab" * 32)
    for garbage in ("{", json.dumps({"gateway_id": "x"}),
                    json.dumps({"gateway_id": "x", "pid": 1, "aggregator_public_key": "00"})):
        (tmp_path / "enrollment.json").write_text(garbage)
        with pytest.raises(IntegrityError, match="damaged"):
            load_enrollment(tmp_path)


def test_eligibility_reasons() -> None:
    pol = EligibilitySection(min_new_samples=10, min_battery_pct=30, require_charging=False,
                             max_load_per_cpu=1.0)
    ok = eligibility.HostReadings(battery_pct=80, charging=False, load_per_cpu=0.2)
    assert eligibility.check(pol, 10, ok).eligible
    low = eligibility.HostReadings(battery_pct=10, charging=False, load_per_cpu=3.0)
    decision = eligibility.check(pol, 9, low)
    assert not decision.eligible and len(decision.reasons) == 3
    charging = eligibility.HostReadings(battery_pct=10, charging=True, load_per_cpu=0.0)
    assert eligibility.check(pol, 10, charging).eligible
    mains = eligibility.HostReadings(battery_pct=None, charging=False, load_per_cpu=0.0)
    strict = EligibilitySection(min_new_samples=0, require_charging=True)
    assert eligibility.check(strict, 0, mains).eligible  # no battery: nothing to charge


def test_host_readings_from_a_power_supply_tree(tmp_path: Path) -> None:
    bat, ac = tmp_path / "BAT0", tmp_path / "AC"
    bat.mkdir()
    ac.mkdir()
    (bat / "type").write_text("Battery\n")
    (bat / "capacity").write_text("42\n")
    (bat / "status").write_text("Discharging\n")
    (ac / "type").write_text("Mains\n")
    (ac / "online").write_text("0\n")
    host = eligibility.read_host(tmp_path)
    assert host.battery_pct == 42 and not host.charging and host.load_per_cpu >= 0
    (ac / "online").write_text("1\n")
    assert eligibility.read_host(tmp_path).charging
    (bat / "capacity").write_text("garbage")
    assert eligibility.read_host(tmp_path).battery_pct is None
    assert eligibility.read_host(tmp_path / "absent").battery_pct is None


def test_model_manifest_signature_is_checked() -> None:
    key = nacl.signing.SigningKey.generate()
    manifest = json.dumps({"format": "fedgate-model-manifest/1", "version": 2}).encode()
    sig = key.sign(MANIFEST_DOMAIN + manifest).signature
    assert verify_manifest(manifest, sig, bytes(key.verify_key))["version"] == 2
    other = nacl.signing.SigningKey.generate()
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_manifest(manifest, sig, bytes(other.verify_key))
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_manifest(manifest.replace(b"2", b"3"), sig, bytes(key.verify_key))
    with pytest.raises(IntegrityError):
        verify_manifest(manifest, sig[:10], bytes(key.verify_key))
    bad = b"[1]"
    with pytest.raises(IntegrityError, match="format"):
        verify_manifest(bad, key.sign(MANIFEST_DOMAIN + bad).signature, bytes(key.verify_key))


def test_store_data_comes_from_ingested_frames(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    assert StoreData(path).sample_count() == 0
    fill_store(path, patient_spec(0, 5, 60.0), 60.0)  # PVC and APC episodes: N, S, V beats
    data = StoreData(path)
    inputs, labels = data.dataset()
    assert inputs["beat"].shape == (labels.size, 128, 2) and inputs["rr"].shape == (labels.size, 5)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert 0 < labels.size <= data.sample_count()
    assert np.isfinite(inputs["beat"]).all()
    empty = tmp_path / "empty.sqlite"
    from edge_client.store import Store

    Store(empty).close()
    with pytest.raises(InputError, match="no ECG beats"):
        StoreData(empty).dataset()


def test_cli_rejects_a_bad_config(tmp_path: Path) -> None:
    bad = write(tmp_path, "[training]\nepochs = 'x'\n")
    proc = subprocess.run([sys.executable, "-m", "firmware_sim.cli", "gateway", "run",
                           "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "epochs must be int" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "firmware_sim.cli", "gateway", "run"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--config" in proc.stderr
