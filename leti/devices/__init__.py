"""Device backends by name. ``params.yaml`` maps a device name to a backend and its options."""

from __future__ import annotations

from typing import Any

from leti.devices.android_adb import AndroidADB
from leti.devices.base import Backend, Protocol, Timing
from leti.devices.onnxruntime_cpu import OnnxRuntimeCPU
from leti.devices.tflite_cpu import TFLiteCPU
from leti.devices.torch_cpu import TorchCPU
from leti.devices.torch_cuda import TorchCUDA

BACKENDS: dict[str, type[Backend]] = {
    cls.name: cls for cls in (TorchCPU, OnnxRuntimeCPU, TFLiteCPU, TorchCUDA, AndroidADB)
}


class UnknownBackendError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def make_backend(name: str, options: dict[str, Any] | None = None) -> Backend:
    """The backend registered as ``name``, configured with ``options``."""
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise UnknownBackendError(
            f"unknown backend {name!r} (known: {', '.join(sorted(BACKENDS))})"
        ) from None
    return cls(options=dict(options or {}))


__all__ = [
    "BACKENDS", "Backend", "Protocol", "Timing",
    "UnknownBackendError", "make_backend",
]
