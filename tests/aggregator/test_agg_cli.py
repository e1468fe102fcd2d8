from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from firmware_sim.cli import main


def test_serve_with_bad_settings_exits_2_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEDGATE_AGG_ADMIN_TOKEN", "short")
    monkeypatch.setenv("FEDGATE_AGG_ENROLLMENT_TTL_S", "nope")
    assert main(["aggregator", "serve", "--port", "8099"]) == 2
    err = capsys.readouterr().err
    assert "admin_token" in err and "enrollment_ttl_s" in err


@pytest.mark.parametrize("argv", [["aggregator"], ["aggregator", "bogus"],
                                  ["aggregator", "serve", "--port", "x"]])
def test_aggregator_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_fedgate_aggregator_serve_answers_over_http(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = os.environ | {"FEDGATE_AGG_ADMIN_TOKEN": "admin-token-0123456789",
                        "FEDGATE_AGG_SIGNING_KEY_PATH": str(tmp_path / "sk")}
    cmd = [sys.executable, "-c", "from firmware_sim.cli import main; raise SystemExit(main())",
           "aggregator", "serve", "--port", str(port), "--log-level", "warning",
           "--database-url", f"sqlite:///{tmp_path}/agg.db"]
    proc = subprocess.Popen(cmd, env=env, cwd=Path(__file__).resolve().parents[2])
    try:
        deadline, status = time.monotonic() + 30, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert status == 200
        assert (tmp_path / "sk").stat().st_mode & 0o777 == 0o600
    finally:
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert proc.wait(15) in (0, -signal.SIGTERM)
