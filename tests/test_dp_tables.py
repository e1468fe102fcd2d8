"""benchmarks/dp_tables.py: the in-memory DP round is exact, the ledger agrees with an
independent accountant, the noise calibration hits its target, the fleet cache is reused, and
garbage flags end with a clear error before anything runs."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from dp_accounting import dp_event, rdp

from native import dp_params, mask, quant, rotation, wire
from native.errors import ConfigError, InputError

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _dp_data  # noqa: E402
import _dp_rounds  # noqa: E402
import dp_tables  # noqa: E402

D = 10_964  # the ECG model's parameter count


@pytest.fixture(scope="module")
def tiny_fleet(tmp_path_factory: pytest.TempPathFactory) -> _dp_data.Scenario:
    """Four synthetic gateways (45 s of signal each) and one held-out patient."""
    cache = tmp_path_factory.mktemp("cache")
    return _dp_data.fleet_scenario(cache, 4, 1, 3, 45.0, lambda _line: None)


@pytest.fixture(scope="module")
def ecg() -> tuple[object, np.ndarray]:
    from models import artifacts, graph

    art = artifacts.ensure("ecg")
    return art, graph.flatten(art.spec, graph.initial_params(art.spec)).astype(np.float32)


def _independent_levels(cfg: wire.RoundConfig, round_id: bytes, update: np.ndarray,
                        rounding_seed: bytes, noise_seed: bytes) -> np.ndarray:
    """One gateway's noisy levels along the documented path (docs/privacy.md), step by step."""
    assert cfg.noise is not None
    params = cfg.noise.params(cfg.threshold, cfg.vector_len)
    clipped, _ = quant.clip_l2(update, cfg.noise.l2_clip)
    rotated = rotation.rotate(clipped, wire.rotation_seed(cfg.graph_seed, round_id))
    q = rotation.conditional_quantize(rotated, cfg.clip, cfg.quant_bits, rounding_seed,
                                      params.l2_sensitivity, ring_bits=cfg.ring_bits)
    dp_params.add_round_noise(q, noise_seed, params, cfg.ring_bits)
    return q


def _gaussian_epsilon(zs: list[float], q: float, delta: float) -> float:
    """dp-accounting's own RDP accountant over Poisson-subsampled Gaussian rounds."""
    acc = rdp.RdpAccountant(list(_dp_rounds.accounting.ORDERS))
    for z in zs:
        acc.compose(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z)))
    return float(acc.get_epsilon(delta))


def test_dp_rounds_are_exact_and_the_ledger_matches_an_independent_accountant(
        tiny_fleet: _dp_data.Scenario, ecg: tuple[object, np.ndarray]) -> None:
    art, init = ecg
    setup = _dp_rounds.PointSetup(rounds=2, sampling_rate=1.0, clip=0.05, l2_clip=0.5)
    target = 20.0
    z = _dp_rounds.noise_for_budget(target, setup, D, len(tiny_fleet.gateways))
    point = _dp_rounds.PointSetup(rounds=2, sampling_rate=1.0, clip=0.05, l2_clip=0.5,
                                  noise_multiplier=z, epsilon_budget=target)
    run = _dp_rounds.FederatedRun(art, tiny_fleet.gateways, _dp_rounds.LocalSetup(epochs=1),
                                  point, init.copy())
    records = run.run()
    assert [r.exact for r in records] == [True, True]
    assert all(r.participants == (1, 2, 3, 4) for r in records)
    st = run.server.state
    assert st.result is not None and st.config.noise is not None
    # The last round's unmasked sum, rebuilt from the gateways' inputs without plain_levels.
    levels = [_independent_levels(st.config, st.round_id, *run.last_inputs[p])
              for p in st.result.included]
    assert np.array_equal(st.result.total, mask.ring_sum(np.stack(levels), st.config.ring_bits))
    assert not np.array_equal(st.result.total, mask.ring_sum(np.stack(levels[1:]),
                                                             st.config.ring_bits))
    # Ledger vs dp-accounting's Gaussian RDP at q = 1 (the discrete Gaussian's tau underflows at
    # these share variances, so the two must agree), z taken from the signed config itself.
    z_config = math.sqrt(float(st.config.noise.variance)) / st.config.noise.l2_sensitivity
    assert z_config >= z
    assert run.ledger is not None
    ours = run.ledger.epsilon()
    assert ours == pytest.approx(_gaussian_epsilon([z_config, z_config], 1.0, 1e-5), rel=1e-9)
    assert target * (1 - 2 * _dp_rounds.CALIBRATION_SLACK) <= ours <= target
    assert records[-1].epsilon == ours
    assert not np.array_equal(run.params, init)


def test_no_dp_rounds_are_exact_and_spend_nothing(tiny_fleet: _dp_data.Scenario,
                                                  ecg: tuple[object, np.ndarray]) -> None:
    art, init = ecg
    point = _dp_rounds.PointSetup(rounds=1, sampling_rate=1.0, clip=0.05)
    run = _dp_rounds.FederatedRun(art, tiny_fleet.gateways, _dp_rounds.LocalSetup(epochs=1),
                                  point, init.copy())
    (record,) = run.run()
    assert record.exact and record.epsilon is None and run.ledger is None
    assert run.server.state.config.noise is None and run.members == {1, 2, 3, 4}


def test_subsampled_ledger_is_an_upper_bound_close_to_the_exact_gaussian() -> None:
    z, q, rounds = 0.8, 0.05, 30
    ours = _dp_rounds.planned_epsilon(z, rounds=rounds, sampling_rate=q, delta=1e-5,
                                      l2_clip=1.0, quant_bits=8, vector_len=D, participants=50)
    noise, t, _ = _dp_rounds.round_noise_params(z, 1.0, quant_bits=8, vector_len=D,
                                                participants=50)
    z_config = dp_params.noise_multiplier(noise.params(t, D))
    exact = _gaussian_epsilon([z_config] * rounds, q, 1e-5)
    # Zhu-Wang is a general bound: never below the exact subsampled Gaussian, within 25 %.
    assert exact <= ours <= 1.25 * exact


@pytest.mark.parametrize(("q", "rounds", "population", "target"),
                         [(1.0, 40, 16, 8.0), (0.05, 30, 1000, 8.0), (0.05, 30, 1000, 2.0)])
def test_calibration_hits_its_target(q: float, rounds: int, population: int,
                                     target: float) -> None:
    setup = _dp_rounds.PointSetup(rounds=rounds, sampling_rate=q, clip=0.05)
    z = _dp_rounds.noise_for_budget(target, setup, D, population)
    expected = max(3, round(q * population))

    def eps(x: float) -> float:
        return _dp_rounds.planned_epsilon(x, rounds=rounds, sampling_rate=q, delta=1e-5,
                                          l2_clip=1.0, quant_bits=8, vector_len=D,
                                          participants=expected)

    aim = target * (1 - _dp_rounds.CALIBRATION_SLACK)
    assert eps(z) <= aim < eps(z * (1 - 1e-4))  # the smallest z that meets it
    assert eps(z) > aim * (1 - 1e-3)


def test_calibrate_on_a_known_curve_and_refuses_impossible_targets() -> None:
    assert _dp_rounds.calibrate(4.0, lambda z: 10.0 / z) == pytest.approx(2.5, rel=2e-5)
    assert _dp_rounds.calibrate(1000.0, lambda z: 10.0 / z) == pytest.approx(0.01, rel=2e-5)
    with pytest.raises(InputError, match="no noise multiplier"):
        _dp_rounds.calibrate(1.0, lambda z: 5.0)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(InputError, match="target"):
            _dp_rounds.calibrate(bad, lambda z: 1 / z)


def test_fleet_cache_is_reused_and_a_corrupt_entry_is_rebuilt(tmp_path: Path) -> None:
    first = _dp_data.patient_dataset(tmp_path, 7, 1, 30.0)
    path = tmp_path / "patient-00007.npz"
    stamp = path.stat().st_mtime_ns
    again = _dp_data.patient_dataset(tmp_path, 7, 1, 30.0)
    assert path.stat().st_mtime_ns == stamp
    assert np.array_equal(first[1], again[1])
    assert all(np.array_equal(first[0][k], again[0][k]) for k in first[0])
    path.write_bytes(b"not an npz file")
    rebuilt = _dp_data.patient_dataset(tmp_path, 7, 1, 30.0)
    assert np.array_equal(rebuilt[1], first[1])
    assert all(np.array_equal(rebuilt[0][k], first[0][k]) for k in first[0])
    assert not list(tmp_path.glob("*.sqlite")) and not list(tmp_path.glob("*.tmp*"))


def test_per_class_auc_removes_the_class_mix() -> None:
    """Members win within every class but sit mostly in the high-loss class: pooled AUC below
    0.5, per-class AUC 1 (Simpson's paradox, the confound the per-class figure is for)."""
    m_loss = np.array([0.1] * 2 + [5.0] * 8)
    m_lab = np.array([0] * 2 + [1] * 8, dtype=np.int64)
    n_loss = np.array([0.2] * 8 + [5.1] * 2)
    n_lab = np.array([0] * 8 + [1] * 2, dtype=np.int64)
    res = _dp_data.membership(m_loss, n_loss, m_lab, n_lab, ("N", "S", "V"))
    assert res["auc"] < 0.5
    assert res["auc_per_class"] == {"N": 1.0, "S": 1.0} and res["auc_class_mean"] == 1.0
    with pytest.raises(InputError, match="label"):
        _dp_data.membership(m_loss, n_loss, m_lab[:3], n_lab, ("N", "S"))
    with pytest.raises(InputError):
        _dp_data.membership(m_loss, n_loss[:0], m_lab, n_lab[:0], ("N", "S"))


def test_mitdb_scenario_is_split_a(mitdb_dir: Path) -> None:
    scn = _dp_data.mitdb_scenario(mitdb_dir)
    assert len(scn.gateways) == 16 and set(scn.names.values()).isdisjoint(_dp_data.SPLIT_A)
    assert scn.holdout[1].size == 12_969  # N 11485, S 437, V 1015, F 32 (docs/benchmarks.md)
    assert np.bincount(scn.holdout[1], minlength=4).tolist() == [11485, 437, 1015, 32]


def test_a_tiny_run_prints_one_json_object_and_writes_the_tables(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--scenario", "fleet", "--gateways", "4", "--holdout-patients", "1", "--seconds",
            "30", "--rounds", "1", "--sampling-rate", "1", "--epochs", "1", "--budgets",
            "none,30", "--out", str(tmp_path)]
    assert dp_tables.main(argv) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["area"] == "dp_tables" and {"machine", "figures", "ratios"} <= set(doc)
    points = doc["tables"]["fleet"]["points"]
    assert [p["epsilon_target"] for p in points] == [None, 30.0]
    assert all(p["exact_rounds"] == p["rounds"] == 1 for p in points)
    assert points[0]["epsilon"] is None and 0 < points[1]["epsilon"] <= 30.0
    assert 0 <= points[1]["mia"]["auc"] <= 1 and points[1]["mia"]["members"] > 0
    assert set(points[1]["mia"]["auc_per_class"]) <= {"N", "S", "V", "F"}
    assert "| no DP |" in (tmp_path / "dp_tables_fleet.md").read_text()
    saved = json.loads((tmp_path / "dp_tables_fleet.json").read_text())
    assert saved["figures"] == doc["figures"]
    assert doc["tables"]["fleet"]["initial_model"]["beats"] > 0
    assert len(list((tmp_path / "fleet-cache").rglob("patient-*.npz"))) == 5


@pytest.mark.parametrize(("argv", "names"), [
    (["--budgets", "abc"], "--budgets"), (["--budgets", "8,8"], "twice"),
    (["--budgets", "-1"], "--budgets"), (["--budgets", "nan"], "--budgets"),
    (["--budgets", ""], "--budgets"), (["--budgets", "none,none"], "twice"),
    (["--rounds", "0"], "--rounds"), (["--rounds", "2.5"], "--rounds"),
    (["--sampling-rate", "1.5"], "--sampling-rate"), (["--sampling-rate", "inf"], "--sampling"),
    (["--sampling-rate", "0"], "--sampling-rate"), (["--scenario", "moon"], "--scenario"),
    (["--gateways", "3"], "--gateways"), (["--gateways", "1e9"], "--gateways"),
    (["--delta", "1"], "--delta"), (["--lr", "x"], "--lr"), (["--epochs", "-2"], "--epochs"),
    (["--l2-clip", "0"], "--l2-clip"), (["--seconds", "5"], "--seconds"),
    (["--seed", "-1"], "--seed"), (["--frobnicate"], "--frobnicate"), (["--rounds"], "--rounds"),
    (["--scenario", "mitdb", "--data-dir", "/nonexistent/mitdb"], "--data-dir"),
])
def test_garbage_flags_exit_with_status_2_before_anything_runs(
        argv: list[str], names: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert dp_tables.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "ConfigError" in err and names in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    with pytest.raises(ConfigError, match=names):
        dp_tables.parse_options(argv)


def test_defaults_and_quick_options() -> None:
    opts = dp_tables.parse_options(["--scenario", "fleet"])
    assert opts.budgets is None and opts.gateways == 1000
    assert dp_tables.BUDGETS["mitdb"] == (None, 32.0, 8.0, 2.0)
    given = dp_tables.parse_options(["--budgets", "None, 4", "--scenario", "fleet"])
    assert given.budgets == (None, 4.0)
    local, point = opts.scenario_setup("mitdb")
    assert (point.rounds, point.sampling_rate, local.lr, local.mu) == (40, 1.0, 4e-3, 0.01)
    _, fleet = opts.scenario_setup("fleet")
    assert fleet.sampling_rate == 0.05 and fleet.rounds == 30
    quick = dp_tables.parse_options(["--quick", "--rounds", "5", "--scenario", "fleet"])
    assert quick.budgets == (None, 8.0) and quick.gateways == 40
    assert quick.scenario_setup("fleet")[1].rounds == 5
