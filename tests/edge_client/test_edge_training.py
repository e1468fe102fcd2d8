"""A round's fit in a worker process is the same fit as on the training thread, and the CPU it
costs is counted; the crypto pool's work is counted for the thread that asked for it."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest

from edge_client.localdata import StoreData
from edge_client.training import fit, process_pool
from firmware_sim.simdata import fill_store, patient_spec
from models import graph
from models.artifacts import ensure
from models.trainer import TrainConfig
from native import keys
from native.errors import TrainingError


def test_fit_in_a_worker_process_is_bit_identical(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    fill_store(path, patient_spec(0, 2, 60.0), 60.0)
    inputs, labels = StoreData(path).dataset()
    art = ensure("ecg")
    w0 = graph.flatten(art.spec, graph.initial_params(art.spec))
    config = TrainConfig(epochs=2, lr=3e-3, seed=11)
    here, cpu_here = fit(art, w0, inputs, labels, config, 1)
    pool = process_pool(1)
    try:
        # Training yields the CPU to the latency-bound work of the daemon process.
        assert pool.submit(os.nice, 0).result() == min(19, os.nice(0) + 10)
        there, cpu_there = pool.submit(fit, art, w0, inputs, labels, config, 1).result()
        assert np.array_equal(here.delta, there.delta) and here.n_samples == there.n_samples
        assert cpu_here > 0 and cpu_there > 0
        # A training error raised in the worker arrives as the same error, not a broken pool.
        bad = {k: np.full_like(v, np.nan) for k, v in inputs.items()}
        with pytest.raises(TrainingError, match="NaN"):
            pool.submit(fit, art, w0, bad, labels, config, 1).result()
        again, _ = pool.submit(fit, art, w0, inputs, labels, config, 1).result()
        assert np.array_equal(again.delta, here.delta)
    finally:
        pool.shutdown()


def _burn(item: int) -> float:
    started = time.thread_time()
    data = bytes(item % 251 for _ in range(2000))
    for _ in range(300):
        data = hashlib.sha256(data).digest() * 60
    return time.thread_time() - started


def test_caller_cpu_counts_the_crypto_pools_share() -> None:
    items = list(range(64))  # above the parallel threshold: the shared pool runs the chunks
    before_thread, before = time.thread_time(), keys.caller_cpu_s()
    spent = sum(keys.map_chunked(_burn, items))
    caller = keys.caller_cpu_s() - before
    own = time.thread_time() - before_thread
    assert spent > 0 and caller >= 0.9 * spent  # everything the items cost, wherever it ran
    if (os.cpu_count() or 1) >= 2:  # the chunks ran on the pool, not on this thread
        assert caller - own >= 0.9 * spent
