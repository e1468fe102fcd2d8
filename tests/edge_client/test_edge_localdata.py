"""The gateway's training data from its store: cached while the store is unchanged, rebuilt as
soon as a frame or a beat arrives, and counted with one query."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_client.localdata import StoreData
from edge_client.store import Store
from firmware_sim.simdata import fill_store, patient_spec
from models.ecg import AAMI
from native.errors import InputError


def python_count(path: Path) -> int:
    """The definition the SQL count must keep: AAMI-labelled beats of every device."""
    store = Store(path)
    try:
        return sum(sum(1 for _, label, _ in store.beats(d) if label in AAMI)
                   for d in store.device_ids())
    finally:
        store.close()


def test_beats_are_reused_until_the_store_changes(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    fill_store(path, patient_spec(0, 5, 60.0), 60.0)
    data = StoreData(path)
    count = data.sample_count()
    assert count == python_count(path) > 0
    first, labels = data.dataset()
    again, labels_again = data.dataset()
    assert again is first and labels_again is labels  # nothing changed: no second decode
    with pytest.raises(ValueError):
        first["beat"][0, 0, 0] = 1.0  # shared by later rounds, so nobody may write into it
    fresh_inputs, fresh_labels = StoreData(path).dataset()
    assert np.array_equal(fresh_labels, labels) and np.array_equal(fresh_inputs["beat"],
                                                                     first["beat"])
    fill_store(path, patient_spec(1, 5, 45.0), 45.0)  # a second patch: new frames and beats
    grown, grown_labels = data.dataset()
    assert grown is not first and grown_labels.size > labels.size
    assert data.sample_count() == python_count(path) > count


def test_data_version_moves_with_every_insert(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    store = Store(path)
    try:
        empty = store.data_version()
        assert empty == (0, 0, 0, 0, 0)
    finally:
        store.close()
    fill_store(path, patient_spec(2, 1, 30.0), 30.0)
    store = Store(path)
    try:
        filled = store.data_version()
        assert all(v > 0 for v in filled) and store.data_version() == filled
        device = store.device_ids()[0]
        assert store.count_beats(device, AAMI) == python_count(path)
        assert store.count_beats(device, ["no-such-label"]) == 0
        for bad in ([], [1, 2], None):
            with pytest.raises((InputError, TypeError)):
                store.count_beats(device, bad)  # type: ignore[arg-type]
    finally:
        store.close()
