"""Federated evaluation on the gateway: score each new global model on a local hold-out, report
the metrics only.

The hold-out is the newest ``holdout_fraction`` of each stream's (wearable's) labelled beats by
time (``split``); the daemon trains on the rest. Because data only grows forward in time, the
cut only moves forward, so no beat that a model version was trained on by this gateway is ever in
a later hold-out. ``LocalEvaluation.report`` runs on the training thread, before local training:
it evaluates a downloaded version once, signs the report (``native.evalreport``) with the
gateway's identity key and posts it. What leaves the gateway is the confusion matrix counts, the
sample count and the summed loss; never a beat, a label list or a prediction.
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
# Reports that could not be delivered (aggregator away) wait for the next round; a bound keeps a
# long outage from growing memory without limit (older versions matter least).
MAX_PENDING = 16


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
    status: str  # "stored", "already_stored", "pending", "refused", "skipped", "failed"
    samples: int = 0
    seconds: float = 0.0
    detail: str = ""


class LocalEvaluation:
    """Evaluates each global model version at most once and delivers its signed report."""

    def __init__(self, section: EvaluationSection, client: AggregatorClient) -> None:
        self.section = section
        self.client = client
        self.outcomes: dict[int, Outcome] = {}
        self._pending: deque[tuple[int, str, bytes, bytes]] = deque(maxlen=MAX_PENDING)
        self._lock = threading.Lock()  # the training thread and evaluate_latest's caller
        self._trainer: Any = None

    @property
    def fraction(self) -> float:
        return self.section.holdout_fraction if self.section.enabled else 0.0

    def report(self, *, artifacts: Any, identity: nacl.signing.SigningKey, gateway_id: str,
               model: GlobalModel, holdout: Labelled | None) -> Outcome | None:
        """Evaluate ``model`` on ``holdout`` and post the report, unless done before.

        Never raises for a failure of its own: the round's training goes on without it.
        """
        with self._lock:
            return self._report(artifacts, identity, gateway_id, model, holdout)

    def _report(self, artifacts: Any, identity: nacl.signing.SigningKey, gateway_id: str,
                model: GlobalModel, holdout: Labelled | None) -> Outcome | None:
        self._flush()
        if not self.section.enabled or model.version in self.outcomes:
            return None
        started = time.perf_counter()
        n = 0 if holdout is None else int(holdout[1].size)
        if holdout is None or n < self.section.min_samples:
            out = Outcome(model.version, "skipped", n, detail=f"{n} hold-out beats, "
                          f"fewer than min_samples {self.section.min_samples}")
        else:
            try:
                data, signature = self._signed(artifacts, identity, gateway_id, model, holdout)
                out = self._deliver(model.version, gateway_id, data, signature, n)
            except FedgateError as exc:
                out = Outcome(model.version, "failed", n, detail=f"{type(exc).__name__}: {exc}")
        out = Outcome(out.version, out.status, out.samples, time.perf_counter() - started,
                      out.detail)
        self.outcomes[model.version] = out
        log.info("evaluation of model version %d: %s (%d beats, %.3f s)%s", out.version,
                 out.status, out.samples, out.seconds, f": {out.detail}" if out.detail else "")
        return out

    def _signed(self, artifacts: Any, identity: nacl.signing.SigningKey, gateway_id: str,
                model: GlobalModel, holdout: Labelled) -> tuple[bytes, bytes]:
        from models.evaluate import evaluate
        from models.trainer import LocalTrainer

        if self._trainer is None or self._trainer.artifacts is not artifacts:
            # Kept between versions: loading the session costs more than scoring a hold-out.
            self._trainer = LocalTrainer(artifacts, threads=1)
        res = evaluate(artifacts, model.params, holdout[0], holdout[1], trainer=self._trainer)
        # max(): a perfectly confident hold-out gives -0.0, which is a different f64 pattern.
        rep = evalreport.EvalReport.of(model.version, gateway_id, res.confusion,
                                       max(0.0, float(res.loss) * res.n_samples))
        return evalreport.sign(identity, rep)

    def _deliver(self, version: int, gateway_id: str, data: bytes, signature: bytes,
                 n: int) -> Outcome:
        try:
            answer = self.client.post_evaluation(version, gateway_id, data, signature)
        except TransportError as exc:
            self._pending.append((version, gateway_id, data, signature))
            return Outcome(version, "pending", n, detail=str(exc))
        except RefusedError as exc:
            return Outcome(version, "refused", n, detail=str(exc))
        status = "already_stored" if answer.get("duplicate") else "stored"
        return Outcome(version, status, n)

    def _flush(self) -> None:
        """Retry reports the aggregator could not take before (oldest first)."""
        for _ in range(len(self._pending)):
            version, gateway_id, data, signature = self._pending.popleft()
            try:
                self.client.post_evaluation(version, gateway_id, data, signature)
            except TransportError:
                self._pending.appendleft((version, gateway_id, data, signature))
                return
            except RefusedError as exc:
                log.warning("evaluation of version %d refused on retry: %s", version, exc)
                continue
            self.outcomes[version] = Outcome(version, "stored", self.outcomes.get(
                version, Outcome(version, "")).samples, detail="delivered on retry")
