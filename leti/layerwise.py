"""Layer-wise mode: time each distinct operator instance of a space's networks alone on a device,
keep a per-device lookup table, and predict a network as the sum of its operators' latencies (the
ProxylessNAS / nn-Meter-kernel baseline).

An instance is an operator with its input shape, channels and stride. Which instances a network
runs is the space's business: ``leti.spaces.<space>_ops`` gives ``distinct_ops(config)`` (every
instance any cell can use), ``network_ops(arch, config)`` (how often each runs in one network) and
``build_op(instance)``; NAS-Bench-201 has one (:data:`SPACES`). The sum ignores what a runtime
fuses across operators and the framework's per-call overhead, which is what this baseline is
meant to expose.
"""

from __future__ import annotations

import importlib
import json
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import polars as pl
import torch

from leti import campaign, spaces, tables
from leti.campaign import DeviceConfig
from leti.devices import DeviceError, make_backend
from leti.devices.base import pinned
from leti.spaces.base import OpInstance

SPACES: tuple[str, ...] = ("nb201",)
"""Spaces with an operator decomposition (``leti.spaces.<space>_ops``)."""


def operators(space: str) -> ModuleType:
    """The operator decomposition of ``space``'s networks; one line naming the spaces that have one."""
    if space not in SPACES:
        raise ValueError(f"layer-wise lookup tables exist for {', '.join(SPACES)} networks, not {space!r}")
    return importlib.import_module(f"leti.spaces.{space}_ops")


def distinct_ops(config: Any = None) -> list[OpInstance]:
    """Every operator instance any cell of the config's space can use (default: NB201's own network)."""
    config = config if config is not None else spaces.get(spaces.DEFAULT).NetworkConfig()
    return operators(spaces.of_network(config).NAME).distinct_ops(config)


def network_ops(arch: str, config: Any = None) -> Counter[OpInstance]:
    """How many times each operator instance runs in ``arch``'s network."""
    config = config if config is not None else spaces.get(spaces.DEFAULT).NetworkConfig()
    return operators(spaces.of_network(config).NAME).network_ops(arch, config)


def build_op(instance: OpInstance, space: str = spaces.DEFAULT) -> torch.nn.Module:
    return operators(space).build_op(instance)


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
        module = build_op(instance, device.space.NAME).eval()
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


def predict_from_lookup(archs: Sequence[str], lookup_frame: pl.DataFrame, config: Any = None) -> np.ndarray:
    """Layer-wise prediction in ms: the sum of each network's operator latencies, counted by use.

    ``config`` is the space's ``NetworkConfig`` the lookup table was measured for (default: NB201's
    own network).
    """
    latency = dict(zip(lookup_frame["op_key"].to_list(), lookup_frame["latency_ms"].to_list()))
    predictions = []
    for arch in archs:
        counts = network_ops(arch, config)
        missing = [instance.key for instance in counts if instance.key not in latency]
        if missing:
            raise KeyError(f"operator {missing[0]!r} of {arch} is not in the lookup table")
        predictions.append(sum(count * latency[instance.key] for instance, count in counts.items()))
    return np.asarray(predictions, dtype=float)
