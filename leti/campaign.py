"""Resumable measurement campaigns: measure cells on one device, append results as Parquet parts.

A campaign never rewrites a finished row. Results go to ``<store>/<device>/`` as small parts, each
written atomically, so ``kill -9`` loses only the chunk in flight; a restart reads the parts and
skips every (arch, device, config) already there. A cell whose network fails to build, convert or
run gets an error row that keeps the message and the campaign goes on; a device that fails
(``DeviceError``) is retried with backoff and then reported.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from leti import tables
from leti.devices import BACKENDS, DeviceError, Protocol, UnknownBackendError, make_backend
from leti.devices.base import Backend, cpu_affinity, pinned
from leti.spaces import nb201

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceConfig:
    """One entry of ``params.yaml``'s ``devices:``: a named device, its backend and options."""

    name: str
    backend: str
    options: dict[str, Any] = field(default_factory=dict)
    protocol: Protocol = Protocol()
    network: nb201.NetworkConfig = nb201.NetworkConfig()

    @property
    def config_id(self) -> str:
        """Hash of everything that shapes a timing; a different hash means a different row."""
        payload = {
            "backend": self.backend,
            "options": self.options,
            "protocol": asdict(self.protocol),
            "network": asdict(self.network),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_params(cls, name: str, section: dict[str, Any], defaults: dict[str, Any]) -> DeviceConfig:
        """Build from a ``devices:`` entry; protocol and network keys fall back to ``defaults``."""
        merged = {**defaults, **section}
        if "backend" not in merged:
            raise ValueError(f"device {name!r} in params.yaml has no 'backend'")
        protocol_keys = Protocol.__dataclass_fields__.keys()
        network_keys = nb201.NetworkConfig.__dataclass_fields__.keys()
        unknown = set(merged) - set(protocol_keys) - set(network_keys) - {"backend", "options"}
        if unknown:
            raise ValueError(f"device {name!r} in params.yaml has unknown keys: {sorted(unknown)}")
        if merged["backend"] not in BACKENDS:
            raise UnknownBackendError(
                f"device {name!r} in params.yaml names unknown backend {merged['backend']!r} "
                f"(known: {', '.join(sorted(BACKENDS))})"
            )
        return cls(
            name=name,
            backend=merged["backend"],
            options=dict(merged.get("options") or {}),
            protocol=Protocol(**{k: merged[k] for k in protocol_keys if k in merged}),
            network=nb201.NetworkConfig(**{k: merged[k] for k in network_keys if k in merged}),
        )


@dataclass
class CampaignResult:
    device: str
    requested: int
    skipped: int
    measured: int
    failed: int
    seconds: float
    timed_seconds: float


def device_dir(store: Path, device: str) -> Path:
    return Path(store) / device


def finished_archs(store: Path, device: DeviceConfig, include_errors: bool = True) -> set[str]:
    """Archs already measured on ``device`` with its current config."""
    if not device_dir(store, device.name).exists():
        return set()
    rows = tables.read(device_dir(store, device.name), tables.LATENCY).filter(
        (pl.col("device") == device.name) & (pl.col("config_id") == device.config_id)
    )
    if not include_errors:
        rows = rows.filter(pl.col("error").is_null())
    return set(rows["arch"].to_list())


def measure_cell(backend: Backend, device: DeviceConfig, arch: str, workdir: Path) -> dict[str, Any]:
    """One latency row for ``arch``; a model-side failure becomes an error row, a device failure raises."""
    protocol, network_config = device.protocol, device.network
    example = nb201.example_input(network_config, protocol.batch)
    row: dict[str, Any] = {
        "space": nb201.NAME,
        "arch": arch,
        "device": device.name,
        "backend": device.backend,
        "source": "leti",
        "config_id": device.config_id,
        "batch": protocol.batch,
        "input_shape": list(example.shape),
        "threads": protocol.threads,
        "cpu_affinity": cpu_affinity(),
        "warmup_runs": protocol.warmup_runs,
        "warmup_seconds": protocol.warmup_seconds,
        "runs": protocol.runs,
        "measured_at": datetime.now(timezone.utc),
        "host": socket.gethostname(),
        "environment": json.dumps(backend.environment(), sort_keys=True, default=str),
    }
    try:
        network = nb201.build_network(arch, network_config)
        timing = backend.benchmark(network, example, protocol, workdir)
    except DeviceError:
        raise
    except Exception as error:  # noqa: BLE001 - any model-side failure is recorded, not fatal
        log.warning("%s on %s failed: %s", arch, device.name, error)
        return {**row, "samples_ms": [], "error": f"{type(error).__name__}: {error}"}
    return {
        **row,
        "samples_ms": timing.samples_ms,
        "error": None,
        **asdict(timing.summary(protocol.cv_threshold)),
    }


def timed_seconds(row: dict[str, Any]) -> float:
    """Seconds a row spent in timed runs (from the tool's mean when it kept no samples)."""
    if row["samples_ms"]:
        return sum(row["samples_ms"]) / 1000
    return (row.get("mean_ms") or 0.0) * row["runs"] / 1000


def write_part(rows: Sequence[dict[str, Any]], store: Path, device: str, schema: pa.Schema = tables.LATENCY) -> Path:
    """Append rows as a new part file (atomically); parts are never rewritten."""
    frame = pl.DataFrame(list(rows), schema=tables.polars_schema(schema), strict=False)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    path = device_dir(store, device) / f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    return tables.write(frame, path, schema)


def with_device_retries(action: Callable[[], Any], device: str, retries: int, backoff_seconds: float) -> Any:
    """Run ``action``; on ``DeviceError`` wait ``backoff * 2**attempt`` and retry, then report."""
    for attempt in range(retries + 1):
        try:
            return action()
        except DeviceError as error:
            if attempt == retries:
                raise DeviceError(
                    f"device {device!r} failed {retries + 1} times, giving up: {error}"
                ) from error
            delay = backoff_seconds * 2**attempt
            log.warning("device %s failed (%s); retrying in %.1f s", device, error, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def chunked(items: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


@contextlib.contextmanager
def device_lock(resource: str) -> Iterator[None]:
    """Hold the host-wide lock file of a physical resource for the block.

    Two benchmarks on one device would time each other, so every chunk, from any process (a
    Prefect worker, a Dask worker, ``leti measure``), takes this ``flock`` first. The lock is per
    resource, not per device name: ``torch-cpu`` and ``onnxruntime-cpu`` share this host's CPU and
    take turns, whichever store they write to. The lock files live in ``$LETI_LOCK_DIR`` (default:
    the system temp folder). The kernel drops a lock when its holder dies, so ``kill -9`` never
    leaves one held.
    """
    folder = Path(os.environ.get("LETI_LOCK_DIR") or tempfile.gettempdir()) / "leti-locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{resource}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale_temp_files(folder: Path) -> None:
    """Delete half-written parts a killed writer left behind; only the lock holder writes here."""
    for stale in folder.glob(".part-*.tmp"):
        stale.unlink(missing_ok=True)


@dataclass
class ChunkResult:
    """Rows of one chunk and when it held the device (epoch seconds), for overlap checks."""

    rows: list[dict[str, Any]]
    started: float
    finished: float


def measure_chunk(
    archs: Sequence[str],
    device: DeviceConfig,
    store: Path,
    retries: int = 3,
    backoff_seconds: float = 2.0,
    on_cell: Callable[[], None] | None = None,
) -> ChunkResult:
    """Measure ``archs`` under the device lock and append them as one part.

    If the device fails for good mid-chunk, the rows measured so far are written before the
    error propagates, so nothing measured is lost.
    """
    backend = make_backend(device.backend, device.options)
    rows: list[dict[str, Any]] = []
    device_dir(store, device.name).mkdir(parents=True, exist_ok=True)
    with device_lock(backend.resource()), pinned(device.protocol.pin_cpus):
        remove_stale_temp_files(device_dir(store, device.name))
        started = time.time()
        try:
            with_device_retries(backend.check, device.name, retries, backoff_seconds)
            with tempfile.TemporaryDirectory(prefix=f"leti-{device.name}-") as workdir:
                for arch in archs:
                    rows.append(
                        with_device_retries(
                            lambda arch=arch: measure_cell(backend, device, arch, Path(workdir)),
                            device.name,
                            retries,
                            backoff_seconds,
                        )
                    )
                    if device.protocol.cooldown_seconds:
                        time.sleep(device.protocol.cooldown_seconds)
                    if on_cell:
                        on_cell()
        finally:
            if rows:
                write_part(rows, store, device.name)
        return ChunkResult(rows=rows, started=started, finished=time.time())


def pending(archs: Sequence[str], device: DeviceConfig, store: Path, retry_errors: bool = False) -> list[str]:
    """Archs of ``archs`` not yet measured on ``device`` (order kept, duplicates dropped)."""
    done = finished_archs(store, device, include_errors=not retry_errors)
    return [arch for arch in dict.fromkeys(archs) if arch not in done]


def run_campaign(
    archs: Sequence[str],
    device: DeviceConfig,
    store: Path,
    part_size: int = 10,
    retry_errors: bool = False,
    progress: bool = True,
    retries: int = 3,
    backoff_seconds: float = 2.0,
) -> CampaignResult:
    """Measure every pending arch on ``device`` in this process, part by part."""
    from tqdm import tqdm

    start = time.monotonic()
    todo = pending(archs, device, store, retry_errors)
    measured = failed = 0
    timed = 0.0
    with tqdm(total=len(todo), desc=f"measure {device.name}", unit="cell", disable=not progress) as bar:
        for chunk in chunked(todo, part_size):
            rows = measure_chunk(chunk, device, store, retries, backoff_seconds, on_cell=bar.update).rows
            failed += sum(row["error"] is not None for row in rows)
            measured += len(rows)
            timed += sum(timed_seconds(row) for row in rows)
    return CampaignResult(
        device=device.name,
        requested=len(set(archs)),
        skipped=len(set(archs)) - len(todo),
        measured=measured,
        failed=failed,
        seconds=time.monotonic() - start,
        timed_seconds=timed,
    )


def latency_table(store: Path, device: str | None = None) -> pl.DataFrame:
    """Successful rows of a latency store (or one device of it)."""
    path = device_dir(store, device) if device else Path(store)
    return tables.read(path, tables.LATENCY).filter(pl.col("error").is_null())
