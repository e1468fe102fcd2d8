"""ECG preprocessing on MIT-BIH records and on streams, and damaged records."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from models.ecg import AAMI, beat_dataset, beats_from_stream, patient_stats, read_record
from native.errors import InputError

# AAMI counts of record 114 from the data README (N, S, V, F); MLII is its second signal.
COUNTS_114 = (1820, 12, 43, 4)


def test_beat_dataset_record_114(mitdb_dir: Path) -> None:
    inputs, labels = beat_dataset(mitdb_dir / "114")
    assert set(inputs) == {"beat", "rr"}
    assert inputs["beat"].shape == (labels.size, 128, 2) and inputs["beat"].dtype == np.float32
    assert inputs["rr"].shape == (labels.size, 5)
    assert labels.dtype == np.int64 and set(np.unique(labels)) <= {0, 1, 2, 3}
    counts = np.bincount(labels, minlength=4)
    # only the first and last beat of the record are dropped (no previous / next RR)
    assert np.all(counts <= COUNTS_114) and sum(COUNTS_114) - counts.sum() <= 2
    assert np.all(np.isfinite(inputs["beat"])) and np.all(np.isfinite(inputs["rr"]))
    assert abs(float(np.mean(inputs["rr"][:, 0])) - 1.0) < 0.05  # normalised per patient


def test_lead_is_chosen_by_name(mitdb_dir: Path) -> None:
    import wfdb

    x, _fs, _, _ = read_record(mitdb_dir / "114")
    rec = wfdb.rdrecord(str(mitdb_dir / "114"))
    assert rec.sig_name[1] == "MLII"
    np.testing.assert_array_equal(x, rec.p_signal[:, 1])


def test_stream_matches_record_and_chunks(mitdb_dir: Path) -> None:
    x, fs, peaks, symbols = read_record(mitdb_dir / "208")
    whole, _labels = beat_dataset(mitdb_dir / "208")
    stats = patient_stats(x, peaks, fs)
    # a gateway sees the first 10 minutes; stats come from the patient's history
    cut = int(600 * fs)
    chunk_peaks = peaks[peaks < cut]
    live, _used = beats_from_stream(x[:cut], chunk_peaks, fs, stats)
    full, used_full = beats_from_stream(x, peaks, fs, stats)
    n = live["beat"].shape[0]
    assert n > 500
    np.testing.assert_array_equal(live["beat"], full["beat"][:n])
    np.testing.assert_array_equal(live["rr"][:-1], full["rr"][: n - 1])
    q = np.array([AAMI.get(symbols[i], -1) for i in used_full]) >= 0
    np.testing.assert_array_equal(full["beat"][q], whole["beat"])


def test_other_sampling_rate_gives_similar_beats(mitdb_dir: Path) -> None:
    x, fs, peaks, _ = read_record(mitdb_dir / "101")
    x, peaks = x[: 360 * 60], peaks[peaks < 360 * 60 - 200]
    ref, _ = beats_from_stream(x, peaks, fs)
    t_new = np.arange(0, x.size / fs, 1 / 250.0)
    x250 = np.interp(t_new, np.arange(x.size) / fs, x)
    p250 = np.round(peaks / fs * 250).astype(np.int64)
    got, _ = beats_from_stream(x250, p250, 250.0)
    m = min(len(ref["beat"]), len(got["beat"]))
    corr = np.corrcoef(ref["beat"][:m, :, 0].ravel(), got["beat"][:m, :, 0].ravel())[0, 1]
    assert corr > 0.95
    np.testing.assert_allclose(ref["rr"][:m], got["rr"][:m], rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    "samples, peaks, fs",
    [
        (np.array([1.0, np.nan] * 1000), np.array([300, 800, 1300]), 360.0),
        (np.zeros((10, 2)), np.array([1, 2, 3]), 360.0),
        (np.zeros(2000), np.array([300, 200, 900]), 360.0),
        (np.zeros(2000), np.array([300.0, 600.0, 900.0]), 360.0),
        (np.zeros(2000), np.array([300, 600, 5000]), 360.0),
        (np.zeros(2000), np.array([300, 600, 900]), 1.0),
        (np.zeros(2000), np.array([300, 600, 900, 1200]), 360.0),  # flat signal
    ],
)
def test_stream_garbage(samples: np.ndarray, peaks: np.ndarray, fs: float) -> None:
    with pytest.raises(InputError):
        beats_from_stream(samples, peaks, fs)


def test_too_few_beats_give_empty_inputs() -> None:
    x = np.sin(np.arange(3000) / 20.0)
    stats = patient_stats(x, np.array([400, 1000, 1600, 2200]), 360.0)
    inputs, used = beats_from_stream(x, np.array([400, 1000]), 360.0, stats)
    assert used.size == 0 and inputs["beat"].shape == (0, 128, 2)


def _copy_record(src: Path, dst: Path, name: str = "208") -> Path:
    for ext in ("hea", "dat", "atr"):
        shutil.copy(src / f"{name}.{ext}", dst / f"{name}.{ext}")
    return dst / name


def test_truncated_record(mitdb_dir: Path, tmp_path: Path) -> None:
    rec = _copy_record(mitdb_dir, tmp_path)
    dat = rec.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:1_000_000])
    with pytest.raises(InputError, match="208"):
        beat_dataset(rec)


@pytest.mark.parametrize("victim", ["hea", "atr", "dat"])
def test_corrupt_or_missing_files(mitdb_dir: Path, tmp_path: Path, victim: str) -> None:
    rec = _copy_record(mitdb_dir, tmp_path)
    path = rec.with_suffix(f".{victim}")
    if victim == "dat":
        path.unlink()
    else:
        path.write_bytes(b"\x00\xff garbage \x17" * 7)
    with pytest.raises(InputError):
        beat_dataset(rec)


def test_record_without_mlii(mitdb_dir: Path, tmp_path: Path) -> None:
    rec = _copy_record(mitdb_dir, tmp_path)
    hea = rec.with_suffix(".hea")
    hea.write_bytes(hea.read_bytes().replace(b"MLII", b"V2"))
    with pytest.raises(InputError, match="no MLII"):
        beat_dataset(rec)
