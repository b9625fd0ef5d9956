"""Eager PyTorch on a CUDA GPU. Kernels launch asynchronously, so every timed run is bracketed
by ``torch.cuda.synchronize``: without it the clock measures only the launch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from leti.devices.base import Backend, Protocol, Timing, time_callable
from leti.errors import DeviceError


class TorchCUDA(Backend):
    """Options: ``device_index`` (default 0)."""

    name = "torch-cuda"
    libraries = ("torch",)

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", int(self.options.get("device_index", 0)))

    def resource(self) -> str:
        return f"cuda-{self.device.index}"

    def check(self) -> None:
        if not torch.cuda.is_available():
            raise DeviceError(f"backend {self.name!r}: no CUDA device is available (torch {torch.__version__})")
        if self.device.index >= torch.cuda.device_count():
            raise DeviceError(f"backend {self.name!r}: no CUDA device {self.device.index} "
                              f"({torch.cuda.device_count()} visible)")

    def prepare(self, network: torch.nn.Module, example: torch.Tensor, workdir: Path) -> torch.nn.Module:
        return network.eval().to(self.device)

    def run(self, artifact: torch.nn.Module, example: torch.Tensor, protocol: Protocol) -> Timing:
        inputs = example.to(self.device)
        with torch.inference_mode():
            return time_callable(
                lambda: artifact(inputs), protocol, synchronize=lambda: torch.cuda.synchronize(self.device)
            )

    def parse(self, raw: Timing) -> Timing:
        return raw

    def environment(self) -> dict[str, Any]:
        environment = super().environment()
        if torch.cuda.is_available():
            environment["gpu"] = torch.cuda.get_device_name(self.device)
            environment["cuda"] = torch.version.cuda
        return environment
