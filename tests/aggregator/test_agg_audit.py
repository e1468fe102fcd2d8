"""``fedgate audit`` against real ``fedgate sim`` deployments (3 gateways, 2 rounds, with and
without DP) served by the real aggregator over HTTP: the JSON / HTML / PNG report, federated
evaluations posted by the gateway daemons, and a lineage that was tampered with (a re-signed
manifest, a rewritten ledger, a changed blob, a missing parent, a damaged signature) reported as
broken with exit status 1; garbage flags and unusable input exit with 2."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nacl.signing
import numpy as np
import pytest
import uvicorn

from aggregator.app import create_app
from aggregator.settings import AggregatorSettings
from aggregator.signing import encode_manifest, load_or_create_signing_key, sign_manifest
from firmware_sim.cli import main
from firmware_sim.sim import SimConfig, run_sim
from native import evalreport
from native.broker import free_port

TOKEN = "admin-token-0123456789"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small deployments: their work folders (database + signing key) and reports."""
    out = {}
    for name, dp in (("plain", None), ("dp", 1.0)):
        cfg = SimConfig(out=tmp_path_factory.mktemp(name), gateways=3, rounds=2, seconds=90.0,
                        holdout_patients=1, seed=3, quant_bits=10, eval_holdout=0.2,
                        dp_noise_multiplier=dp)
        run_sim(cfg)
        out[name] = cfg.out
    return out


def copy_work(sim: Path, dest: Path) -> Path:
    work = dest / "work"
    work.mkdir(parents=True)
    for name in ("aggregator.db", "aggregator-signing.key"):
        shutil.copy2(sim / "work" / name, work / name)
    return work


@contextmanager
def served(work: Path) -> Iterator[str]:
    """The aggregator (REST only) over a deployment's database, as an operator would run it."""
    app = create_app(AggregatorSettings(admin_token=TOKEN,
                                        database_url=f"sqlite:///{work / 'aggregator.db'}",
                                        signing_key_path=work / "aggregator-signing.key"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def run_audit(url: str, out: Path, *extra: str, token: bool = True
              ) -> tuple[int, dict[str, Any]]:
    args = ["audit", "--aggregator", url, "--out", str(out), *extra]
    if "--version" not in extra:
        args += ["--version", "3"]
    if token:
        (out.parent / "token").write_text(TOKEN + "\n")
        args += ["--admin-token-file", str(out.parent / "token")]
    code = main(args)
    report = json.loads((out / "audit.json").read_text()) if (out / "audit.json").exists() else {}
    return code, report


def test_audit_of_a_deployment_without_dp(sims: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    work = copy_work(sims["plain"], tmp_path)
    with served(work) as url:
        code, report = run_audit(url, tmp_path / "audit")
    assert code == 0, report.get("verdict")
    prov = report["provenance"]
    assert prov["ok"] and prov["length"] == 3 and prov["root"] == 1
    assert prov["served_lineage"] == [3, 2, 1]
    for link in prov["links"]:
        assert link["signature"] == "verified" and link["ok"]
        assert link["blobs"]["inference"] == "sha256 verified"
        assert link["blobs"]["checkpoint"] == "sha256 verified"
    assert [link["participants"] for link in prov["links"]] == [3, 3, 0]
    assert prov["links"][0]["strategy"]["name"] == "fedavg"
    sim_report = json.loads((sims["plain"] / "report.json").read_text())
    assert prov["links"][0]["inference"]["sha256"] == sim_report["final"]["sha256"]
    privacy = report["privacy"]
    assert privacy["dp"] is None and privacy["clip"] == 0.05 and privacy["quant_bits"] == 10
    assert privacy["secure_aggregation"] is True and privacy["membership_inference"] is None
    fair = report["fairness"]
    assert fair["available"] and fair["reports"] == 3 and len(fair["gateways"]) == 3
    assert len(fair["worst_decile"]) == 1 and fair["classes"] == ["N", "S", "V", "F"]
    worst = fair["worst_decile"][0]
    assert worst["macro_f1"] == min(g["macro_f1"] for g in fair["gateways"])
    for g in fair["gateways"]:
        assert g["signature"] == "verified" and g["samples"] >= 10
        assert sum(map(sum, g["confusion"])) == g["samples"]
    html = (tmp_path / "audit" / "audit.html").read_text()
    assert "<script" not in html and "src='data:image/png;base64," in html
    assert 'href=' not in html and "src='http" not in html and 'src="http' not in html
    assert worst["gateway_id"] in html and "Everything verified" in html
    png = (tmp_path / "audit" / "audit.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and base64.b64encode(png).decode() in html
    printed = capsys.readouterr().out
    assert "3 versions back to root 1: intact" in printed and "privacy: no DP" in printed


def test_every_gateway_evaluated_every_version(sims: dict[str, Path]) -> None:
    """The daemons' path: each version scored once per gateway on its own hold-out, signed."""
    db = sqlite3.connect(sims["plain"] / "work" / "aggregator.db")
    try:
        rows = db.execute("SELECT e.model_version, e.gateway_id, e.report, e.signature, "
                          "g.public_key FROM evaluations e JOIN gateways g "
                          "ON g.id = e.gateway_id").fetchall()
        gateways = {r[0] for r in db.execute("SELECT id FROM gateways")}
    finally:
        db.close()
    by_version: dict[int, set[str]] = {}
    for version, gid, data, sig, key in rows:
        rep = evalreport.verify(bytes(data), bytes(sig), bytes(key))
        assert rep.gateway_id == gid and rep.model_version == version
        by_version.setdefault(version, set()).add(gid)
    assert by_version == {1: gateways, 2: gateways, 3: gateways}


def test_audit_of_a_dp_deployment(sims: dict[str, Path], tmp_path: Path) -> None:
    work = copy_work(sims["dp"], tmp_path)
    key = load_or_create_signing_key(work / "aggregator-signing.key")
    with served(work) as url:
        code, report = run_audit(url, tmp_path / "audit", "--signing-key",
                                 bytes(key.verify_key).hex())
    assert code == 0, report["verdict"]
    assert report["signing_key"]["pinned"] is True
    dp = report["privacy"]["dp"]
    sim_rounds = json.loads((sims["dp"] / "report.json").read_text())["rounds"]
    assert dp["epsilon"] == sim_rounds[-1]["privacy"]["epsilon"]
    assert dp["epsilon_recomputed"] == pytest.approx(dp["epsilon"], rel=1e-9)
    assert dp["rounds"] == 2 and dp["noise_multiplier"] >= 1.0 and dp["delta"] == 1e-5
    assert dp["budget"] == "no budget set"
    series = report["privacy"]["series"]
    assert [row["version"] for row in series] == [2, 3]
    assert [row["check"] for row in series] == ["re-derived from the noise parameters"] * 2
    assert [row["epsilon"] for row in series] == [r["privacy"]["epsilon"] for r in sim_rounds]


def test_a_pinned_key_that_is_not_the_aggregators_breaks_every_link(
        sims: dict[str, Path], tmp_path: Path) -> None:
    other = nacl.signing.SigningKey.generate()
    with served(copy_work(sims["plain"], tmp_path)) as url:
        code, report = run_audit(url, tmp_path / "audit", "--signing-key",
                                 bytes(other.verify_key).hex())
    assert code == 1
    assert [link["signature"] for link in report["provenance"]["links"]] == ["FAILED"] * 3
    assert any("declares key" in p for p in report["verdict"]["problems"])
    assert len(report["provenance"]["links"]) == 3  # walked to the root all the same


def _rewrite(work: Path, version: int, change: Callable[[dict[str, Any]], None],
             key: nacl.signing.SigningKey) -> None:
    """Change a stored manifest and sign it again with ``key`` (row kept consistent)."""
    db = sqlite3.connect(work / "aggregator.db")
    try:
        (raw,) = db.execute("SELECT manifest FROM model_versions WHERE version = ?",
                            (version,)).fetchone()
        fields = json.loads(bytes(raw))
        change(fields)
        fields["signer"] = bytes(key.verify_key).hex()
        manifest = encode_manifest(fields)
        db.execute("UPDATE model_versions SET manifest = ?, signature = ?, signer = ?, "
                   "participants = ?, privacy = ? WHERE version = ?",
                   (manifest, sign_manifest(key, manifest), fields["signer"],
                    fields["participants"], json.dumps(fields["privacy"]), version))
        db.commit()
    finally:
        db.close()


def _sql(work: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    db = sqlite3.connect(work / "aggregator.db")
    try:
        for sql, args in statements:
            db.execute(sql, args)
        db.commit()
    finally:
        db.close()


def test_a_manifest_re_signed_by_another_key_is_a_broken_link(
        sims: dict[str, Path], tmp_path: Path) -> None:
    work = copy_work(sims["plain"], tmp_path)
    attacker = nacl.signing.SigningKey.generate()
    _rewrite(work, 2, lambda m: m.update(participants=99), attacker)
    with served(work) as url:  # the aggregator checks a row against its own signer column
        code, report = run_audit(url, tmp_path / "audit")
    assert code == 1
    links = {link["version"]: link for link in report["provenance"]["links"]}
    assert links[2]["signature"] == "FAILED" and not links[2]["ok"]
    assert links[3]["ok"] and links[1]["ok"]  # the walk went on past the broken link
    assert any(p.startswith("version 2: manifest signature") for p in
               report["verdict"]["problems"])
    assert "BROKEN" in (tmp_path / "audit" / "audit.html").read_text()


@pytest.mark.parametrize(("change", "needle"), [
    (lambda dp: dp.update(epsilon=dp["epsilon"] / 3), "but the stored RDP gives"),
    (lambda dp: dp.update(noise_multiplier=-1.0), "noise_multiplier -1.0 out of range"),
    (lambda dp: dp.update(epsilon_budget=dp["epsilon"] / 2), "exceeds the budget"),
])
def test_a_ledger_rewritten_by_the_signer_itself_does_not_add_up(
        sims: dict[str, Path], tmp_path: Path, change: Callable[[dict[str, Any]], None],
        needle: str) -> None:
    work = copy_work(sims["dp"], tmp_path)
    key = load_or_create_signing_key(work / "aggregator-signing.key")
    _rewrite(work, 3, lambda m: change(m["privacy"]["dp"]), key)
    with served(work) as url:
        code, report = run_audit(url, tmp_path / "audit")
    assert code == 1
    assert report["provenance"]["ok"]  # the signature is genuine: only the ledger is wrong
    assert any(needle in p for p in report["verdict"]["problems"]), report["verdict"]


def test_a_changed_blob_is_a_broken_link(sims: dict[str, Path], tmp_path: Path) -> None:
    work = copy_work(sims["plain"], tmp_path)
    db = sqlite3.connect(work / "aggregator.db")
    (digest,) = db.execute("SELECT checkpoint_sha256 FROM model_versions WHERE version = 2")\
        .fetchone()
    db.close()
    _sql(work, ("UPDATE blobs SET data = ? WHERE sha256 = ?", (b"\x00" * 43_856, digest)))
    with served(work) as url:
        code, report = run_audit(url, tmp_path / "audit")
    assert code == 1
    links = {link["version"]: link for link in report["provenance"]["links"]}
    assert links[2]["blobs"]["checkpoint"] == "not served"
    assert any("checkpoint blob not served: IntegrityError" in p for p in links[2]["problems"])
    assert links[1]["ok"] and links[3]["ok"]


def test_a_missing_parent_is_a_broken_chain(sims: dict[str, Path], tmp_path: Path) -> None:
    work = copy_work(sims["plain"], tmp_path)
    _sql(work, ("DELETE FROM evaluations WHERE model_version = 2", ()),
         ("DELETE FROM model_versions WHERE version = 2", ()))
    with served(work) as url:
        code, report = run_audit(url, tmp_path / "audit")
    assert code == 1
    links = report["provenance"]["links"]
    assert [link["version"] for link in links] == [3, 2]
    assert "missing parent" in links[1]["problems"][0]
    assert any("broken below version 3" in p for p in report["verdict"]["problems"])
    # The aggregator's own lineage of version 3 silently stops where the row is gone.
    assert any("lineage [3] differs from the walked chain [3, 2]" in p
               for p in report["verdict"]["problems"])
    assert report["provenance"]["root"] is None


def test_a_damaged_stored_signature_is_a_broken_link(sims: dict[str, Path],
                                                      tmp_path: Path) -> None:
    work = copy_work(sims["plain"], tmp_path)
    _sql(work, ("UPDATE model_versions SET signature = ? WHERE version = 2", (b"\x01" * 64,)))
    with served(work) as url:
        code, report = run_audit(url, tmp_path / "audit")
    assert code == 1
    links = {link["version"]: link for link in report["provenance"]["links"]}
    assert "refuses to serve it: IntegrityError" in links[2]["problems"][0]
    assert any("broken below version 3" in p for p in report["verdict"]["problems"])


@pytest.mark.parametrize("flags", [
    [], ["--version", "3"], ["--version", "abc"], ["--version", "0"],
    ["--version", str(2**31)], ["--version", "3", "--signing-key", "zz"],
    ["--version", "3", "--signing-key", "ab" * 31],
    ["--version", "3", "--members", "x"], ["--version", "3", "--nonmembers", "x"],
    ["--version", "3", "--baseline-version", "1"], ["--version", "3", "--timeout", "-1"],
    ["--version", "3", "--timeout", "nan"], ["--version", "3", "--log-level", "loud"],
    ["--version", "3", "--no-such-flag"],
])
def test_garbage_flags_exit_2_and_write_nothing(tmp_path: Path, flags: list[str]) -> None:
    out = tmp_path / "audit"
    args = ["audit", "--aggregator", "http://127.0.0.1:9", "--out", str(out), *flags]
    assert main(args) == 2
    assert not out.exists()


def test_bad_aggregator_urls_and_outputs(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for url, out in (("ftp://host", tmp_path / "a"), ("not a url", tmp_path / "a"),
                     ("http://127.0.0.1:9", tmp_path / "file")):
        assert main(["audit", "--aggregator", url, "--version", "1", "--out", str(out)]) == 2
    port = free_port()  # nothing listens there
    assert main(["audit", "--aggregator", f"http://127.0.0.1:{port}", "--version", "1",
                 "--out", str(tmp_path / "b")]) == 2
    assert not (tmp_path / "b").exists()


def test_unknown_version_bad_token_and_unreadable_records_exit_2(
        sims: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad-token").write_text("not-the-admin-token")
    (tmp_path / "empty").mkdir()
    (tmp_path / "rec.hea").write_text("garbage header\n")
    with served(copy_work(sims["plain"], tmp_path)) as url:
        cases = [
            ["--version", "99"],
            ["--version", "3", "--admin-token-file", str(tmp_path / "bad-token")],
            ["--version", "3", "--admin-token-file", str(tmp_path / "none")],
            ["--version", "3", "--members", str(tmp_path / "nope"), "--nonmembers",
             str(tmp_path / "empty")],
            ["--version", "3", "--members", str(tmp_path / "empty"), "--nonmembers",
             str(tmp_path / "empty")],
            ["--version", "3", "--members", str(tmp_path / "rec.hea"), "--nonmembers",
             str(tmp_path / "rec")],
        ]
        for i, flags in enumerate(cases):
            out = tmp_path / f"out-{i}"
            assert main(["audit", "--aggregator", url, "--out", str(out), *flags]) == 2, flags
            assert not out.exists()
    err = capsys.readouterr().err
    assert "no model version 99" in err and "refused the admin token" in err
    assert "no MIT-BIH records" in err and "missing .dat, .atr" in err


def test_without_the_admin_token_fairness_is_marked_unavailable(
        sims: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDGATE_ADMIN_TOKEN", raising=False)
    with served(copy_work(sims["plain"], tmp_path)) as url:
        code, report = run_audit(url, tmp_path / "audit", token=False)
    assert code == 0
    assert report["fairness"]["available"] is False
    assert "admin token" in report["fairness"]["reason"]


@pytest.mark.data
def test_membership_inference_on_mitbih_patients(mitdb_dir: Path, tmp_path: Path) -> None:
    """Member patients' gateways trained the model; the attack's figures are the loss attack's
    on exactly the audited version's verified checkpoint."""
    from aggregator.audit import membership
    from models.artifacts import ensure

    records = tmp_path / "records"
    records.mkdir()
    for name in ("101", "106", "108", "109"):
        for ext in (".hea", ".dat", ".atr"):
            (records / f"{name}{ext}").symlink_to(mitdb_dir / f"{name}{ext}")
    cfg = SimConfig(out=tmp_path / "sim", data="mitdb", data_dir=records, holdout=["109"],
                    rounds=2, epochs=1, lr=4e-3, clip=0.5)
    run_sim(cfg)
    members = [str(records / r) for r in ("101", "106", "108")]
    nonmembers = [str(mitdb_dir / "109"), str(mitdb_dir / "112")]
    with served(cfg.out / "work") as url:
        code, report = run_audit(url, tmp_path / "audit", "--members", *members,
                                 "--nonmembers", *nonmembers, "--baseline-version", "1")
    assert code == 0, report["verdict"]
    mia = report["privacy"]["membership_inference"]
    assert mia["member_records"] == ["101", "106", "108"]
    assert mia["nonmember_records"] == ["109", "112"]
    audited, baseline = mia["audited"], mia["baseline"]
    assert audited["version"] == 3 and baseline["version"] == 1
    db = sqlite3.connect(cfg.out / "work" / "aggregator.db")
    (blob,) = db.execute("SELECT b.data FROM blobs b JOIN model_versions m ON "
                         "m.checkpoint_sha256 = b.sha256 WHERE m.version = 3").fetchone()
    db.close()
    art = ensure("ecg")
    params = np.frombuffer(bytes(blob), dtype="<f4").astype(np.float32)
    m_in, m_y, _ = membership.load_beats(members)
    n_in, n_y, _ = membership.load_beats(nonmembers)
    expected = membership.attack(membership.model_losses(art, params, m_in, m_y),
                                 membership.model_losses(art, params, n_in, n_y))
    assert audited["auc"] == pytest.approx(expected["auc"])
    assert audited["tpr_at_fpr"] == pytest.approx(expected["tpr_at_fpr"])
    assert audited["members"] == m_y.size and audited["nonmembers"] == n_y.size
    assert 0.0 <= baseline["auc"] <= 1.0 and baseline["auc"] != audited["auc"]
    assert "TPR at FPR" in (tmp_path / "audit" / "audit.html").read_text()
