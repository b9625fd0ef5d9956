"""Device backends by name. ``params.yaml`` maps a device name to a backend and its options."""

from __future__ import annotations

from typing import Any

from leti.devices.base import Backend, DeviceError, Protocol
from leti.devices.torch_cpu import TorchCPU

BACKENDS: dict[str, type[Backend]] = {cls.name: cls for cls in (TorchCPU,)}


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


__all__ = ["BACKENDS", "Backend", "DeviceError", "Protocol", "UnknownBackendError", "make_backend"]
