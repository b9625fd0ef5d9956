"""What the investigation reads: every device's cells of one search space, the named networks, per-op tables.

A latency store (``<store>/<device>/<space>/part-*.parquet``; older stores put parts directly under
``<device>/``) holds leti's own measurements or published ones (``backend = "published"``); the
investigation takes whatever devices it finds with cells of the space. For each device it keeps one
measurement configuration (the newest: a store appends, so an old protocol's rows may still be
there), the valid cells (the space's ``is_valid``: NAS-Bench-201's 341 cells without an input→output
path are left out, as BRP-NAS and HELP do), and one latency per cell: the configured statistic of
the timed runs for leti's own rows (the newest row of a cell measured twice), the single published
value otherwise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from leti.spaces import SearchSpace
from leti.store import reader, tables

PUBLISHED = "published"
LATBENCH_NAME = re.compile(r"^(?P<where>mobile|desktop|embedded)-(?P<unit>gpu|cpu|dsp)-(?P<chip>.+)-(?P<precision>fp32|fp16|int8)$")
HELP_KINDS = {
    "1080ti": "GPU (desktop)", "2080ti": "GPU (desktop)", "titan_rtx": "GPU (desktop)", "titanxp": "GPU (desktop)",
    "titanx": "GPU (desktop)", "gold_6240": "CPU (server)", "silver_4114": "CPU (server)", "silver_4210r": "CPU (server)",
    "pixel3": "CPU (mobile)", "samsung_a50": "phone", "samsung_s7": "phone", "essential_ph_1": "phone",
}
"""HELP's devices (its README): desktop GPUs at three batch sizes, Xeon CPUs, the Pixel 3's CPU (from
HW-NAS-Bench) and three phones whose processing unit the release does not state."""
KIND_ORDER = ("GPU (desktop)", "GPU (embedded)", "GPU (mobile)", "DSP (mobile)", "CPU (server)", "CPU (mobile)",
              "phone", "CPU (this machine)", "GPU (leti)", "phone (leti)")


@dataclass(frozen=True)
class CellDevice:
    """One device's latencies of a space's cells: ``archs`` sorted, ``latency_ms`` aligned with them."""

    name: str
    source: str  # "leti" for this project's measurements, else the dataset (help, latbench, a file name)
    backend: str
    kind: str
    config_id: str
    archs: list[str]
    latency_ms: np.ndarray
    rows: pl.DataFrame  # the kept rows (samples, CV, passes) for the noise study; one per measurement

    @property
    def label(self) -> str:
        return short_name(self.name, self.source)

    @property
    def measured_here(self) -> bool:
        return self.backend != PUBLISHED


def short_name(name: str, source: str) -> str:
    """A label that fits a plot axis: LatBench's long names shortened to the chip, the source first."""
    match = LATBENCH_NAME.match(name)
    if source == "latbench" and match:
        chip = "-".join(match["chip"].split("-")[-2:])
        return f"LatBench {chip} {match['precision']}"
    prefix = {"help": "HELP", "latbench": "LatBench", "leti": "leti"}.get(source, source)
    return f"{prefix} {name}"


def device_kind(name: str, backend: str, environment: str | None = None) -> str:
    """What kind of processor a device is, from its name (published) or its backend (leti's own)."""
    if backend != PUBLISHED:
        if backend == "android-adb":
            options = (json.loads(environment or "{}").get("options") or {})
            return "phone (leti)" if not options.get("use_gpu") else "GPU (leti)"
        return "GPU (leti)" if "cuda" in backend else "CPU (this machine)"
    match = LATBENCH_NAME.match(name)
    if match:
        return f"{match['unit'].upper()} ({match['where']})"
    for prefix, kind in HELP_KINDS.items():
        if name.startswith(prefix):
            return kind
    return "other"


SPACE_TITLES = {"nb201": "NAS-Bench-201", "nb101": "NAS-Bench-101"}


def space_title(space: SearchSpace) -> str:
    """The benchmark's published name for a figure title (the space's own name for any other)."""
    return SPACE_TITLES.get(space.NAME, space.NAME)


def load_cells(store: Path, device: str, statistic: str, space: SearchSpace) -> CellDevice | None:
    """A device's valid cells of ``space`` under its newest configuration, or None when it has none.

    A tool that reports no such statistic (``benchmark_model`` prints no median) gives its mean."""
    try:
        cells = reader.read_cells(store, device, space.NAME, reader.ReadPolicy(statistic, reader.NEWEST, fallback="mean_ms"))
    except (KeyError, ValueError):  # no rows of the space, or none valid: not a device of this study
        return None
    first = cells.rows.row(0, named=True)
    return CellDevice(
        name=device, source=first["source"], backend=first["backend"],
        kind=device_kind(device, first["backend"], first["environment"]), config_id=cells.config_id,
        archs=cells.archs, latency_ms=cells.latency_ms, rows=cells.rows,
    )


def load_cell_devices(stores: list[Path], statistic: str, min_cells: int, space: SearchSpace) -> list[CellDevice]:
    """Every device with at least ``min_cells`` valid cells of ``space`` in any of the stores, in store order."""
    found = []
    for store in stores:
        for device in reader.store_devices(store):
            loaded = load_cells(store, device, statistic, space)
            if loaded is not None and len(loaded.archs) >= min_cells:
                found.append(loaded)
    return found


def load_models(store: Path) -> pl.DataFrame:
    """Every named-model row (``leti measure-model``) of a store, successful ones only."""
    frames = [reader.device_rows(store, device) for device in reader.store_devices(store)]
    rows = pl.concat(frames, how="vertical") if frames else tables.empty(tables.LATENCY)
    return rows.filter(pl.col("space") == "model")


def load_op_profiles(stores: list[Path]) -> pl.DataFrame:
    """Every per-operator profile row in the given folders (missing folders are skipped)."""
    frames = [tables.read(store, tables.OP_PROFILE) for store in stores if Path(store).is_dir()]
    frames = [frame for frame in frames if frame.height]
    return pl.concat(frames, how="vertical") if frames else tables.empty(tables.OP_PROFILE)


def load_op_lookups(store: Path, statistic: str) -> dict[str, pl.DataFrame]:
    """Device -> its measured per-op lookup (``op_key``, ``op``, ``latency_ms``), newest configuration."""
    lookups = {}
    for device in reader.store_devices(store):
        try:
            lookups[device] = reader.read_op_lookup(Path(store) / device, statistic, reader.NEWEST)
        except ValueError:  # no operator measured successfully
            continue
    return lookups


def load_kernel_predictors(folder: Path) -> dict[str, dict[str, Any]]:
    """Device -> regressor family -> its kernel predictor, from ``<folder>/<device>/<family>/`` (the
    ``train_kernels@<device>`` stages' outs); devices without any are left out."""
    from leti.predictors.kernels import KernelPredictor

    found: dict[str, dict[str, Any]] = {}
    for device in sorted(p for p in Path(folder).iterdir() if p.is_dir()) if Path(folder).is_dir() else []:
        families = {family.name: KernelPredictor.load(family) for family in sorted(device.iterdir()) if (family / "predictor.json").is_file()}
        if families:
            found[device.name] = families
    return found


def load_sentinels(stores: list[Path], space: SearchSpace) -> pl.DataFrame:
    """Every sentinel timing of ``space`` in the stores (leti's own campaigns time one around each chunk),
    with ``believed``: whether the timing bracketed a chunk's cells. A closing timing that moved alone
    was timed again (``measure.sentinel.retime``); it stays in the store, and the second one decided."""
    frames = []
    for store in stores:
        for device in reader.store_devices(store):
            sentinels = reader.sentinel_rows(store, device, space.NAME)
            if sentinels.height:
                frames.append(sentinels.with_columns(believed(reader.device_rows(store, device))))
    return pl.concat(frames, how="vertical") if frames else tables.empty(tables.LATENCY).with_columns(believed=pl.lit(True))


def believed(cells: pl.DataFrame) -> pl.Expr:
    """Whether each sentinel timing is one a chunk's cells were bracketed by (every one, where no cell
    records its brackets: a store written before them)."""
    brackets = pl.concat([cells["sentinel_before_ms"], cells["sentinel_after_ms"]]).drop_nulls()
    if brackets.is_empty():
        return pl.lit(True).alias("believed")
    return pl.col("min_ms").is_in(brackets.unique().implode()).alias("believed")
