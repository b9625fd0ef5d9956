"""TFLite (LiteRT) on this machine's CPU: convert with ``litert-torch``, time the interpreter.

Both packages are the optional ``[tflite]`` extra. ``litert-torch`` (formerly ``ai-edge-torch``)
lowers the PyTorch network through ``torch.export``; ``ai-edge-litert`` ships the interpreter
with the XNNPACK CPU delegate, the same runtime ``benchmark_model`` drives on a phone.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import torch

from leti.devices.base import Backend, BackendUnavailableError, Protocol, Timing, time_callable

TFLITE_PACKAGES = ("litert-torch", "ai-edge-litert")


def require_tflite(backend: str) -> None:
    """Raise one clear error naming the missing packages and the extra that installs them."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        import litert_torch  # noqa: F401
    except ImportError as error:
        raise BackendUnavailableError(
            f"backend {backend!r} needs {' and '.join(TFLITE_PACKAGES)} "
            f"(pip install 'leti[tflite]'): {error}"
        ) from error


def convert_tflite(network: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Write ``network`` as a float32 ``.tflite`` file for a fixed input shape."""
    import litert_torch

    litert_torch.convert(network.eval(), (example,)).export(str(path))
    return path


def interpreter(model: Path, threads: int) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(model), num_threads=threads)
    runner.allocate_tensors()
    return runner


class TFLiteCPU(Backend):
    """No options; the thread count comes from the protocol."""

    name = "tflite-cpu"
    libraries = ("litert-torch", "ai-edge-litert", "torch")

    def check(self) -> None:
        require_tflite(self.name)

    def prepare(self, network: torch.nn.Module, example: torch.Tensor, workdir: Path) -> Path:
        return convert_tflite(network, example, Path(workdir) / f"model-{uuid.uuid4().hex[:8]}.tflite")

    def run(self, artifact: Path, example: torch.Tensor, protocol: Protocol) -> list[float]:
        try:
            runner = interpreter(artifact, protocol.threads)
            runner.set_tensor(runner.get_input_details()[0]["index"], example.numpy())
            return time_callable(runner.invoke, protocol)
        finally:
            artifact.unlink(missing_ok=True)

    def parse(self, raw: list[float]) -> Timing:
        return Timing(samples_ms=raw)
