"""Eager PyTorch on this machine's CPU, with a fixed intra-op thread count."""

from __future__ import annotations

from pathlib import Path

import torch

from leti.devices.base import Backend, Protocol, Timing, time_callable
from leti.threads import torch_threads


class TorchCPU(Backend):
    """``prepare`` puts the network in eval mode; ``run`` times it under ``torch.inference_mode``."""

    name = "torch-cpu"

    def prepare(self, network: torch.nn.Module, example: torch.Tensor, workdir: Path) -> torch.nn.Module:
        return network.eval()

    def run(self, artifact: torch.nn.Module, example: torch.Tensor, protocol: Protocol) -> Timing:
        inputs = example if isinstance(example, tuple) else (example,)  # a kernel may read two tensors
        with torch_threads(protocol.threads), torch.inference_mode():
            return time_callable(lambda: artifact(*inputs), protocol)

    def parse(self, raw: Timing) -> Timing:
        return raw
