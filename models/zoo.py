"""The models fedgate trains, by name. Adding a model means adding a spec (``ModelSpec``, or
``LinearSpec`` for a binned linear model) here."""

from __future__ import annotations

from models.graph import ModelSpec, Spec
from models.linear import LinearSpec
from native.errors import InputError

ECG = ModelSpec(
    name="ecg",
    version=1,
    series_input="beat",
    series_len=128,
    series_channels=2,
    first_kernel=10,
    first_stride=2,
    first_channels=16,
    patch_layers=((4, 32), (3, 32)),
    hidden=32,
    class_names=("N", "S", "V", "F"),
    side_input="rr",
    side_dim=5,
    init_seed=20040701,
    normalisation={
        "beat": "channel 0: MLII, 256 samples at 360 Hz around the R peak (100 before) averaged "
        "in pairs to 128 at 180 Hz, window median subtracted, divided by the patient's median "
        "beat peak-to-peak amplitude; channel 1: channel 0 minus the patient's median beat",
        "rr": "previous RR, next RR, mean of the last 10 RR (these three divided by the "
        "patient's mean RR), previous/next, previous/local mean",
    },
)

ACTIVITY = ModelSpec(
    name="activity",
    version=1,
    series_input="accel",
    series_len=128,
    series_channels=3,
    first_kernel=12,
    first_stride=4,
    first_channels=16,
    patch_layers=((3, 32), (2, 32)),
    hidden=32,
    class_names=("still", "walk", "run", "cycle"),
    init_seed=20240301,
    normalisation={"accel": "wrist x/y/z in g at 50 Hz, 128 samples (2.56 s), window mean kept"},
)

# The ECG model's inputs, each value binned: 261 values x 96 bins x 4 classes + 4 = 100,228
# parameters, a linear model of the size at which secure aggregation's cost per parameter rules
# a round (benchmarks/bench_e2e.py). The ranges hold the normalised beats (|x| < 1 but for
# artefacts) and the RR ratios (0.3-2 in MIT-BIH); values outside fall into the end bins.
ECG_LINEAR = LinearSpec(
    name="ecg-linear",
    version=1,
    series_input=ECG.series_input,
    series_len=ECG.series_len,
    series_channels=ECG.series_channels,
    class_names=ECG.class_names,
    bins=96,
    series_range=(-1.0, 1.0),
    side_input=ECG.side_input,
    side_dim=ECG.side_dim,
    side_range=(0.0, 2.5),
    init_seed=20250105,
    normalisation=dict(ECG.normalisation),
)

MODELS: dict[str, Spec] = {ECG.name: ECG, ACTIVITY.name: ACTIVITY, ECG_LINEAR.name: ECG_LINEAR}


def get_spec(name: str) -> Spec:
    """The spec of a known model; ``InputError`` names the known ones otherwise."""
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None
