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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from leti.devices.base import Backend
from leti.devices.config import DeviceConfig
from leti.measure import preparation, sentinel
from leti.measure.sentinel import SentinelPolicy
from leti.measure.session import Measured, Session, measure_one, measuring_session, op_profile_rows, timed_seconds
from leti.store import quality as measurement_quality
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
    sentinels: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(row["error"] is not None for row in self.rows)

    def add(self, rows: list[dict[str, Any]], sentinels: list[dict[str, Any]], measured: list[Measured]) -> None:
        """One attempt: its rows replace an earlier attempt's (``rows`` are the chunk's cells as the
        store's readers see them, the latest attempt); its sentinels, device time and operator
        profiles add up."""
        self.rows = list(rows)
        self.sentinels.extend(sentinels)
        self.device_seconds += sum(m.device_seconds for m in measured)
        self.op_profiles += sum(len(op_profile_rows(m.row, m.timing)) for m in measured)

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

    def quality(self) -> measurement_quality.Quality:
        return chunk_quality(self.chunks)

    def summary(self) -> dict[str, Any]:
        """The figures ``leti measure`` prints."""
        return {
            "device": self.device, "requested": self.requested, "skipped": self.skipped, "measured": self.measured,
            "failed": self.failed, "seconds": self.seconds, "timed_seconds": self.timed_seconds,
            "device_seconds": self.device_seconds, "overhead": self.overhead, "quality": self.quality().line(),
        }


def chunk_quality(chunks: Sequence[ChunkResult]) -> measurement_quality.Quality:
    """The quality summary of the chunks a campaign measured (every attempt, every sentinel)."""
    schema = tables.polars_schema(tables.LATENCY)
    rows = pl.DataFrame([row for chunk in chunks for row in chunk.rows], schema=schema, strict=False)
    sentinels = pl.DataFrame([row for chunk in chunks for row in chunk.sentinels], schema=schema, strict=False)
    return measurement_quality.summarize(rows, sentinels)


class FinishedCells:
    """What a device's folder already holds under the device's configuration: the archs measured, and
    the reference sentinel (the configuration's first).

    Reads each part once: a campaign asks again before every chunk (another campaign may have
    written since), and only the parts written since the last look are read. It also remembers the
    last sentinel this campaign timed, which opens the next chunk when it is recent enough.
    """

    def __init__(self, store: Path, device: DeviceConfig, include_errors: bool = True) -> None:
        self.folder = space_dir(store, device.name, device.space.NAME)
        self.device = device
        self.include_errors = include_errors
        self.seen: set[Path] = set()
        self.archs: set[str] = set()
        self.reference: dict[str, Any] | None = None
        self.last_sentinel: dict[str, Any] | None = None

    def refresh(self) -> set[str]:
        parts = sorted(p for p in self.folder.glob("*.parquet") if not p.name.startswith(".")) if self.folder.is_dir() else []
        for part in parts:
            if part in self.seen:
                continue
            self.seen.add(part)
            rows = tables.read(part, tables.LATENCY).filter(
                (pl.col("device") == self.device.name) & (pl.col("config_id") == self.device.config_id)
            )
            self.note_reference(rows.filter((pl.col("role") == sentinel.ROLE) & pl.col("error").is_null()))
            cells = rows.filter(pl.col("role").is_null())
            if not self.include_errors:
                cells = cells.filter(pl.col("error").is_null())
            self.archs.update(cells["arch"].to_list())
        return self.archs

    def note_reference(self, sentinels: pl.DataFrame) -> None:
        """Keep the earliest sentinel timing seen: every row is normalised to its speed."""
        if sentinels.height:
            first = sentinels.sort("measured_at").row(0, named=True)
            if self.reference is None or first["measured_at"] < self.reference["measured_at"]:
                self.reference = first


_finished: dict[tuple[str, str, bool], FinishedCells] = {}


def finished_cells(store: Path, device: DeviceConfig, include_errors: bool = True) -> FinishedCells:
    """This process's record of a device folder, shared by the chunks it measures there (a Prefect
    task per chunk, say), so each part is read once and the last sentinel opens the next chunk.
    Whoever uses it holds the folder's lock (``measuring_session``)."""
    folder = space_dir(store, device.name, device.space.NAME).resolve()
    key = (str(folder), device.config_id, include_errors)
    if key not in _finished:
        _finished[key] = FinishedCells(store, device, include_errors)
    return _finished[key]


def options_from_params(measure: dict[str, Any]) -> dict[str, Any]:
    """The campaign options in ``measure:`` of params.yaml: chunk size, retrying error rows, the seed of
    the measuring order, the sentinel policy."""
    return {"part_size": int(measure.get("part_size", 10)), "retry_errors": bool(measure.get("retry_errors", False)),
            "order_seed": measure.get("order_seed", 0), "policy": SentinelPolicy.from_params(measure.get("sentinel"))}


def measuring_order(archs: Sequence[str], seed: int | None) -> list[str]:
    """The cells in a seeded random order (duplicates dropped), so that a drift of the device over a
    campaign cannot line up with anything in the sample (its order, the space's enumeration); every
    campaign with the same seed walks the same order, so concurrent campaigns share it chunk by chunk.
    ``None`` keeps the given order."""
    unique = list(dict.fromkeys(archs))
    if seed is None:
        return unique
    return [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]


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
    policy: SentinelPolicy = SentinelPolicy(),
) -> ChunkResult | None:
    """Claim the next ``part_size`` cells of ``archs`` (in their order) that the store lacks, measure
    them and append them as one part (their operator profiles as another); None when nothing is left.

    The claim and the measurement happen under the folder's lock, so a concurrent campaign over the
    same cells waits and then takes the cells after these. The chunk after this one is handed to the
    preparation worker too. With the sentinel on (``policy``), the chunk is bracketed by sentinel
    timings and measured again while the sentinel moves beyond the threshold (``leti.measure.sentinel``);
    a closing sentinel beyond it is timed once more first (``policy.retime``), and the second timing decides.
    If the device fails for good mid-chunk, the rows measured so far are written before the error
    propagates, so nothing measured is lost.
    """
    finished = finished or finished_cells(store, device, include_errors=not retry_errors)
    with measuring_session(device, finished.folder, retries, backoff_seconds) as session:
        done = finished.refresh()
        todo = [arch for arch in dict.fromkeys(archs) if arch not in done]
        if not todo:
            return None
        chunk, upcoming = todo[:part_size], todo[part_size : 2 * part_size]
        extra = [device.space.SENTINEL] if policy.enabled else []
        artifact = artifacts_for(session.backend, device, [*extra, *chunk], upcoming, prepare_ahead, session.workdir)
        result = ChunkResult([], time.time(), 0.0)
        chunk_id = sentinel.new_chunk()
        for attempt in range(1, policy.max_attempts + 1):
            before, fresh = opening_sentinel(session, finished, policy, artifact(device.space.SENTINEL), chunk_id, attempt) \
                if policy.enabled else (None, False)
            if finished.reference is None:
                finished.reference = before
            measured: list[Measured] = []
            after, drifted, unconfirmed = None, False, []
            try:
                measure_chunk(session, chunk, artifact, on_cell if attempt == 1 else None, measured)
                if before is not None:
                    closing = sentinel.time_sentinel(session, artifact(device.space.SENTINEL), chunk_id, attempt)
                    if policy.retime and sentinel.moved(before["min_ms"], closing["min_ms"]) > policy.threshold:
                        unconfirmed.append(closing)  # kept in the store, but a move is believed only when timed twice
                        closing = sentinel.time_sentinel(session, artifact(device.space.SENTINEL), chunk_id, attempt)
                    after = finished.last_sentinel = closing
                    drifted = sentinel.moved(before["min_ms"], after["min_ms"]) > policy.threshold
            finally:  # a device lost mid-chunk: what it measured is written before the error goes on
                rows = [m.row for m in measured]
                if before is not None:
                    rows = sentinel.annotate(rows, before, after, finished.reference["min_ms"], chunk_id, attempt, drifted)
                sentinels = [*([before] if fresh else []), *unconfirmed, *([after] if after is not None else [])]
                write_cells(rows, sentinels, measured, store, device, op_profile_store)
                result.add(rows, sentinels, measured)
            if not drifted:
                break
        result.finished = time.time()
        return result


def opening_sentinel(session: Session, finished: FinishedCells, policy: SentinelPolicy, artifact: Callable[[], Any],
                     chunk: str, attempt: int) -> tuple[dict[str, Any], bool]:
    """The sentinel timing that opens a chunk: this campaign's last one when it is recent (the chunk
    before ended there), else a fresh timing; and whether it is fresh (then it is written with the chunk)."""
    last = finished.last_sentinel
    if last is not None:
        age = (datetime.now(timezone.utc) - last["measured_at"]).total_seconds()
        if age <= policy.reuse_seconds:
            return last, False
    return sentinel.time_sentinel(session, artifact, chunk, attempt), True


def measure_chunk(session: Session, archs: Sequence[str], artifact: Callable[[str], Callable[[], Any]],
                  on_cell: Callable[[], None] | None, measured: list[Measured]) -> None:
    """Measure ``archs`` in an open session, one after the other, appending to ``measured`` as it goes
    (so a device that stays gone leaves the caller what was measured before it)."""
    backend, device = session.backend, session.device
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
        with session.device_turn():
            backend.unstage()


def write_cells(rows: Sequence[dict[str, Any]], sentinels: Sequence[dict[str, Any]], measured: Sequence[Measured], store: Path,
                device: DeviceConfig, op_profile_store: Path | None) -> None:
    """The chunk's latency part (its cells, then its sentinel timings), then its operator-profile part."""
    if not rows and not sentinels:
        return
    write_part([*rows, *sentinels], store, device.name)
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
    policy: SentinelPolicy = SentinelPolicy(),
    order_seed: int | None = 0,
) -> CampaignResult:
    """Measure every pending arch on ``device`` in this process, in a seeded random order, claiming
    chunk after chunk until no cell of ``archs`` is left (cells another campaign claims meanwhile are
    left to it)."""
    from tqdm import tqdm

    start = time.monotonic()
    finished = finished_cells(store, device, include_errors=not retry_errors)
    order = measuring_order(archs, order_seed)
    todo = len(set(order) - finished.refresh())
    result = CampaignResult(device.name, len(order), len(order) - todo)
    with tqdm(total=todo, desc=f"measure {device.name}", unit="cell", disable=not progress) as bar:
        while (chunk := measure_next_chunk(order, device, store, part_size, retry_errors, retries, backoff_seconds,
                                           bar.update, prepare_ahead, op_profile_store, finished, policy)) is not None:
            result.chunks.append(chunk)
    result.seconds = time.monotonic() - start
    return result
