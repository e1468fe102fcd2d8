"""Training artifacts: generated from code, cached by the hash of the model definition.

Layout: ``<cache>/<name>-v<version>-w<wire version>-<definition sha256[:16]>/`` with the four
files of ``onnxruntime.training.artifacts.generate_artifacts`` plus ``manifest.json``. A folder
is written under a temporary name and renamed into place, so a crash never leaves a half-written
cache entry.
Loading from the cache imports neither ``onnx`` nor torch.

The training graph's loss is class-weighted softmax cross-entropy plus the FedProx term
``mu/2 * ||w - w_global||^2``; the weights, ``mu`` and the global weights are graph inputs, so one
set of artifacts serves every round.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models import graph
from models.graph import Spec
from models.manifest import (
    ARTIFACT_FILES,
    MANIFEST_FILE,
    WIRE_VERSION,
    Manifest,
    file_sha256,
    read_manifest,
    verify_files,
)
from models.zoo import get_spec
from native.errors import IntegrityError, TrainingError

logger = logging.getLogger(__name__)

LABELS = "labels"
CLASS_WEIGHTS = "class_weights"
LOSS = "loss"
OPTIMIZER = "AdamW"


@dataclass(frozen=True)
class Artifacts:
    """A verified artifact folder and its manifest."""

    root: Path
    manifest: Manifest
    spec: Spec

    @property
    def training_model(self) -> Path:
        return self.root / "training_model.onnx"

    @property
    def eval_model(self) -> Path:
        return self.root / "eval_model.onnx"

    @property
    def optimizer_model(self) -> Path:
        return self.root / "optimizer_model.onnx"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint"


def default_cache_dir() -> Path:
    """``$FEDGATE_CACHE`` or ``~/.cache/fedgate``."""
    env = os.environ.get("FEDGATE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fedgate"


def _folder_name(spec: Spec) -> str:
    # The wire version is part of every manifest: a new one means new artifacts, not a mismatch.
    return f"{spec.name}-v{spec.version}-w{WIRE_VERSION}-{graph.definition_hash(spec)[:16]}"


def _loss_block(spec: Spec) -> Any:
    from onnx import TensorProto, helper

    from models.ort import onnxblock

    ob = onnxblock()

    class WeightedCrossEntropyWithProx(ob.Block):  # type: ignore[misc, name-defined]
        def build(self, logits: str, prox: str) -> str:
            g = self.base.graph
            g.input.append(helper.make_tensor_value_info(LABELS, TensorProto.INT64, ["batch"]))
            g.input.append(
                helper.make_tensor_value_info(CLASS_WEIGHTS, TensorProto.FLOAT, [spec.n_classes])
            )
            g.node.append(
                helper.make_node(
                    "SoftmaxCrossEntropyLoss",
                    [logits, LABELS, CLASS_WEIGHTS],
                    ["ce_loss", "ce_log_prob"],
                    reduction="mean",
                )
            )
            g.node.append(helper.make_node("Add", ["ce_loss", prox], [LOSS]))
            return LOSS

    return WeightedCrossEntropyWithProx()


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the gradient builder's C++ info log (it ignores the logger severity)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _write(spec: Spec, folder: Path) -> Manifest:
    from models.ort import runtime, training_artifacts

    art = training_artifacts()
    runtime().set_default_logger_severity(3)
    # onnxblock numbers generated node names with a process-wide counter; restarting it makes
    # the files byte-identical however many models this process generated before.
    utils: Any = importlib.import_module("onnxruntime.training.onnxblock._graph_utils")
    utils._GRAPH_TOKEN = 0
    params = graph.initial_params(spec)
    base = graph.build_model(spec, params, with_prox=True)
    names = [n for n, _ in graph.param_shapes(spec)]
    with _quiet_stderr():
        art.generate_artifacts(
            base,
            requires_grad=names,
            loss=_loss_block(spec),
            optimizer=art.OptimType.AdamW,
            artifact_directory=str(folder),
            additional_output_names=[graph.LOGITS],
        )
    _check_layout(spec, folder)
    hashes = {f: file_sha256(folder / f) for f in ARTIFACT_FILES}
    manifest = Manifest(
        name=spec.name,
        version=spec.version,
        definition_sha256=graph.definition_hash(spec),
        inputs=[
            {"name": n, "shape": s, "dtype": "float32"} for n, s in spec.input_shapes().items()
        ],
        normalisation=dict(spec.normalisation),
        class_names=list(spec.class_names),
        parameter_count=graph.parameter_count(spec),
        parameters=[[n, list(s)] for n, s in graph.param_shapes(spec)],
        artifacts=hashes,
        optimizer=OPTIMIZER,
        onnxruntime_training=importlib.metadata.version("onnxruntime-training"),
    )
    (folder / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def _check_layout(spec: Spec, folder: Path) -> None:
    """The flat vector order must be onnxruntime's contiguous-buffer order; prove it once."""
    from models.ort import training_api

    api = training_api()
    state = api.CheckpointState.load_checkpoint(str(folder / "checkpoint"))
    module = api.Module(str(folder / "training_model.onnx"), state, str(folder / "eval_model.onnx"))
    flat = module.get_contiguous_parameters(trainable_only=True).numpy()
    if not np.array_equal(flat, graph.flatten(spec, graph.initial_params(spec))):
        raise TrainingError(f"{spec.name}: onnxruntime parameter order differs from the spec")


def generate(spec: Spec, dest: Path) -> Artifacts:
    """Generate artifacts for ``spec`` into ``dest`` atomically (temp folder + rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _write(spec, tmp)
        tmp.chmod(0o755)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / MANIFEST_FILE).is_file():
                raise
            logger.info("artifacts %s were written concurrently; keeping the first", dest)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, (IntegrityError, TrainingError)):
            raise
        raise TrainingError(f"generating artifacts for {spec.name} failed: {exc}") from exc
    shutil.rmtree(tmp, ignore_errors=True)
    return load(dest, spec=spec)


def load(root: Path, *, spec: Spec | None = None, digest: str | None = None) -> Artifacts:
    """Open an artifact folder after checking its manifest and every file's sha256.

    ``spec`` (default: the model named in the manifest) must have the recorded definition hash;
    ``digest``, when given (e.g. from a signed round config), must equal the manifest's digest.
    """
    root = Path(root)
    manifest = read_manifest(root)
    if digest is not None and manifest.digest() != digest:
        raise IntegrityError(
            f"manifest digest {manifest.digest()[:16]}... differs from expected {digest[:16]}..."
        )
    spec = spec if spec is not None else get_spec(manifest.name)
    expected = graph.definition_hash(spec)
    if manifest.definition_sha256 != expected or manifest.name != spec.name:
        raise IntegrityError(
            f"artifacts in {root} were built from another definition of {manifest.name} "
            f"({manifest.definition_sha256[:16]}..., code has {expected[:16]}...)"
        )
    if manifest.parameter_count != graph.parameter_count(spec):
        raise IntegrityError("manifest parameter count does not match the model definition")
    verify_files(root, manifest)
    return Artifacts(root=root, manifest=manifest, spec=spec)


def ensure(
    model: str | Spec, cache_dir: Path | None = None, *, digest: str | None = None
) -> Artifacts:
    """Verified artifacts for a model from the cache, generated there on first use.

    ``digest`` (the manifest digest a signed round config names) must match when given. A cache
    entry that fails verification is never repaired silently: ``IntegrityError``.
    """
    spec = get_spec(model) if isinstance(model, str) else model
    root = (cache_dir or default_cache_dir()) / _folder_name(spec)
    if root.exists():
        return load(root, spec=spec, digest=digest)
    logger.info("generating %s artifacts in %s", spec.name, root)
    art = generate(spec, root)
    return art if digest is None else load(root, spec=spec, digest=digest)
