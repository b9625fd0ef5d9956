"""The backend interface, the one timing protocol every backend follows, and summary statistics.

A backend turns a built PyTorch network into latency samples in three steps, as nn-Meter's
backends do: ``prepare`` (convert the network into what the device runs), ``run`` (benchmark it,
returning the device's raw output) and ``parse`` (raw output -> per-run milliseconds). Keeping the
steps apart lets a phone backend be tested by feeding ``parse`` the real tool's output.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch


@dataclass(frozen=True)
class Protocol:
    """How a model is timed. Every backend honours every field it can; see its docstring."""

    threads: int = 1
    batch: int = 1
    warmup_runs: int = 10
    warmup_seconds: float = 0.0
    runs: int = 50
    cooldown_seconds: float = 0.0
    cv_threshold: float = 0.05

    def __post_init__(self) -> None:
        if self.threads < 1 or self.batch < 1 or self.runs < 1 or self.warmup_runs < 0:
            raise ValueError(f"invalid timing protocol {self}: threads, batch and runs must be >= 1")


@dataclass(frozen=True)
class Summary:
    median_ms: float
    iqm_ms: float
    mean_ms: float
    min_ms: float
    std_ms: float
    cv: float
    unstable: bool


def interquartile_mean(values: list[float]) -> float:
    """Mean of the values between the 25th and 75th percentiles (BRP-NAS's robust statistic)."""
    ordered = np.sort(np.asarray(values, dtype=float))
    low, high = np.percentile(ordered, [25, 75])
    middle = ordered[(ordered >= low) & (ordered <= high)]
    return float(middle.mean())


def summarize(samples_ms: list[float], cv_threshold: float) -> Summary:
    mean = statistics.fmean(samples_ms)
    std = statistics.stdev(samples_ms) if len(samples_ms) > 1 else 0.0
    cv = std / mean if mean > 0 else float("inf")
    return Summary(
        median_ms=statistics.median(samples_ms),
        iqm_ms=interquartile_mean(samples_ms),
        mean_ms=mean,
        min_ms=min(samples_ms),
        std_ms=std,
        cv=cv,
        unstable=cv > cv_threshold,
    )


def time_callable(step: Callable[[], Any], protocol: Protocol) -> list[float]:
    """Warm up by count then by time, then time ``protocol.runs`` calls with a monotonic clock.

    Garbage collection is off while timing, as in BRP-NAS's LatBench, so a collection pause is
    never charged to a model.
    """
    for _ in range(protocol.warmup_runs):
        step()
    deadline = time.monotonic() + protocol.warmup_seconds
    while time.monotonic() < deadline:
        step()
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(protocol.runs):
            start = time.perf_counter_ns()
            step()
            samples.append((time.perf_counter_ns() - start) / 1e6)
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_governor() -> str | None:
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return None


def cpu_affinity() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def host_environment() -> dict[str, Any]:
    """What shapes a CPU timing besides the model: processor, governor and library versions."""
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "governor": cpu_governor(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


class DeviceError(RuntimeError):
    """The device itself failed (disconnected, busy, timed out): worth retrying, unlike a bad model."""


@dataclass
class Backend(ABC):
    """One way of running a network on one kind of device; options come from ``params.yaml``."""

    name: ClassVar[str]
    options: dict[str, Any] = field(default_factory=dict)

    @abstractmethod
    def prepare(self, network: torch.nn.Module, example: torch.Tensor, workdir: Path) -> Any:
        """Convert ``network`` into the artifact the device runs (module, ONNX file, .tflite...)."""

    @abstractmethod
    def run(self, artifact: Any, example: torch.Tensor, protocol: Protocol) -> Any:
        """Benchmark the artifact; return the device's raw result."""

    @abstractmethod
    def parse(self, raw: Any) -> list[float]:
        """Raw result -> per-run latencies in milliseconds."""

    def environment(self) -> dict[str, Any]:
        """Facts about the device and software recorded with every row."""
        return {**host_environment(), "backend": self.name, "options": self.options}

    def measure(
        self, network: torch.nn.Module, example: torch.Tensor, protocol: Protocol, workdir: Path
    ) -> list[float]:
        artifact = self.prepare(network, example, workdir)
        return self.parse(self.run(artifact, example, protocol))


def describe(protocol: Protocol) -> str:
    return json.dumps(asdict(protocol), sort_keys=True)
