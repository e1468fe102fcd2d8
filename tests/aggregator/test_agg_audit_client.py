"""The audit fed garbage by what it talks to: an HTTP server that answers nonsense, damaged
records, and flags of the simulator's federated evaluation."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nacl.signing
import pytest

from aggregator.audit.client import AuditClient, HttpRefusal
from aggregator.audit.provenance import verify_chain
from aggregator.signing import encode_manifest, sign_manifest
from firmware_sim.cli import main
from firmware_sim.sim import SimConfig
from native.errors import ConfigError, TransportError

Answers = dict[str, tuple[int, bytes]]


@pytest.fixture
def garbage_server() -> Iterator[tuple[str, Answers]]:
    """A server that answers each path with whatever the test put into ``answers``."""
    answers: Answers = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = answers.get(self.path.split("?")[0], (404, b'{"error":"x"}'))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answers
    finally:
        server.shutdown()
        server.server_close()


def audit(url: str, out: Path, *flags: str) -> int:
    return main(["audit", "--aggregator", url, "--version", "2", "--out", str(out), *flags])


@pytest.mark.parametrize("signing_key", [
    (200, b"not json at all"), (200, b"[1, 2]"), (200, b'{"public_key": "zz"}'),
    (200, b'{"public_key": "abcd"}'), (500, b"<html>oops</html>"),
])
def test_a_nonsense_signing_key_answer_is_exit_2(garbage_server: tuple[str, Answers],
                                                  tmp_path: Path,
                                                  signing_key: tuple[int, bytes]) -> None:
    url, answers = garbage_server
    answers["/v1/signing-key"] = signing_key
    assert audit(url, tmp_path / "out") == 2
    assert not (tmp_path / "out").exists()


def manifest_answer(key: nacl.signing.SigningKey, version: int, parent: int | None,
                    signed: dict[str, object] | None = None,
                    **change: object) -> tuple[int, bytes]:
    fields = {"format": "fedgate-model-manifest/1", "version": version, "parent": parent,
              "round": version - 1 or None, "created_at": "2026-01-01T00:00:00+00:00",
              "participants": 3, "config": {"model": "ecg"}, "privacy": {},
              "inference": {"sha256": "00" * 32, "size": 4}, "checkpoint": None,
              "signer": bytes(key.verify_key).hex(), **(signed or {})}
    manifest = encode_manifest(fields)
    meta = {"version": version, "parent": parent, "round_id": fields["round"],
            "participants": 3, "config": fields["config"], "privacy": fields["privacy"],
            "manifest": base64.b64encode(manifest).decode(), "lineage": [version],
            "signature": sign_manifest(key, manifest).hex(), **change}
    return 200, json.dumps(meta).encode()


def test_nonsense_metadata_blobs_and_loops_are_findings(garbage_server: tuple[str, Answers],
                                                         tmp_path: Path) -> None:
    url, answers = garbage_server
    key = nacl.signing.SigningKey.generate()
    answers["/v1/signing-key"] = (200, json.dumps({"public_key": bytes(key.verify_key).hex()})
                                  .encode())
    # Version 2 names parent 2 (itself), serves a blob that does not match, and lies about its
    # participants; the audit records all of it and does not loop.
    answers["/v1/models/2"] = manifest_answer(key, 2, 1, participants=7)
    answers["/v1/models/2/inference"] = (200, b"blob")
    answers["/v1/models/1"] = (200, b"{not json")
    assert audit(url, tmp_path / "out") == 2  # the parent's answer is not JSON: cannot finish
    answers["/v1/models/1"] = (200, json.dumps({"manifest": 5, "signature": "x"}).encode())
    assert audit(url, tmp_path / "out") == 1
    report = json.loads((tmp_path / "out" / "audit.json").read_text())
    links = report["provenance"]["links"]
    assert [link["version"] for link in links] == [2, 1]
    assert any("served participants disagrees" in p for p in links[0]["problems"])
    assert any("inference blob sha256" in p for p in links[0]["problems"])
    assert any("malformed" in p for p in links[1]["problems"])
    # A signed manifest that names itself as parent ends the walk as a finding.
    answers["/v1/models/2"] = manifest_answer(key, 2, 2)
    chain = verify_chain(AuditClient(url), 2, bytes(key.verify_key))
    assert len(chain.links) == 1 and "not an older version" in chain.links[0].problems[0]
    # Unverifiable metadata that names itself as parent: walked once, reported as a loop.
    answers["/v1/models/2"] = manifest_answer(nacl.signing.SigningKey.generate(), 2, 2)
    chain = verify_chain(AuditClient(url), 2, bytes(key.verify_key))
    assert [link.signature for link in chain.links] == ["FAILED"]
    assert any("loops back to version 2" in p for p in chain.all_problems())


@pytest.mark.parametrize(("signed", "needle"), [
    ({"privacy": [1, 2]}, "privacy is not an object"),
    ({"config": "ecg"}, "config is not an object"),
    ({"privacy": {"dp": "eps=0"}}, "DP ledger entry is not an object"),
    ({"privacy": {"dp": {"epsilon": 0.1}}}, "out of range"),
])
def test_a_genuinely_signed_but_malformed_manifest_is_a_finding(
        garbage_server: tuple[str, Answers], tmp_path: Path, signed: dict[str, object],
        needle: str) -> None:
    url, answers = garbage_server
    key = nacl.signing.SigningKey.generate()
    answers["/v1/signing-key"] = (200, json.dumps({"public_key": bytes(key.verify_key).hex()})
                                  .encode())
    answers["/v1/models/2"] = manifest_answer(key, 2, None, signed)
    assert audit(url, tmp_path / "out") == 1
    problems = json.loads((tmp_path / "out" / "audit.json").read_text())["verdict"]["problems"]
    assert any(needle in p for p in problems), problems


def test_the_client_keeps_the_aggregators_reason(garbage_server: tuple[str, Answers]) -> None:
    url, answers = garbage_server
    answers["/x"] = (409, b'{"error": "model_unknown", "detail": "no model"}')
    with pytest.raises(HttpRefusal) as info:
        AuditClient(url).json("/x")
    assert (info.value.status, info.value.reason) == (409, "model_unknown")
    answers["/y"] = (200, b"\xff\xfe")
    with pytest.raises(TransportError):
        AuditClient(url).json("/y")


def test_damaged_records_are_exit_2(garbage_server: tuple[str, Answers], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    url, answers = garbage_server
    key = nacl.signing.SigningKey.generate()
    answers["/v1/signing-key"] = (200, json.dumps({"public_key": bytes(key.verify_key).hex()})
                                  .encode())
    answers["/v1/models/2"] = manifest_answer(key, 2, None)
    for name in ("bad", "worse"):
        for ext in (".hea", ".dat", ".atr"):
            (tmp_path / f"{name}{ext}").write_bytes(b"\x00garbage\xff" * 10)
    assert audit(url, tmp_path / "out", "--members", str(tmp_path / "bad"), "--nonmembers",
                 str(tmp_path / "worse.dat")) == 2
    assert "cannot read WFDB record" in capsys.readouterr().err
    assert audit(url, tmp_path / "out", "--members", str(tmp_path / "bad"), "--nonmembers",
                 str(tmp_path / "bad.atr")) == 2
    assert "both members and non-members" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0.9", "-0.1", "nan", "inf"])
def test_out_of_range_eval_holdout_flags_exit_2(tmp_path: Path, value: str) -> None:
    assert main(["sim", "--out", str(tmp_path / "o"), "--eval-holdout", value]) == 2
    with pytest.raises(ConfigError, match="eval-holdout"):
        SimConfig(eval_holdout=float(value)).check()
    assert not (tmp_path / "o" / "report.json").exists()


def test_a_non_number_eval_holdout_is_an_argparse_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sim", "--out", str(tmp_path / "o"), "--eval-holdout", "abc"])
    assert info.value.code == 2
