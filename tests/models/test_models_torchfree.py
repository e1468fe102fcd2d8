"""A full local round in a process where ``import torch`` fails."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BLOCKER = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
        return None
sys.meta_path.insert(0, _NoTorch())
"""

ROUND = """
import json, sys
from pathlib import Path
import numpy as np
try:
    import torch
    sys.exit("torch imported")
except ImportError:
    pass
from models import artifacts, graph
from models.activity import synthetic_windows
from models.ecg import beat_dataset
from models.export import export_inference, predict
from models.trainer import TrainConfig, train_local
cache, record, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
art = artifacts.ensure("ecg", cache)           # generation from code, no torch
x, y = beat_dataset(record)
w0 = graph.flatten(art.spec, graph.initial_params(art.spec))
res = train_local(art, w0, {k: v[:600] for k, v in x.items()}, y[:600],
                  TrainConfig(epochs=1, mu=0.01))
export_inference("ecg", w0 + res.delta, out)
logits = predict(out, {k: v[:8] for k, v in x.items()})
print(json.dumps({"n": res.n_samples, "torch": "torch" in sys.modules,
                  "finite": bool(np.isfinite(res.delta).all()), "logits": list(logits.shape)}))
"""


def test_local_round_without_torch(mitdb_dir: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(site)}
    script = tmp_path / "round.py"
    script.write_text(ROUND)
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "cache"),
            str(mitdb_dir / "109"),
            str(tmp_path / "m.onnx"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"n": 600, "torch": False, "finite": True, "logits": [8, 4]}


def test_blocker_really_blocks(tmp_path: Path) -> None:
    if importlib.util.find_spec("torch") is None:  # find_spec does not import it
        pytest.skip("torch is not installed; nothing to block")
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    proc = subprocess.run(
        [sys.executable, "-c", "import torch"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0 and "blocked" in proc.stderr


WARM = """
import json, sys
from pathlib import Path
from models import artifacts, graph
from models.ecg import beat_dataset
from models.trainer import TrainConfig, train_local
art = artifacts.ensure("ecg", Path(sys.argv[1]))
x, y = beat_dataset(sys.argv[2])
w0 = graph.flatten(art.spec, graph.initial_params(art.spec))
res = train_local(art, w0, x, y, TrainConfig(epochs=1))
print(json.dumps({"n": res.n_samples, "heavy": sorted(m for m in ("torch", "onnx", "flwr")
                                                        if m in sys.modules)}))
"""


def test_cached_round_imports_neither_torch_nor_onnx(mitdb_dir: Path, tmp_path: Path) -> None:
    from models import artifacts

    artifacts.ensure("ecg", tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", WARM, str(tmp_path), str(mitdb_dir / "101")],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [] and result["n"] > 1800
