"""One training epoch of the ECG model: onnxruntime-training (fedgate) vs PyTorch, same network.

Both sides train the same architecture (conv k=10/s=2 -> conv k=4/s=4 -> conv k=3/s=3 -> dense
-> 4 classes, RR features concatenated before the dense layer) with the same loss (class-weighted
cross-entropy + FedProx term), AdamW, the same batches and the same thread count. PyTorch runs it
twice: idiomatic ``nn.Conv1d`` layers, and the MatMul-over-windows formulation fedgate's ONNX graph
uses (``unfold`` + ``nn.Linear``). Repetitions are interleaved; figures are medians in seconds.

    python benchmarks/bench_training.py [--quick] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# The installed fedgate, never the checkout's source folders (they lack the built modules).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_info

from models import artifacts, graph
from models.trainer import LocalTrainer

MITDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "mitdb"
RECORDS = ("119", "208", "209")
WEIGHTS = np.array([1.0, 8.0, 2.0, 8.0], dtype=np.float32)
MU, LR = 0.01, 1e-3


def load_data(quick: bool) -> tuple[dict[str, np.ndarray], np.ndarray, str]:
    """Beats of a few MIT-BIH records, or shape-identical random data when they are absent."""
    if (MITDB / "101.hea").is_file():
        from models.ecg import beat_dataset

        records = RECORDS[: 1 if quick else None]
        parts = [beat_dataset(MITDB / r) for r in records]
        x = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
        return x, np.concatenate([p[1] for p in parts]), "mitdb " + " ".join(records)
    rng = np.random.default_rng(0)
    n = 2000 if quick else 8000
    x = {
        "beat": rng.standard_normal((n, 128), dtype=np.float32),
        "rr": rng.uniform(0.5, 1.5, (n, 4)).astype(np.float32),
    }
    return x, rng.integers(0, 4, n), "synthetic"


def torch_models(torch: Any, spec: graph.ModelSpec) -> dict[str, Any]:
    nn = torch.nn
    (p1, c1), (p2, c2) = spec.patch_layers
    k0, s0, c0 = spec.first_kernel, spec.first_stride, spec.first_channels
    ch = spec.series_channels
    flat = (spec.first_positions // p1 // p2) * c2 + spec.side_dim

    class ConvNet(nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.Sequential(
                nn.Conv1d(ch, c0, k0, s0),
                nn.ReLU(),
                nn.Conv1d(c0, c1, p1, p1),
                nn.ReLU(),
                nn.Conv1d(c1, c2, p2, p2),
                nn.ReLU(),
            )
            self.head = nn.Sequential(
                nn.Linear(flat, spec.hidden), nn.ReLU(), nn.Linear(spec.hidden, spec.n_classes)
            )

        def forward(self, beat: Any, rr: Any) -> Any:
            h = self.convs(beat).flatten(1)  # beat is (B, C, T), transposed beforehand
            return self.head(torch.cat([h, rr], dim=1))

    class GemmNet(nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.l0, self.l1 = nn.Linear(k0 * ch, c0), nn.Linear(p1 * c0, c1)
            self.l2 = nn.Linear(p2 * c1, c2)
            self.head = nn.Sequential(
                nn.Linear(flat, spec.hidden), nn.ReLU(), nn.Linear(spec.hidden, spec.n_classes)
            )

        def forward(self, beat: Any, rr: Any) -> Any:
            w = beat.unfold(1, k0, s0)  # (B, P, C, K): the windows the ONNX graph gathers
            h = torch.relu(self.l0(w.reshape(w.shape[0], w.shape[1], -1)))
            h = torch.relu(self.l1(h.reshape(h.shape[0], -1, p1 * c0)))
            h = torch.relu(self.l2(h.reshape(h.shape[0], -1, p2 * c1)))
            return self.head(torch.cat([h.flatten(1), rr], dim=1))

    return {"torch_conv1d": (ConvNet(), "beat_cf"), "torch_gemm": (GemmNet(), "beat")}


def torch_epoch(
    torch: Any, model: Any, key: str, x: dict[str, Any], y: Any, order: np.ndarray, batch: int
) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=LR, eps=1e-6, weight_decay=0.0)
    anchor = [p.detach().clone() for p in model.parameters()]
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(WEIGHTS))
    order_t = torch.from_numpy(order)
    t0 = time.perf_counter()
    for s in range(0, order.size, batch):
        idx = order_t[s : s + batch]
        loss = loss_fn(model(x[key][idx], x["rr"][idx]), y[idx])
        prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
        loss = loss + 0.5 * MU * prox
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def ort_epoch(
    trainer: LocalTrainer, x: dict[str, np.ndarray], y: np.ndarray, order: np.ndarray, batch: int
) -> float:
    trainer.set_proximal(trainer.get_parameters(), MU)
    trainer.optimizer.set_learning_rate(LR)
    rng = _FixedOrder(order)
    t0 = time.perf_counter()
    trainer.train_epoch(x, y, batch, WEIGHTS, rng)  # type: ignore[arg-type]
    return time.perf_counter() - t0


def ort_conv_trainer(spec: graph.ModelSpec, folder: Path, threads: int) -> Any:
    """The same network with ONNX ``Conv`` layers, trained by onnxruntime-training (the profile
    that motivated fedgate's Gemm formulation). Loss: unweighted cross-entropy, no FedProx."""
    from onnx import TensorProto, helper, numpy_helper

    from models.ort import session_options, training_api, training_artifacts

    (p1, c1), (p2, c2) = spec.patch_layers
    ch, k0, s0, c0 = spec.series_channels, spec.first_kernel, spec.first_stride, spec.first_channels
    flat = (spec.first_positions // p1 // p2) * c2 + spec.side_dim
    rng = np.random.default_rng(0)
    shapes = {
        "w0": (c0, ch, k0),
        "b0": (c0,),
        "w1": (c1, c0, p1),
        "b1": (c1,),
        "w2": (c2, c1, p2),
        "b2": (c2,),
        "wf": (flat, spec.hidden),
        "bf": (spec.hidden,),
        "wo": (spec.hidden, spec.n_classes),
        "bo": (spec.n_classes,),
    }
    inits = [
        numpy_helper.from_array((rng.standard_normal(v) * 0.1).astype(np.float32), k)
        for k, v in shapes.items()
    ]
    mk = helper.make_node
    nodes = [
        mk("Conv", ["beat_cf", "w0", "b0"], ["c0"], strides=[s0]),
        mk("Relu", ["c0"], ["r0"]),
        mk("Conv", ["r0", "w1", "b1"], ["c1"], strides=[p1]),
        mk("Relu", ["c1"], ["r1"]),
        mk("Conv", ["r1", "w2", "b2"], ["c2"], strides=[p2]),
        mk("Relu", ["c2"], ["r2"]),
        mk("Flatten", ["r2"], ["f"], axis=1),
        mk("Concat", ["f", "rr"], ["fr"], axis=1),
        mk("Gemm", ["fr", "wf", "bf"], ["h"]),
        mk("Relu", ["h"], ["hr"]),
        mk("Gemm", ["hr", "wo", "bo"], ["logits"]),
    ]
    inputs = [
        helper.make_tensor_value_info("beat_cf", TensorProto.FLOAT, ["batch", ch, spec.series_len]),
        helper.make_tensor_value_info("rr", TensorProto.FLOAT, ["batch", spec.side_dim]),
    ]
    out = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", spec.n_classes])]
    model = helper.make_model(
        helper.make_graph(nodes, "ecg_conv", inputs, out, inits),
        opset_imports=[helper.make_opsetid("", graph.OPSET)],
        ir_version=graph.IR_VERSION,
    )
    art = training_artifacts()
    folder.mkdir(parents=True, exist_ok=True)
    from models.artifacts import _quiet_stderr  # the gradient builder's info log

    with _quiet_stderr():
        art.generate_artifacts(
            model,
            requires_grad=list(shapes),
            loss=art.LossType.CrossEntropyLoss,
            optimizer=art.OptimType.AdamW,
            artifact_directory=str(folder),
        )
    api = training_api()
    state = api.CheckpointState.load_checkpoint(str(folder / "checkpoint"))
    module = api.Module(
        str(folder / "training_model.onnx"), state, session_options=session_options(threads)
    )
    return module, api.Optimizer(str(folder / "optimizer_model.onnx"), module)


def ort_conv_epoch(
    trainer: Any, x: dict[str, np.ndarray], y: np.ndarray, order: np.ndarray, batch: int
) -> float:
    module, opt = trainer
    opt.set_learning_rate(LR)
    module.train()
    t0 = time.perf_counter()
    for s in range(0, order.size, batch):
        idx = np.sort(order[s : s + batch])
        module(x["beat_cf"][idx], x["rr"][idx], y[idx])
        opt.step()
        module.lazy_reset_grad()
    return time.perf_counter() - t0


class _FixedOrder:
    """Hands train_epoch the same permutation the PyTorch side uses."""

    def __init__(self, order: np.ndarray) -> None:
        self.order = order

    def permutation(self, n: int) -> np.ndarray:
        return self.order


def run(
    threads: int, reps: int, batch: int, x: dict[str, np.ndarray], y: np.ndarray, cache: Path
) -> dict[str, float]:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    art = artifacts.ensure("ecg", cache)
    trainer = LocalTrainer(art, threads=threads)
    models = torch_models(torch, art.spec)
    conv = ort_conv_trainer(art.spec, cache / f"conv-t{threads}", threads)
    x_cf = {"beat_cf": np.ascontiguousarray(x["beat"].transpose(0, 2, 1)), "rr": x["rr"]}
    xt = {k: torch.from_numpy(v) for k, v in x.items()}
    xt["beat_cf"] = xt["beat"].permute(0, 2, 1).contiguous()
    yt = torch.from_numpy(y)
    rng = np.random.default_rng(1)
    times: dict[str, list[float]] = {"ort": [], "ort_conv": [], **{k: [] for k in models}}
    for rep in range(reps + 1):  # the first repetition warms up every side and is dropped
        order = rng.permutation(y.size)
        sample = {"ort": ort_epoch(trainer, x, y, order, batch)}
        sample["ort_conv"] = ort_conv_epoch(conv, x_cf, y, order, batch)
        for name, (model, key) in models.items():
            sample[name] = torch_epoch(torch, model, key, xt, yt, order, batch)
        if rep:
            for k, v in sample.items():
                times[k].append(v)
    return {k: statistics.median(v) for k, v in times.items()}


ROUND = """
import json, resource, sys
from pathlib import Path
from models import artifacts, graph
from models.ecg import beat_dataset
from models.trainer import TrainConfig, train_local
art = artifacts.ensure("ecg", Path(sys.argv[1]))
x, y = beat_dataset(sys.argv[2])
w0 = graph.flatten(art.spec, graph.initial_params(art.spec))
res = train_local(art, w0, x, y, TrainConfig(epochs=2, batch_size=64, mu=0.01))
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "n": res.n_samples, "torch": "torch" in sys.modules,
                  "onnx": "onnx" in sys.modules}))
"""


def round_rss(cache: Path) -> dict[str, float]:
    """Peak RSS (MB) of one complete local round in a fresh process, imports included."""
    import subprocess

    record = MITDB / "208"
    if not (MITDB / "208.hea").is_file():
        return {}
    out: dict[str, float] = {}
    for case in ("cold_cache", "warm_cache"):  # cold: artifacts generated in the same process
        proc = subprocess.run(
            [sys.executable, "-P", "-c", ROUND, str(cache), str(record)],  # -P: installed fedgate
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        assert not res["torch"], "a local round imported torch"
        out[f"local_round_peak_rss_mb_{case}"] = round(res["rss_mb"], 1)
        out["local_round_samples"] = res["n"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    x, y, source = load_data(args.quick)
    reps = 3 if args.quick else 7
    figures: dict[str, Any] = {"samples": int(y.size), "batch": args.batch, "repetitions": reps}
    ratios: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        figures.update(round_rss(Path(cache) / "rss"))
        for t in args.threads:
            med = run(t, reps, args.batch, x, y, Path(cache))
            for k, v in med.items():
                figures[f"epoch_s_{k}_t{t}"] = round(v, 5)
            for k in ("torch_conv1d", "torch_gemm", "ort_conv"):
                ratios[f"epoch_{k}_over_ort_t{t}"] = round(med[k] / med["ort"], 3)
    import torch

    print(
        json.dumps(
            {
                "area": "training",
                "data": source,
                "machine": machine_info(torch=torch.__version__),
                "figures": figures,
                "ratios": ratios,
            }
        )
    )


if __name__ == "__main__":
    main()
