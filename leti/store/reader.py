"""The one reader of latency and op-latency rows, with an explicit policy.

A store keeps every row ever measured or imported (it appends): several configurations of a device
(another protocol, another network), cells measured twice, error rows, cells a space calls invalid.
Anything that learns from or reports on a store needs one number per cell, so every reader in leti
comes here and says how to get it:

- **configuration**: a ``config_id`` (a campaign's current one, or one a user names); ``NEWEST``, the
  configuration of the newest row; or ``ONLY`` (the default), which takes the device's single
  configuration and refuses, naming them, when there are several: mixing two protocols' timings
  would put one cell in the data twice, possibly in train and test;
- **duplicates**: a cell measured twice under one configuration keeps its ``latest`` row, or the
  ``mean`` of its rows;
- **valid cells only**: cells the space calls invalid are dropped and counted (NAS-Bench-201's 341
  cells without an input→output path: their networks are only stem, reductions and head, and some
  devices report near-zero latency for them; BRP-NAS and HELP drop them too);
- **statistic**: which summary of the timed runs (``median_ms``, ``min_ms``, ...), with an optional
  ``fallback`` for rows of a tool that reports no such summary (``benchmark_model`` prints no median).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from leti import spaces
from leti.store import tables

STATISTICS = ("median_ms", "iqm_ms", "mean_ms", "min_ms", "min_ms_corrected")
"""Summaries of a cell's timed runs that a predictor can learn (columns of the latency table);
``min_ms_corrected`` is ``min_ms`` normalised by the sentinel to the configuration's reference speed."""
ONLY = "only"
NEWEST = "newest"
DUPLICATES = ("latest", "mean")


@dataclass(frozen=True)
class ReadPolicy:
    statistic: str = "median_ms"
    configuration: str = ONLY
    duplicates: str = "latest"
    valid_only: bool = True
    fallback: str | None = None

    def __post_init__(self) -> None:
        for name in (self.statistic, self.fallback):
            if name is not None and name not in STATISTICS:
                raise ValueError(f"unknown statistic {name!r} (known: {', '.join(STATISTICS)})")
        if self.duplicates not in DUPLICATES:
            raise ValueError(f"unknown duplicates rule {self.duplicates!r} (known: {', '.join(DUPLICATES)})")


@dataclass(frozen=True)
class Cells:
    """One device's cells of one space under one configuration: one latency per arch, sorted by arch."""

    device: str
    space: str
    config_id: str
    statistic: str
    archs: list[str]
    latency_ms: np.ndarray
    rows: pl.DataFrame
    """Every valid row of the configuration for the archs asked for, before duplicates are folded
    (a cell measured in two passes has two: the noise study compares them)."""
    rows_read: int  # successful rows of the device and space
    other_config: int  # rows of another configuration, left out
    not_asked: int  # rows of archs outside the ones asked for, left out
    repeats: int  # rows of cells measured again under the configuration, folded by the duplicates rule
    excluded_invalid: int  # cells the space calls invalid, left out


def store_devices(store: Path) -> list[str]:
    """Device folders of a store that hold any part."""
    store = Path(store)
    return sorted(p.name for p in store.iterdir() if p.is_dir() and any(p.rglob("*.parquet"))) if store.is_dir() else []


def device_rows(path: str | Path, device: str, space: str | None = None) -> pl.DataFrame:
    """Successful rows of ``device`` (and ``space``) from a store folder or one table file, sentinel
    timings left out (``sentinel_rows``); an unknown device or space is one error that names what the
    path holds."""
    path = Path(path)
    if path.is_dir():
        if not (path / device).is_dir():
            known = sorted(p.name for p in path.iterdir() if p.is_dir())
            raise KeyError(f"unknown device {device!r} in store {path} (known: {', '.join(known) or 'none'})")
        rows = tables.read(path / device, tables.LATENCY)
    else:
        rows = tables.read(path, tables.LATENCY)
        if not rows.filter(pl.col("device") == device).height:
            known = sorted(rows["device"].unique().to_list())
            raise KeyError(f"unknown device {device!r} in {path} (known: {', '.join(known) or 'none'})")
    rows = rows.filter((pl.col("device") == device) & pl.col("error").is_null() & pl.col("role").is_null())
    if space is not None:
        found = rows.filter(pl.col("space") == space)
        if found.is_empty():
            known = sorted(rows["space"].unique().to_list())
            raise KeyError(f"no rows of space {space!r} for device {device!r} in {path} (spaces there: {', '.join(known) or 'none'})")
        rows = found
    return rows


def device_spaces(path: str | Path, device: str) -> list[str]:
    """The spaces whose cells ``device`` has rows of, in a store folder or a table file."""
    return sorted(device_rows(path, device)["space"].unique().to_list())


def choose_configuration(rows: pl.DataFrame, configuration: str, where: str) -> str:
    """The ``config_id`` the policy asks for among ``rows`` (see the module's docstring)."""
    found = rows.group_by("config_id").agg(pl.len().alias("rows"), pl.col("measured_at").max().alias("newest"))
    if configuration == NEWEST:
        return str(rows.sort("measured_at", nulls_last=False)["config_id"][-1])
    if configuration == ONLY:
        if found.height == 1:
            return str(found["config_id"][0])
        listed = ", ".join(
            f"{row['config_id']} ({row['rows']} rows, newest {row['newest'] or 'undated'})"
            for row in found.sort("newest", nulls_last=False, descending=True).iter_rows(named=True)
        )
        raise ValueError(f"{where} holds {found.height} measurement configurations: {listed}; choose one (--config ID)")
    if configuration not in found["config_id"].to_list():
        raise ValueError(f"{where} has no rows of configuration {configuration!r} "
                         f"(configurations there: {', '.join(sorted(found['config_id'].to_list()))})")
    return configuration


@functools.lru_cache(maxsize=200_000)
def _valid(space: str, arch: str) -> bool:
    return spaces.get(space).is_valid(arch)


def read_cells(
    path: str | Path, device: str, space: str, policy: ReadPolicy = ReadPolicy(), archs: Sequence[str] | None = None,
) -> Cells:
    """One latency per cell of ``device`` and ``space`` by ``policy``; ``archs`` keeps only those cells."""
    path, space = Path(path), spaces.get(space).NAME
    rows = device_rows(path, device, space)
    where = f"{path} ({device}, {space})"
    config = choose_configuration(rows, policy.configuration, where)
    current = rows.filter(pl.col("config_id") == config)
    asked = current.filter(pl.col("arch").is_in(list(archs))) if archs is not None else current
    valid = asked.filter(pl.col("arch").map_elements(lambda arch: _valid(space, arch), return_dtype=pl.Boolean)) \
        if policy.valid_only and asked.height else asked
    statistic = policy.statistic
    if policy.fallback and valid.height and valid[statistic].null_count() == valid.height:
        statistic = policy.fallback
    if policy.duplicates == "latest":
        kept = valid.sort("measured_at", nulls_last=False).unique("arch", keep="last").sort("arch")
    else:
        kept = valid.group_by("arch").agg(pl.col(statistic).mean()).sort("arch")
    archs_kept, latency = kept["arch"].to_list(), kept[statistic].to_numpy().astype(float)
    if not archs_kept:
        raise ValueError(f"{where}: no successful rows of configuration {config}"
                         + (" for the archs asked for" if archs is not None else ""))
    return Cells(
        device=device, space=space, config_id=config, statistic=statistic, archs=archs_kept, latency_ms=latency, rows=valid.sort("arch", "measured_at", nulls_last=False),
        rows_read=rows.height, other_config=rows.height - current.height, not_asked=current.height - asked.height,
        repeats=valid.height - len(archs_kept), excluded_invalid=asked["arch"].n_unique() - valid["arch"].n_unique(),
    )


def read_op_lookup(folder: str | Path, statistic: str = "median_ms", configuration: str = ONLY) -> pl.DataFrame:
    """``op_key``, ``op``, ``latency_ms``: one device's measured per-op lookup under one configuration,
    the latest row of each operator.

    Summing operators timed under different protocols would mean nothing, so the configuration is
    chosen as for cells (``ONLY`` refuses a folder holding several).
    """
    ReadPolicy(statistic=statistic)  # checks the statistic's name
    rows = tables.read(folder, tables.OP_LATENCY).filter(pl.col("error").is_null())
    if rows.is_empty():
        raise ValueError(f"{folder}: no measured operators (run `leti measure-ops` first)")
    config = choose_configuration(rows, configuration, str(folder))
    return (
        rows.filter(pl.col("config_id") == config).sort("measured_at").unique("op_key", keep="last")
        .select("op_key", "op", pl.col(statistic).alias("latency_ms")).sort("op_key")
    )


@dataclass(frozen=True)
class KernelRows:
    """One device's measured kernels under one configuration: one time per kernel (the fastest of
    its passes), and the per-call overhead (the median of its ``empty`` rows)."""

    device: str
    config_id: str
    statistic: str
    table: pl.DataFrame  # kernel_key, kernel_type, shape, campaign, replicas, latency_ms, edge_ms, own_ms; sorted by kernel_key
    """``latency_ms``: the one-kernel model's time; ``own_ms``: one copy's share less the overhead and
    the model's edge conversions, ``(latency_ms - overhead_ms - edge_ms) / replicas``, what a kernel adds
    to a network."""
    overhead_ms: float
    rows_read: int  # successful rows of the device
    other_config: int  # rows of another configuration, left out
    repeats: int  # rows of kernels timed again, folded into their fastest pass


def read_kernels(folder: str | Path, statistic: str = "min_ms", configuration: str = ONLY) -> KernelRows:
    """The kernel table of one device folder (``<store>/<device>/``) under one configuration.

    A kernel timed in several passes (the fusion tests' ``key#pass``) keeps its fastest: on a shared
    host the minimum is the pass least disturbed. The configuration is chosen as for cells. A row's
    ``edge_ms`` (the runtime's layout conversions at the one-kernel model's edges, which a network pays
    once, not per kernel) is left out of the kernel's own time; a store written before that column
    reads as having none."""
    ReadPolicy(statistic=statistic)  # checks the statistic's name
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no kernel table (run `leti measure-kernels` first)")
    rows = tables.read(folder, tables.KERNEL_LATENCY).filter(pl.col("error").is_null())
    if rows.is_empty():
        raise ValueError(f"{folder}: no measured kernels (run `leti measure-kernels` first)")
    config = choose_configuration(rows, configuration, str(folder))
    current = rows.filter(pl.col("config_id") == config)
    empty = current.filter(pl.col("kernel_type") == "empty")
    if empty.is_empty():
        raise ValueError(f"{folder}: configuration {config} has no `empty` rows, so no per-call overhead")
    kernels = current.filter(pl.col("kernel_type") != "empty").with_columns(pl.col("kernel_key").str.replace(r"#\d+$", ""))
    overhead = float(empty[statistic].median())
    table = (kernels.group_by("kernel_key").agg(pl.col("kernel_type").first(), pl.col("shape").first(), pl.col("campaign").first(),
                                                 pl.col("replicas").first().fill_null(1), pl.col(statistic).min().alias("latency_ms"),
                                                 pl.col("edge_ms").median().fill_null(0.0))
             .with_columns(((pl.col("latency_ms") - overhead - pl.col("edge_ms")) / pl.col("replicas")).alias("own_ms")).sort("kernel_key"))
    return KernelRows(device=str(current["device"][0]), config_id=config, statistic=statistic, table=table,
                      overhead_ms=overhead, rows_read=rows.height, other_config=rows.height - current.height,
                      repeats=kernels.height - table.height)


def sentinel_rows(path: str | Path, device: str, space: str, configuration: str | None = None) -> pl.DataFrame:
    """The sentinel timings of ``device`` and ``space`` (of one configuration, if named), oldest first."""
    folder = Path(path) / device / space
    rows = tables.read(folder, tables.LATENCY) if folder.is_dir() else tables.empty(tables.LATENCY)
    rows = rows.filter((pl.col("role") == "sentinel") & pl.col("error").is_null())
    if configuration is not None:
        rows = rows.filter(pl.col("config_id") == configuration)
    return rows.sort("measured_at")


@dataclass(frozen=True)
class DeviceMatrix:
    """Several devices' latencies of one space's cells: ``latency_ms[d, c]`` is device ``d`` on cell
    ``c`` (NaN where the device lacks the cell); archs sorted; ``stores`` says where each device was read."""

    space: str
    devices: list[str]
    archs: list[str]
    latency_ms: np.ndarray
    stores: dict[str, str]
    config_ids: dict[str, str]

    def row(self, device: str) -> np.ndarray:
        return self.latency_ms[self.devices.index(device)]


def read_devices(paths: Sequence[str | Path], space: str, policy: ReadPolicy = ReadPolicy(), devices: Sequence[str] | None = None) -> DeviceMatrix:
    """Every device of the stores that holds cells of ``space`` (or the ``devices`` named, each an error
    when no store has it), each read by ``policy``, on the union of their cells.

    A device in two stores is an error naming both: which of its measurements is meant is the user's
    call, not the reader's."""
    space = spaces.get(space).NAME
    found: dict[str, Path] = {}
    for path in map(Path, paths):
        for device in store_devices(path):
            if device in found:
                raise ValueError(f"device {device!r} is in two stores, {found[device]} and {path}; name the stores apart")
            if (path / device / space).is_dir() or any((path / device).glob("*.parquet")):
                found[device] = path
    if devices is not None:
        missing = [device for device in devices if device not in found]
        if missing:
            raise KeyError(f"no store of {', '.join(map(str, paths))} has device(s) {', '.join(map(repr, missing))} with {space} cells "
                           f"(devices there: {', '.join(sorted(found)) or 'none'})")
    chosen = list(devices) if devices is not None else sorted(found)
    cells = {device: read_cells(found[device], device, space, policy) for device in chosen}
    archs = sorted(set().union(*(c.archs for c in cells.values()))) if cells else []
    index = {arch: i for i, arch in enumerate(archs)}
    matrix = np.full((len(chosen), len(archs)), np.nan)
    for d, device in enumerate(chosen):
        matrix[d, [index[arch] for arch in cells[device].archs]] = cells[device].latency_ms
    return DeviceMatrix(space, chosen, archs, matrix, {d: str(found[d]) for d in chosen}, {d: c.config_id for d, c in cells.items()})
