"""Federated evaluation on the gateway: score each new global model on a local hold-out, report
the metrics only.

The hold-out is the newest ``holdout_fraction`` of each stream's (wearable's) labelled beats by
time (``split``); the daemon trains on the rest. Because data only grows forward in time, the
cut only moves forward, so no beat that a model version was trained on by this gateway is ever in
a later hold-out. ``LocalEvaluation.report`` runs on the training thread, before local training:
it evaluates a downloaded version once, signs the report (``native.evalreport``) with the
gateway's identity key and queues it for a sender thread that posts it. What leaves the gateway
is the confusion matrix counts, the sample count and the summed loss; never a beat, a label list
or a prediction.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import nacl.signing
import numpy as np
import numpy.typing as npt

from edge_client.config import EvaluationSection
from edge_client.enroll import AggregatorClient, GlobalModel, RefusedError
from edge_client.localdata import Inputs, LocalData
from native import evalreport
from native.errors import FedgateError, InputError, TransportError

log = logging.getLogger(__name__)

Labelled = tuple[Inputs, npt.NDArray[np.int64]]
# Reports that could not be delivered (aggregator away) wait; a bound keeps a long outage from
# growing memory without limit (the oldest report is dropped first).
MAX_PENDING = 16
RETRY_S = 30.0


def holdout_mask(groups: npt.NDArray[Any], times: npt.NDArray[Any],
                 fraction: float) -> npt.NDArray[np.bool_]:
    """True for the newest ``floor(fraction * n)`` rows of each group (n = the group's rows)."""
    groups, times = np.asarray(groups), np.asarray(times)
    if groups.shape != times.shape or groups.ndim != 1:
        raise InputError("groups and times must be 1-d arrays of one length")
    if not 0 <= fraction < 1:
        raise InputError(f"hold-out fraction must be in [0, 1), got {fraction!r}")
    mask = np.zeros(groups.size, dtype=bool)
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        take = math.floor(fraction * rows.size)
        if take:
            # Stable order: among equal times the later row is the newer one.
            newest = rows[np.argsort(times[rows], kind="stable")][-take:]
            mask[newest] = True
    return mask


def _rows(inputs: Inputs, labels: npt.NDArray[np.int64], sel: npt.NDArray[np.bool_]) -> Labelled:
    return {k: v[sel] for k, v in inputs.items()}, labels[sel]


def split(data: LocalData, fraction: float) -> tuple[Labelled, Labelled | None]:
    """(training set, hold-out); no hold-out when ``fraction`` is 0.

    Data sources without times (``timed_dataset``) are taken to be in recording order.
    """
    if fraction == 0:
        return data.dataset(), None
    timed = getattr(data, "timed_dataset", None)
    if timed is not None:
        inputs, labels, groups, times = timed()
    else:
        inputs, labels = data.dataset()
        groups = np.zeros(labels.size, dtype=np.int64)
        times = np.arange(labels.size, dtype=np.int64)
    held = holdout_mask(groups, times, fraction)
    return _rows(inputs, labels, ~held), _rows(inputs, labels, held)


@dataclass(frozen=True)
class Outcome:
    """What happened to one version's evaluation (for logs and tests)."""

    version: int
    # "queued" (signed, not delivered yet), "pending" (the aggregator was away; retried),
    # "stored", "already_stored", "refused" (a 4xx: not retried), "skipped", "failed"
    status: str
    samples: int = 0
    seconds: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class _Signed:
    version: int
    gateway_id: str
    data: bytes
    signature: bytes


class LocalEvaluation:
    """Evaluates each global model version at most once and delivers its signed report.

    Scoring runs on the caller's thread (the training thread); delivery runs on a sender thread
    of its own, so an aggregator that is slow or away never holds up the round's training.
    """

    def __init__(self, section: EvaluationSection, client: AggregatorClient) -> None:
        self.section = section
        self.client = client
        self.outcomes: dict[int, Outcome] = {}
        self._queue: deque[_Signed] = deque(maxlen=MAX_PENDING)
        self._lock = threading.Lock()  # the training thread and evaluate_latest's caller
        self._cv = threading.Condition()  # the queue and the outcomes the sender updates
        self._sender: threading.Thread | None = None
        self._tries = 0  # delivery attempts so far (wait_delivered watches it)
        self._trainer: Any = None

    @property
    def fraction(self) -> float:
        return self.section.holdout_fraction if self.section.enabled else 0.0

    def report(self, *, artifacts: Any, identity: nacl.signing.SigningKey, gateway_id: str,
               model: GlobalModel, holdout: Labelled | None) -> Outcome | None:
        """Evaluate ``model`` on ``holdout`` and queue the signed report, unless done before.

        Never raises for a failure of its own: the round's training goes on without it.
        """
        with self._lock:
            with self._cv:
                if not self.section.enabled or model.version in self.outcomes:
                    return None
            started = time.perf_counter()
            n = 0 if holdout is None else int(holdout[1].size)
            item = None
            if holdout is None or n < self.section.min_samples:
                out = Outcome(model.version, "skipped", n, detail=f"{n} hold-out beats, "
                              f"fewer than min_samples {self.section.min_samples}")
            else:
                try:
                    item = self._signed(artifacts, identity, gateway_id, model, holdout)
                    out = Outcome(model.version, "queued", n)
                except FedgateError as exc:
                    out = Outcome(model.version, "failed", n,
                                  detail=f"{type(exc).__name__}: {exc}")
            out = Outcome(out.version, out.status, n, time.perf_counter() - started, out.detail)
            log.info("evaluation of model version %d: %s (%d beats, %.3f s)%s", out.version,
                     out.status, n, out.seconds, f": {out.detail}" if out.detail else "")
            with self._cv:
                self.outcomes[model.version] = out
                if item is not None:
                    self._queue.append(item)
                    self._start_sender()
                    self._cv.notify_all()
            return out

    def _signed(self, artifacts: Any, identity: nacl.signing.SigningKey, gateway_id: str,
                model: GlobalModel, holdout: Labelled) -> _Signed:
        from models.evaluate import evaluate
        from models.trainer import LocalTrainer

        if self._trainer is None or self._trainer.artifacts is not artifacts:
            # Kept between versions: loading the session costs more than scoring a hold-out.
            self._trainer = LocalTrainer(artifacts, threads=1)
        res = evaluate(artifacts, model.params, holdout[0], holdout[1], trainer=self._trainer)
        # max(): a perfectly confident hold-out gives -0.0, which is a different f64 pattern.
        rep = evalreport.EvalReport.of(model.version, gateway_id, res.confusion,
                                       max(0.0, float(res.loss) * res.n_samples))
        return _Signed(model.version, gateway_id, *evalreport.sign(identity, rep))

    def wait_delivered(self, timeout: float) -> bool:
        """Try to deliver now; block until every queued report was stored or refused (True)
        or a fresh attempt found the aggregator away, or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            start = self._tries
            self._cv.notify_all()  # a sender waiting to retry tries at once
            while self._queue:
                head = self.outcomes[self._queue[0].version]
                left = deadline - time.monotonic()
                if (self._tries > start and head.status == "pending") or left <= 0:
                    return False
                self._cv.wait(left)
            return True

    def _start_sender(self) -> None:
        if self._sender is None or not self._sender.is_alive():
            self._sender = threading.Thread(target=self._send_loop, daemon=True,
                                            name="fedgate-eval-sender")
            self._sender.start()

    def _send_loop(self) -> None:
        """Oldest report first; while the aggregator is away, retry every RETRY_S or as soon as
        a new report arrives. Reports still queued when the daemon stops are lost."""
        while True:
            with self._cv:
                while not self._queue:
                    self._cv.wait()
                item = self._queue[0]
            status, detail = self._post(item)
            with self._cv:
                self._tries += 1
                old = self.outcomes.get(item.version, Outcome(item.version, ""))
                self.outcomes[item.version] = Outcome(item.version, status, old.samples,
                                                      old.seconds, detail)
                if status != "pending" and self._queue and self._queue[0] is item:
                    self._queue.popleft()
                self._cv.notify_all()
                if status == "pending":
                    self._cv.wait(RETRY_S)
            if status != "pending":
                log.info("evaluation of model version %d: %s%s", item.version, status,
                         f": {detail}" if detail else "")

    def _post(self, item: _Signed) -> tuple[str, str]:
        try:
            answer = self.client.post_evaluation(item.version, item.gateway_id, item.data,
                                                 item.signature)
        except TransportError as exc:
            return "pending", str(exc)
        except RefusedError as exc:
            return "refused", str(exc)
        return ("already_stored" if answer.get("duplicate") else "stored"), ""
