"""TFLite (LiteRT) on this machine's CPU: convert with ``litert-torch``, time the interpreter.

The interpreter (``ai-edge-litert``, with the XNNPACK CPU delegate, the same runtime
``benchmark_model`` drives on a phone) is one of leti's dependencies. The converter
(``litert-torch``, formerly ``ai-edge-torch``, which lowers the network through ``torch.export``)
cannot live next to Prefect, so it runs in its own environment (``leti.devices.litert_env``), as
one long-lived process per leti process that converts networks handed over with ``torch.save``.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch

from leti.devices import litert_env
from leti.devices.base import Backend, Protocol, Timing, time_callable
from leti.errors import BackendUnavailableError

SCRIPT = Path(__file__).with_name("litert_convert.py")
SOURCE_ROOT = Path(__file__).resolve().parents[2]
"""On the converter's ``PYTHONPATH``, so unpickling a network finds its classes."""


def require_tflite(backend: str) -> None:
    """Raise one clear error naming what is missing: the interpreter or the converter environment."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError as error:
        raise BackendUnavailableError(
            f"backend {backend!r} needs the TFLite interpreter ai-edge-litert (a leti dependency; "
            f"reinstall leti): {error}"
        ) from error
    litert_env.require(backend)


class Converter:
    """A converter process in the converter environment; requests from several threads take turns."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process = subprocess.Popen(
            [str(litert_env.python()), "-u", str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")]))},
        )
        self.reply()  # wait until torch and litert-torch are imported

    def alive(self) -> bool:
        return self.process.poll() is None

    def reply(self) -> dict[str, Any]:
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            raise RuntimeError(f"the tflite converter ({litert_env.python()}) exited with {self.process.wait()}")
        return json.loads(line)

    def convert(self, network: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
        with self.lock, tempfile.TemporaryDirectory(prefix="leti-convert-") as folder:
            request = {"module": f"{folder}/network.pt", "example": f"{folder}/example.pt", "output": str(path)}
            torch.save(network, request["module"])
            torch.save(example, request["example"])
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            reply = self.reply()
        if "error" in reply:
            raise RuntimeError(f"litert-torch could not convert the network: {reply['error']}")
        return path

    def close(self) -> None:
        if self.alive() and self.process.stdin:
            self.process.stdin.close()
            self.process.wait(timeout=30)


_converter: Converter | None = None
_converter_lock = threading.Lock()


def converter() -> Converter:
    """This process's converter, started on first use and restarted if it died."""
    global _converter
    with _converter_lock:
        if _converter is None or not _converter.alive():
            _converter = Converter()
            atexit.register(_converter.close)
        return _converter


def convert_tflite(network: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Write ``network`` as a float32 ``.tflite`` file for a fixed input shape."""
    return converter().convert(network.eval(), example, Path(path))


def interpreter(model: Path, threads: int) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(model), num_threads=threads)
    runner.allocate_tensors()
    return runner


class TFLiteCPU(Backend):
    """No options; the thread count comes from the protocol."""

    name = "tflite-cpu"
    libraries = ("ai-edge-litert", "torch")
    artifact_format = "tflite"

    def check(self) -> None:
        require_tflite(self.name)

    def artifact_versions(self) -> dict[str, str | None]:
        return litert_env.versions()

    def write_artifact(self, network: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
        return convert_tflite(network, example, path)

    def run(self, artifact: Path, example: torch.Tensor, protocol: Protocol) -> Timing:
        runner = interpreter(artifact, protocol.threads)
        inputs = example if isinstance(example, tuple) else (example,)  # a kernel may read two tensors
        for entry, value in zip(runner.get_input_details(), inputs):
            runner.set_tensor(entry["index"], value.numpy())
        return time_callable(runner.invoke, protocol)

    def parse(self, raw: Timing) -> Timing:
        return raw

    def environment(self) -> dict[str, Any]:
        return {**super().environment(), "converter": litert_env.versions()}
