"""Model definitions: parameter layout, reproducible hashes, and that the Gemm graph is a CNN."""

from __future__ import annotations

import numpy as np
import pytest

from models import graph
from models.export import inference_model_bytes
from models.ort import runtime
from models.zoo import ACTIVITY, ECG, get_spec
from native.errors import InputError


def _numpy_forward(
    spec: graph.ModelSpec, p: dict[str, np.ndarray], x: np.ndarray, side: np.ndarray | None
) -> np.ndarray:
    """The same network written as plain convolutions (loops over positions)."""
    if x.ndim == 2:
        x = x[:, :, None]
    k, s = spec.first_kernel, spec.first_stride
    h = np.stack(
        [x[:, i * s : i * s + k, :].reshape(len(x), -1) for i in range(spec.first_positions)],
        axis=1,
    )
    h = np.maximum(h @ p["conv0.weight"] + p["conv0.bias"], 0)
    for i, (patch, _) in enumerate(spec.patch_layers, start=1):
        b, pos, c = h.shape
        h = h.reshape(b, pos // patch, patch * c)
        h = np.maximum(h @ p[f"conv{i}.weight"] + p[f"conv{i}.bias"], 0)
    f = h.reshape(len(h), -1)
    if side is not None:
        f = np.concatenate([f, side], axis=1)
    f = np.maximum(f @ p["fc.weight"] + p["fc.bias"], 0)
    return f @ p["out.weight"] + p["out.bias"]


@pytest.mark.parametrize("spec", [ECG, ACTIVITY], ids=lambda s: s.name)
def test_inference_graph_matches_reference_convolution(spec: graph.ModelSpec) -> None:
    rng = np.random.default_rng(3)
    params = graph.initial_params(spec)
    params = {k: v + rng.normal(0, 0.1, v.shape).astype(np.float32) for k, v in params.items()}
    flat = graph.flatten(spec, params)
    sess = runtime().InferenceSession(inference_model_bytes(spec.name, flat))
    shape = [5] + [d for d in spec.input_shapes()[spec.series_input][1:]]
    x = rng.standard_normal(shape).astype(np.float32)
    feeds = {spec.series_input: x}
    side = None
    if spec.side_input:
        side = rng.standard_normal((5, spec.side_dim)).astype(np.float32)
        feeds[spec.side_input] = side
    got = sess.run(None, feeds)[0]
    want = _numpy_forward(spec, graph.unflatten(spec, flat), x, side)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_flat_layout_round_trips_and_counts() -> None:
    params = graph.initial_params(ECG)
    flat = graph.flatten(ECG, params)
    assert flat.dtype == np.float32 and flat.size == graph.parameter_count(ECG)
    back = graph.unflatten(ECG, flat)
    assert all(np.array_equal(back[k], params[k]) for k in params)
    names = [n for n, _ in graph.param_shapes(ECG)]
    assert names == sorted(names)


def test_definition_hash_is_stable_and_sensitive() -> None:
    assert graph.definition_hash(ECG) == graph.definition_hash(get_spec("ecg"))
    from dataclasses import replace

    assert graph.definition_hash(replace(ECG, hidden=33)) != graph.definition_hash(ECG)
    assert np.array_equal(
        graph.flatten(ECG, graph.initial_params(ECG)), graph.flatten(ECG, graph.initial_params(ECG))
    )


def test_unknown_model_is_input_error() -> None:
    with pytest.raises(InputError, match="known: activity, ecg"):
        get_spec("resnet")
    with pytest.raises(InputError):
        get_spec(None)  # type: ignore[arg-type]
