"""ONNX Runtime on this machine's CPU: write the ONNX graph, time ``InferenceSession.run``.

The graph is written straight from the network's ``torch.fx`` trace (``leti.devices.onnx_graph``,
about 0.05 s per NAS-Bench-201 cell, checked against the module's own output every time) unless
``exporter`` asks for ``torch.onnx`` (TorchScript, about 0.4 s per cell at one thread; dynamo,
7-18 s). A network the fx writer cannot translate falls back to the TorchScript exporter.

The intra-op thread count is always set explicitly from the protocol: ONNX Runtime's default (0)
means one thread per physical core, which makes a timing depend on the machine and on whatever
else runs on it.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from leti.devices import onnx_graph
from leti.devices.base import Backend, Protocol, Timing, time_callable
from leti.errors import BackendUnavailableError

log = logging.getLogger(__name__)

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
LAYOUT_NODES = ("ReorderInput", "ReorderOutput")
"""The nodes ONNX Runtime inserts to move tensors into and out of its blocked NCHWc layout."""
PROFILED_RUNS = 10
EXPORTERS = ("fx", "torchscript", "dynamo")


def export_onnx(network: torch.nn.Module, example: torch.Tensor, path: Path, opset: int, exporter: str) -> Path:
    """Write ``network`` for a fixed input shape with the chosen exporter (see the module docstring)."""
    if exporter == "fx" and not isinstance(example, tuple):  # leti's writer writes single-input graphs
        try:
            onnx_graph.write_onnx(network, example, path, opset)
            onnx_graph.verify(network, example, path)
            return path
        except onnx_graph.UnsupportedGraph as error:
            log.info("fx ONNX writer declined (%s); using torch.onnx's TorchScript exporter", error)
        except ValueError as error:
            log.warning("fx ONNX writer: %s; using torch.onnx's TorchScript exporter", error)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network.eval(), example if isinstance(example, tuple) else (example,), str(path),
            input_names=[f"input{i}" if i else "input" for i in range(len(example) if isinstance(example, tuple) else 1)],
            output_names=["logits"],
            opset_version=opset, dynamo=exporter == "dynamo",
        )
    return path


class OnnxRuntimeCPU(Backend):
    """Options: ``opset`` (default 17), ``exporter`` (fx, torchscript or dynamo; default fx),
    ``optimization`` (graph optimization level: disable, basic, extended, all; default all)."""

    name = "onnxruntime-cpu"
    libraries = ("onnxruntime", "onnx", "torch")
    artifact_format = "onnx"

    def check(self) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as error:
            raise BackendUnavailableError(f"backend {self.name!r} needs onnxruntime: {error}") from error
        level = self.options.get("optimization", "all")
        if level not in OPTIMIZATION_LEVELS:
            raise ValueError(f"backend {self.name!r}: optimization {level!r} is not one of {OPTIMIZATION_LEVELS}")
        if self.exporter not in EXPORTERS:
            raise ValueError(f"backend {self.name!r}: exporter {self.exporter!r} is not one of {EXPORTERS}")

    @property
    def exporter(self) -> str:
        return str(self.options.get("exporter", "fx"))

    def artifact_options(self) -> dict[str, Any]:
        return {"opset": int(self.options.get("opset", 17)), "exporter": self.exporter}

    def write_artifact(self, network: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
        return export_onnx(network, example, path, int(self.options.get("opset", 17)), self.exporter)

    def session(self, model: Path, threads: int, profile_prefix: str | None = None) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.options.get("optimization", "all")]
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def run(self, artifact: Path, example: torch.Tensor, protocol: Protocol) -> Timing:
        session = self.session(artifact, protocol.threads)
        inputs = example if isinstance(example, tuple) else (example,)  # a kernel may read two tensors
        feed = {entry.name: value.numpy() for entry, value in zip(session.get_inputs(), inputs)}
        return time_callable(lambda: session.run(None, feed), protocol)

    def parse(self, raw: Timing) -> Timing:
        return raw

    def edge_ms(self, artifact: Any, example: Any, protocol: Protocol) -> float | None:
        """The layout reorders' time per run (``Backend.edge_ms``), from ONNX Runtime's own profile
        of a separate session: the warm-up runs, then ``PROFILED_RUNS``; per reorder node the median
        of its profiled runs, summed (0 when the runtime inserted none)."""
        inputs = example if isinstance(example, tuple) else (example,)
        with tempfile.TemporaryDirectory() as folder:
            session = self.session(Path(artifact), protocol.threads, str(Path(folder) / "profile"))
            feed = {entry.name: value.numpy() for entry, value in zip(session.get_inputs(), inputs)}
            for _ in range(protocol.warmup_runs + PROFILED_RUNS):
                session.run(None, feed)
            events = json.loads(Path(session.end_profiling()).read_text())
        return layout_ms(events, protocol.warmup_runs)


def layout_ms(events: list[dict[str, Any]], skip: int) -> float:
    """Milliseconds per run in the layout nodes of an ONNX Runtime profile (``LAYOUT_NODES``): per
    node, the median duration over its runs after the first ``skip``, summed."""
    durations: dict[str, list[float]] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("args", {}).get("op_name") in LAYOUT_NODES and event["name"].endswith("_kernel_time"):
            durations.setdefault(event["name"], []).append(event["dur"] / 1000)
    return sum(statistics.median(values[skip:] or values) for values in durations.values())
