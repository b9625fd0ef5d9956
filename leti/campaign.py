"""Resumable measurement campaigns: measure cells on one device, append results as Parquet parts.

A campaign never rewrites a finished row. Results go to ``<store>/<device>/`` as small parts, each
written atomically, so ``kill -9`` loses only the chunk in flight; a restart reads the parts and
skips every (arch, device, config) already there. A cell whose network fails to build, convert or
run gets an error row that keeps the message and the campaign goes on; a device that fails
(``DeviceError``) is retried with backoff and then reported. When the device profiled operators,
each cell's per-operator times go to ``<op profile store>/<device>/`` (default: ``op_profiles``
beside the latency store), linked to the latency row by (arch, device, config_id, measured_at).

Host work is kept off the device's clock: cells with a file artifact (ONNX, TFLite) are converted
ahead by a worker process (``leti.preparation``) while the device times the cell before, and the
lock of a phone or GPU is held only while it runs a network.
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

from leti import preparation, tables
from leti.devices import BACKENDS, DeviceError, Protocol, Timing, UnknownBackendError, make_backend
from leti.devices.base import Backend, pinned
from leti import spaces
from leti.spaces import SearchSpace

log = logging.getLogger(__name__)


def default_network() -> Any:
    return spaces.get(spaces.DEFAULT).NetworkConfig()


@dataclass(frozen=True)
class DeviceConfig:
    """One entry of ``params.yaml``'s ``devices:`` measuring one search space: a named device, its
    backend and options, the timing protocol, and the network the space's cells are built in (the
    space's ``NetworkConfig``, which names the space)."""

    name: str
    backend: str
    options: dict[str, Any] = field(default_factory=dict)
    protocol: Protocol = Protocol()
    network: Any = field(default_factory=default_network)

    @property
    def space(self) -> SearchSpace:
        return spaces.of_network(self.network)

    @property
    def config_id(self) -> str:
        """Hash of everything that shapes a timing; a different hash means a different row.

        Options enter as the backend states them (``Backend.config_options``: defaults filled in,
        connection details such as the adb path left out); the space and its network shape enter
        too, so two spaces' cells never share a configuration."""
        payload = {
            "backend": self.backend,
            "options": make_backend(self.backend, self.options).config_options(),
            "protocol": asdict(self.protocol),
            "space": self.space.NAME,
            "network": asdict(self.network),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_params(
        cls, name: str, section: dict[str, Any], defaults: dict[str, Any], space: str = spaces.DEFAULT,
        network: dict[str, Any] | None = None,
    ) -> DeviceConfig:
        """Build from a ``devices:`` entry measuring ``space``.

        Protocol keys fall back to ``defaults`` (``measure.defaults``). The network is the space's
        ``network`` settings (``measure.networks.<space>``) with any of its keys that the entry or
        ``defaults`` set on top; a key of another space's network is ignored, so one entry serves
        every space it measures.
        """
        merged = {**defaults, **section}
        if "backend" not in merged:
            raise ValueError(f"device {name!r} in params.yaml has no 'backend'")
        protocol_keys = Protocol.__dataclass_fields__.keys()
        network_keys = {key for known in spaces.SPACES.values() for key in known.NetworkConfig.__dataclass_fields__}
        unknown = set(merged) - set(protocol_keys) - network_keys - {"backend", "options", "spaces"}
        if unknown:
            raise ValueError(f"device {name!r} in params.yaml has unknown keys: {sorted(unknown)}")
        if merged["backend"] not in BACKENDS:
            raise UnknownBackendError(
                f"device {name!r} in params.yaml names unknown backend {merged['backend']!r} "
                f"(known: {', '.join(sorted(BACKENDS))})"
            )
        config_class = spaces.get(space).NetworkConfig
        own_keys = config_class.__dataclass_fields__.keys()
        foreign = set(network or {}) - set(own_keys)
        if foreign:
            raise ValueError(f"network settings of space {space!r} have unknown keys: {sorted(foreign)} (known: {', '.join(own_keys)})")
        shape = {**(network or {}), **{k: merged[k] for k in own_keys if k in merged}}
        return cls(
            name=name,
            backend=merged["backend"],
            options=dict(merged.get("options") or {}),
            protocol=Protocol(**{k: merged[k] for k in protocol_keys if k in merged}),
            network=config_class(**shape),
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
    device_seconds: float
    """Time the device spent running networks (warm-up plus timed runs)."""

    @property
    def overhead(self) -> float | None:
        """Wall time over device time: 1.0 means the host never kept the device waiting."""
        return self.seconds / self.device_seconds if self.device_seconds else None


def device_dir(store: Path, device: str) -> Path:
    return Path(store) / device


def space_dir(store: Path, device: str, space: str) -> Path:
    """Where a device's rows of one space go: ``<store>/<device>/<space>/``. A device folder holds
    every space measured on it (readers filter on the ``space`` column); the subfolder lets a
    pipeline stage depend on one space's rows alone."""
    return device_dir(store, device) / space


def default_op_profile_store(store: Path) -> Path:
    """``op_profiles`` beside the latency store (``data/latency`` -> ``data/op_profiles``)."""
    return Path(store).parent / "op_profiles"


def finished_archs(store: Path, device: DeviceConfig, include_errors: bool = True) -> set[str]:
    """Archs already measured on ``device`` with its current config (which names the space)."""
    folder = space_dir(store, device.name, device.space.NAME)
    if not folder.exists():
        return set()
    rows = tables.read(folder, tables.LATENCY).filter(
        (pl.col("device") == device.name) & (pl.col("config_id") == device.config_id)
    )
    if not include_errors:
        rows = rows.filter(pl.col("error").is_null())
    return set(rows["arch"].to_list())


@dataclass
class Cell:
    """One measured cell: its latency row, its per-operator rows and its device time."""

    row: dict[str, Any]
    op_profile: list[dict[str, Any]]
    device_seconds: float


def measure_cell(
    backend: Backend,
    device: DeviceConfig,
    arch: str,
    artifact: Callable[[], Any],
    environment: dict[str, Any],
    device_turn: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> Cell:
    """One latency row for ``arch``; a model-side failure becomes an error row, a device failure raises.

    ``artifact`` returns what the device runs (waiting for the worker that prepared it);
    ``device_turn`` is held while the device runs it.
    """
    protocol, space = device.protocol, device.space
    example = space.example_input(device.network, protocol.batch)
    row: dict[str, Any] = {
        "space": space.NAME,
        "arch": arch,
        "device": device.name,
        "backend": device.backend,
        "source": "leti",
        "config_id": device.config_id,
        "batch": protocol.batch,
        "input_shape": list(example.shape),
        "threads": protocol.threads,
        "cpu_affinity": backend.cpu_affinity(),
        "warmup_runs": protocol.warmup_runs,
        "warmup_seconds": protocol.warmup_seconds,
        "runs": protocol.runs,
        "measured_at": datetime.now(timezone.utc),
        "host": socket.gethostname(),
        "environment": json.dumps(environment, sort_keys=True, default=str),
    }
    try:
        prepared = artifact()
        with device_turn():
            row["measured_at"] = datetime.now(timezone.utc)
            raw = backend.run(prepared, example, protocol)
        timing = backend.parse(raw)
    except DeviceError:
        raise
    except Exception as error:  # noqa: BLE001 - any model-side failure is recorded, not fatal
        log.warning("%s on %s failed: %s", arch, device.name, error)
        return Cell({**row, "samples_ms": [], "error": f"{type(error).__name__}: {error}"}, [], 0.0)
    if timing.device_state:
        row["environment"] = json.dumps({**environment, "run": timing.device_state}, sort_keys=True, default=str)
    row = {**row, "samples_ms": timing.samples_ms, "error": None, **asdict(timing.summary(protocol.cv_threshold))}
    return Cell(row, op_profile_rows(row, timing), timing.device_seconds)


def op_profile_rows(row: dict[str, Any], timing: Timing) -> list[dict[str, Any]]:
    """The tool's per-operator rows, keyed to their latency row; ``share`` is the operator's
    fraction of the profiled time."""
    total = sum(op["avg_ms"] for op in timing.op_profile or []) or None
    return [
        {
            **{key: row[key] for key in ("space", "arch", "device", "backend", "config_id", "measured_at")},
            "node_index": index,
            "node_name": op["name"],
            "op_type": op["node_type"],
            "avg_ms": op["avg_ms"],
            "first_ms": op.get("first_ms"),
            "share": op["percent"] / 100 if op.get("percent") is not None else (op["avg_ms"] / total if total else None),
            "times_called": op.get("times_called"),
        }
        for index, op in enumerate(timing.op_profile or [])
    ]


def timed_seconds(row: dict[str, Any]) -> float:
    """Seconds a row spent in timed runs (from the tool's mean when it kept no samples)."""
    if row["samples_ms"]:
        return sum(row["samples_ms"]) / 1000
    return (row.get("mean_ms") or 0.0) * row["runs"] / 1000


def write_part(rows: Sequence[dict[str, Any]], store: Path, device: str, schema: pa.Schema = tables.LATENCY) -> Path:
    """Append rows as a new part file (atomically); parts are never rewritten. Rows of a space (all
    of one) go to ``<store>/<device>/<space>/``, others (per-op lookups) to ``<store>/<device>/``."""
    frame = pl.DataFrame(list(rows), schema=tables.polars_schema(schema), strict=False)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    found = set(frame["space"].to_list()) if "space" in frame.columns else set()
    if len(found) > 1:
        raise ValueError(f"one part holds one space's rows, not {sorted(found)}")
    folder = space_dir(store, device, found.pop()) if found else device_dir(store, device)
    path = folder / f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
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
    """Rows of one chunk and when it ran (epoch seconds), for overlap checks and overhead figures."""

    rows: list[dict[str, Any]]
    started: float
    finished: float
    device_seconds: float = 0.0
    op_profiles: int = 0


def artifacts_for(
    backend: Backend, device: DeviceConfig, archs: Sequence[str], prefetch: Sequence[str], prepare_ahead: bool, workdir: Path,
) -> Callable[[str], Callable[[], Any]]:
    """arch -> a function returning what the device runs.

    File artifacts come from the cache, converted ahead by the worker process (or here, in turn,
    without ``prepare_ahead`` or when ``preparation.ahead`` says no free CPU is left for the
    worker); in-memory ones (a PyTorch module) are built when their turn comes.
    """
    network, batch = device.network, device.protocol.batch
    if backend.artifact_format is None:
        space = device.space
        return lambda arch: lambda: backend.prepare(space.build_network(arch, network), space.example_input(network, batch), workdir)
    if not prepare_ahead or not preparation.ahead(backend, device.protocol.pin_cpus):
        return lambda arch: lambda: preparation.prepare_artifact(backend, network, batch, arch)
    worker = preparation.preparer(backend, network, batch, preparation.other_cpus(device.protocol.pin_cpus))
    futures = {arch: worker.submit(arch) for arch in archs}
    for arch in prefetch:
        worker.submit(arch)
    return lambda arch: futures[arch].result


def ready_artifacts(backend: Backend, device: DeviceConfig, archs: Sequence[str]) -> list[Path]:
    """The cells' artifacts that are converted already (in the cache)."""
    paths = [preparation.artifact_path(backend, device.network, device.protocol.batch, arch) for arch in archs]
    return [path for path in paths if path.exists()]


def measure_chunk(
    archs: Sequence[str],
    device: DeviceConfig,
    store: Path,
    retries: int = 3,
    backoff_seconds: float = 2.0,
    on_cell: Callable[[], None] | None = None,
    prefetch: Sequence[str] = (),
    prepare_ahead: bool = True,
    op_profile_store: Path | None = None,
) -> ChunkResult:
    """Measure ``archs`` and append them as one part (their operator profiles as another).

    Chunks writing to one device folder never overlap (a lock per folder). A backend that times on
    this machine's CPU holds the host CPU's lock for the whole chunk, since any work of this process
    would disturb its timings; a phone's or GPU's lock is taken for each run only, so converting
    the next cell and writing rows never keep another campaign off the device. ``prefetch`` (the
    next chunk's archs) is handed to the preparation worker too. If the device fails for good mid-chunk, the
    rows measured so far are written before the error propagates, so nothing measured is lost.
    """
    backend = make_backend(device.backend, device.options)
    cells: list[Cell] = []
    rows_dir = space_dir(store, device.name, device.space.NAME)
    rows_dir.mkdir(parents=True, exist_ok=True)

    def on_device() -> contextlib.AbstractContextManager[None]:
        return device_lock(backend.resource())

    host_turn = on_device if backend.times_on_host else contextlib.nullcontext
    device_turn = contextlib.nullcontext if backend.times_on_host else on_device
    folder = str(rows_dir.resolve())
    store_lock = device_lock(f"store-{hashlib.sha256(folder.encode()).hexdigest()[:16]}")
    with tempfile.TemporaryDirectory(prefix=f"leti-{device.name}-") as workdir, store_lock:
        remove_stale_temp_files(rows_dir)
        with host_turn():
            started = time.time()
            with device_turn():
                with_device_retries(backend.check, device.name, retries, backoff_seconds)
                environment = with_device_retries(backend.environment, device.name, retries, backoff_seconds)
            artifact = artifacts_for(backend, device, archs, prefetch, prepare_ahead, Path(workdir))
            with pinned(device.protocol.pin_cpus):
                try:
                    if backend.artifact_format and not backend.times_on_host:
                        with device_turn():  # the models already converted go to the device in one go
                            with_device_retries(lambda: backend.stage(ready_artifacts(backend, device, archs)),
                                                device.name, retries, backoff_seconds)
                    for arch in archs:
                        cells.append(
                            with_device_retries(
                                lambda arch=arch: measure_cell(backend, device, arch, artifact(arch), environment, device_turn),
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
                    write_cells(cells, store, device, op_profile_store)
                    with device_turn():
                        backend.unstage()
            return ChunkResult(
                rows=[cell.row for cell in cells], started=started, finished=time.time(),
                device_seconds=sum(cell.device_seconds for cell in cells),
                op_profiles=sum(len(cell.op_profile) for cell in cells),
            )


def write_cells(cells: Sequence[Cell], store: Path, device: DeviceConfig, op_profile_store: Path | None) -> None:
    """The chunk's latency part, then its operator-profile part (when the device profiled)."""
    if not cells:
        return
    write_part([cell.row for cell in cells], store, device.name)
    profiles = [op for cell in cells for op in cell.op_profile]
    if profiles:
        write_part(profiles, op_profile_store or default_op_profile_store(store), device.name, tables.OP_PROFILE)


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
    prepare_ahead: bool = True,
    op_profile_store: Path | None = None,
) -> CampaignResult:
    """Measure every pending arch on ``device`` in this process, part by part; each chunk hands
    the next one's cells to the preparation worker."""
    from tqdm import tqdm

    start = time.monotonic()
    todo = pending(archs, device, store, retry_errors)
    measured = failed = 0
    timed = busy = 0.0
    chunks = list(chunked(todo, part_size))
    with tqdm(total=len(todo), desc=f"measure {device.name}", unit="cell", disable=not progress) as bar:
        for index, chunk in enumerate(chunks):
            upcoming = chunks[index + 1] if index + 1 < len(chunks) else []
            result = measure_chunk(chunk, device, store, retries, backoff_seconds, on_cell=bar.update, prefetch=upcoming,
                                   prepare_ahead=prepare_ahead, op_profile_store=op_profile_store)
            failed += sum(row["error"] is not None for row in result.rows)
            measured += len(result.rows)
            timed += sum(timed_seconds(row) for row in result.rows)
            busy += result.device_seconds
    return CampaignResult(
        device=device.name,
        requested=len(set(archs)),
        skipped=len(set(archs)) - len(todo),
        measured=measured,
        failed=failed,
        seconds=time.monotonic() - start,
        timed_seconds=timed,
        device_seconds=busy,
    )


def latency_table(store: Path, device: str | None = None, space: str | None = None) -> pl.DataFrame:
    """Successful rows of a latency store (or of one device, or of one space of it)."""
    path = device_dir(store, device) if device else Path(store)
    rows = tables.read(path, tables.LATENCY).filter(pl.col("error").is_null())
    return rows.filter(pl.col("space") == space) if space else rows
