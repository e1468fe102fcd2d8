"""The manifest of a model's training artifacts, checked by gateway and aggregator before a round.

Its digest (sha256 of the canonical JSON) is what both sides compare; the per-file sha256 values
inside it are checked against the files before any of them is loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from native.errors import IntegrityError
from native.wire import WIRE_VERSION  # the format the flat parameter vector travels in

__all__ = ["ARTIFACT_FILES", "MANIFEST_FILE", "WIRE_VERSION", "Manifest", "read_manifest"]
MANIFEST_FILE = "manifest.json"
ARTIFACT_FILES = ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint")


@dataclass(frozen=True)
class Manifest:
    """What a model's artifacts are: inputs, classes, parameter layout and file hashes."""

    name: str
    version: int
    definition_sha256: str
    inputs: list[dict[str, Any]]
    normalisation: dict[str, str]
    class_names: list[str]
    parameter_count: int
    parameters: list[list[Any]]  # [name, shape] in flat-vector order
    artifacts: dict[str, str]  # file name -> sha256
    optimizer: str
    onnxruntime_training: str
    wire_version: int = WIRE_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    def digest(self) -> str:
        """sha256 of the canonical JSON: equal digests mean identical artifacts and layout."""
        blob = json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            data = json.loads(text)
            manifest = cls(**data)
        except (ValueError, TypeError) as exc:
            raise IntegrityError(f"manifest is not valid: {exc}") from exc
        if manifest.wire_version != WIRE_VERSION:
            raise IntegrityError(
                f"manifest wire version {manifest.wire_version}, expected {WIRE_VERSION}"
            )
        if set(manifest.artifacts) != set(ARTIFACT_FILES):
            raise IntegrityError(
                f"manifest lists {sorted(manifest.artifacts)}, expected {sorted(ARTIFACT_FILES)}"
            )
        return manifest


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_files(root: Path, manifest: Manifest) -> None:
    """Raise ``IntegrityError`` unless every artifact file exists with its recorded sha256."""
    for fname, expected in manifest.artifacts.items():
        path = root / fname
        if not path.is_file():
            raise IntegrityError(f"artifact {path} is missing")
        actual = file_sha256(path)
        if actual != expected:
            raise IntegrityError(
                f"artifact {path}: sha256 {actual[:16]}..., manifest says {expected[:16]}..."
            )


def read_manifest(root: Path) -> Manifest:
    """Load ``manifest.json`` from an artifact folder (``IntegrityError`` if absent or invalid)."""
    try:
        text = (root / MANIFEST_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"cannot read manifest in {root}: {exc}") from exc
    return Manifest.from_json(text)
