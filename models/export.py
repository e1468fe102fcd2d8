"""Inference export: flat parameters -> a plain ONNX model for the ``onnxruntime`` package alone.

The exported graph is the model's forward pass with the parameters as initializers: no training
ops, no FedProx inputs, nothing from ``com.microsoft``. This is what a hospital deploys.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models import graph
from models.trainer import check_params
from models.zoo import get_spec
from native.errors import InputError, TrainingError

logger = logging.getLogger(__name__)


def inference_model_bytes(model: str, params: Any) -> bytes:
    """Serialized inference ONNX model of ``model`` with the flat ``params``."""
    spec = get_spec(model)
    flat = check_params(params, graph.parameter_count(spec))
    return bytes(graph.build_model(spec, graph.unflatten(spec, flat)).SerializeToString())


def export_inference(model: str, params: Any, out: str | Path) -> Path:
    """Write the inference model atomically to ``out`` (temp file + rename); returns the path."""
    blob = inference_model_bytes(model, params)
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out} is a directory; give a file name ending in .onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote %s inference model (%d bytes) to %s", model, len(blob), out)
    return out


def load_params_file(path: str | Path) -> NDArray[Any]:
    """A flat parameter vector from a ``.npy`` file (no pickles), or ``InputError``."""
    try:
        arr = np.load(Path(path), allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read parameters from {path}: {exc}") from exc
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{path} holds an archive, not one parameter vector")
    return arr


def predict(model_path: str | Path, inputs: dict[str, NDArray[Any]]) -> NDArray[Any]:
    """Logits from an exported model with a plain ``onnxruntime.InferenceSession``."""
    from models.ort import runtime

    try:
        sess = runtime().InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        return np.asarray(sess.run(None, inputs)[0])
    except Exception as exc:
        raise TrainingError(f"inference with {model_path} failed: {exc}") from exc
