"""Binned linear models: multinomial logistic regression over one-hot binned input values.

Every input value (each sample of each channel of the series input, each side feature) is
clipped to its input's range and put into one of ``bins`` equal-width bins; the classifier is one
``Gemm`` over the concatenated one-hot codes. So the model is linear in its features, convex in
its parameters, and each input value gets its own learned, arbitrary-shaped response per class
(a generalised additive model with step functions). The parameter count is
``features * bins * classes + classes``: large for a linear model, which is the point of the
``ecg-linear`` model in the zoo (about 1e5 parameters over the same beats the ECG CNN reads), the
size at which secure aggregation's per-parameter costs dominate a round.

Binning needs no trainable parameter, so no gradient flows into it: the graph computes the bin
index with ``Floor``/``Clip``/``Cast``. The product of the one-hot code with the weight matrix is
computed without its zeros, as a ``Gather`` of the one weight row each value selects and a
``ReduceSum`` over the values: the same linear function, at 1/bins of the cost of the dense
``Gemm`` (measured: 10 ms per training step with the dense product, far less with the lookup).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class LinearSpec:
    """A binned linear classifier: its inputs (as ``ModelSpec`` names them), bins and classes."""

    name: str
    version: int
    series_input: str
    series_len: int
    series_channels: int  # 0: input is (batch, time); else (batch, time, channels)
    class_names: tuple[str, ...]
    bins: int
    series_range: tuple[float, float]  # values outside are clipped into the end bins
    side_input: str | None = None
    side_dim: int = 0
    side_range: tuple[float, float] = (0.0, 1.0)
    init_seed: int = 0
    normalisation: dict[str, str] = field(default_factory=dict)
    kind: str = "binned-linear"

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def series_features(self) -> int:
        return self.series_len * max(self.series_channels, 1)

    @property
    def features(self) -> int:
        """Input values per sample, before binning."""
        return self.series_features + self.side_dim

    def input_shapes(self) -> dict[str, list[int | str]]:
        """Inference inputs with a symbolic batch dimension."""
        series: list[int | str] = ["batch", self.series_len]
        if self.series_channels:
            series.append(self.series_channels)
        shapes = {self.series_input: series}
        if self.side_input:
            shapes[self.side_input] = ["batch", self.side_dim]
        return shapes


def check(spec: LinearSpec) -> None:
    """``ValueError`` for a spec no graph can be built from."""
    lo, hi = spec.series_range
    slo, shi = spec.side_range
    if not 2 <= spec.bins <= 4096 or not lo < hi or (spec.side_input and not slo < shi):
        raise ValueError(f"{spec.name}: need 2 <= bins <= 4096 and increasing value ranges")
    no_side = spec.side_input is None
    if spec.series_len < 1 or spec.n_classes < 2 or no_side != (spec.side_dim == 0):
        raise ValueError(f"{spec.name}: bad input length, class count or side input")


def param_shapes(spec: LinearSpec) -> list[tuple[str, tuple[int, ...]]]:
    """Trainable tensors in flat-vector order (onnxruntime's: sorted by name)."""
    check(spec)
    return [("linear.bias", (spec.n_classes,)),
            ("linear.weight", (spec.features * spec.bins, spec.n_classes))]


def _bin_constants(spec: LinearSpec) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Per-feature offset and scale so that ``floor((x - lo) * scale)`` is the bin index."""
    lo, hi = spec.series_range
    los = [lo] * spec.series_features
    scales = [spec.bins / (hi - lo)] * spec.series_features
    if spec.side_input:
        slo, shi = spec.side_range
        los += [slo] * spec.side_dim
        scales += [spec.bins / (shi - slo)] * spec.side_dim
    return np.asarray(los, dtype=np.float32), np.asarray(scales, dtype=np.float32)


def forward_nodes(spec: LinearSpec, logits: str) -> list[onnx.NodeProto]:
    """Nodes from the inputs to ``logits``."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, values: NDArray[Any]) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name],
                                value=numpy_helper.from_array(values, name))

    i64 = np.int64
    offset, scale = _bin_constants(spec)
    nodes = [
        const("c_series_flat", np.array([-1, spec.series_features], dtype=i64)),
        helper.make_node("Reshape", [spec.series_input, "c_series_flat"], ["series_flat"]),
    ]
    values = "series_flat"
    if spec.side_input:
        nodes.append(helper.make_node("Concat", ["series_flat", spec.side_input], ["values"],
                                      axis=1))
        values = "values"
    rows = spec.bins * np.arange(spec.features, dtype=i64)[None, :]
    nodes += [
        const("c_offset", offset), const("c_scale", scale),
        const("c_first", np.array(0.0, dtype=np.float32)),
        const("c_last", np.array(spec.bins - 1, dtype=np.float32)),
        const("c_row_base", rows), const("c_feature_axis", np.array([1], dtype=i64)),
        helper.make_node("Sub", [values, "c_offset"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "c_scale"], ["scaled"]),
        helper.make_node("Floor", ["scaled"], ["floored"]),
        helper.make_node("Clip", ["floored", "c_first", "c_last"], ["clipped"]),
        helper.make_node("Cast", ["clipped"], ["bin"], to=TensorProto.INT64),
        # The one-hot code times the weights, without the zeros: each value's bin selects one
        # weight row (feature * bins + bin), and the selected rows add up to the logits.
        helper.make_node("Add", ["bin", "c_row_base"], ["row"]),
        helper.make_node("Gather", ["linear.weight", "row"], ["selected"], axis=0),
        helper.make_node("ReduceSum", ["selected", "c_feature_axis"], ["summed"], keepdims=0),
        helper.make_node("Add", ["summed", "linear.bias"], [logits]),
    ]
    return nodes


def reference_logits(spec: LinearSpec, params: dict[str, NDArray[Any]],
                     inputs: dict[str, NDArray[Any]]) -> NDArray[Any]:
    """The same function in numpy (for tests): bin, look the weights up, add them."""
    n = inputs[spec.series_input].shape[0]
    parts: list[NDArray[Any]] = [inputs[spec.series_input].reshape(n, -1).astype(np.float32)]
    if spec.side_input:
        parts.append(inputs[spec.side_input].astype(np.float32))
    x = np.concatenate(parts, axis=1)
    offset, scale = _bin_constants(spec)
    idx = np.clip(np.floor((x - offset) * scale), 0, spec.bins - 1).astype(np.int64)
    rows = idx + spec.bins * np.arange(spec.features)[None, :]
    w = params["linear.weight"]
    out: NDArray[Any] = w[rows].sum(axis=1) + params["linear.bias"][None, :]
    return out
