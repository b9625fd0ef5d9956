"""Layer-wise mode: time each distinct operator instance of NAS-Bench-201 networks alone on a
device, keep a per-device lookup table, and predict a network as the sum of its operators'
latencies (the ProxylessNAS / nn-Meter-kernel baseline).

An instance is an operator with its input shape, channels and stride. A NAS-Bench-201 network
(``NetworkConfig``) holds: the stem; in each of its three stages, the five cell operators at that
stage's channels and resolution, plus the three additions that sum a cell's edges (node 1 has one
term, node 2 two, node 3 three; ``none`` edges are still computed, as in the benchmark); the two
reduction blocks; and the head (BN-ReLU, global pooling, linear). The sum ignores what a runtime
fuses across operators and the framework's per-call overhead, which is what this baseline is
meant to expose.
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from leti import campaign, tables
from leti.campaign import DeviceConfig
from leti.devices import DeviceError, make_backend
from leti.devices.base import pinned
from leti.spaces import nb201

ADDS_PER_CELL = 3


@dataclass(frozen=True)
class OpInstance:
    """One operator at one input shape; ``key`` is the lookup table's join key."""

    op: str
    channels_in: int
    channels_out: int
    size: int
    stride: int = 1

    @property
    def key(self) -> str:
        return f"{self.op}|{self.channels_in}|{self.channels_out}|{self.size}|{self.stride}"

    def input_shape(self, batch: int) -> list[int]:
        return [batch, self.channels_in, self.size, self.size]


class Add(nn.Module):
    """The element-wise sum of two edges of a cell, timed on one tensor added to itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x


class Head(nn.Module):
    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.lastact = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(nn.functional.adaptive_avg_pool2d(self.lastact(x), 1).flatten(1))


def stages(config: nb201.NetworkConfig) -> list[tuple[int, int]]:
    """(channels, resolution) of the three stages."""
    return [(config.channels * 2**stage, config.input_size // 2**stage) for stage in range(3)]


def fixed_ops(config: nb201.NetworkConfig = nb201.NetworkConfig()) -> Counter[OpInstance]:
    """Operator instances every network runs whatever its cell: stem, reductions, additions, head."""
    counts: Counter[OpInstance] = Counter()
    counts[OpInstance("stem", 3, config.channels, config.input_size)] += 1
    for index, (channels, size) in enumerate(stages(config)):
        if index > 0:
            counts[OpInstance("reduction", channels // 2, channels, size * 2, stride=2)] += 1
        counts[OpInstance("add", channels, channels, size)] += ADDS_PER_CELL * config.cells_per_stage
    channels, size = stages(config)[-1]
    counts[OpInstance("head", channels, config.num_classes, size)] += 1
    return counts


def edge_ops(op: str, config: nb201.NetworkConfig = nb201.NetworkConfig()) -> Counter[OpInstance]:
    """Operator instances one cell edge carrying ``op`` adds: one per cell, in every stage."""
    return Counter({OpInstance(op, channels, channels, size): config.cells_per_stage for channels, size in stages(config)})


def network_ops(arch: str, config: nb201.NetworkConfig = nb201.NetworkConfig()) -> Counter[OpInstance]:
    """How many times each operator instance runs in ``arch``'s network."""
    counts = fixed_ops(config)
    for op in nb201.parse(arch):
        counts.update(edge_ops(op, config))
    return counts


def distinct_ops(config: nb201.NetworkConfig = nb201.NetworkConfig()) -> list[OpInstance]:
    """Every operator instance any cell of the space can use (5 ops x 3 stages + fixed blocks)."""
    every_op = nb201.format_cell(nb201.OPS[:1] * 6)
    fixed = [op for op in network_ops(every_op, config) if op.op not in nb201.OPS]
    return fixed + [OpInstance(op, c, c, size) for c, size in stages(config) for op in nb201.OPS]


def build_op(instance: OpInstance) -> nn.Module:
    if instance.op in nb201.OPS:
        return nb201.make_op(instance.op, instance.channels_in)
    if instance.op == "stem":
        return nn.Sequential(nn.Conv2d(3, instance.channels_out, 3, padding=1, bias=False), nn.BatchNorm2d(instance.channels_out))
    if instance.op == "reduction":
        return nb201.ResNetBasicBlock(instance.channels_in, instance.channels_out)
    if instance.op == "add":
        return Add()
    if instance.op == "head":
        return Head(instance.channels_in, instance.channels_out)
    raise ValueError(f"unknown operator {instance.op!r}")


def measure_op(instance: OpInstance, device: DeviceConfig, backend: Any, workdir: Path) -> dict[str, Any]:
    """One OP_LATENCY row; a failure to build, convert or run becomes an error row."""
    protocol = device.protocol
    row: dict[str, Any] = {
        "op_key": instance.key, "op": instance.op, "input_shape": instance.input_shape(protocol.batch),
        "channels_in": instance.channels_in, "channels_out": instance.channels_out, "stride": instance.stride,
        "device": device.name, "backend": device.backend, "config_id": device.config_id, "runs": protocol.runs,
        "measured_at": datetime.now(timezone.utc),
        "environment": json.dumps({"host": socket.gethostname(), **backend.environment()}, sort_keys=True, default=str),
    }
    try:
        module = build_op(instance).eval()
        timing = backend.benchmark(module, torch.randn(instance.input_shape(protocol.batch)), protocol, workdir)
    except DeviceError:
        raise
    except Exception as error:  # noqa: BLE001 - recorded in the row, the table goes on
        return {**row, "samples_ms": [], "error": f"{type(error).__name__}: {error}"}
    return {**row, "samples_ms": timing.samples_ms, "error": None, **asdict(timing.summary(protocol.cv_threshold))}


def op_dir(store: Path, device: str) -> Path:
    return Path(store) / device


def measure_ops(device: DeviceConfig, store: Path, retries: int = 3, backoff_seconds: float = 2.0) -> pl.DataFrame:
    """Measure every distinct operator instance not yet in ``store`` for this device and config.

    Each operator's row is appended as its own part (atomic), under the device lock, so a stop
    loses at most the operator in flight and a rerun resumes.
    """
    store = Path(store)
    done = set(lookup_rows(store, device)["op_key"]) if op_dir(store, device.name).exists() else set()
    backend = make_backend(device.backend, device.options)
    with campaign.device_lock(backend.resource()), pinned(device.protocol.pin_cpus):
        campaign.with_device_retries(backend.check, device.name, retries, backoff_seconds)
        with tempfile.TemporaryDirectory(prefix=f"leti-ops-{device.name}-") as workdir:
            for instance in distinct_ops(device.network):
                if instance.key in done:
                    continue
                row = campaign.with_device_retries(
                    lambda instance=instance: measure_op(instance, device, backend, Path(workdir)),
                    device.name, retries, backoff_seconds,
                )
                campaign.write_part([row], store, device.name, tables.OP_LATENCY)
                if device.protocol.cooldown_seconds:
                    time.sleep(device.protocol.cooldown_seconds)
    return lookup_rows(store, device)


def lookup_rows(store: Path, device: DeviceConfig) -> pl.DataFrame:
    """The device's rows for its current configuration (errors included)."""
    return tables.read(op_dir(store, device.name), tables.OP_LATENCY).filter(pl.col("config_id") == device.config_id)


def lookup_table(store: Path, device: DeviceConfig, statistic: str = "median_ms") -> pl.DataFrame:
    """``op_key -> latency_ms`` for the successfully measured operators of ``device``."""
    return (
        lookup_rows(store, device)
        .filter(pl.col("error").is_null())
        .select("op_key", pl.col(statistic).alias("latency_ms"))
        .unique("op_key", keep="last")
    )


def lookup_from_folder(folder: str | Path, statistic: str = "median_ms", config_id: str | None = None) -> pl.DataFrame:
    """``op_key -> latency_ms`` from one device's op-latency folder.

    The folder keeps every configuration ever measured (it appends); ``config_id`` picks one. Without
    it the folder must hold a single configuration, since summing operators timed under different
    protocols would mean nothing.
    """
    rows = tables.read(folder, tables.OP_LATENCY).filter(pl.col("error").is_null())
    if config_id is not None:
        rows = rows.filter(pl.col("config_id") == config_id)
    if rows.is_empty():
        which = f" with configuration {config_id}" if config_id else ""
        raise ValueError(f"{folder}: no measured operators{which} (run `leti measure-ops` first)")
    configs = rows["config_id"].unique().to_list()
    if len(configs) != 1:
        raise ValueError(f"{folder}: holds {len(configs)} measurement configurations; name one with config_id")
    return rows.sort("measured_at").select("op_key", pl.col(statistic).alias("latency_ms")).unique("op_key", keep="last")


def predict_from_lookup(
    archs: Sequence[str], lookup_frame: pl.DataFrame, config: nb201.NetworkConfig = nb201.NetworkConfig()
) -> np.ndarray:
    """Layer-wise prediction in ms: the sum of each network's operator latencies, counted by use.

    A network is its fixed blocks plus, per cell edge, that edge's op in every stage, so the sum is
    the fixed blocks' total plus one precomputed total per edge op (all 15625 cells in well under a
    second).
    """
    latency = dict(zip(lookup_frame["op_key"].to_list(), lookup_frame["latency_ms"].to_list()))

    def total(counts: Counter[OpInstance], arch: str) -> float:
        missing = [instance.key for instance in counts if instance.key not in latency]
        if missing:
            raise KeyError(f"operator {missing[0]!r} of {arch} is not in the lookup table")
        return sum(count * latency[instance.key] for instance, count in counts.items())

    fixed_ms: float | None = None
    edge_ms: dict[str, float] = {}
    predictions = []
    for arch in archs:
        cell = nb201.parse(arch)
        if fixed_ms is None:
            fixed_ms = total(fixed_ops(config), arch)
        for op in cell:
            if op not in edge_ms:
                edge_ms[op] = total(edge_ops(op, config), arch)
        predictions.append(fixed_ms + sum(edge_ms[op] for op in cell))
    return np.asarray(predictions, dtype=float)
