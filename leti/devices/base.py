"""The backend interface, the one timing protocol every backend follows, and summary statistics.

A backend turns a built PyTorch network into latency samples in three steps, as nn-Meter's
backends do: ``prepare`` (convert the network into what the device runs), ``run`` (benchmark it,
returning the device's raw output) and ``parse`` (raw output -> per-run milliseconds). Keeping the
steps apart lets a phone backend be tested by feeding ``parse`` the real tool's output.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
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
    pin_cpus: tuple[int, ...] = ()
    """CPUs the measuring process is pinned to (``os.sched_setaffinity``); empty keeps the inherited set."""
    clock: str = "wall"
    """What a timed run's duration is: ``wall`` (a monotonic clock) or ``thread``, the CPU time of the
    timing thread. On a shared host other processes take turns on the CPU during a run, and wall time
    counts their turns too (on the 2-core development VM at load average 5, ResNet-18 on ONNX Runtime
    at one thread took 142-156 ms of wall time and 47-50 ms of its thread's CPU time); a thread's CPU
    time does not. It counts only the calling thread, so it needs ``threads: 1`` and a backend whose
    runs compute on this host's CPU (PyTorch and ONNX Runtime at one thread run on the caller)."""

    CLOCKS = ("wall", "thread")

    def __post_init__(self) -> None:
        if self.threads < 1 or self.batch < 1 or self.runs < 1 or self.warmup_runs < 0:
            raise ValueError(f"invalid timing protocol {self}: threads, batch and runs must be >= 1")
        if self.clock not in self.CLOCKS:
            raise ValueError(f"invalid timing protocol: clock {self.clock!r} is not one of {', '.join(self.CLOCKS)}")
        if self.clock == "thread" and self.threads != 1:
            raise ValueError(f"invalid timing protocol: clock 'thread' counts one thread's CPU time and needs threads: 1, not {self.threads}")
        if self.warmup_seconds < 0 or self.cooldown_seconds < 0 or self.cv_threshold <= 0:
            raise ValueError(f"invalid timing protocol {self}: times must be >= 0 and cv_threshold > 0")
        object.__setattr__(self, "pin_cpus", tuple(int(cpu) for cpu in self.pin_cpus))

    def identity(self) -> dict[str, Any]:
        """The fields a ``config_id`` hashes: every one, less ``clock`` at its default, so adding the
        option left the configurations measured before it unchanged."""
        fields = asdict(self)
        if fields["clock"] == "wall":
            del fields["clock"]
        return fields


@dataclass(frozen=True)
class Summary:
    median_ms: float | None
    iqm_ms: float | None
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


def summarize_reported(stats: dict[str, float], cv_threshold: float) -> Summary:
    """Summary from a tool that reports only aggregates (``benchmark_model``: avg, std, min...).

    The interquartile mean needs the samples, so it stays empty; the median is kept when the tool
    prints one (newer ``benchmark_model`` builds print ``median=``).
    """
    mean, std = stats["avg_ms"], stats.get("std_ms", 0.0)
    cv = std / mean if mean > 0 else float("inf")
    return Summary(
        median_ms=stats.get("median_ms"),
        iqm_ms=None,
        mean_ms=mean,
        min_ms=stats["min_ms"],
        std_ms=std,
        cv=cv,
        unstable=cv > cv_threshold,
    )


@dataclass(frozen=True)
class Timing:
    """What ``Backend.parse`` returns: every per-run sample, or the tool's own aggregates.

    ``samples_ms`` holds one value per timed run whenever the runtime exposes them. A tool that
    prints only aggregates (Android's ``benchmark_model``) leaves it empty and fills ``reported``
    with ``count``, ``avg_ms``, ``std_ms``, ``min_ms``, ``max_ms`` (and ``median_ms`` if printed).
    ``warmup_ms`` is the total time of the warm-up runs, so a campaign can say how long the device
    itself was busy. ``op_profile`` holds per-operator rows when the tool profiled operators;
    ``device_state`` what the device reported around the run (a phone's temperatures, clocks,
    delegate).
    """

    samples_ms: list[float]
    reported: dict[str, float] | None = None
    op_profile: list[dict[str, Any]] | None = None
    warmup_ms: float = 0.0
    device_state: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.samples_ms and not self.reported:
            raise ValueError("a timing needs samples or reported statistics")

    def summary(self, cv_threshold: float) -> Summary:
        if self.samples_ms:
            return summarize(self.samples_ms, cv_threshold)
        assert self.reported is not None
        return summarize_reported(self.reported, cv_threshold)

    @property
    def timed_seconds(self) -> float:
        """Time spent in timed runs."""
        if self.samples_ms:
            return sum(self.samples_ms) / 1000
        assert self.reported is not None
        return self.reported["avg_ms"] * self.reported.get("count", 1) / 1000

    @property
    def device_seconds(self) -> float:
        """Time the device spent running the network (warm-up plus timed runs): the denominator
        of a campaign's overhead figure."""
        return self.timed_seconds + self.warmup_ms / 1000


def time_callable(
    step: Callable[[], Any], protocol: Protocol, synchronize: Callable[[], Any] | None = None
) -> Timing:
    """Warm up by count then by time, then time ``protocol.runs`` calls with a monotonic clock.

    Garbage collection is off while timing, as in BRP-NAS's LatBench, so a collection pause is
    never charged to a model. ``synchronize`` (``torch.cuda.synchronize`` for a GPU) is called
    before the clock starts and before it stops, so asynchronous work is charged to its own run.
    """
    sync = synchronize or (lambda: None)
    clock = time.thread_time_ns if protocol.clock == "thread" else time.perf_counter_ns
    warmup_start = time.perf_counter_ns()
    for _ in range(protocol.warmup_runs):
        step()
    deadline = time.monotonic() + protocol.warmup_seconds
    while time.monotonic() < deadline:
        step()
    sync()
    warmup_ms = (time.perf_counter_ns() - warmup_start) / 1e6
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(protocol.runs):
            sync()
            start = clock()
            step()
            sync()
            samples.append((clock() - start) / 1e6)
    finally:
        if gc_was_enabled:
            gc.enable()
    return Timing(samples_ms=samples, warmup_ms=warmup_ms)


@contextlib.contextmanager
def pinned(cpus: tuple[int, ...]) -> Iterator[None]:
    """Pin this process to ``cpus`` for the block (no-op when empty); restores the previous set.

    Pinning keeps the scheduler from migrating a benchmark between cores mid-run, one of the
    variance sources nn-Meter's maintainers name.
    """
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield
        return
    previous = os.sched_getaffinity(0)
    unknown = set(cpus) - previous
    if unknown:
        raise ValueError(f"pin_cpus {sorted(cpus)} names CPUs this process cannot use: {sorted(unknown)}")
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


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


def cpu_max_frequency_mhz() -> float | None:
    try:
        return int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000
    except (OSError, ValueError):
        return None


def package_versions(*distributions: str) -> dict[str, str | None]:
    """Installed versions of ``distributions`` (None when absent), for reproducibility records."""
    versions: dict[str, str | None] = {}
    for name in distributions:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def read_files(pattern: str) -> dict[str, str]:
    """Every readable file matching ``pattern`` (a glob under ``/``) and its stripped text."""
    found = {}
    for path in sorted(Path("/").glob(pattern.lstrip("/"))):
        try:
            found[str(path)] = path.read_text().strip()
        except OSError:
            continue
    return found


def host_state() -> dict[str, Any]:
    """What moves a CPU timing on this host from minute to minute: the load, the governor and the
    current clock of each core, and the thermal zones' temperatures (°C). A VM often exposes no
    cpufreq or thermal files; the load average is always there, and on a shared VM it is the drift."""
    cpus: dict[str, dict[str, Any]] = {}
    for path, value in read_files("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_*").items():
        core, name = Path(path).parts[-3], Path(path).name
        if name == "scaling_governor":
            cpus.setdefault(core, {})["governor"] = value
        elif name == "scaling_cur_freq" and value.isdigit():
            cpus.setdefault(core, {})["mhz"] = int(value) / 1000
    zones = read_files("/sys/class/thermal/thermal_zone*/temp")
    kinds = read_files("/sys/class/thermal/thermal_zone*/type")
    thermal = {kinds.get(str(Path(path).with_name("type")), Path(path).parent.name): int(value) / 1000
               for path, value in zones.items() if value.lstrip("-").isdigit()}
    try:
        load = [float(value) for value in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        load = None
    return {"loadavg": load, "cpus": cpus, "thermal_c": thermal}


def host_environment() -> dict[str, Any]:
    """What shapes a CPU timing besides the model: processor, governor and library versions."""
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_max_mhz": cpu_max_frequency_mhz(),
        "governor": cpu_governor(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


HOST_CPU = "host-cpu"
"""The resource name of this machine's CPU, shared by every backend that times on it."""



@dataclass
class Backend(ABC):
    """One way of running a network on one kind of device; options come from ``params.yaml``."""

    name: ClassVar[str]
    libraries: ClassVar[tuple[str, ...]] = ()
    """Distributions whose versions are recorded with every row."""
    artifact_format: ClassVar[str | None] = None
    """File format ``prepare`` writes (``onnx``, ``tflite``), or None when the artifact lives in
    memory. A file artifact can be prepared in another process, ahead of the device, and cached."""
    options: dict[str, Any] = field(default_factory=dict)

    def resource(self) -> str:
        """The physical device this backend times on. Benchmarks on one resource never overlap,
        so two devices of ``params.yaml`` that share this host's CPU take turns."""
        return HOST_CPU

    @property
    def times_on_host(self) -> bool:
        """Whether the timed runs use this machine's CPU (then host work must not overlap them)."""
        return self.resource() == HOST_CPU

    def config_options(self) -> dict[str, Any]:
        """The options that shape a timing, as hashed into ``config_id``. Backends with defaults
        fill them in, so leaving an option out and writing its default give the same id."""
        return dict(self.options)

    def artifact_options(self) -> dict[str, Any]:
        """The options that change the prepared file (part of the artifact cache key)."""
        return {}

    def artifact_versions(self) -> dict[str, str | None]:
        """Versions of the tools that write the artifact (part of the artifact cache key)."""
        return package_versions(*self.libraries)

    def check(self) -> None:
        """Fail fast, once per chunk, when the backend cannot run here or the device is gone.

        Raises ``BackendUnavailableError`` for a missing package and ``DeviceError`` for an
        unreachable device, so neither turns into one error row per cell.
        """

    def prepare(self, network: torch.nn.Module, example: torch.Tensor, workdir: Path) -> Any:
        """Convert ``network`` into the artifact the device runs (module, ONNX file, .tflite...).

        Backends with a file artifact write it to a fresh file in ``workdir``; the others override.
        """
        if self.artifact_format is None:
            raise NotImplementedError(f"backend {self.name!r} must override prepare()")
        path = Path(workdir) / f"model-{uuid.uuid4().hex[:8]}.{self.artifact_format}"
        return self.write_artifact(network, example, path)

    def write_artifact(self, network: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
        """Write the file artifact of ``network`` to ``path`` (backends with a file artifact)."""
        raise NotImplementedError(f"backend {self.name!r} has no file artifact")

    def stage(self, artifacts: list[Path]) -> None:
        """Move artifacts that are ready to the device in one go, ahead of their runs (a phone:
        one ``adb push`` for a chunk instead of one per cell). Most devices need nothing."""

    def unstage(self) -> None:
        """Remove what ``stage`` moved but no run used (a chunk that stopped early)."""

    @abstractmethod
    def run(self, artifact: Any, example: torch.Tensor, protocol: Protocol) -> Any:
        """Benchmark the artifact; return the device's raw result. The artifact is left in place
        (a campaign caches it); ``benchmark`` removes the file it prepared."""

    @abstractmethod
    def parse(self, raw: Any) -> Timing:
        """Raw result -> per-run latencies in milliseconds (or the tool's aggregates)."""

    def edge_ms(self, artifact: Any, example: Any, protocol: Protocol) -> float | None:
        """Time per run the runtime spends converting layouts at the model's edges, from its own
        profile; ``None`` where the runtime cannot tell (the default).

        Why: a kernel is timed as a one-kernel model. A runtime with a blocked tensor layout (ONNX
        Runtime's NCHWc on x86) converts that model's input into its layout and the output back, in
        every run; inside a network the neighbouring kernels share the layout and the conversions
        happen once. For a depthwise convolution they were 40-60 % of its one-kernel model's time
        here, so summing one-kernel models over-predicted light networks by 1.3-1.7x."""
        return None

    def environment(self) -> dict[str, Any]:
        """Facts about the device and software recorded with every row, taken once per chunk.

        For a backend that times on this machine the host is the device; a remote device's
        backend puts what the device reports first and the host under ``host``.
        """
        return {
            **host_environment(),
            "backend": self.name,
            "options": self.options,
            "libraries": package_versions(*self.libraries),
        }

    def cpu_affinity(self) -> list[int]:
        """CPUs the timed runs may use (the host's affinity for a host backend)."""
        return cpu_affinity()

    def state(self) -> dict[str, Any]:
        """The device's state now (load, clocks, temperatures), read around each chunk: a remote
        device reports its own; a backend timing on this machine reports the host's."""
        return host_state()

    def benchmark(
        self, network: torch.nn.Module, example: torch.Tensor, protocol: Protocol, workdir: Path
    ) -> Timing:
        """prepare -> run -> parse: the full result, including a tool's own aggregates."""
        artifact = self.prepare(network, example, workdir)
        try:
            return self.parse(self.run(artifact, example, protocol))
        finally:
            if isinstance(artifact, Path):
                artifact.unlink(missing_ok=True)

    def measure(
        self, network: torch.nn.Module, example: torch.Tensor, protocol: Protocol, workdir: Path
    ) -> list[float]:
        """Per-run samples in milliseconds (empty for a tool that prints only aggregates)."""
        return self.benchmark(network, example, protocol, workdir).samples_ms


def describe(protocol: Protocol) -> str:
    return json.dumps(asdict(protocol), sort_keys=True)
