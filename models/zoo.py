"""The models fedgate trains, by name. Adding a model means adding a ``ModelSpec`` here."""

from __future__ import annotations

from models.graph import ModelSpec
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

MODELS: dict[str, ModelSpec] = {ECG.name: ECG, ACTIVITY.name: ACTIVITY}


def get_spec(name: str) -> ModelSpec:
    """The spec of a known model; ``InputError`` names the known ones otherwise."""
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None
