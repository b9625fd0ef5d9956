"""Named networks outside any search space, measured with the campaign's protocol and store.

A named model is a torchvision classifier by builder name (``resnet18``, ``mobilenet_v3_large``,
randomly initialised: latency does not depend on the weights' values, and nothing is downloaded),
an ONNX file or a ``.tflite`` file. It is timed on a device of ``params.yaml`` exactly as a cell
is (the device's backend, timing protocol, locks and retries), and its rows go to a latency store
(``<store>/<device>/model/part-*.parquet``, the ``LATENCY`` table) with ``space = "model"``, the model's
name as ``arch``, its digest, FLOPs and parameters. A torchvision network runs on every backend
(converted to ONNX or TFLite when the backend runs files); an ONNX file runs on backends that run
ONNX (``onnxruntime-cpu``), a ``.tflite`` file on those that run TFLite (``tflite-cpu``,
``android-adb``).

Each model is measured ``passes`` times, the passes interleaved across models, so the store shows
how much a model's latency moves between two measurements minutes apart (the pass-to-pass
difference). The store is the resume point: a rerun measures only the passes still missing, and a
row is written as soon as it is measured, so a stop loses at most the model in flight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from leti import campaign, preparation, tables
from leti.campaign import DeviceConfig
from leti.devices import DeviceError, Timing, make_backend
from leti.devices.base import Backend, Protocol, pinned
from leti.spaces.base import count_flops, count_params

log = logging.getLogger(__name__)

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
    if "/" in spec or suffix:
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
    if source.kind == "onnx":
        return _onnx_model(source, batch, input_shape, seed)
    return _tflite_model(source, batch, input_shape, seed)


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


def _onnx_model(source: ModelSource, batch: int, input_shape: Sequence[int] | None, seed: int) -> Model:
    import onnx

    path = Path(source.location)
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
    shape = fill_shape(declared, batch, input_shape, str(path))
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


def check_backend(source: ModelSource, backend: Backend, device: str) -> None:
    """A file runs only on a backend that runs its format; say which do."""
    if source.kind == "torchvision" or backend.artifact_format == source.kind:
        return
    from leti.devices import BACKENDS

    runners = sorted(name for name, cls in BACKENDS.items() if cls.artifact_format == source.kind)
    raise ModelError(
        f"{source.location}: a {source.kind} file cannot run on device {device!r} (backend {backend.name}); "
        f"use a device whose backend runs {source.kind} files: {', '.join(runners)}"
    )


# --- the run ------------------------------------------------------------------------------------


def with_batch(device: DeviceConfig, batch: int) -> DeviceConfig:
    """``device`` with another batch size in its protocol."""
    return dataclasses.replace(device, protocol=dataclasses.replace(device.protocol, batch=batch))


def config_id(device: DeviceConfig, backend: Backend, example: torch.Tensor) -> str:
    """Hash of what shapes a named model's timing besides the model itself: backend and options,
    protocol, input shape and type (a cell's ``config_id`` hashes its network settings instead)."""
    payload = {"space": SPACE, "backend": device.backend, "options": backend.config_options(), "protocol": asdict(device.protocol),
               "input_shape": list(example.shape), "input_dtype": str(example.dtype)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


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


def artifact_path(backend: Backend, model: Model) -> Path:
    """Where the converted file of a torchvision network lives in leti's artifact cache."""
    payload = {"format": backend.artifact_format, "options": backend.artifact_options(), "model": model.digest,
               "input_shape": list(model.example.shape), "versions": backend.artifact_versions()}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
    return preparation.cache_dir() / "artifacts" / str(backend.artifact_format) / "models" / f"{model.source.name}-{key}.{backend.artifact_format}"


def artifact(backend: Backend, model: Model, workdir: Path) -> Any:
    """What the device runs: the file itself, the module, or the module converted (and cached)."""
    if model.file is not None:
        return model.file
    assert model.network is not None
    if backend.artifact_format is None:
        return backend.prepare(model.network, model.example, workdir)
    path = artifact_path(backend, model)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}-{uuid.uuid4().hex[:8]}{path.suffix}")
    network = portable(model.network) if backend.artifact_format == "tflite" else model.network
    try:
        with preparation.one_thread():
            backend.write_artifact(network, model.example, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def profile_ops(network: torch.nn.Module, example: torch.Tensor, threads: int, runs: int = 5) -> list[dict[str, Any]]:
    """Per-operator self time of an eager PyTorch network, averaged over ``runs`` forward passes
    under ``torch.profiler`` (after the timed runs, never during them), in the shape the op-profile
    table takes: one row per ATen operator type, largest first."""
    from torch.profiler import ProfilerActivity, profile

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode(), quiet_stderr():
            network(example)
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                for _ in range(runs):
                    network(example)
    finally:
        torch.set_num_threads(previous)
    events = [e for e in profiler.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    rows = [
        {"name": e.key, "node_type": e.key, "avg_ms": e.self_cpu_time_total / 1000 / runs, "first_ms": None,
         "percent": 100 * e.self_cpu_time_total / total, "times_called": round(e.count / runs)}
        for e in events
    ]
    return sorted(rows, key=lambda row: -row["avg_ms"])


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block: torch's profiler (Kineto) writes
    ``USDT: profiler_start`` lines straight to it, whatever ``KINETO_LOG_LEVEL`` says."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass
class ModelResult:
    """One measurement of one model, as ``leti measure-model`` prints it."""

    model: str
    device: str
    pass_number: int
    row: dict[str, Any] | None = None
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        row = self.row or {}
        return {"model": self.model, "device": self.device, "pass": self.pass_number, "median_ms": row.get("median_ms"),
                "min_ms": row.get("min_ms"), "cv": row.get("cv"), "flops": row.get("flops"), "params": row.get("params"),
                "error": self.error}


def existing_rows(store: Path, device: str) -> pl.DataFrame:
    folder = campaign.device_dir(store, device)
    if not folder.exists():
        return tables.empty(tables.LATENCY)
    return tables.read(folder, tables.LATENCY).filter(pl.col("space") == SPACE)


def passes_done(rows: pl.DataFrame, name: str, config: str, digest: str) -> tuple[int, bool]:
    """Successful rows of this model under this configuration, and whether it failed before."""
    mine = rows.filter((pl.col("arch") == name) & (pl.col("config_id") == config) & (pl.col("model_digest") == digest))
    return mine.filter(pl.col("error").is_null()).height, mine.filter(pl.col("error").is_not_null()).height > 0


def measure_models(
    sources: Sequence[ModelSource],
    device: DeviceConfig,
    store: Path,
    input_shape: Sequence[int] | None = None,
    passes: int = 1,
    retry_errors: bool = False,
    op_profile: bool = False,
    op_profile_store: Path | None = None,
    retries: int = 3,
    backoff_seconds: float = 2.0,
    progress: bool = True,
    on_result: Callable[[ModelResult], None] | None = None,
) -> list[ModelResult]:
    """Measure every model ``passes`` times on ``device`` (the passes that the store lacks).

    ``op_profile`` adds, for eager PyTorch backends, a ``torch.profiler`` pass after each model's
    timed runs; a phone's ``op_profiling`` option gives ``benchmark_model``'s per-op table instead.
    Per-op rows go to ``op_profile_store`` (default: ``op_profiles`` beside the store).
    """
    from tqdm import tqdm

    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    store = Path(store)
    backend = make_backend(device.backend, device.options)
    names = [source.name for source in sources]
    if len(set(names)) != len(names):
        raise ModelError(f"two models are both named {next(n for n in names if names.count(n) > 1)!r}; rename one")
    for source in sources:
        check_backend(source, backend, device.name)
    folder = str(campaign.device_dir(store, device.name).resolve())
    store_lock = campaign.device_lock(f"store-{hashlib.sha256(folder.encode()).hexdigest()[:16]}")

    def device_turn() -> contextlib.AbstractContextManager[None]:
        return campaign.device_lock(backend.resource())

    # As in a campaign: a backend timing on this CPU holds the CPU for the whole run (building and
    # converting a network would disturb another campaign's timings); a phone or GPU only while it runs.
    host_turn = device_turn if backend.times_on_host else contextlib.nullcontext
    run_turn = contextlib.nullcontext if backend.times_on_host else device_turn
    results: list[ModelResult] = []
    rows_dir = campaign.space_dir(store, device.name, SPACE)  # where write_part puts rows whose space is SPACE
    rows_dir.mkdir(parents=True, exist_ok=True)
    with store_lock, host_turn(), tempfile.TemporaryDirectory(prefix=f"leti-models-{device.name}-") as workdir:
        campaign.remove_stale_temp_files(rows_dir)
        models = [load(source, device.protocol.batch, input_shape) for source in sources]
        configs = {model.source.name: config_id(device, backend, model.example) for model in models}
        rows = existing_rows(store, device.name)
        plan = []
        for index in range(passes):
            for model in models:
                done, failed = passes_done(rows, model.source.name, configs[model.source.name], model.digest)
                if done <= index and (retry_errors or not failed):
                    plan.append((index, model))
        if not plan:
            return results
        with run_turn():
            campaign.with_device_retries(backend.check, device.name, retries, backoff_seconds)
            environment = campaign.with_device_retries(backend.environment, device.name, retries, backoff_seconds)
        with pinned(device.protocol.pin_cpus), tqdm(total=len(plan), desc=f"measure-model {device.name}", unit="model",
                                                    disable=not progress) as bar:
            for index, model in plan:
                bar.set_postfix_str(model.source.name)
                row, profile = campaign.with_device_retries(
                    lambda model=model: measure_one(backend, device, model, configs[model.source.name], environment,
                                                    Path(workdir), run_turn, op_profile),
                    device.name, retries, backoff_seconds,
                )
                campaign.write_part([row], store, device.name)
                if profile:
                    campaign.write_part(profile, op_profile_store or campaign.default_op_profile_store(store), device.name,
                                        tables.OP_PROFILE)
                result = ModelResult(model.source.name, device.name, index + 1, row, row["error"])
                results.append(result)
                if on_result:
                    on_result(result)
                bar.update()
    return results


def measure_one(
    backend: Backend, device: DeviceConfig, model: Model, config: str, environment: dict[str, Any], workdir: Path,
    run_turn: Callable[[], contextlib.AbstractContextManager[Any]], op_profile: bool,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One latency row (an error row when the model fails to convert or run) and its per-op rows."""
    protocol: Protocol = device.protocol
    row: dict[str, Any] = {
        "space": SPACE, "arch": model.source.name, "device": device.name, "backend": device.backend, "source": "leti",
        "config_id": config, "batch": int(model.example.shape[0]), "input_shape": list(model.example.shape),
        "threads": protocol.threads, "cpu_affinity": backend.cpu_affinity(), "warmup_runs": protocol.warmup_runs,
        "warmup_seconds": protocol.warmup_seconds, "runs": protocol.runs, "measured_at": datetime.now(timezone.utc),
        "host": socket.gethostname(), "model_digest": model.digest, "flops": model.flops, "params": model.params,
        "environment": json.dumps({**environment, "model": model.details}, sort_keys=True, default=str),
    }
    try:
        prepared = artifact(backend, model, workdir)
        with run_turn():
            row["measured_at"] = datetime.now(timezone.utc)
            raw = backend.run(prepared, model.example, protocol)
        timing: Timing = backend.parse(raw)
        ops = timing.op_profile
        if op_profile and ops is None and isinstance(prepared, torch.nn.Module):
            ops = profile_ops(prepared, model.example, protocol.threads)
    except DeviceError:
        raise
    except Exception as error:  # noqa: BLE001 - a model-side failure is recorded, not fatal
        log.warning("%s on %s failed: %s", model.source.name, device.name, error)
        return {**row, "samples_ms": [], "error": f"{type(error).__name__}: {error}"}, []
    if timing.device_state:
        row["environment"] = json.dumps({**environment, "model": model.details, "run": timing.device_state}, sort_keys=True, default=str)
    row = {**row, "samples_ms": timing.samples_ms, "error": None, **asdict(timing.summary(protocol.cv_threshold))}
    return row, campaign.op_profile_rows(row, dataclasses.replace(timing, op_profile=ops))
