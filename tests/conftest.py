"""Shared fixtures: the read-only shared data, its absence handled as a clean skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Subprocesses started by the tests (``python -c ...``) must import the installed fedgate, not the
# source folders of the checkout they happen to run in: without this, Python puts the working
# directory first on sys.path and a non-editable install's compiled modules go missing.
os.environ["PYTHONSAFEPATH"] = "1"


def shared_dir() -> Path:
    """The project's shared folder: $FEDGATE_SHARED, or ``../shared`` beside the checkout."""
    return Path(os.environ.get("FEDGATE_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    path = shared_dir() / "vectors"
    if not path.is_dir():
        pytest.skip(f"test vectors not found at {path} (set FEDGATE_SHARED)")
    return path


@pytest.fixture(scope="session")
def mitdb_dir() -> Path:
    path = shared_dir() / "data" / "mitdb"
    if not (path / "101.hea").is_file():
        pytest.skip(f"MIT-BIH records not found at {path} (set FEDGATE_SHARED)")
    return path
