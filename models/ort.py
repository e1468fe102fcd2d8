"""Torch-free access to ``onnxruntime.training``.

The wheel's ``onnxruntime/training/__init__.py`` imports ``amp`` and ``optim``, which import torch,
and ``import onnxruntime`` itself probes ``onnxruntime.training.ortmodule`` (torch again). A gateway
has no torch, and even where torch is installed it costs ~200 MB of RSS. So before onnxruntime is
imported, this module registers the ``onnxruntime.training`` and ``onnxruntime.tools`` packages as
bare package objects (their ``__init__`` never runs) and marks ``ortmodule`` as absent; the
submodules we need (``api``, ``artifacts``, ``onnxblock``) then import normally by path.

Every other fedgate module reaches onnxruntime only through the functions here.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from native.errors import TrainingError

logger = logging.getLogger(__name__)

_LOCK = threading.Lock()
_STUBBED = ("onnxruntime.training", "onnxruntime.tools")


def _package_stub(name: str, folder: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    if spec is None:
        raise TrainingError(f"cannot locate package {name} in {folder}")
    return importlib.util.module_from_spec(spec)


def _install_stubs() -> None:
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise TrainingError(
            "onnxruntime-training is not installed (pip install onnxruntime-training)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    if not (root / "training" / "api").is_dir():
        raise TrainingError(
            f"{root} is the inference-only onnxruntime; install onnxruntime-training==1.19.2"
        )
    stubs = {}
    for name in _STUBBED:
        if name not in sys.modules:
            stubs[name] = _package_stub(name, root / name.rsplit(".", 1)[1])
            sys.modules[name] = stubs[name]
    # ``import onnxruntime`` probes ortmodule and treats ImportError as "not a torch build".
    sys.modules.setdefault("onnxruntime.training.ortmodule", None)  # type: ignore[arg-type]
    import onnxruntime

    for name, module in stubs.items():
        setattr(onnxruntime, name.rsplit(".", 1)[1], module)


def _load(submodule: str) -> Any:
    with _LOCK:
        if "onnxruntime.training" not in sys.modules:
            if "onnxruntime" in sys.modules:
                # onnxruntime was imported first and its probe already failed or ran: the stubs
                # are still safe to add because the real training package is not loaded.
                logger.debug("onnxruntime imported before models.ort; adding stubs late")
            _install_stubs()
        return importlib.import_module(f"onnxruntime.training.{submodule}")


def training_api() -> Any:
    """The ``onnxruntime.training.api`` module (Module, CheckpointState, Optimizer)."""
    return _load("api")


def training_artifacts() -> Any:
    """The ``onnxruntime.training.artifacts`` module (``generate_artifacts``); imports onnx."""
    return _load("artifacts")


def onnxblock() -> Any:
    """The ``onnxruntime.training.onnxblock`` package, for custom loss blocks."""
    return _load("onnxblock")


def runtime() -> Any:
    """The ``onnxruntime`` package itself, imported without pulling in torch."""
    _load("api")
    import onnxruntime

    return onnxruntime


def session_options(threads: int) -> Any:
    """SessionOptions with a fixed thread count (determinism and a small footprint)."""
    ort = runtime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts
