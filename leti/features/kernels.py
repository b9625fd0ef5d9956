"""A network as the kernels a runtime executes: its op graph, split by a device's fusion rules, and
each kernel's configuration features (shape, FLOPs, memory traffic).

Why kernels: a runtime does not run a model op by op. It fuses adjacent ops (a convolution with its
batch norm and activation, a residual add into the convolution before it) and runs each fused group
as one kernel, so a model's latency is close to the sum of its kernels' latencies, not of its ops'
(nn-Meter, LitePred). Which ops fuse is the runtime's business and is measured per device
(``leti.measure.kernels``); this module only applies the rules it is given.

Two readers produce the same op graph:

- a PyTorch network (a torchvision classifier, a search-space cell) is read from its ``torch.fx``
  trace with shapes propagated on meta tensors (0.1-0.8 s for torchvision's classifiers here, where
  ``torch.onnx.export`` took 3-10 s, too slow for ``leti predict-model``); batch norms stay separate
  ops, as the framework states them, and the rules say whether the device folds them;
- an ``.onnx`` file is read from its nodes, with ONNX's shape inference; the exporter's spellings of
  one op (GELU as ``Div, Erf, Add, Mul, Mul``, SiLU as ``Sigmoid, Mul``, a linear layer as ``MatMul``
  plus a bias ``Add``) become that op again.

Op kinds are a small vocabulary (``KINDS``); an op outside it keeps its framework name
(``torch:roll``, ``onnx:Resize``), becomes a kernel of its own, and a predictor without that kernel
type says so. A squeeze-excite block (global pool, two 1x1 layers, a gate, a channel-wise product)
is recognised as one ``se`` kernel, as nn-Meter does: its parts are tiny and their sum is dominated
by per-op overheads that a whole-block measurement captures.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CONV_KINDS = ("conv", "dwconv", "pwconv")
"""Convolutions: general (k > 1 or grouped), depthwise (one group per channel), pointwise (1x1)."""
ACTIVATIONS = ("relu", "relu6", "hswish", "hsigmoid", "sigmoid", "silu", "gelu", "tanh")
UNARY = ("bn", *ACTIVATIONS, "softmax", "layernorm")
BINARY = ("add", "mul")
POOLS = ("maxpool", "avgpool", "gap")
DATA = ("concat", "split", "transpose", "reshape", "pad")
KINDS = (*CONV_KINDS, "fc", "matmul", *POOLS, *UNARY, *BINARY, *DATA, "se")
"""Every op kind leti predicts; ``empty`` (a model that returns its input) is the per-call overhead."""
EMPTY = "empty"

SHAPE_FIELDS = ("batch", "cin", "hin", "win", "cout", "hout", "wout", "kernel", "kernel_w", "stride", "groups",
                "inputs", "hidden", "other", "act", "gate")
"""A kernel's configuration. What a field means depends on the anchor (the kernel's first op):
convolutions and pools: channels and spatial sizes in and out, kernel (height, width), stride,
groups; ``fc``: ``hin`` rows (tokens) of ``cin`` features to ``cout``; ``matmul``: ``batch`` products
of (``hin`` x ``cin``) by (``cin`` x ``cout``); element-wise and data ops: the output tensor as
channels x height x width (a token tensor: tokens as ``hin``, features as ``cin``), ``other`` the
elements of a binary op's second operand (smaller when it broadcasts), ``inputs`` how many tensors a
concat joins or a split makes; ``se``: ``cin`` channels at ``hin`` x ``win``, ``hidden`` squeezed
channels, ``act`` and ``gate`` the codes of its activation and gate."""
SE_ACTS = ("relu", "silu", "hswish", "gelu", "relu6")
SE_GATES = ("sigmoid", "hsigmoid")

FEATURE_NAMES = (*SHAPE_FIELDS, "elements_in", "elements_out", "params", "flops", "bytes", "intensity",
                 "log_flops", "log_bytes", "log_elements_out", *(f"tail_{kind}" for kind in ("bn", *ACTIVATIONS, "add", "mul", "softmax")))
"""Features of a kernel: its configuration, then its costs (FLOPs: 2 per multiply-add; bytes: float32
inputs, outputs and weights), then which ops its anchor absorbed."""


class GraphError(ValueError):
    """A model whose graph leti cannot read; the message names the model and what failed."""


# --- the op graph ------------------------------------------------------------------------------


@dataclass
class Op:
    """One op of a network: its kind, the activation tensors it reads and writes, their shapes, and
    the attributes that shape its cost (kernel, stride, groups)."""

    name: str
    kind: str
    inputs: list[str]
    outputs: list[str]
    in_shapes: list[tuple[int, ...]]
    out_shapes: list[tuple[int, ...]]
    attrs: dict[str, int] = field(default_factory=dict)
    other: tuple[int, ...] | None = None
    """The shape of a binary op's constant operand (a learned scale, a position embedding)."""


@dataclass
class Graph:
    """A network's ops in execution order; tensors are named by the op that writes them."""

    name: str
    ops: list[Op]
    inputs: list[str]

    def consumers(self) -> dict[str, list[Op]]:
        found: dict[str, list[Op]] = {}
        for op in self.ops:
            for tensor in op.inputs:
                found.setdefault(tensor, []).append(op)
        return found

    def producers(self) -> dict[str, Op]:
        return {tensor: op for op in self.ops for tensor in op.outputs}


def conv_kind(cin: int, cout: int, groups: int, kernel: tuple[int, int]) -> str:
    if groups > 1 and groups == cin and cout % cin == 0:
        return "dwconv"
    if groups == 1 and kernel == (1, 1):
        return "pwconv"
    return "conv"


# --- reading a PyTorch network ------------------------------------------------------------------


@contextlib.contextmanager
def no_weight_init() -> Iterator[None]:
    """Skip ``torch.nn.init`` while building a network whose weights nobody reads: a latency
    prediction needs shapes only, and initialising ResNet-50's 25M weights takes longer than
    predicting it."""
    import torch

    names = [name for name in dir(torch.nn.init) if name.endswith("_") and not name.startswith("_")]
    saved = {name: getattr(torch.nn.init, name) for name in names}
    for name in names:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def torch_graph(network: Any, example: Any, name: str = "network") -> Graph:
    """The op graph of a PyTorch network, traced with ``torch.fx`` and shaped on meta tensors
    (``example`` gives the shapes; nothing is computed)."""
    import torch
    import torch.fx
    from torch.fx.passes.shape_prop import ShapeProp

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, module: torch.nn.Module, qualified_name: str) -> bool:
            # attention's forward branches on tensor properties; it is expanded into kernels below
            return isinstance(module, torch.nn.MultiheadAttention) or super().is_leaf_module(module, qualified_name)

    network = without_stochastic_depth(network.eval())
    try:
        traced = torch.fx.GraphModule(network, Tracer().trace(network))
    except Exception as error:  # noqa: BLE001 - data-dependent control flow and the like
        raise GraphError(f"{name}: torch.fx cannot trace the network ({type(error).__name__}: {error})") from error
    from torch.nn.utils.stateless import _reparametrize_module

    examples = example if isinstance(example, tuple) else (example,)
    # meta tensors carry shapes only: the weights are swapped for them while shapes propagate, so the
    # network's own are neither read nor moved
    meta = {name: torch.empty(value.shape, dtype=value.dtype, device="meta")
            for name, value in [*traced.named_parameters(), *traced.named_buffers()]}
    try:
        with _reparametrize_module(traced, meta):
            ShapeProp(traced).propagate(*(torch.empty(x.shape, dtype=x.dtype, device="meta") for x in examples))
    except Exception as error:  # noqa: BLE001 - a shape the network rejects
        raise GraphError(f"{name}: cannot run at input {[list(x.shape) for x in examples]} ({type(error).__name__}: {error})") from error
    return FxReader(traced, name).read()


def without_stochastic_depth(network: Any) -> Any:
    """torchvision's ``StochasticDepth`` is the identity in eval mode; torch.fx would keep it as a call."""
    try:
        from leti.torchvision_compat import import_torchvision

        stochastic_depth = import_torchvision().ops.StochasticDepth
    except ImportError:
        return network
    import torch

    for module in list(network.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, stochastic_depth):
                setattr(module, child_name, torch.nn.Identity())
    return network


def _shape(meta: Any) -> tuple[int, ...] | None:
    shape = getattr(meta, "shape", None)
    return tuple(int(d) for d in shape) if shape is not None else None


def _function_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    name = getattr(target, "__name__", str(target))
    return {"iadd": "add", "imul": "mul", "itruediv": "truediv", "isub": "sub"}.get(name, name)


ALIAS_NAMES = {"contiguous", "dropout", "dropout_", "clone", "detach", "float", "to", "type_as", "identity"}
RESHAPE_NAMES = {"flatten", "view", "reshape", "squeeze", "unsqueeze", "expand", "expand_as", "unflatten"}
TRANSPOSE_NAMES = {"permute", "transpose", "t"}
ACTIVATION_NAMES = {
    "relu": "relu", "relu_": "relu", "relu6": "relu6", "hardtanh": "relu6", "hardswish": "hswish", "hardsigmoid": "hsigmoid",
    "silu": "silu", "sigmoid": "sigmoid", "gelu": "gelu", "tanh": "tanh", "softmax": "softmax", "layer_norm": "layernorm",
    "batch_norm": "bn",
}
MODULE_KINDS = {
    "BatchNorm2d": "bn", "BatchNorm1d": "bn", "ReLU": "relu", "ReLU6": "relu6", "Hardswish": "hswish", "Hardsigmoid": "hsigmoid",
    "SiLU": "silu", "Sigmoid": "sigmoid", "GELU": "gelu", "Tanh": "tanh", "Softmax": "softmax", "LayerNorm": "layernorm",
    "Flatten": "reshape", "Unflatten": "reshape", "Hardtanh": "relu6",
}
ALIAS_MODULES = {"Identity", "Dropout", "Dropout2d", "StochasticDepth"}
STATIC_NAMES = {"size", "dim", "getattr", "eq", "_assert", "floordiv", "numel", "ne", "lt", "gt", "le", "ge", "sym_size"}


class FxReader:
    """Walks a shaped ``torch.fx`` graph into ops. A node that does not depend on the input (a
    parameter, a size) is static: no op. Views and no-ops are aliases of their input."""

    def __init__(self, traced: Any, name: str) -> None:
        self.traced, self.name = traced, name
        self.modules = dict(traced.named_modules())
        self.ops: list[Op] = []
        self.tensor: dict[str, str] = {}  # fx node name -> activation tensor name
        self.parts: dict[str, list[str]] = {}  # fx node of a split -> its parts' tensor names

    def read(self) -> Graph:
        import torch.fx

        inputs = []
        for node in self.traced.graph.nodes:
            if node.op == "placeholder":
                self.tensor[node.name] = node.name
                inputs.append(node.name)
            elif node.op in ("call_module", "call_function", "call_method"):
                dynamic = [arg for arg in self.node_args(node) if isinstance(arg, torch.fx.Node)
                           and (arg.name in self.tensor or arg.name in self.parts)]
                if dynamic:
                    self.visit(node, dynamic)
        return Graph(self.name, self.ops, inputs)

    @staticmethod
    def node_args(node: Any) -> list[Any]:
        import torch.fx

        found: list[Any] = []
        torch.fx.node.map_arg((node.args, node.kwargs), found.append)
        return found

    def shape_of(self, node: Any) -> tuple[int, ...] | None:
        return _shape(node.meta.get("tensor_meta"))

    def emit(self, node: Any, kind: str, sources: Sequence[Any], attrs: dict[str, int] | None = None,
             other: tuple[int, ...] | None = None) -> None:
        names = [self.tensor[s.name] for s in sources]
        shape = self.shape_of(node)
        self.ops.append(Op(node.name, kind, names, [node.name], [self.shape_of(s) or () for s in sources],
                           [shape or ()], attrs or {}, other))
        self.tensor[node.name] = node.name

    def alias(self, node: Any, source: Any) -> None:
        self.tensor[node.name] = self.tensor[source.name]

    def visit(self, node: Any, dynamic: list[Any]) -> None:
        if node.op == "call_module":
            self.visit_module(node, self.modules[node.target], dynamic)
        else:
            self.visit_function(node, _function_name(node.target), dynamic)

    def visit_module(self, node: Any, module: Any, dynamic: list[Any]) -> None:
        kind_name = type(module).__name__
        source = dynamic[0]
        if kind_name in ALIAS_MODULES:
            return self.alias(node, source)
        if kind_name == "Conv2d":
            kernel = tuple(int(k) for k in module.kernel_size)
            attrs = {"kernel": kernel[0], "kernel_w": kernel[1], "stride": int(module.stride[0]), "groups": int(module.groups)}
            return self.emit(node, conv_kind(module.in_channels, module.out_channels, module.groups, kernel), [source], attrs)
        if kind_name == "Linear":
            return self.emit(node, "fc", [source])
        if kind_name in ("MaxPool2d", "AvgPool2d"):
            kernel = _pair(module.kernel_size)
            stride = _pair(module.stride if module.stride is not None else module.kernel_size)
            return self.emit(node, kind_name[:3].lower() + "pool", [source], {"kernel": kernel[0], "kernel_w": kernel[1], "stride": stride[0]})
        if kind_name in ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d"):
            return self.adaptive_pool(node, source, "avgpool" if "Avg" in kind_name else "maxpool")
        if kind_name in MODULE_KINDS:
            return self.emit(node, MODULE_KINDS[kind_name], [source])
        if kind_name == "MultiheadAttention":
            return self.attention(node, module, source)
        self.emit(node, f"torch:{kind_name}", dynamic)

    def adaptive_pool(self, node: Any, source: Any, kind: str) -> None:
        shape_in, shape_out = self.shape_of(source), self.shape_of(node)
        if shape_out is not None and len(shape_out) == 4 and shape_out[2:] == (1, 1) and kind == "avgpool":
            return self.emit(node, "gap", [source])
        if shape_in and shape_out and shape_in[2:] == shape_out[2:]:
            return self.alias(node, source)
        kernel = max(1, math.ceil(shape_in[2] / max(shape_out[2], 1))) if shape_in and shape_out else 1
        self.emit(node, kind, [source], {"kernel": kernel, "kernel_w": kernel, "stride": kernel})

    def attention(self, node: Any, module: Any, source: Any) -> None:
        """``nn.MultiheadAttention`` (self-attention) as its kernels: the input projection, the two
        batched products with the softmax between them, the output projection."""
        shape = self.shape_of(source)
        if shape is None or len(shape) != 3:
            return self.emit(node, "torch:MultiheadAttention", [source])
        batch, tokens, width = (shape if module.batch_first else (shape[1], shape[0], shape[2]))
        heads, head_dim = module.num_heads, width // module.num_heads
        base = node.name
        steps = [
            ("fc", [(batch, tokens, width)], (batch, tokens, 3 * width), {}),
            ("matmul", [(batch * heads, tokens, head_dim), (batch * heads, head_dim, tokens)], (batch * heads, tokens, tokens), {}),
            ("softmax", [(batch * heads, tokens, tokens)], (batch * heads, tokens, tokens), {}),
            ("matmul", [(batch * heads, tokens, tokens), (batch * heads, tokens, head_dim)], (batch * heads, tokens, head_dim), {}),
            ("fc", [(batch, tokens, width)], (batch, tokens, width), {}),
        ]
        previous = self.tensor[source.name]
        for index, (kind, in_shapes, out_shape, attrs) in enumerate(steps):
            output = f"{base}.{index}" if index < len(steps) - 1 else base
            inputs = [previous] * len(in_shapes)
            self.ops.append(Op(f"{base}.{kind}{index}", kind, inputs, [output], in_shapes, [out_shape], attrs))
            previous = output
        self.tensor[base] = base
        # the module returns (output, weights): getitem 0 aliases the output
        self.parts[base] = [base, base]

    def visit_function(self, node: Any, name: str, dynamic: list[Any]) -> None:
        import torch.fx

        source = dynamic[0]
        if name in STATIC_NAMES:
            return
        if name == "getitem":
            return self.getitem(node, source)
        if name in ALIAS_NAMES:
            return self.alias(node, source)
        if name in RESHAPE_NAMES:
            return self.emit(node, "reshape", [source])
        if name in TRANSPOSE_NAMES:
            return self.emit(node, "transpose", [source])
        if name in ACTIVATION_NAMES:
            return self.emit(node, ACTIVATION_NAMES[name], [source])
        if name in ("add", "sub", "mul", "truediv", "div"):
            kind = "add" if name in ("add", "sub") else "mul"
            operands = [arg for arg in node.args[:2]]
            if len(dynamic) >= 2:
                return self.emit(node, kind, dynamic[:2])
            constant = next((arg for arg in operands if isinstance(arg, torch.fx.Node) and arg is not source), None)
            other = self.shape_of(constant) if constant is not None else (1,)
            if kind == "add" and any(arg == 0 for arg in operands if not isinstance(arg, torch.fx.Node)):
                return self.alias(node, source)  # sum() starts from 0
            return self.emit(node, kind, [source], other=other or (1,))
        if name in ("cat", "concat", "concatenate"):
            return self.emit(node, "concat", dynamic)
        if name in ("chunk", "split", "unbind", "tensor_split"):
            return self.split(node, source)
        if name in ("matmul", "bmm", "linear"):
            if len(dynamic) >= 2:
                return self.emit(node, "matmul", dynamic[:2])
            return self.emit(node, "fc", [source])
        if name in ("max_pool2d", "avg_pool2d", "fn", "boolean_dispatch"):
            return self.function_pool(node, source, "avgpool" if name == "avg_pool2d" else "maxpool")
        if name in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
            return self.adaptive_pool(node, source, "avgpool" if "avg" in name else "maxpool")
        if name == "mean":  # a global average: over a map's spatial dims, or over tokens
            return self.emit(node, "gap", [source])
        if name == "pad":
            return self.emit(node, "pad", [source])
        self.emit(node, f"torch:{name}", dynamic)

    def function_pool(self, node: Any, source: Any, kind: str) -> None:
        args = list(node.args[1:]) + [None] * 3
        kernel = _pair(node.kwargs.get("kernel_size", args[0]) or 1)
        stride = _pair(node.kwargs.get("stride", args[1]) or kernel)
        self.emit(node, kind, [source], {"kernel": kernel[0], "kernel_w": kernel[1], "stride": stride[0]})

    def split(self, node: Any, source: Any) -> None:
        meta = node.meta.get("tensor_meta")
        shapes = [_shape(part) or () for part in (meta if isinstance(meta, (list, tuple)) else [meta])]
        names = [f"{node.name}.{index}" for index in range(len(shapes))]
        self.ops.append(Op(node.name, "split", [self.tensor[source.name]], names, [self.shape_of(source) or ()], shapes,
                           {"inputs": len(shapes)}))
        self.parts[node.name] = names

    def getitem(self, node: Any, source: Any) -> None:
        if source.name in self.parts:
            index = node.args[1]
            self.tensor[node.name] = self.parts[source.name][index if isinstance(index, int) else 0]
            return
        index = node.args[1]
        if isinstance(index, tuple) and all(isinstance(part, slice) and part == slice(None) for part in index):
            return self.alias(node, source)
        self.emit(node, "split", [source], {"inputs": 1})


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))


# --- reading an ONNX graph ----------------------------------------------------------------------

ONNX_UNARY = {"Relu": "relu", "HardSwish": "hswish", "HardSigmoid": "hsigmoid", "Sigmoid": "sigmoid", "Tanh": "tanh",
              "Softmax": "softmax", "LayerNormalization": "layernorm", "Gelu": "gelu", "BatchNormalization": "bn",
              "Clip": "relu6", "FastGelu": "gelu", "BiasGelu": "gelu"}
ONNX_RESHAPE = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand"}
ONNX_ALIAS = {"Identity", "Dropout", "Cast"}
ONNX_STATIC = {"Shape", "Constant", "ConstantOfShape", "Range", "Size"}


def onnx_graph(model: Any, input_shape: Sequence[int], name: str = "model") -> Graph:
    """The op graph of an ONNX model at a concrete input shape (its single input's dims filled in)."""
    import onnx
    from onnx import shape_inference

    model, weights = shapes_only(model)
    constant = {init.name for init in model.graph.initializer} | weights
    data_inputs = [value for value in model.graph.input if value.name not in constant]
    if len(data_inputs) != 1:
        raise GraphError(f"{name}: has {len(data_inputs)} inputs; leti reads single-input models")
    for dim, value in zip(data_inputs[0].type.tensor_type.shape.dim, input_shape):
        dim.Clear()
        dim.dim_value = int(value)
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False).graph
    except Exception as error:  # noqa: BLE001 - onnx raises several kinds for a broken graph
        raise GraphError(f"{name}: ONNX shape inference failed ({error})") from error
    shapes = {init.name: tuple(int(d) for d in init.dims) for init in model.graph.initializer}
    shapes.update({value.name: tuple(int(d.dim_value) for d in value.type.tensor_type.shape.dim) for value in model.graph.input
                   if value.name in weights})
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = tuple(int(d.dim_value) if d.HasField("dim_value") else 0 for d in dims)
    return OnnxReader(list(inferred.node), shapes, constant, data_inputs[0].name, name).read()


def shapes_only(model: Any, largest: int = 4096) -> tuple[Any, set[str]]:
    """A copy of ``model`` whose large initializers (weights) are declared inputs without data, and
    their names: shape inference then reads kilobytes instead of a whole network's weights, while
    the small constants that shape arithmetic needs (a ``Reshape``'s target) stay."""
    import onnx
    from onnx import helper

    light = onnx.ModelProto()
    light.CopyFrom(model) if model.ByteSize() < (1 << 20) else _copy_without_weights(model, light)
    weights = set()
    kept = []
    for init in light.graph.initializer:
        if int(np.prod(init.dims, dtype=np.int64)) > largest:
            weights.add(init.name)
            light.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            kept.append(init)
    del light.graph.initializer[:]
    light.graph.initializer.extend(kept)
    return light, weights


def _copy_without_weights(model: Any, light: Any) -> None:
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    graph = light.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    for init in model.graph.initializer:
        if int(np.prod(init.dims, dtype=np.int64)) > 4096:
            stub = graph.initializer.add()
            stub.name, stub.data_type = init.name, init.data_type
            stub.dims.extend(init.dims)
        else:
            graph.initializer.append(init)


class OnnxReader:
    """ONNX nodes into ops: constants and shape arithmetic drop out, and the exporters' spellings of
    GELU, SiLU, hard-swish and a biased linear layer become one op each."""

    def __init__(self, nodes: list[Any], shapes: dict[str, tuple[int, ...]], constant: set[str], data_input: str, name: str) -> None:
        self.nodes, self.shapes, self.constant, self.name = nodes, shapes, set(constant), name
        self.data_input = data_input
        self.alias: dict[str, str] = {}
        self.ops: list[Op] = []
        self.users: dict[str, list[Any]] = {}
        for node in nodes:
            for tensor in node.input:
                self.users.setdefault(tensor, []).append(node)
        self.done: set[int] = set()

    def real(self, tensor: str) -> str:
        while tensor in self.alias:
            tensor = self.alias[tensor]
        return tensor

    def dynamic(self, tensor: str) -> bool:
        return bool(tensor) and tensor not in self.constant

    def only_user(self, tensor: str) -> Any | None:
        users = self.users.get(tensor, [])
        return users[0] if len(users) == 1 else None

    def emit(self, node: Any, kind: str, inputs: list[str], outputs: list[str] | None = None,
             attrs: dict[str, int] | None = None, other: tuple[int, ...] | None = None) -> None:
        outputs = outputs or [node.output[0]]
        names = [self.real(t) for t in inputs]
        self.ops.append(Op(node.name or outputs[0], kind, names, outputs, [self.shapes.get(t, ()) for t in names],
                           [self.shapes.get(t, ()) for t in outputs], attrs or {}, other))

    def read(self) -> Graph:
        for index, node in enumerate(self.nodes):
            if index in self.done:
                continue
            dynamic_inputs = [t for t in node.input if self.dynamic(t)]
            if not dynamic_inputs or node.op_type in ONNX_STATIC:
                self.constant.update(node.output)
                continue
            self.visit(index, node, [t for t in node.input if self.dynamic(t)])
        return Graph(self.name, self.ops, [self.data_input])

    def attribute(self, node: Any, key: str, default: Any = None) -> Any:
        from onnx import helper

        for attr in node.attribute:
            if attr.name == key:
                return helper.get_attribute_value(attr)
        return default

    def visit(self, index: int, node: Any, dynamic: list[str]) -> None:
        op = node.op_type
        if op in ONNX_ALIAS:
            self.alias[node.output[0]] = self.real(dynamic[0])
        elif op == "Conv":
            weight = self.shapes.get(node.input[1], ())
            kernel = tuple(self.attribute(node, "kernel_shape") or weight[2:4])
            groups = int(self.attribute(node, "group", 1))
            strides = self.attribute(node, "strides") or [1, 1]
            cin = self.shapes.get(node.input[0], (0, 0))[1]
            attrs = {"kernel": int(kernel[0]), "kernel_w": int(kernel[-1]), "stride": int(strides[0]), "groups": groups}
            self.emit(node, conv_kind(cin, int(weight[0]) if weight else 0, groups, (int(kernel[0]), int(kernel[-1]))), [node.input[0]], attrs=attrs)
        elif op == "Gemm":
            self.emit(node, "fc", [node.input[0]])
        elif op == "MatMul":
            self.matmul(node, dynamic)
        elif op in ("MaxPool", "AveragePool"):
            kernel = self.attribute(node, "kernel_shape") or [1, 1]
            strides = self.attribute(node, "strides") or [1, 1]
            kind = "maxpool" if op == "MaxPool" else "avgpool"
            self.emit(node, kind, [node.input[0]], attrs={"kernel": int(kernel[0]), "kernel_w": int(kernel[-1]), "stride": int(strides[0])})
        elif op in ("GlobalAveragePool", "ReduceMean"):
            self.emit(node, "gap", [node.input[0]])
        elif op == "Erf":
            self.gelu(index, node)
        elif op == "Sigmoid" and self.gated(index, node, "silu"):
            pass
        elif op == "HardSigmoid" and self.gated(index, node, "hswish"):
            pass
        elif op in ONNX_UNARY:
            self.emit(node, ONNX_UNARY[op], [node.input[0]])
        elif op in ("Add", "Sub", "Mul", "Div"):
            kind = "add" if op in ("Add", "Sub") else "mul"
            if len(dynamic) >= 2:
                self.emit(node, kind, dynamic[:2])
            else:
                constant = next(t for t in node.input if t != dynamic[0])
                self.emit(node, kind, dynamic, other=self.shapes.get(constant, (1,)) or (1,))
        elif op == "Concat":
            self.emit(node, "concat", dynamic)
        elif op == "Split":
            self.emit(node, "split", [dynamic[0]], outputs=list(node.output), attrs={"inputs": len(node.output)})
        elif op in ("Slice", "Gather"):
            self.emit(node, "split", [dynamic[0]], attrs={"inputs": 1})
        elif op == "Transpose":
            self.emit(node, "transpose", [dynamic[0]])
        elif op in ONNX_RESHAPE:
            self.emit(node, "reshape", [dynamic[0]])
        elif op == "Pad":
            self.emit(node, "pad", [dynamic[0]])
        else:
            self.emit(node, f"onnx:{op}", dynamic)

    def matmul(self, node: Any, dynamic: list[str]) -> None:
        """A product with a constant weight is a linear layer, with its bias ``Add`` folded in."""
        if len(dynamic) >= 2:
            return self.emit(node, "matmul", dynamic[:2])
        output = node.output[0]
        user = self.only_user(output)
        if user is not None and user.op_type == "Add" and sum(self.dynamic(t) for t in user.input) == 1:
            self.done.add(self.nodes.index(user))
            return self.emit(node, "fc", [dynamic[0]], outputs=[user.output[0]])
        self.emit(node, "fc", [dynamic[0]])

    def gelu(self, index: int, node: Any) -> None:
        """``x / sqrt(2)`` (or ``x * c``) -> ``Erf`` -> ``+ 1`` -> ``* x`` -> ``* 0.5`` is GELU of x."""
        producer = next((n for n in self.nodes if node.input[0] in n.output), None)
        source = next((t for t in producer.input if self.dynamic(t)), None) if producer is not None and producer.op_type in ("Div", "Mul") else None
        chain, tensor = [], node.output[0]
        for _ in range(3):
            user = self.only_user(tensor)
            if user is None or user.op_type not in ("Add", "Mul"):
                break
            chain.append(user)
            tensor = user.output[0]
        if source is None or len(chain) < 2:
            return self.emit(node, "onnx:Erf", [node.input[0]])
        # the Div/Mul before Erf was emitted as an element-wise op: it belongs to the GELU
        self.ops = [op for op in self.ops if producer.output[0] not in op.outputs]
        for user in chain:
            self.done.add(self.nodes.index(user))
        self.emit(node, "gelu", [source], outputs=[tensor])

    def gated(self, index: int, node: Any, kind: str) -> bool:
        """``x * sigmoid(x)`` is SiLU, ``x * hardsigmoid(x)`` hard-swish: one op when the product is
        the gate's only user."""
        source = node.input[0]
        user = self.only_user(node.output[0])
        if user is None or user.op_type != "Mul" or source not in user.input:
            return False
        self.done.add(self.nodes.index(user))
        self.emit(node, kind, [source], outputs=[user.output[0]])
        return True


# --- kernels ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    """What a runtime executes as one unit: the anchor op and the ops fused into it, at one
    configuration. ``type`` is the kinds joined by ``+`` (``conv+bn+relu``); ``shape`` holds the
    ``SHAPE_FIELDS`` that apply (the others are 0)."""

    type: str
    shape: tuple[tuple[str, int], ...]
    ops: tuple[str, ...] = ()
    """The network ops it covers (for ``--explain``); not part of its identity."""

    @property
    def kinds(self) -> list[str]:
        return self.type.split("+")

    @property
    def config(self) -> dict[str, int]:
        return dict(self.shape)

    @property
    def key(self) -> str:
        """A kernel's identity in the kernel table: type and configuration."""
        return f"{self.type}|" + ",".join(f"{k}={v}" for k, v in self.shape)

    def to_json(self) -> str:
        return json.dumps(dict(self.shape), sort_keys=True)


def make_kernel(kernel_type: str, ops: Sequence[str] = (), **values: int) -> Kernel:
    unknown = set(values) - set(SHAPE_FIELDS)
    if unknown:
        raise ValueError(f"unknown kernel shape fields {sorted(unknown)}")
    return Kernel(kernel_type, tuple((name, int(values[name])) for name in SHAPE_FIELDS if values.get(name)), tuple(ops))


def kernel_from_json(kernel_type: str, shape_json: str) -> Kernel:
    return make_kernel(kernel_type, **json.loads(shape_json))


def chw(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """(batch, channels, height, width) of a tensor: NCHW as it is; a token tensor (N, T, C) as
    channels C at height T; anything else flattened after the batch."""
    shape = tuple(shape) or (1,)
    if len(shape) == 4:
        return shape[0], shape[1], shape[2], shape[3]
    if len(shape) == 3:
        return shape[0], shape[2], shape[1], 1
    if len(shape) == 2:
        return shape[0], shape[1], 1, 1
    return 1, int(np.prod(shape)), 1, 1


def rows_cols(shape: Sequence[int]) -> tuple[int, int]:
    """A tensor as rows of its last dimension (what a linear layer, softmax or layer norm reads)."""
    shape = tuple(shape) or (1,)
    return int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1, int(shape[-1])


def anchor_shape(op: Op) -> dict[str, int]:
    """The configuration fields of a kernel anchored at ``op``."""
    shape_in = op.in_shapes[0] if op.in_shapes else ()
    shape_out = op.out_shapes[0] if op.out_shapes else ()
    if op.kind in CONV_KINDS or op.kind in ("maxpool", "avgpool"):
        n, cin, hin, win = chw(shape_in)
        _, cout, hout, wout = chw(shape_out)
        return {"batch": n, "cin": cin, "hin": hin, "win": win, "cout": cout if op.kind in CONV_KINDS else 0, "hout": hout, "wout": wout,
                "kernel": op.attrs.get("kernel", 1), "kernel_w": op.attrs.get("kernel_w", 1), "stride": op.attrs.get("stride", 1),
                "groups": op.attrs.get("groups", 1) if op.kind in CONV_KINDS else 0}
    if op.kind == "fc":
        rows, cin = rows_cols(shape_in)
        return {"batch": 1, "hin": rows, "cin": cin, "cout": rows_cols(shape_out)[1]}
    if op.kind == "matmul":
        left = shape_in
        right = op.in_shapes[1] if len(op.in_shapes) > 1 else left
        batch = int(np.prod(left[:-2], dtype=np.int64)) if len(left) > 2 else 1
        return {"batch": batch, "hin": int(left[-2]) if len(left) > 1 else 1, "cin": int(left[-1]), "cout": int(right[-1])}
    if op.kind in ("softmax", "layernorm"):
        rows, cols = rows_cols(shape_out)
        return {"batch": 1, "hin": rows, "cin": cols}
    if op.kind == "gap":
        n, cin, hin, win = chw(shape_in)
        return {"batch": n, "cin": cin, "hin": hin, "win": win}
    n, c, h, w = chw(shape_out if op.kind != "split" else shape_in)
    values = {"batch": n, "cin": c, "hin": h, "win": w}
    if op.kind in BINARY:
        second = op.in_shapes[1] if len(op.in_shapes) > 1 else (op.other or (1,))
        values["other"] = int(np.prod(second, dtype=np.int64))
    if op.kind == "concat":
        values["inputs"] = len(op.inputs)
    if op.kind == "split":
        values["inputs"] = op.attrs.get("inputs", len(op.outputs))
    return values


def find_squeeze_excite(graph: Graph) -> dict[str, list[Op]]:
    """Squeeze-excite blocks: the channel-wise product's op name -> the block's ops, in order
    (global pool, first 1x1 layer, activation, second 1x1 layer, gate, product; reshapes between
    them included). Each op between pool and product must feed only the next one."""
    producers, consumers = graph.producers(), graph.consumers()
    blocks = {}
    for op in graph.ops:
        if op.kind != "mul" or len(op.inputs) != 2:
            continue
        for position in (0, 1):
            full, gate_tensor = op.inputs[position], op.inputs[1 - position]
            chain = _walk_back(gate_tensor, producers, consumers)
            kinds = [o.kind for o in chain if o.kind != "reshape"]
            if (len(kinds) == 5 and kinds[0] == "gap" and kinds[1] in ("pwconv", "fc") and kinds[2] in SE_ACTS
                    and kinds[3] in ("pwconv", "fc") and kinds[4] in SE_GATES and chain[0].inputs[0] == full):
                blocks[op.name] = [*chain, op]
                break
    return blocks


def _walk_back(tensor: str, producers: Mapping[str, Op], consumers: Mapping[str, list[Op]], limit: int = 8) -> list[Op]:
    chain: list[Op] = []
    while tensor in producers and len(chain) < limit:
        op = producers[tensor]
        if len(consumers.get(op.outputs[0], [])) != 1 or len(op.outputs) != 1:
            break
        chain.insert(0, op)
        if op.kind == "gap":
            break
        tensor = op.inputs[0]
    return chain


def se_kernel(ops: list[Op]) -> Kernel:
    pool, *middle, product = ops
    layers = [o for o in middle if o.kind in ("pwconv", "fc")]
    act = next(o.kind for o in middle if o.kind in SE_ACTS)
    gate = next(o.kind for o in middle if o.kind in SE_GATES)
    n, c, h, w = chw(pool.in_shapes[0])
    hidden = chw(layers[0].out_shapes[0])[1]
    return make_kernel("se", [o.name for o in ops], batch=n, cin=c, hin=h, win=w, cout=c, hidden=hidden,
                       act=SE_ACTS.index(act) + 1, gate=SE_GATES.index(gate) + 1)


Rules = Mapping[tuple[str, str], bool]
"""(anchor kind, next kind) -> whether the device runs them as one kernel (see ``leti.measure.kernels``)."""


def split_kernels(graph: Graph, rules: Rules) -> list[Kernel]:
    """The kernels a runtime with ``rules`` executes for ``graph``, in execution order.

    Walking the ops in order, a kernel starts at each op not yet covered (its anchor) and takes in
    the op that reads its output while that op is the output's only reader and the rules fuse it
    with the anchor (``conv`` then ``bn`` then ``relu`` is one kernel where both ``(conv, bn)`` and
    ``(conv, relu)`` fuse). Squeeze-excite blocks are kernels of their own.
    """
    consumers = graph.consumers()
    blocks = find_squeeze_excite(graph)
    covered: set[str] = set()
    by_product = {name: ops for name, ops in blocks.items()}
    block_members = {o.name: name for name, ops in blocks.items() for o in ops}
    kernels: list[Kernel] = []
    for op in graph.ops:
        if op.name in covered:
            continue
        if op.name in block_members:
            product = block_members[op.name]
            if op.name == product:  # the product closes the block
                kernels.append(se_kernel(by_product[product]))
            covered.add(op.name)
            continue
        chain = [op]
        current = op
        while len(current.outputs) == 1:
            readers = consumers.get(current.outputs[0], [])
            if len(readers) != 1:
                break
            nxt = readers[0]
            if nxt.name in covered or nxt.name in block_members or not rules.get((op.kind, nxt.kind), False):
                break
            if nxt.kind in BINARY and len(nxt.inputs) < 2:
                break  # a product with a constant is not a residual add
            chain.append(nxt)
            covered.add(nxt.name)
            current = nxt
        covered.add(op.name)
        kernels.append(make_kernel("+".join(o.kind for o in chain), [o.name for o in chain], **anchor_shape(op)))
    return kernels


def kernel_types(kernels: Sequence[Kernel]) -> list[str]:
    return sorted({kernel.type for kernel in kernels})


# --- features -----------------------------------------------------------------------------------


def costs(kernel: Kernel) -> dict[str, float]:
    """Elements in and out, parameters, FLOPs (2 per multiply-add) and float32 bytes moved."""
    c = kernel.config
    get = c.get
    anchor = kernel.kinds[0]
    batch = get("batch", 1)
    elements_in = batch * get("cin", 1) * get("hin", 1) * get("win", 1)
    params = 0
    if anchor in CONV_KINDS:
        elements_out = batch * get("cout", 1) * get("hout", 1) * get("wout", 1)
        per_output = get("cin", 1) // max(get("groups", 1), 1) * get("kernel", 1) * get("kernel_w", 1)
        params = get("cout", 1) * per_output + get("cout", 1)
        flops = 2 * elements_out * per_output
    elif anchor == "fc":
        elements_in = get("hin", 1) * get("cin", 1)
        elements_out = get("hin", 1) * get("cout", 1)
        params = get("cin", 1) * get("cout", 1) + get("cout", 1)
        flops = 2 * elements_out * get("cin", 1)
    elif anchor == "matmul":
        elements_in = batch * get("cin", 1) * (get("hin", 1) + get("cout", 1))
        elements_out = batch * get("hin", 1) * get("cout", 1)
        flops = 2 * elements_out * get("cin", 1)
    elif anchor in ("maxpool", "avgpool"):
        elements_out = batch * get("cin", 1) * get("hout", 1) * get("wout", 1)
        flops = elements_out * get("kernel", 1) * get("kernel_w", 1)
    elif anchor == "gap":
        elements_out = batch * get("cin", 1)
        flops = elements_in
    elif anchor == "se":
        elements_out = elements_in
        params = 2 * get("cin", 1) * get("hidden", 1) + get("cin", 1) + get("hidden", 1)
        flops = 2 * elements_in + 2 * params
    elif anchor in ("softmax", "layernorm"):
        elements_in = elements_out = get("hin", 1) * get("cin", 1)
        flops = 5 * elements_out
    elif anchor == "concat":
        elements_out = elements_in
        flops = 0
    elif anchor in BINARY:
        elements_out = elements_in
        elements_in = elements_out + get("other", elements_out)
        flops = elements_out
    else:
        elements_out = elements_in
        flops = elements_out
    tail = kernel.kinds[1:]
    flops += elements_out * len(tail)
    extra_reads = elements_out * tail.count("add")
    moved = elements_in + elements_out + params + extra_reads
    return {"elements_in": float(elements_in), "elements_out": float(elements_out), "params": float(params),
            "flops": float(flops), "bytes": float(4 * moved)}


def features(kernel: Kernel) -> np.ndarray:
    """The kernel's feature vector (``FEATURE_NAMES``)."""
    config = kernel.config
    cost = costs(kernel)
    tail = kernel.kinds[1:]
    values = [float(config.get(name, 0)) for name in SHAPE_FIELDS]
    values += [cost["elements_in"], cost["elements_out"], cost["params"], cost["flops"], cost["bytes"],
               cost["flops"] / max(cost["bytes"], 1.0), math.log1p(cost["flops"]), math.log1p(cost["bytes"]),
               math.log1p(cost["elements_out"])]
    values += [float(kind in tail) for kind in ("bn", *ACTIVATIONS, "add", "mul", "softmax")]
    return np.asarray(values, dtype=np.float64)


def feature_matrix(kernels: Sequence[Kernel]) -> np.ndarray:
    if not kernels:
        return np.zeros((0, len(FEATURE_NAMES)))
    return np.stack([features(kernel) for kernel in kernels])


# --- a model, end to end ------------------------------------------------------------------------


def model_graph(model: Any, input_shape: Sequence[int] | None = None, batch: int = 1) -> Graph:
    """The op graph of what ``leti measure-model`` takes (a torchvision builder name, a model-set
    variant, an ``.onnx`` path) or of a PyTorch module, at its default input or ``input_shape``
    (without the batch dim). An unreadable model is one ``ValueError`` naming it; a ``.tflite`` file
    is not read yet."""
    import torch

    from leti import networks

    if isinstance(model, torch.nn.Module):
        shape = tuple(input_shape or networks.DEFAULT_INPUT)
        return torch_graph(model, torch.empty(batch, *shape), type(model).__name__)
    source = networks.resolve(str(model))
    if source.kind in ("torchvision", "variant"):
        with no_weight_init():  # shapes only: initialising weights would cost more than predicting
            network, default = networks.network_of(source)
        return torch_graph(network, torch.empty(batch, *(input_shape or default)), source.name)
    if source.kind == "onnx":
        onnx_model, _, shape = networks.read_onnx(Path(source.location), batch, input_shape)
        return onnx_graph(onnx_model, shape, source.name)
    raise GraphError(f"{source.location}: leti reads kernels from PyTorch networks and .onnx files; "
                     f"a {source.kind} file is not read yet (give the network or its .onnx)")


__all__ = [
    "CONV_KINDS", "EMPTY", "FEATURE_NAMES", "KINDS", "SHAPE_FIELDS", "Graph", "GraphError", "Kernel", "Op", "Rules",
    "costs", "feature_matrix", "features", "kernel_from_json", "kernel_types", "make_kernel", "model_graph",
    "no_weight_init", "onnx_graph", "split_kernels", "torch_graph",
]
