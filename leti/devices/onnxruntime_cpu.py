"""ONNX Runtime on this machine's CPU: export with ``torch.onnx``, time ``InferenceSession.run``.

The intra-op thread count is always set explicitly from the protocol: ONNX Runtime's default (0)
means one thread per physical core, which makes a timing depend on the machine and on whatever
else runs on it.
"""

from __future__ import annotations

import uuid
import warnings
from pathlib import Path
from typing import Any

import torch

from leti.devices.base import Backend, BackendUnavailableError, Protocol, Timing, time_callable

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def export_onnx(network: torch.nn.Module, example: torch.Tensor, path: Path, opset: int, dynamo: bool) -> Path:
    """Export ``network`` for a fixed input shape.

    The TorchScript exporter (``dynamo=False``) is the default because it takes under a second
    for a NAS-Bench-201 network where the dynamo exporter takes 7-18 s here; both give the same
    operators for these networks.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network.eval(), (example,), str(path), input_names=["input"], output_names=["logits"],
            opset_version=opset, dynamo=dynamo,
        )
    return path


class OnnxRuntimeCPU(Backend):
    """Options: ``opset`` (default 17), ``dynamo`` (exporter, default false), ``optimization``
    (graph optimization level: disable, basic, extended, all; default all)."""

    name = "onnxruntime-cpu"
    libraries = ("onnxruntime", "onnx", "torch")

    def check(self) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as error:
            raise BackendUnavailableError(f"backend {self.name!r} needs onnxruntime: {error}") from error
        level = self.options.get("optimization", "all")
        if level not in OPTIMIZATION_LEVELS:
            raise ValueError(f"backend {self.name!r}: optimization {level!r} is not one of {OPTIMIZATION_LEVELS}")

    def prepare(self, network: torch.nn.Module, example: torch.Tensor, workdir: Path) -> Path:
        path = Path(workdir) / f"model-{uuid.uuid4().hex[:8]}.onnx"
        return export_onnx(
            network, example, path, int(self.options.get("opset", 17)), bool(self.options.get("dynamo", False))
        )

    def session(self, model: Path, threads: int) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
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

    def run(self, artifact: Path, example: torch.Tensor, protocol: Protocol) -> list[float]:
        try:
            session = self.session(artifact, protocol.threads)
            feed = {session.get_inputs()[0].name: example.numpy()}
            return time_callable(lambda: session.run(None, feed), protocol)
        finally:
            artifact.unlink(missing_ok=True)

    def parse(self, raw: list[float]) -> Timing:
        return Timing(samples_ms=raw)
