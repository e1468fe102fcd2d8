"""Training artifacts: reproducible, cached by definition hash, verified before use."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from models import artifacts
from models.manifest import WIRE_VERSION, Manifest
from models.zoo import ECG
from native.errors import IntegrityError, TrainingError


@pytest.fixture(scope="module")
def ecg_art(tmp_path_factory: pytest.TempPathFactory) -> artifacts.Artifacts:
    return artifacts.ensure("ecg", tmp_path_factory.mktemp("cache"))


def test_generation_is_reproducible(ecg_art: artifacts.Artifacts, tmp_path: Path) -> None:
    again = artifacts.ensure("ecg", tmp_path)
    assert again.manifest.artifacts == ecg_art.manifest.artifacts
    assert again.manifest.digest() == ecg_art.manifest.digest()
    assert again.root.name == ecg_art.root.name


def test_manifest_content(ecg_art: artifacts.Artifacts) -> None:
    m = ecg_art.manifest
    assert m.wire_version == WIRE_VERSION
    assert m.class_names == ["N", "S", "V", "F"]
    assert [i["name"] for i in m.inputs] == ["beat", "rr"]
    assert m.inputs[0]["shape"] == ["batch", 128, 2]
    assert m.parameter_count == sum(
        int(__import__("numpy").prod(shape)) for _, shape in m.parameters
    )
    assert Manifest.from_json(m.to_json()) == m


def test_cache_hit_reuses_folder(ecg_art: artifacts.Artifacts) -> None:
    cache = ecg_art.root.parent
    before = sorted(p.name for p in cache.iterdir())
    assert artifacts.ensure("ecg", cache).root == ecg_art.root
    assert sorted(p.name for p in cache.iterdir()) == before


def _copy(src: artifacts.Artifacts, dst: Path) -> Path:
    import shutil

    shutil.copytree(src.root, dst)
    return dst


def test_tampered_file_is_integrity_error(ecg_art: artifacts.Artifacts, tmp_path: Path) -> None:
    root = _copy(ecg_art, tmp_path / "a")
    blob = bytearray((root / "checkpoint").read_bytes())
    blob[len(blob) // 2] ^= 1
    (root / "checkpoint").write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match="checkpoint"):
        artifacts.load(root)
    (root / "checkpoint").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        artifacts.load(root)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: "not json {",
        lambda d: json.dumps({**d, "wire_version": d["wire_version"] + 1}),
        lambda d: json.dumps({**d, "definition_sha256": "0" * 64}),
        lambda d: json.dumps({**d, "parameter_count": 5}),
        lambda d: json.dumps({k: v for k, v in d.items() if k != "artifacts"}),
        lambda d: json.dumps({**d, "artifacts": {}}),
        lambda d: json.dumps([1, 2]),
    ],
)
def test_bad_manifest_is_integrity_error(
    ecg_art: artifacts.Artifacts, tmp_path: Path, edit: object
) -> None:
    root = _copy(ecg_art, tmp_path / "a")
    data = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(edit(data))  # type: ignore[operator]
    with pytest.raises(IntegrityError):
        artifacts.load(root)


def test_digest_and_definition_mismatch(ecg_art: artifacts.Artifacts) -> None:
    with pytest.raises(IntegrityError, match="digest"):
        artifacts.load(ecg_art.root, digest="ab" * 32)
    assert artifacts.load(ecg_art.root, digest=ecg_art.manifest.digest()).root == ecg_art.root
    cache = ecg_art.root.parent
    assert artifacts.ensure("ecg", cache, digest=ecg_art.manifest.digest()) == ecg_art
    with pytest.raises(IntegrityError, match="digest"):
        artifacts.ensure("ecg", cache, digest="cd" * 32)
    with pytest.raises(IntegrityError, match="another definition"):
        artifacts.load(ecg_art.root, spec=replace(ECG, hidden=8))


def test_corrupt_cache_entry_is_not_silently_replaced(
    ecg_art: artifacts.Artifacts, tmp_path: Path
) -> None:
    root = _copy(ecg_art, tmp_path / ecg_art.root.name)
    (root / "eval_model.onnx").write_bytes(b"garbage")
    with pytest.raises(IntegrityError):
        artifacts.ensure("ecg", tmp_path)
    assert (root / "eval_model.onnx").read_bytes() == b"garbage"


def test_failed_generation_leaves_nothing(tmp_path: Path) -> None:
    # a spec whose patch sizes do not divide its positions cannot be built
    bad = replace(ECG, name="broken", patch_layers=((7, 8),))
    with pytest.raises((TrainingError, ValueError)):
        artifacts.ensure(bad, tmp_path)
    assert list(tmp_path.iterdir()) == []
