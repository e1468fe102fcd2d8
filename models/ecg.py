"""ECG beat preprocessing for the ``ecg`` model: one code path for WFDB records and live streams.

A beat is the MLII window around its R peak plus four RR features. Amplitude and RR intervals are
normalised per patient (``PatientStats``), because patients differ far more from each other than
beats of one patient do. ``beat_dataset`` reads a MIT-BIH record; ``beats_from_stream`` is what a
gateway calls on samples and detected R peaks; both end in ``_features``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.zoo import ECG
from native.errors import InputError

logger = logging.getLogger(__name__)

FS = 360.0  # window geometry is defined at the MIT-BIH rate
BEFORE, AFTER = 100, 156  # samples at 360 Hz around the R peak (0.28 s before, 0.43 s after)
DECIMATE = 2
LOCAL_RR_BEATS = 10
LEAD = "MLII"

# AAMI EC57 classes: N, S, V, F (ids 0..3); Q (paced, fusion of paced, unclassifiable) is skipped.
AAMI: dict[str, int] = {
    **dict.fromkeys("NLRej", 0),
    **dict.fromkeys("AaJS", 1),
    **dict.fromkeys("VE", 2),
    "F": 3,
}
BEAT_SYMBOLS = frozenset("NLRejAaJSVEF/fQ")  # every beat annotation, Q included, makes an RR


@dataclass(frozen=True)
class PatientStats:
    """Per-patient normalisation: mean RR (s), median beat amplitude, median beat shape.

    ``template`` is the median normalised beat; the patient's dominant rhythm (normally N) sets
    it, so the second input channel (beat - template) says how a beat differs from the
    patient's usual beat, which transfers across patients far better than raw morphology.
    """

    mean_rr: float
    amplitude: float
    template: NDArray[Any]


def _check_stream(
    samples: NDArray[Any], r_peaks: NDArray[Any], fs: float
) -> tuple[NDArray[Any], ...]:
    x = np.asarray(samples, dtype=np.float64)
    peaks = np.asarray(r_peaks)
    if x.ndim != 1 or x.size == 0:
        raise InputError(f"samples must be a non-empty 1-D array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("samples contain NaN or Inf")
    if not (np.isfinite(fs) and 50.0 <= fs <= 10_000.0):
        raise InputError(f"sampling rate {fs} Hz is out of range")
    if peaks.ndim != 1 or not np.issubdtype(peaks.dtype, np.integer):
        raise InputError("r_peaks must be a 1-D integer array of sample indices")
    if peaks.size and (np.any(np.diff(peaks) <= 0) or peaks[0] < 0 or peaks[-1] >= x.size):
        raise InputError("r_peaks must be strictly increasing sample indices inside samples")
    return x, peaks.astype(np.int64)


def _windows(x: NDArray[Any], peaks: NDArray[Any], fs: float) -> NDArray[Any]:
    """Beat windows resampled to the 360 Hz geometry, then averaged in pairs (180 Hz)."""
    offsets = np.arange(-BEFORE, AFTER)
    if fs == FS:
        win = x[peaks[:, None] + offsets[None, :]]
    else:
        t = peaks[:, None] / fs + offsets[None, :] / FS
        win = np.interp(t * fs, np.arange(x.size), x)
    win = win.reshape(len(peaks), -1, DECIMATE).mean(axis=2)
    centred: NDArray[Any] = win - np.median(win, axis=1, keepdims=True)
    return centred


def _inside(x: NDArray[Any], peaks: NDArray[Any], fs: float) -> NDArray[Any]:
    before, after = BEFORE * fs / FS, AFTER * fs / FS
    return (peaks - before >= 0) & (peaks + after + 1 <= x.size)


def patient_stats(samples: NDArray[Any], r_peaks: NDArray[Any], fs: float = FS) -> PatientStats:
    """Normalisation statistics from a patient's recording (at least 3 R peaks)."""
    x, peaks = _check_stream(samples, r_peaks, fs)
    peaks = peaks[_inside(x, peaks, fs)]
    if peaks.size < 3:
        raise InputError(f"need at least 3 complete beats for patient statistics, got {peaks.size}")
    mean_rr = float(np.mean(np.diff(peaks)) / fs)
    win = _windows(x, peaks, fs)
    amplitude = float(np.median(np.ptp(win, axis=1)))
    if not (amplitude > 0 and np.isfinite(amplitude)):
        raise InputError("flat signal: beat amplitude is zero")
    template = np.median(win / amplitude, axis=0).astype(np.float32)
    return PatientStats(mean_rr=mean_rr, amplitude=amplitude, template=template)


def _rr_features(peaks: NDArray[Any], fs: float, mean_rr: float) -> NDArray[Any]:
    """Features of beats 1..n-2: previous, next, local mean RR (/ mean_rr), prev/next, prev/local.

    The two ratios carry prematurity (S and V beats come early, then pause) independently of
    the patient's heart rate.
    """
    rr = np.diff(peaks) / fs
    pre, post = rr[:-1], rr[1:]
    csum = np.concatenate([[0.0], np.cumsum(rr)])
    idx = np.arange(1, len(rr))  # rr index of each beat's previous interval, beat i -> rr[i-1]
    lo = np.maximum(idx - LOCAL_RR_BEATS, 0)
    local = (csum[idx] - csum[lo]) / (idx - lo)
    feats = np.stack(
        [pre / mean_rr, post / mean_rr, local / mean_rr, pre / post, pre / local], axis=1
    )
    return feats.astype(np.float32)


def beats_from_stream(
    samples: NDArray[Any],
    r_peaks: NDArray[Any],
    fs: float = FS,
    stats: PatientStats | None = None,
) -> tuple[dict[str, NDArray[Any]], NDArray[Any]]:
    """Model inputs for the beats of a live stream.

    ``samples`` is one lead (MLII placement, mV), ``r_peaks`` the detected R-peak indices. A beat
    needs its previous and next peak and a complete window, so the first and last peak are never
    returned (the gateway classifies a beat once the next one has been detected). ``stats``
    should come from the patient's history; without it they are estimated from this stream.
    Returns ``(inputs, used)`` where ``used`` holds the indices into ``r_peaks`` of the beats.
    """
    x, peaks = _check_stream(samples, r_peaks, fs)
    if stats is None:
        stats = patient_stats(x, peaks, fs)
    template = np.asarray(stats.template, dtype=np.float32)
    if not (stats.mean_rr > 0 and stats.amplitude > 0) or template.shape != (ECG.series_len,):
        raise InputError("invalid patient statistics")
    empty = {
        ECG.series_input: np.zeros((0, ECG.series_len, ECG.series_channels), np.float32),
        "rr": np.zeros((0, ECG.side_dim), np.float32),
    }
    if peaks.size < 3:
        return empty, np.zeros(0, np.int64)
    rr = _rr_features(peaks, fs, stats.mean_rr)
    used = np.arange(1, peaks.size - 1)
    keep = _inside(x, peaks[used], fs)
    used, rr = used[keep], rr[keep]
    beats = (_windows(x, peaks[used], fs) / stats.amplitude).astype(np.float32)
    beats = np.stack([beats, beats - template[None, :]], axis=2)
    return {ECG.series_input: beats, "rr": np.ascontiguousarray(rr)}, used


def _check_annotations(path: str, symbols: list[object], seconds: float) -> None:
    """Reject annotation files that decode to nonsense (a damaged .atr rarely fails to parse)."""
    if any(not isinstance(sym, str) for sym in symbols):
        raise InputError(f"record {path}: annotation file holds invalid codes (damaged .atr)")
    n_beats = sum(sym in BEAT_SYMBOLS for sym in symbols)
    # a human heart beats 20-300 times a minute; anything outside that is not an ECG annotation
    if not (seconds / 3.0 <= n_beats <= seconds * 5.0):
        raise InputError(f"record {path}: {n_beats} beats in {seconds:.0f} s is implausible")


def read_record(record_path: str | Path) -> tuple[NDArray[Any], float, NDArray[Any], list[str]]:
    """MLII samples (mV), sampling rate, beat-annotation indices and symbols of a WFDB record."""
    import wfdb  # lazy: pulls in pandas, which a streaming gateway does not need

    path = str(record_path)
    try:
        header = wfdb.rdheader(path)
        if LEAD not in (header.sig_name or []):
            raise InputError(f"record {path} has no {LEAD} lead (leads: {header.sig_name})")
        record = wfdb.rdrecord(path, channel_names=[LEAD])
        ann = wfdb.rdann(path, "atr")
    except InputError:
        raise
    except Exception as exc:  # wfdb raises many types for damaged files
        raise InputError(f"cannot read WFDB record {path}: {type(exc).__name__}: {exc}") from exc
    signal = record.p_signal
    if signal is None or signal.shape != (header.sig_len, 1):
        raise InputError(f"record {path} is truncated: expected {header.sig_len} samples")
    x = signal[:, 0]
    if not np.all(np.isfinite(x)):
        raise InputError(f"record {path} has invalid (NaN) samples; the signal file is damaged")
    _check_annotations(path, ann.symbol, x.size / float(record.fs))
    keep = [i for i, s in enumerate(ann.symbol) if s in BEAT_SYMBOLS]
    peaks = np.asarray(ann.sample, dtype=np.int64)[keep]
    symbols = [ann.symbol[i] for i in keep]
    if peaks.size and (peaks[-1] >= x.size or np.any(np.diff(peaks) <= 0)):
        raise InputError(f"record {path}: annotations do not fit the signal")
    return x, float(record.fs), peaks, symbols


def beat_dataset(record_path: str | Path) -> tuple[dict[str, NDArray[Any]], NDArray[Any]]:
    """Inputs and AAMI labels (0..3 = N, S, V, F) of every classifiable beat of a WFDB record.

    ``record_path`` has no extension; the ``.atr`` annotations give the R peaks and labels. Q and
    non-beat annotations are skipped (Q beats still delimit RR intervals).
    """
    x, fs, peaks, symbols = read_record(record_path)
    stats = patient_stats(x, peaks, fs)
    inputs, used = beats_from_stream(x, peaks, fs, stats)
    labels = np.array([AAMI.get(symbols[i], -1) for i in used], dtype=np.int64)
    keep = labels >= 0
    logger.debug("%s: %d beats, %d skipped as Q", record_path, keep.sum(), (~keep).sum())
    return {k: np.ascontiguousarray(v[keep]) for k, v in inputs.items()}, labels[keep]
