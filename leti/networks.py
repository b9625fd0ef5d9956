"""Named networks outside any search space: torchvision classifiers by builder name, ONNX files and
``.tflite`` files, loaded with an example input, a digest and their FLOPs and parameters.

A torchvision builder name gives a randomly initialised classifier (latency does not depend on the
weights' values, and nothing is downloaded). ``leti measure-model`` times them
(``leti.measure.named_models``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leti.spaces.base import count_flops, count_params

SPACE = "model"
"""The ``space`` of a named model's rows (its ``arch`` is the model's name)."""
DEFAULT_INPUT = (3, 224, 224)
"""Channels, height, width of a torchvision classifier's input unless told otherwise (ImageNet)."""
FILE_KINDS = {".onnx": "onnx", ".tflite": "tflite"}
TORCH_DTYPES = {  # ONNX TensorProto element types and numpy dtypes -> torch
    1: torch.float32, 10: torch.float16, 2: torch.uint8, 3: torch.int8, 6: torch.int32, 7: torch.int64,
    np.dtype("float32"): torch.float32, np.dtype("float16"): torch.float16, np.dtype("uint8"): torch.uint8,
    np.dtype("int8"): torch.int8, np.dtype("int32"): torch.int32, np.dtype("int64"): torch.int64,
}


class ModelError(ValueError):
    """A model that cannot be found, read or run on the chosen device; the message names it."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: ``kind`` is torchvision, onnx or tflite; ``location`` the builder
    name or the file; ``name`` what the store calls it (``arch``)."""

    name: str
    kind: str
    location: str


def torchvision_names() -> list[str]:
    """The classifier builders of the installed torchvision (``torchvision.models.list_models``)."""
    from leti.torchvision_compat import import_torchvision

    models = import_torchvision().models
    return sorted(models.list_models(module=models))


def resolve(spec: str, name: str | None = None) -> ModelSource:
    """A torchvision builder name, or a path to an ``.onnx`` / ``.tflite`` file (named after its stem)."""
    suffix = Path(spec).suffix.lower()
    if suffix in FILE_KINDS:
        path = Path(spec)
        if not path.is_file():
            raise ModelError(f"{spec}: no such {FILE_KINDS[suffix]} file")
        return ModelSource(name or path.stem, FILE_KINDS[suffix], str(path.resolve()))
    from leti import model_set

    if spec in model_set.by_name():
        return ModelSource(name or spec, "variant", spec)
    if "/" in spec or (suffix and not suffix[1:].isdigit()):
        raise ModelError(f"{spec}: not a model file leti runs (use .onnx or .tflite) nor a torchvision builder name")
    known = torchvision_names()
    if spec not in known:
        close = [n for n in known if n.startswith(spec.rstrip("0123456789_").split("_")[0])][:8]
        hint = f"; similar: {', '.join(close)}" if close else "; `leti measure-model --list` lists them"
        raise ModelError(f"unknown model {spec!r}: not a torchvision classifier{hint}")
    return ModelSource(name or spec, "torchvision", spec)


@dataclass
class Model:
    """A model ready to time: its input, identity and cost, and the network or file to run."""

    source: ModelSource
    example: torch.Tensor
    digest: str
    flops: int | None
    params: int | None
    network: torch.nn.Module | None = None
    file: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)
    """What the row's environment records about the model (its origin, versions, input dtype)."""


def load(source: ModelSource, batch: int, input_shape: Sequence[int] | None = None, seed: int = 0) -> Model:
    """Build or read the model and its example input (``batch`` x ``input_shape``)."""
    if source.kind == "torchvision":
        return _torchvision_model(source, batch, tuple(input_shape or DEFAULT_INPUT), seed)
    if source.kind == "variant":
        return _variant_model(source, batch, input_shape, seed)
    if source.kind == "onnx":
        return _onnx_model(source, batch, input_shape, seed)
    return _tflite_model(source, batch, input_shape, seed)


def network_of(source: ModelSource) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """The PyTorch network of a torchvision builder name or a model-set variant (random weights) and
    its default input without the batch dim."""
    if source.kind == "variant":
        from leti import model_set

        variant = model_set.by_name()[source.location]
        return variant.make().eval(), (3, variant.resolution, variant.resolution)
    from leti.torchvision_compat import import_torchvision

    return import_torchvision().models.get_model(source.location, weights=None).eval(), DEFAULT_INPUT


def _torchvision_model(source: ModelSource, batch: int, input_shape: tuple[int, ...], seed: int) -> Model:
    from leti.torchvision_compat import import_torchvision

    torchvision = import_torchvision()
    torch.manual_seed(seed)
    network = torchvision.models.get_model(source.location, weights=None).eval()
    example = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(seed))
    try:
        flops = count_flops(network, example)
    except Exception as error:  # noqa: BLE001 - a shape the network rejects, said once with the model's name
        raise ModelError(f"{source.name}: cannot run at input {list(example.shape)} ({type(error).__name__}: {error})") from error
    definition = {"torchvision": torchvision.__version__.split("+")[0], "builder": source.location, "network": repr(network)}
    return Model(
        source, example, sha256_text(json.dumps(definition, sort_keys=True)), flops, count_params(network), network=network,
        details={"source": "torchvision", "builder": source.location, "torchvision": definition["torchvision"],
                 "weights": f"random (torch.manual_seed({seed}))"},
    )


def _variant_model(source: ModelSource, batch: int, input_shape: Sequence[int] | None, seed: int) -> Model:
    """A variant of the model set (``leti.model_set``); its resolution is its default input."""
    from leti import model_set
    from leti.torchvision_compat import import_torchvision

    variant = model_set.by_name()[source.location]
    torch.manual_seed(seed)
    network, default = network_of(source)
    shape = tuple(input_shape or default)
    example = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))
    try:
        flops = count_flops(network, example)
    except Exception as error:  # noqa: BLE001 - a shape the network rejects, said once with the model's name
        raise ModelError(f"{source.name}: cannot run at input {list(example.shape)} ({type(error).__name__}: {error})") from error
    version = import_torchvision().__version__.split("+")[0]
    definition = {"torchvision": version, "variant": variant.name, "network": repr(network)}
    return Model(source, example, sha256_text(json.dumps(definition, sort_keys=True)), flops, count_params(network), network=network,
                 details={"source": "leti.model_set", "variant": variant.name, "family": variant.family, "torchvision": version,
                          "weights": f"random (torch.manual_seed({seed}))"})


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fill_shape(declared: Sequence[int | None], batch: int, input_shape: Sequence[int] | None, where: str) -> list[int]:
    """The concrete input shape: the file's static dims, ``batch`` and ``input_shape`` for the others.

    A given ``input_shape`` (without the batch dim) must agree with every static dim of the file.
    """
    wanted = [batch, *input_shape] if input_shape else None
    if wanted is not None and len(wanted) != len(declared):
        raise ModelError(f"{where}: input has {len(declared)} dims {list(declared)}, --input-shape gives {len(wanted) - 1} (+ batch)")
    shape = []
    for index, dim in enumerate(declared):
        if dim is not None and dim > 0:
            if wanted is not None and wanted[index] != dim:
                raise ModelError(f"{where}: input shape is fixed at {list(declared)} in the file; it cannot run at {wanted}")
            if wanted is None and index == 0 and dim != batch:
                raise ModelError(f"{where}: batch is fixed at {dim} in the file; it cannot run at batch {batch}")
            shape.append(int(dim))
        elif index == 0:
            shape.append(batch)
        elif wanted is not None:
            shape.append(wanted[index])
        else:
            raise ModelError(f"{where}: input dim {index} is dynamic ({list(declared)}); give --input-shape")
    return shape


def random_input(shape: Sequence[int], dtype: torch.dtype, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.randn(*shape, generator=generator).to(dtype)
    return torch.randint(0, 100, tuple(shape), generator=generator).to(dtype)


def read_onnx(path: Path, batch: int, input_shape: Sequence[int] | None) -> tuple[Any, Any, list[int]]:
    """The ONNX model in ``path`` (weights left in external files unread), its single data input and
    the concrete input shape; one ``ModelError`` naming the file when any of it fails."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - onnx raises DecodeError and others for a foreign file
        raise ModelError(f"{path}: not a readable ONNX file ({error})") from error
    weights = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in weights]
    if len(inputs) != 1:
        raise ModelError(f"{path}: has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); leti times single-input models")
    tensor = inputs[0].type.tensor_type
    declared = [dim.dim_value if dim.HasField("dim_value") else None for dim in tensor.shape.dim]
    return model, inputs[0], fill_shape(declared, batch, input_shape, str(path))


def _onnx_model(source: ModelSource, batch: int, input_shape: Sequence[int] | None, seed: int) -> Model:
    path = Path(source.location)
    model, data_input, shape = read_onnx(path, batch, input_shape)
    inputs, tensor = [data_input], data_input.type.tensor_type
    dtype = TORCH_DTYPES.get(tensor.elem_type)
    if dtype is None:
        raise ModelError(f"{path}: input element type {tensor.elem_type} is not one leti can feed")
    flops, params = onnx_costs(model, shape)
    return Model(source, random_input(shape, dtype, seed), sha256_file(path), flops, params, file=path,
                 details={"source": "onnx", "file": str(path), "input": inputs[0].name, "input_dtype": str(dtype)})


def onnx_costs(model: Any, shape: Sequence[int]) -> tuple[int, int]:
    """FLOPs (convolutions and matrix products, 2 per multiply-add, as torch's FlopCounterMode counts)
    and parameters (elements of the initializers) of an ONNX graph at the input ``shape``."""
    import onnx
    from onnx import shape_inference

    model = onnx.ModelProto.FromString(model.SerializeToString())
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    [graph_input] = [value for value in model.graph.input if value.name not in weights]
    for dim, value in zip(graph_input.type.tensor_type.shape.dim, shape):
        dim.Clear()
        dim.dim_value = value
    inferred = shape_inference.infer_shapes(model).graph
    shapes = dict(weights)
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in value.type.tensor_type.shape.dim]
        shapes[value.name] = dims
    flops = 0
    for node in inferred.node:
        flops += _node_flops(node.op_type, [shapes.get(name, []) for name in node.input], [shapes.get(name, []) for name in node.output],
                             {attr.name: onnx.helper.get_attribute_value(attr) for attr in node.attribute})
    return flops, int(sum(np.prod(dims, dtype=np.int64) for dims in weights.values()))


def _node_flops(op: str, inputs: list[list[int]], outputs: list[list[int]], attributes: dict[str, Any]) -> int:
    out = int(np.prod(outputs[0], dtype=np.int64)) if outputs and outputs[0] else 0
    if op == "Conv" and len(inputs) > 1:
        return 2 * out * int(np.prod(inputs[1][1:], dtype=np.int64))  # weight: C_out, C_in/groups, k...
    if op == "ConvTranspose" and len(inputs) > 1:  # weight: C_in, C_out/groups, k...
        return 2 * int(np.prod(inputs[0], dtype=np.int64)) * int(np.prod(inputs[1][1:], dtype=np.int64))
    if op == "Gemm" and inputs[0]:
        return 2 * out * inputs[0][0 if attributes.get("transA") else 1]
    if op == "MatMul" and inputs[0]:
        return 2 * out * inputs[0][-1]
    return 0


def _tflite_model(source: ModelSource, batch: int, input_shape: Sequence[int] | None, seed: int) -> Model:
    path = Path(source.location)
    interpreter = tflite_interpreter(path)
    details = interpreter.get_input_details()
    if len(details) != 1:
        raise ModelError(f"{path}: has {len(details)} inputs; leti times single-input models")
    shape = fill_shape([int(d) for d in details[0]["shape"]], batch, input_shape, str(path))
    dtype = TORCH_DTYPES.get(np.dtype(details[0]["dtype"]))
    if dtype is None:
        raise ModelError(f"{path}: input type {details[0]['dtype']} is not one leti can feed")
    flops, params = tflite_costs(interpreter)
    return Model(source, random_input(shape, dtype, seed), sha256_file(path), flops, params, file=path,
                 details={"source": "tflite", "file": str(path), "input_dtype": str(dtype)})


def tflite_interpreter(path: Path) -> Any:
    """The file's interpreter with only the built-in kernels (no XNNPACK delegate rewriting the graph)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as error:
        raise ModelError(f"{path}: reading a .tflite file needs ai-edge-litert (a leti dependency): {error}") from error
    try:
        interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise ModelError(f"{path}: not a readable .tflite file ({error})") from error
    return interpreter


def tflite_costs(interpreter: Any) -> tuple[int, int]:
    """FLOPs (2 per multiply-add of convolutions and matrix products) and parameters (elements of the
    constant float and 8-bit tensors) of a TFLite graph, from its operators' tensor shapes.

    Uses the interpreter's ``_get_ops_details``, the only listing of a graph's operators that
    ai-edge-litert offers (nn-Meter and TFLite's own visualiser read the same flatbuffer fields).
    """
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    operators = interpreter._get_ops_details()
    shape = {index: [int(d) for d in tensor["shape"]] for index, tensor in tensors.items()}
    flops = 0
    for op in operators:
        inputs = [shape.get(int(i), []) for i in op["inputs"] if int(i) >= 0]
        out = int(np.prod(shape.get(int(op["outputs"][0]), []), dtype=np.int64)) if len(op["outputs"]) else 0
        name = op["op_name"]
        if name == "CONV_2D":  # filter: C_out, kh, kw, C_in
            flops += 2 * out * int(np.prod(inputs[1][1:], dtype=np.int64))
        elif name == "DEPTHWISE_CONV_2D":  # filter: 1, kh, kw, C_out
            flops += 2 * out * inputs[1][1] * inputs[1][2]
        elif name == "FULLY_CONNECTED":  # weights: C_out, C_in
            flops += 2 * out * inputs[1][-1]
        elif name == "BATCH_MATMUL":
            flops += 2 * out * inputs[0][-1]
        elif name == "TRANSPOSE_CONV":  # output shape, filter (C_out, kh, kw, C_in), input
            flops += 2 * int(np.prod(inputs[2], dtype=np.int64)) * int(np.prod(inputs[1][:3], dtype=np.int64))
    produced = {int(i) for op in operators for i in op["outputs"]}
    fed = {int(d["index"]) for d in interpreter.get_input_details()}
    constant = [t for i, t in tensors.items() if i not in produced and i not in fed and np.dtype(t["dtype"]).kind in "fiu"
                and np.dtype(t["dtype"]).itemsize in (1, 2, 4) and np.dtype(t["dtype"]) != np.dtype("int32")]
    return flops, int(sum(np.prod(t["shape"], dtype=np.int64) for t in constant))


def portable(network: torch.nn.Module) -> torch.nn.Module:
    """The network as a ``torch.fx`` graph of plain ``torch.nn`` modules, for the TFLite converter.

    The converter runs in its own environment (``leti.devices.litert_env``), which has torch but not
    torchvision, and unpickles what it is sent; a traced graph refers to torch classes only. In eval
    mode torchvision's ``StochasticDepth`` is the identity (and torch.fx would keep it as a call into
    torchvision), so it becomes ``nn.Identity`` first.
    """
    from leti.torchvision_compat import import_torchvision

    stochastic_depth = import_torchvision().ops.StochasticDepth
    for module in list(network.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, stochastic_depth):
                setattr(module, child_name, torch.nn.Identity())
    try:
        traced = torch.fx.symbolic_trace(network)
    except Exception as error:  # noqa: BLE001 - torch.fx cannot trace data-dependent control flow
        raise ModelError(f"cannot hand the network to the TFLite converter: torch.fx cannot trace it ({error})") from error
    if "torchvision" in traced.code:
        raise ModelError("cannot hand the network to the TFLite converter: its traced graph still calls torchvision")
    return traced
