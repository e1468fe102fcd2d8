"""One round's local training on a gateway: download the signed global model, load the local
data, fit with ``models.trainer.train_local``; never on the protocol or the network thread.

The fit runs in the calling thread by default. onnxruntime-training 1.19 holds the GIL through
every ``train_step`` (measured: two threads fitting at once take as long as one after the other),
so several daemons in one process (``fedgate sim``) would train one at a time and stall each
other's protocol and network threads. Given a process pool, the fit runs in a worker process
instead: the arguments (flat parameters, the local inputs) and the returned delta are pickled,
the artifacts are the same verified files, and each worker process has its own GIL.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edge_client.config import TrainingSection
from edge_client.enroll import AggregatorClient
from edge_client.evaluation import split
from edge_client.localdata import LocalData
from native.errors import FedgateError

if TYPE_CHECKING:
    from models.artifacts import Artifacts
    from models.trainer import TrainConfig, TrainResult

log = logging.getLogger(__name__)

Mark = Callable[[str], None]


@dataclass(frozen=True)
class Trained:
    """What one round's training produced, and what it cost."""

    delta: npt.NDArray[np.float32]
    samples: int
    version: int
    download_s: float
    train_s: float  # wall: local data + fit, waiting for a CPU or a pool worker included
    fit_cpu_s: float  # CPU seconds of the fit itself (thread, or worker process)
    model_bytes: int
    metrics: dict[str, float] = field(default_factory=dict)


def fit(artifacts: Artifacts, params: npt.NDArray[np.float32], inputs: Mapping[str, Any],
        labels: Any, config: TrainConfig, threads: int) -> tuple[TrainResult, float]:
    """``train_local`` and its CPU time; module level so that a process pool can pickle it."""
    from models.trainer import train_local

    started = time.process_time() if threads > 1 else time.thread_time()
    result = train_local(artifacts, params, inputs, labels, config, threads=threads)
    spent = (time.process_time() if threads > 1 else time.thread_time()) - started
    return result, spent


def warm_up() -> None:
    """Import the training runtime in a pool worker before the first round needs it."""
    from models.ort import training_api

    training_api()


def _background() -> None:
    """Pool worker start: training yields the CPU to the protocol, MQTT and HTTP threads."""
    try:
        os.nice(10)
    except OSError as exc:  # not fatal: the worker only competes harder for the CPU
        log.warning("cannot lower the training worker's priority: %s", exc)


def process_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """Worker processes for ``RoundTrainer`` (one per usable core by default), already warm.

    Spawned, not forked: the daemon process runs MQTT, HTTP and protocol threads, whose locks a
    forked child would inherit in whatever state they happened to be. The workers run at a lower
    priority (nice 10), as a gateway's training should: it takes the CPU the latency-bound
    protocol and transport work leaves idle, instead of making that work wait behind it.
    """
    count = workers or len(os.sched_getaffinity(0))
    pool = ProcessPoolExecutor(max_workers=count, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_background)
    for done in [pool.submit(warm_up) for _ in range(count)]:
        done.result()
    return pool


class RoundTrainer:
    """Starts one gateway's training for a round on a daemon thread and returns its future."""

    def __init__(self, *, client: AggregatorClient, server_key: bytes, model: str,
                 artifacts: Artifacts, n_params: int, data: LocalData, training: TrainingSection,
                 pool: Executor | None = None, holdout_fraction: float = 0.0,
                 score: Callable[[Any, Any], None] | None = None) -> None:
        self.client, self.server_key, self.model = client, server_key, model
        self.artifacts, self.n_params, self.data = artifacts, n_params, data
        self.training = training
        self.pool = pool
        # Federated evaluation: the newest share of the beats is never trained on; ``score``
        # gets the downloaded model and that hold-out before the fit.
        self.holdout_fraction = holdout_fraction
        self.score = score
        # The last verified global model: a round whose config names it trains without a download.
        self._cached: Any = None
        self._cache_lock = threading.Lock()

    def start(self, round_no: int, mark: Mark, base: tuple[int, bytes] = (0, bytes(32))
              ) -> Future[Trained]:
        """Train on a daemon thread: onnxruntime cannot be interrupted, and a SIGTERM must not
        wait for an epoch to end (the result of a stopped gateway is dropped anyway).

        ``base``: the model version and checkpoint sha256 the signed round config names
        ((0, zeros): the latest version)."""
        future: Future[Trained] = Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(self._train(mark, base))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=work, name=f"fedgate-train-{round_no}", daemon=True).start()
        return future

    def _global_model(self, base: tuple[int, bytes]) -> Any:
        version, sha = base
        with self._cache_lock:
            cached = self._cached
        if version:
            model = self.client.model_at(self.server_key, self.model, self.n_params, version,
                                         sha, cached)
        else:
            model = self.client.latest_model(self.server_key, self.model, self.n_params, cached)
        with self._cache_lock:
            self._cached = model
        return model

    def prefetch(self, after_version: int, within_s: float = 5.0) -> None:
        """Fetch the version that follows ``after_version`` as soon as the aggregator registers
        it, on a thread of its own, so the next round starts training without a download.

        The aggregator registers a round's model right after the round's result: this polls the
        latest manifest (a small request) every 100 ms, from 100 ms after the result (earlier polls
        would only compete with the registration they wait for) for up to ``within_s`` seconds.
        """
        def work() -> None:
            deadline = time.monotonic() + within_s
            while time.monotonic() < deadline:
                time.sleep(0.1)
                try:
                    model = self._global_model((0, bytes(32)))
                except FedgateError as exc:
                    log.debug("prefetch of the next global model: %s", exc)
                    return
                if model.version > after_version:
                    return

        threading.Thread(target=work, name="fedgate-prefetch", daemon=True).start()

    def _train(self, mark: Mark, base: tuple[int, bytes]) -> Trained:
        from models.trainer import TrainConfig

        mark("train_start")
        started = time.perf_counter()
        model = self._global_model(base)
        downloaded = time.perf_counter()
        mark("downloaded")
        (inputs, labels), holdout = split(self.data, self.holdout_fraction)
        if self.score is not None:
            self.score(model, holdout)
        mark("data")
        t = self.training
        config = TrainConfig(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, mu=t.mu,
                             class_weights=tuple(t.class_weights) or None,
                             seed=secrets.randbits(31))
        args = (self.artifacts, model.params, inputs, labels, config, t.threads)
        if self.pool is None:
            res, cpu = fit(*args)
        else:  # same function, same arguments, pickled to a worker process
            res, cpu = self.pool.submit(fit, *args).result()
        mark("trained")
        return Trained(np.ascontiguousarray(res.delta, dtype=np.float32), int(res.n_samples),
                       model.version, downloaded - started, time.perf_counter() - downloaded,
                       cpu, 4 * self.n_params, dict(res.metrics))
