"""Model definitions as data, and the ONNX graphs built from them (no PyTorch).

A ``ModelSpec`` is a small 1D CNN (below); a ``models.linear.LinearSpec`` is a binned linear
model, whose forward graph lives in ``models.linear``. Everything else here serves both.

Every ``ModelSpec`` model whose convolutions are written as matrix products over windows:

- the first layer gathers overlapping windows of the input (``Gather`` with a constant index
  table, kernel ``k``, stride ``s``) and applies one ``Gemm`` to all of them;
- every later layer is a convolution whose stride equals its kernel ("patch" layer), which is
  exactly a ``Reshape`` of the previous feature map followed by a ``Gemm``;
- the flattened features, concatenated with an optional vector of side features (RR intervals for
  the ECG model), go through one hidden dense layer and the class layer.

Why: onnxruntime-training 1.19's CPU ``Conv`` gradient is 2-3x slower than PyTorch's for such a
small network, while ``Gemm`` trains faster; the two formulations compute the same function.

The definition (a ``ModelSpec``) is plain data, so its hash names the artifacts without importing
``onnx``; the graphs are built only when artifacts or an inference model are written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from models import linear
from models.linear import LinearSpec

if TYPE_CHECKING:
    import onnx

OPSET = 17
IR_VERSION = 9  # onnxruntime-training 1.19 accepts IR <= 10
LOGITS = "logits"
PROX_OUTPUT = "fedprox_term"
PROX_MU = "fedprox_mu"
GLOBAL_SUFFIX = ".global"


@dataclass(frozen=True)
class ModelSpec:
    """A model: inputs, layer sizes, classes and how its inputs are normalised."""

    name: str
    version: int
    series_input: str
    series_len: int
    series_channels: int  # 0: input is (batch, time); else (batch, time, channels)
    first_kernel: int
    first_stride: int
    first_channels: int
    patch_layers: tuple[tuple[int, int], ...]  # (patch length, output channels)
    hidden: int
    class_names: tuple[str, ...]
    side_input: str | None = None
    side_dim: int = 0
    init_seed: int = 0
    normalisation: dict[str, str] = field(default_factory=dict)

    @property
    def first_positions(self) -> int:
        return (self.series_len - self.first_kernel) // self.first_stride + 1

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def input_shapes(self) -> dict[str, list[int | str]]:
        """Inference inputs with a symbolic batch dimension."""
        series: list[int | str] = ["batch", self.series_len]
        if self.series_channels:
            series.append(self.series_channels)
        shapes = {self.series_input: series}
        if self.side_input:
            shapes[self.side_input] = ["batch", self.side_dim]
        return shapes


Spec = ModelSpec | LinearSpec  # every model in the zoo is one of these


def _check(spec: ModelSpec) -> None:
    positions = spec.first_positions
    for patch, _ in spec.patch_layers:
        if positions % patch:
            raise ValueError(f"{spec.name}: {positions} positions not divisible by patch {patch}")
        positions //= patch


def param_shapes(spec: Spec) -> list[tuple[str, tuple[int, ...]]]:
    """Trainable tensors in their canonical order (the order of the flat parameter vector)."""
    if isinstance(spec, LinearSpec):
        return linear.param_shapes(spec)
    _check(spec)
    in_ch = max(spec.series_channels, 1)
    shapes: list[tuple[str, tuple[int, ...]]] = []
    fan_in, width, positions = spec.first_kernel * in_ch, spec.first_channels, spec.first_positions
    shapes += [("conv0.weight", (fan_in, width)), ("conv0.bias", (width,))]
    for i, (patch, channels) in enumerate(spec.patch_layers, start=1):
        shapes += [(f"conv{i}.weight", (patch * width, channels)), (f"conv{i}.bias", (channels,))]
        width, positions = channels, positions // patch
    flat = positions * width + spec.side_dim
    shapes += [("fc.weight", (flat, spec.hidden)), ("fc.bias", (spec.hidden,))]
    shapes += [("out.weight", (spec.hidden, spec.n_classes)), ("out.bias", (spec.n_classes,))]
    # onnxruntime lays trainable parameters out in its contiguous buffer sorted by name.
    return sorted(shapes)


def parameter_count(spec: Spec) -> int:
    """Length of the flat parameter vector."""
    return int(sum(np.prod(shape) for _, shape in param_shapes(spec)))


def initial_params(spec: Spec) -> dict[str, NDArray[Any]]:
    """He-initialised weights and zero biases; fixed by ``spec.init_seed`` (reproducible).
    A binned linear model starts at zero, the usual start of a convex problem."""
    rng = np.random.default_rng(spec.init_seed)
    params: dict[str, NDArray[Any]] = {}
    for name, shape in param_shapes(spec):
        if name.endswith(".bias") or isinstance(spec, LinearSpec):
            params[name] = np.zeros(shape, dtype=np.float32)
        else:
            std = np.sqrt(2.0 / shape[0])
            params[name] = (rng.standard_normal(shape) * std).astype(np.float32)
    return params


def flatten(spec: Spec, params: dict[str, NDArray[Any]]) -> NDArray[Any]:
    """Concatenate tensors in canonical order into one float32 vector."""
    flat: NDArray[Any] = np.concatenate([params[n].ravel() for n, _ in param_shapes(spec)])
    return flat.astype(np.float32)


def unflatten(spec: Spec, flat: NDArray[Any]) -> dict[str, NDArray[Any]]:
    """Split a flat vector (already length-checked) into named tensors."""
    out, offset = {}, 0
    for name, shape in param_shapes(spec):
        size = int(np.prod(shape))
        out[name] = flat[offset : offset + size].reshape(shape).astype(np.float32)
        offset += size
    return out


def definition(spec: Spec) -> dict[str, Any]:
    """Everything that determines the graphs and initial weights, as JSON-able data."""
    data = asdict(spec)
    data["graph_builder"] = 1  # bump when the graph construction below changes
    data["opset"], data["ir_version"] = OPSET, IR_VERSION
    return data


def definition_hash(spec: Spec) -> str:
    """sha256 of the canonical JSON definition: the artifact cache key."""
    blob = json.dumps(definition(spec), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _const(name: str, values: NDArray[Any]) -> onnx.NodeProto:
    from onnx import helper, numpy_helper

    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(values, name))


def _forward_nodes(spec: ModelSpec) -> list[onnx.NodeProto]:
    from onnx import helper

    i64 = np.int64
    idx = (
        np.arange(spec.first_kernel)[None, :]
        + spec.first_stride * np.arange(spec.first_positions)[:, None]
    )
    in_ch = max(spec.series_channels, 1)
    nodes = [
        _const("c_idx", idx.astype(i64)),
        helper.make_node("Gather", [spec.series_input, "c_idx"], ["windows"], axis=1),
        _const("c_shape0", np.array([-1, spec.first_kernel * in_ch], dtype=i64)),
        helper.make_node("Reshape", ["windows", "c_shape0"], ["rows0"]),
        helper.make_node("Gemm", ["rows0", "conv0.weight", "conv0.bias"], ["pre0"]),
        helper.make_node("Relu", ["pre0"], ["act0"]),
    ]
    width, positions = spec.first_channels, spec.first_positions
    for i, (patch, channels) in enumerate(spec.patch_layers, start=1):
        nodes += [
            _const(f"c_shape{i}", np.array([-1, patch * width], dtype=i64)),
            helper.make_node("Reshape", [f"act{i - 1}", f"c_shape{i}"], [f"rows{i}"]),
            helper.make_node("Gemm", [f"rows{i}", f"conv{i}.weight", f"conv{i}.bias"], [f"pre{i}"]),
            helper.make_node("Relu", [f"pre{i}"], [f"act{i}"]),
        ]
        width, positions = channels, positions // patch
    last = f"act{len(spec.patch_layers)}"
    nodes += [
        _const("c_flat", np.array([-1, positions * width], dtype=i64)),
        helper.make_node("Reshape", [last, "c_flat"], ["flat"]),
    ]
    feats = "flat"
    if spec.side_input:
        nodes.append(helper.make_node("Concat", ["flat", spec.side_input], ["features"], axis=1))
        feats = "features"
    nodes += [
        helper.make_node("Gemm", [feats, "fc.weight", "fc.bias"], ["pre_fc"]),
        helper.make_node("Relu", ["pre_fc"], ["act_fc"]),
        helper.make_node("Gemm", ["act_fc", "out.weight", "out.bias"], [LOGITS]),
    ]
    return nodes


def _inputs(spec: Spec) -> list[onnx.ValueInfoProto]:
    from onnx import TensorProto, helper

    return [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
        for name, shape in spec.input_shapes().items()
    ]


def _prox_nodes(spec: Spec) -> tuple[list[onnx.NodeProto], list[onnx.ValueInfoProto]]:
    """mu/2 * sum_i ||w_i - w_i_global||^2 as nodes, with the global weights as graph inputs."""
    from onnx import TensorProto, helper

    nodes, inputs, terms = [], [], []
    for name, shape in param_shapes(spec):
        g = name + GLOBAL_SUFFIX
        inputs.append(helper.make_tensor_value_info(g, TensorProto.FLOAT, list(shape)))
        nodes += [
            helper.make_node("Sub", [name, g], [f"{name}.diff"]),
            helper.make_node("Mul", [f"{name}.diff", f"{name}.diff"], [f"{name}.sq"]),
            helper.make_node("ReduceSum", [f"{name}.sq"], [f"{name}.ss"], keepdims=0),
        ]
        terms.append(f"{name}.ss")
    inputs.append(helper.make_tensor_value_info(PROX_MU, TensorProto.FLOAT, []))
    # A chain of Add: onnxruntime-training has no gradient for Sum.
    acc = terms[0]
    for i, term in enumerate(terms[1:]):
        nodes.append(helper.make_node("Add", [acc, term], [f"prox_acc{i}"]))
        acc = f"prox_acc{i}"
    nodes += [
        helper.make_node("Identity", [acc], ["prox_ss"]),
        _const("c_half", np.array(0.5, dtype=np.float32)),
        helper.make_node("Mul", [PROX_MU, "c_half"], ["half_mu"]),
        helper.make_node("Mul", ["half_mu", "prox_ss"], [PROX_OUTPUT]),
    ]
    return nodes, inputs


def build_model(
    spec: Spec, params: dict[str, NDArray[Any]], *, with_prox: bool = False
) -> onnx.ModelProto:
    """The inference graph (``with_prox=False``) or the training base with the FedProx term."""
    from onnx import TensorProto, checker, helper, numpy_helper

    nodes = (linear.forward_nodes(spec, LOGITS) if isinstance(spec, LinearSpec)
             else _forward_nodes(spec))
    inputs = _inputs(spec)
    outputs = [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["batch", spec.n_classes])]
    if with_prox:
        prox_nodes, prox_inputs = _prox_nodes(spec)
        nodes += prox_nodes
        inputs += prox_inputs
        outputs.append(helper.make_tensor_value_info(PROX_OUTPUT, TensorProto.FLOAT, []))
    inits = [
        numpy_helper.from_array(params[n].astype(np.float32), n) for n, _ in param_shapes(spec)
    ]
    graph = helper.make_graph(nodes, f"{spec.name}_v{spec.version}", inputs, outputs, inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="fedgate",
        doc_string=f"fedgate {spec.name} v{spec.version}; classes: {','.join(spec.class_names)}",
    )
    checker.check_model(model)
    return model
