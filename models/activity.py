"""Wrist accelerometer activity windows for the ``activity`` model, and a synthetic generator.

The generator exists to show that the training pipeline is model-agnostic and to give tests and
simulations per-subject (non-IID) data; it is not a substitute for a real activity data set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.zoo import ACTIVITY
from native.errors import InputError

FS = 50.0
WINDOW = ACTIVITY.series_len
# (cadence range in Hz, dynamic amplitude range in g) per class: still, walk, run, cycle
_PROFILES = (
    ((0.0, 0.0), (0.0, 0.0)),
    ((1.6, 2.2), (0.2, 0.4)),
    ((2.5, 3.2), (0.8, 1.4)),
    ((1.0, 1.5), (0.08, 0.16)),
)


def windows_from_stream(samples: NDArray[Any], step: int = WINDOW // 2) -> dict[str, NDArray[Any]]:
    """Overlapping model windows from a (time, 3) stream in g at 50 Hz."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != 3:
        raise InputError(f"accelerometer stream must have shape (time, 3), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("accelerometer stream contains NaN or Inf")
    if not 1 <= step <= WINDOW:
        raise InputError(f"step must be in 1..{WINDOW}")
    starts = np.arange(0, x.shape[0] - WINDOW + 1, step)
    win = x[starts[:, None] + np.arange(WINDOW)[None, :]]
    return {ACTIVITY.series_input: np.ascontiguousarray(win.reshape(-1, WINDOW, 3))}


def _rotation(rng: np.random.Generator) -> NDArray[Any]:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    rot: NDArray[Any] = q * np.sign(np.diag(r))
    return rot


def synthetic_windows(
    n: int, rng: np.random.Generator, *, subject_scale: float = 1.0
) -> tuple[dict[str, NDArray[Any]], NDArray[Any]]:
    """``n`` labelled windows: gravity in a random wrist orientation plus class-typical motion.

    ``subject_scale`` stretches the motion amplitude to imitate one subject's style.
    """
    if n <= 0 or not np.isfinite(subject_scale) or subject_scale <= 0:
        raise InputError("n must be positive and subject_scale a positive number")
    labels = rng.integers(0, len(_PROFILES), size=n)
    t = np.arange(WINDOW) / FS
    out = np.empty((n, WINDOW, 3), dtype=np.float32)
    for i, c in enumerate(labels):
        (f_lo, f_hi), (a_lo, a_hi) = _PROFILES[c]
        f, a = rng.uniform(f_lo, f_hi), rng.uniform(a_lo, a_hi) * subject_scale
        phase = rng.uniform(0, 2 * np.pi, size=3)
        weights = rng.uniform(0.3, 1.0, size=3) * np.array([0.6, 0.6, 1.0])
        motion = a * weights * np.sin(2 * np.pi * f * t[:, None] + phase)
        motion += 0.3 * a * np.sin(4 * np.pi * f * t[:, None] + 2 * phase)
        gravity = _rotation(rng) @ np.array([0.0, 0.0, 1.0])
        out[i] = gravity + motion + rng.normal(0, 0.02, size=(WINDOW, 3))
    return {ACTIVITY.series_input: out}, labels.astype(np.int64)
