"""Resumable measurement campaigns: search-space cells on one device, appended as Parquet parts.

A campaign never rewrites a finished row. Rows go to ``<store>/<device>/<space>/`` as one small part
per chunk, each written atomically, so ``kill -9`` loses only the chunk in flight. Work is claimed
chunk by chunk: holding the folder's lock, a campaign reads which cells the folder already has and
takes the next ``part_size`` cells of its list that nobody measured, measures them and writes their
part before it lets go. Two campaigns on one store and device (two terminals, two Prefect workers,
a Dask cluster) therefore share the cells: none is measured twice, and their timed runs never
overlap. A restart resumes the same way.

A cell whose network fails to build, convert or run gets an error row that keeps the message; a
device that fails (``DeviceError``) is retried with backoff, then reported (``leti.measure.session``).
When the device profiled operators, each cell's per-operator times go to ``<op profile store>/<device>/``
(default: ``op_profiles`` beside the latency store), linked to the latency row by (arch, device,
config_id, measured_at). Host work is kept off the device's clock: cells with a file artifact (ONNX,
TFLite) are converted ahead by a worker process (``leti.measure.preparation``) while the device
times the cell before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from leti.devices.base import Backend
from leti.devices.config import DeviceConfig
from leti.measure import preparation
from leti.measure.session import Measured, Session, measure_one, measuring_session, op_profile_rows, timed_seconds
from leti.store import tables
from leti.store.parts import default_op_profile_store, space_dir, write_part


@dataclass
class ChunkResult:
    """Rows of one chunk and when it ran (epoch seconds), for overlap checks and overhead figures."""

    rows: list[dict[str, Any]]
    started: float
    finished: float
    device_seconds: float = 0.0
    op_profiles: int = 0

    @property
    def failed(self) -> int:
        return sum(row["error"] is not None for row in self.rows)

    @property
    def timed_seconds(self) -> float:
        return sum(timed_seconds(row) for row in self.rows)


@dataclass
class CampaignResult:
    device: str
    requested: int
    skipped: int
    chunks: list[ChunkResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def measured(self) -> int:
        return sum(len(chunk.rows) for chunk in self.chunks)

    @property
    def failed(self) -> int:
        return sum(chunk.failed for chunk in self.chunks)

    @property
    def timed_seconds(self) -> float:
        return sum(chunk.timed_seconds for chunk in self.chunks)

    @property
    def device_seconds(self) -> float:
        """Time the device spent running networks (warm-up plus timed runs)."""
        return sum(chunk.device_seconds for chunk in self.chunks)

    @property
    def overhead(self) -> float | None:
        """Wall time over device time: 1.0 means the host never kept the device waiting."""
        return self.seconds / self.device_seconds if self.device_seconds else None

    def summary(self) -> dict[str, Any]:
        """The figures ``leti measure`` prints."""
        return {
            "device": self.device, "requested": self.requested, "skipped": self.skipped, "measured": self.measured,
            "failed": self.failed, "seconds": self.seconds, "timed_seconds": self.timed_seconds,
            "device_seconds": self.device_seconds, "overhead": self.overhead,
        }


class FinishedCells:
    """Which archs a device's folder already has under the device's configuration.

    Reads each part once: a campaign asks again before every chunk (another campaign may have
    written since), and only the parts written since the last look are read.
    """

    def __init__(self, store: Path, device: DeviceConfig, include_errors: bool = True) -> None:
        self.folder = space_dir(store, device.name, device.space.NAME)
        self.device = device
        self.include_errors = include_errors
        self.seen: set[Path] = set()
        self.archs: set[str] = set()

    def refresh(self) -> set[str]:
        parts = sorted(p for p in self.folder.glob("*.parquet") if not p.name.startswith(".")) if self.folder.is_dir() else []
        for part in parts:
            if part in self.seen:
                continue
            self.seen.add(part)
            rows = tables.read(part, tables.LATENCY).filter(
                (pl.col("device") == self.device.name) & (pl.col("config_id") == self.device.config_id)
            )
            if not self.include_errors:
                rows = rows.filter(pl.col("error").is_null())
            self.archs.update(rows["arch"].to_list())
        return self.archs


def pending(archs: Sequence[str], device: DeviceConfig, store: Path, retry_errors: bool = False) -> list[str]:
    """Archs of ``archs`` not yet measured on ``device`` (order kept, duplicates dropped)."""
    done = FinishedCells(store, device, include_errors=not retry_errors).refresh()
    return [arch for arch in dict.fromkeys(archs) if arch not in done]


def cell_row(session: Session, arch: str) -> dict[str, Any]:
    device = session.device
    example = device.space.example_input(device.network, device.protocol.batch)
    return session.row(space=device.space.NAME, arch=arch, input_shape=list(example.shape))


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


def measure_next_chunk(
    archs: Sequence[str],
    device: DeviceConfig,
    store: Path,
    part_size: int = 10,
    retry_errors: bool = False,
    retries: int = 3,
    backoff_seconds: float = 2.0,
    on_cell: Callable[[], None] | None = None,
    prepare_ahead: bool = True,
    op_profile_store: Path | None = None,
    finished: FinishedCells | None = None,
) -> ChunkResult | None:
    """Claim the next ``part_size`` cells of ``archs`` that the store lacks, measure them and append
    them as one part (their operator profiles as another); None when nothing is left.

    The claim and the measurement happen under the folder's lock, so a concurrent campaign over the
    same cells waits and then takes the cells after these. The chunk after this one is handed to the
    preparation worker too. If the device fails for good mid-chunk, the rows measured so far are
    written before the error propagates, so nothing measured is lost.
    """
    finished = finished or FinishedCells(store, device, include_errors=not retry_errors)
    with measuring_session(device, finished.folder, retries, backoff_seconds) as session:
        done = finished.refresh()
        todo = [arch for arch in dict.fromkeys(archs) if arch not in done]
        if not todo:
            return None
        chunk, upcoming = todo[:part_size], todo[part_size : 2 * part_size]
        return measure_chunk(session, chunk, upcoming, store, on_cell, prepare_ahead, op_profile_store)


def measure_chunk(
    session: Session, archs: Sequence[str], prefetch: Sequence[str], store: Path, on_cell: Callable[[], None] | None,
    prepare_ahead: bool, op_profile_store: Path | None,
) -> ChunkResult:
    """Measure ``archs`` in an open session and write their part, whatever happens mid-chunk."""
    backend, device = session.backend, session.device
    measured: list[Measured] = []
    started = time.time()
    artifact = artifacts_for(backend, device, archs, prefetch, prepare_ahead, session.workdir)
    example = device.space.example_input(device.network, device.protocol.batch)
    try:
        if backend.artifact_format and not backend.times_on_host:
            with session.device_turn():  # the models already converted go to the device in one go
                session.retry(lambda: backend.stage(ready_artifacts(backend, device, archs)))
        with session.pinned():
            for arch in archs:
                measured.append(session.retry(lambda arch=arch: measure_one(session, cell_row(session, arch), artifact(arch), example)))
                if device.protocol.cooldown_seconds:
                    time.sleep(device.protocol.cooldown_seconds)
                if on_cell:
                    on_cell()
    finally:
        write_cells(measured, store, device, op_profile_store)
        with session.device_turn():
            backend.unstage()
    return ChunkResult(
        rows=[m.row for m in measured], started=started, finished=time.time(),
        device_seconds=sum(m.device_seconds for m in measured),
        op_profiles=sum(len(op_profile_rows(m.row, m.timing)) for m in measured),
    )


def write_cells(measured: Sequence[Measured], store: Path, device: DeviceConfig, op_profile_store: Path | None) -> None:
    """The chunk's latency part, then its operator-profile part (when the device profiled)."""
    if not measured:
        return
    write_part([m.row for m in measured], store, device.name)
    profiles = [op for m in measured for op in op_profile_rows(m.row, m.timing)]
    if profiles:
        write_part(profiles, op_profile_store or default_op_profile_store(store), device.name, tables.OP_PROFILE)


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
    """Measure every pending arch on ``device`` in this process, claiming chunk after chunk until no
    cell of ``archs`` is left (cells another campaign claims meanwhile are left to it)."""
    from tqdm import tqdm

    start = time.monotonic()
    finished = FinishedCells(store, device, include_errors=not retry_errors)
    requested = len(set(archs))
    todo = len(set(archs) - finished.refresh())
    result = CampaignResult(device.name, requested, requested - todo)
    with tqdm(total=todo, desc=f"measure {device.name}", unit="cell", disable=not progress) as bar:
        while (chunk := measure_next_chunk(archs, device, store, part_size, retry_errors, retries, backoff_seconds,
                                           bar.update, prepare_ahead, op_profile_store, finished)) is not None:
            result.chunks.append(chunk)
    result.seconds = time.monotonic() - start
    return result
