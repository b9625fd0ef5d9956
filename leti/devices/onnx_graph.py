"""Write a network's ONNX graph straight from its ``torch.fx`` trace.

Why: ``torch.onnx.export`` (TorchScript exporter) spends about 0.4 s on one NAS-Bench-201 network
at one thread here, half of it tracing (every convolution is run under the tracer) and half in its
graph passes; the dynamo exporter takes 7-18 s. That made the ONNX backend spend 15x longer
exporting than timing. ``torch.fx.symbolic_trace`` records the same module graph without running
it (about 50 ms a cell here, ~0.2 ms per traced node: tracing each module once per structure
and inlining saved nothing measurable), and writing the ONNX nodes from it takes about 10 ms more.

The graph is the one the TorchScript exporter writes in eval mode: each BatchNorm that directly
follows a convolution is folded into that convolution's weights and bias, the other BatchNorms
stay, ``0 + x`` (what ``sum()`` over edges starts with) adds nothing. Only the modules and
functions the search spaces use are known (convolution, batch norm, ReLU, average and max
pooling, global average pooling, mean, linear, identity, dropout, flatten, add, multiply,
concatenate, slicing); anything else raises ``UnsupportedGraph`` and the caller falls back to
``torch.onnx.export``. ``verify`` compares ONNX Runtime's output with the module's own.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx
from torch import nn

MIN_OPSET = 13
"""The oldest opset whose Slice, Gemm, Flatten and pooling signatures this writer uses."""
IR_VERSION = 8
"""The ONNX IR version ``torch.onnx`` writes too; onnx 1.23 would stamp 14, newer than
ONNX Runtime 1.31 reads."""


class UnsupportedGraph(ValueError):
    """The network uses a module, function or argument this writer does not translate."""


def pair(value: int | tuple[int, ...]) -> list[int]:
    return [int(value), int(value)] if isinstance(value, int) else [int(v) for v in value]


class GraphWriter:
    """Collects ONNX nodes and initializers while walking an fx graph in order.

    Identical nodes (same operator, inputs and attributes) are written once, as the TorchScript
    exporter's common-subexpression pass does: two convolution edges leaving one cell node share
    their ReLU, and two ``none`` edges from one node share their multiplication by zero.
    """

    def __init__(self, opset: int) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.counter = 0
        self.seen: dict[tuple, str] = {}

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}_{self.counter}"

    def constant(self, stem: str, value: np.ndarray) -> str:
        key = ("constant", value.dtype.str, value.shape, value.tobytes()) if value.size <= 8 else None
        if key in self.seen:
            return self.seen[key]
        name = self.fresh(stem)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        if key is not None:
            self.seen[key] = name
        return name

    def node(self, op_type: str, inputs: list[str], **attributes: Any) -> str:
        key = (op_type, tuple(inputs), repr(sorted(attributes.items())))
        if key in self.seen:
            return self.seen[key]
        output = self.seen[key] = self.fresh(op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, inputs, [output], name=output, **attributes))
        return output


def weights(tensor: torch.Tensor | None) -> np.ndarray | None:
    return None if tensor is None else tensor.detach().cpu().numpy().astype(np.float32)


def folded_conv(conv: nn.Conv2d, norm: nn.BatchNorm2d | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The convolution's weight and bias with an eval-mode BatchNorm that follows it folded in."""
    weight, bias = weights(conv.weight), weights(conv.bias)
    if norm is None:
        return weight, bias
    scale = weights(norm.weight) / np.sqrt(weights(norm.running_var) + norm.eps)
    shift = weights(norm.bias) - weights(norm.running_mean) * scale
    bias = (bias if bias is not None else 0.0) * scale + shift
    return (weight * scale[:, None, None, None]).astype(np.float32), bias.astype(np.float32)


def conv_node(writer: GraphWriter, source: str, conv: nn.Conv2d, norm: nn.BatchNorm2d | None) -> str:
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise UnsupportedGraph(f"Conv2d with padding {conv.padding!r} / {conv.padding_mode!r}")
    weight, bias = folded_conv(conv, norm)
    inputs = [source, writer.constant("weight", weight)]
    if bias is not None:
        inputs.append(writer.constant("bias", bias))
    pads = pair(conv.padding)
    return writer.node(
        "Conv", inputs, kernel_shape=pair(conv.kernel_size), strides=pair(conv.stride),
        pads=pads + pads, dilations=pair(conv.dilation), group=conv.groups,
    )


def pool_node(writer: GraphWriter, source: str, pool: nn.AvgPool2d | nn.MaxPool2d) -> str:
    pads = pair(pool.padding)
    stride = pair(pool.stride if pool.stride is not None else pool.kernel_size)
    attributes: dict[str, Any] = {"kernel_shape": pair(pool.kernel_size), "strides": stride, "pads": pads + pads,
                                  "ceil_mode": int(pool.ceil_mode)}
    if isinstance(pool, nn.AvgPool2d):
        if pool.divisor_override is not None:
            raise UnsupportedGraph("AvgPool2d with divisor_override")
        return writer.node("AveragePool", [source], count_include_pad=int(pool.count_include_pad), **attributes)
    if pool.return_indices:
        raise UnsupportedGraph("MaxPool2d with return_indices")
    return writer.node("MaxPool", [source], dilations=pair(pool.dilation), **attributes)


def module_node(writer: GraphWriter, module: nn.Module, source: str, fold: nn.BatchNorm2d | None) -> str:
    """The output name of ``module`` applied to ``source`` (``fold``: a BatchNorm folded into it)."""
    if isinstance(module, nn.Conv2d):
        return conv_node(writer, source, module, fold)
    if isinstance(module, (nn.Identity, nn.Dropout)):
        return source
    if isinstance(module, nn.ReLU):
        return writer.node("Relu", [source])
    if isinstance(module, nn.BatchNorm2d):
        if module.training or module.running_mean is None:
            raise UnsupportedGraph("BatchNorm2d in training mode or without running statistics")
        gamma = weights(module.weight) if module.weight is not None else np.ones(module.num_features, np.float32)
        beta = weights(module.bias) if module.bias is not None else np.zeros(module.num_features, np.float32)
        inputs = [source] + [writer.constant(stem, value) for stem, value in
                             (("scale", gamma), ("shift", beta), ("mean", weights(module.running_mean)),
                              ("var", weights(module.running_var)))]
        return writer.node("BatchNormalization", inputs, epsilon=float(module.eps))
    if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
        return pool_node(writer, source, module)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        if pair(module.output_size) != [1, 1]:
            raise UnsupportedGraph(f"AdaptiveAvgPool2d to {module.output_size}")
        return writer.node("GlobalAveragePool", [source])
    if isinstance(module, nn.Linear):
        inputs = [source, writer.constant("weight", weights(module.weight))]
        if module.bias is not None:
            inputs.append(writer.constant("bias", weights(module.bias)))
        return writer.node("Gemm", inputs, transB=1)
    if isinstance(module, nn.Flatten):
        if module.end_dim != -1:
            raise UnsupportedGraph("Flatten with end_dim other than -1")
        return writer.node("Flatten", [source], axis=module.start_dim)
    raise UnsupportedGraph(f"module {type(module).__name__}")


ADD = {operator.add, operator.iadd, torch.add, "add", "add_"}
MUL = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
FLATTEN = {torch.flatten, "flatten"}
RELU = {torch.relu, torch.nn.functional.relu, "relu"}
CAT = {torch.cat, torch.concat}
MEAN = {torch.mean, "mean"}


def function_node(writer: GraphWriter, target: Any, args: tuple, kwargs: dict) -> str | float | int:
    """The output of one ``call_function``/``call_method`` node; a Python number stays a number."""
    if target in ADD or target in MUL:
        if kwargs.get("alpha", 1) != 1:
            raise UnsupportedGraph("add with alpha")
        left, right = args[0], args[1]
        if not isinstance(left, str) and not isinstance(right, str):
            return left + right if target in ADD else left * right
        if target in ADD and (left == 0 or right == 0) and not (isinstance(left, str) and isinstance(right, str)):
            return right if left == 0 else left  # sum() over edges starts with 0
        inputs = [value if isinstance(value, str) else writer.constant("scalar", np.array(value, np.float32))
                  for value in (left, right)]
        return writer.node("Add" if target in ADD else "Mul", inputs)
    if target in FLATTEN:
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        if end != -1 or start not in (0, 1):
            raise UnsupportedGraph(f"flatten({start}, {end})")
        if start == 0:
            return writer.node("Reshape", [args[0], writer.constant("shape", np.array([-1], np.int64))])
        return writer.node("Flatten", [args[0]], axis=1)
    if target in RELU:
        return writer.node("Relu", [args[0]])
    if target in CAT:
        tensors, dim = args[0], args[1] if len(args) > 1 else kwargs.get("dim", 0)
        return writer.node("Concat", list(tensors), axis=int(dim))
    if target in MEAN:
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        if dims is None or kwargs.get("dtype") is not None:
            raise UnsupportedGraph("mean over every dimension or with a dtype")
        axes = [int(dims)] if isinstance(dims, int) else [int(d) for d in dims]
        keep = int(bool(args[2] if len(args) > 2 else kwargs.get("keepdim", False)))
        if writer.opset >= 18:  # axes became an input in opset 18
            return writer.node("ReduceMean", [args[0], writer.constant("axes", np.array(axes, np.int64))], keepdims=keep)
        return writer.node("ReduceMean", [args[0]], axes=axes, keepdims=keep)
    if target is operator.getitem:
        return slice_node(writer, args[0], args[1])
    raise UnsupportedGraph(f"function {getattr(target, '__name__', target)!r}")


def slice_node(writer: GraphWriter, source: str, index: Any) -> str:
    """``x[:, a:b, ...]`` with plain slices (channel truncation in NAS-Bench-101 cells)."""
    index = index if isinstance(index, tuple) else (index,)
    starts, ends, axes, steps = [], [], [], []
    for axis, part in enumerate(index):
        if not isinstance(part, slice):
            raise UnsupportedGraph(f"indexing with {part!r}")
        if part == slice(None):
            continue
        starts.append(part.start or 0)
        ends.append(part.stop if part.stop is not None else np.iinfo(np.int64).max)
        axes.append(axis)
        steps.append(part.step or 1)
    if not axes:
        return source
    inputs = [source] + [writer.constant(stem, np.array(values, np.int64))
                         for stem, values in (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps))]
    return writer.node("Slice", inputs)


def folds(graph: torch.fx.Graph, modules: dict[str, nn.Module]) -> dict[torch.fx.Node, torch.fx.Node]:
    """BatchNorm node -> the convolution node it folds into (the conv's only user, in eval mode)."""
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if (isinstance(source, torch.fx.Node) and source.op == "call_module"
                and isinstance(modules[source.target], nn.Conv2d) and len(source.users) == 1
                and not modules[node.target].training and modules[node.target].running_mean is not None):
            pairs[node] = source
    return pairs


def write_onnx(network: nn.Module, example: torch.Tensor, path: Path, opset: int = 17) -> Path:
    """Write ``network`` (eval mode) as an ONNX model with input ``input`` and output ``logits``."""
    import onnx

    if opset < MIN_OPSET:
        raise UnsupportedGraph(f"opset {opset} (this writer writes opset >= {MIN_OPSET})")
    try:
        traced = torch.fx.symbolic_trace(network.eval())
    except Exception as error:  # noqa: BLE001 - data-dependent control flow and the like
        raise UnsupportedGraph(f"torch.fx cannot trace the network: {error}") from error
    modules = dict(traced.named_modules())
    folded_into = folds(traced.graph, modules)
    norm_of = {conv: modules[norm.target] for norm, conv in folded_into.items()}
    writer = GraphWriter(opset)
    values: dict[str, Any] = {}
    inputs, output = [], None

    def value(arg: Any) -> Any:
        if isinstance(arg, torch.fx.Node):
            return values[arg.name]
        if isinstance(arg, (list, tuple)):
            return type(arg)(value(item) for item in arg)
        return arg

    for node in traced.graph.nodes:
        if node.op == "placeholder":
            if inputs:
                raise UnsupportedGraph("more than one input")
            values[node.name] = "input"
            inputs.append(node.name)
        elif node.op == "call_module" and node in folded_into:
            values[node.name] = values[folded_into[node].name]  # already applied by its convolution
        elif node.op == "call_module":
            values[node.name] = module_node(writer, modules[node.target], value(node.args[0]), norm_of.get(node))
        elif node.op in ("call_function", "call_method"):
            values[node.name] = function_node(writer, node.target, value(node.args), value(node.kwargs))
        elif node.op == "output":
            output = value(node.args[0])
        else:
            raise UnsupportedGraph(f"fx node {node.op} {node.target}")
    if not isinstance(output, str):
        raise UnsupportedGraph("the network does not return one tensor")
    writer.nodes.append(writer.helper.make_node("Identity", [output], ["logits"], name="logits"))
    graph = writer.helper.make_graph(
        writer.nodes, "leti", [writer.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, list(example.shape))],
        [writer.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None)], writer.initializers,
    )
    model = writer.helper.make_model(graph, opset_imports=[writer.helper.make_opsetid("", opset)], producer_name="leti",
                                     ir_version=IR_VERSION)
    onnx.save_model(model, str(path))
    return path


def verify(network: nn.Module, example: torch.Tensor, path: Path, tolerance: float = 1e-4) -> float:
    """Largest difference between ONNX Runtime's output for ``path`` and the module's, relative
    to the module's largest output; raises ``ValueError`` above ``tolerance``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": example.numpy()})
    with torch.inference_mode():
        expected = network(example).numpy()
    error = float(np.abs(got - expected).max() / max(float(np.abs(expected).max()), 1e-6))
    if got.shape != expected.shape or not error <= tolerance:
        raise ValueError(f"the written ONNX graph differs from the module (relative error {error:.2g})")
    return error
