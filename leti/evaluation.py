"""The BRP-NAS evaluation protocol: a seeded train / validation / test split, fit, time, score."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from leti.metrics import regression_metrics
from leti.predictors import Predictor

if TYPE_CHECKING:
    from leti.campaign import DeviceConfig


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split(n: int, train_size: int, val_size: int, seed: int) -> Split:
    """Random indices: ``train_size`` train, ``val_size`` validation, every other index test."""
    if train_size + val_size >= n:
        raise ValueError(f"train ({train_size}) + validation ({val_size}) leave no test cell out of {n}")
    order = np.random.default_rng(seed).permutation(n)
    return Split(order[:train_size], order[train_size : train_size + val_size], order[train_size + val_size :])


@dataclass
class Evaluation:
    metrics: dict[str, float | int | str]
    predicted: dict[str, np.ndarray]  # split name -> predictions in the split's order


def evaluate(
    predictor: Predictor,
    archs: Sequence[str],
    latency_ms: np.ndarray,
    parts: Split,
) -> Evaluation:
    """Fit on the train part (validation for early stopping), report test metrics and timings."""
    archs = np.asarray(archs, dtype=object)
    latency_ms = np.asarray(latency_ms, dtype=float)
    start = time.perf_counter()
    predictor.fit(
        list(archs[parts.train]), latency_ms[parts.train], list(archs[parts.val]), latency_ms[parts.val]
    )
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    test_predicted = predictor.predict(list(archs[parts.test]))
    predict_seconds = time.perf_counter() - start
    metrics: dict[str, float | int | str] = {
        **regression_metrics(latency_ms[parts.test], test_predicted),
        "n_train": int(len(parts.train)),
        "n_val": int(len(parts.val)),
        "n_test": int(len(parts.test)),
        "fit_seconds": fit_seconds,
        "predict_seconds": predict_seconds,
        "predictor": predictor.chosen,
    }
    predicted = {
        "train": predictor.predict(list(archs[parts.train])),
        "val": predictor.predict(list(archs[parts.val])) if len(parts.val) else np.zeros(0),
        "test": test_predicted,
    }
    return Evaluation(metrics, predicted)


STATISTICS = ("median_ms", "iqm_ms", "mean_ms", "min_ms")
"""Summaries of a cell's timed runs that a predictor can learn (columns of the latency table)."""


@dataclass(frozen=True)
class TrainingData:
    """The cells a predictor learns from: one row per arch, sorted by arch string."""

    device: str
    config_id: str
    statistic: str
    archs: list[str]
    latency_ms: np.ndarray
    rows_read: int  # successful rows of the device and its space in the store
    other_config: int  # rows of another measurement configuration (an older protocol), left out
    not_sampled: int  # rows of archs outside the architectures table, left out
    repeats: int  # older rows of a cell measured again under the same configuration, left out


def training_data(
    store: str | Path, device: DeviceConfig, architectures: Sequence[str], statistic: str
) -> TrainingData:
    """The rows of ``device`` a predictor should learn from: current configuration, sampled archs.

    A latency store keeps every row ever measured (it appends). When the protocol changes, the
    device's ``config_id`` changes and its cells are measured again beside the old rows; mixing the
    two would put one cell in the data twice, possibly in train and test. So only rows of the
    device's current configuration are kept, only for archs of the architectures table, and a cell
    measured twice under one configuration keeps its latest row.
    """
    from leti import campaign

    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r} (known: {', '.join(STATISTICS)})")
    space = device.space.NAME
    rows = campaign.latency_table(Path(store), device.name, space).filter(pl.col("device") == device.name)
    current = rows.filter(pl.col("config_id") == device.config_id)
    sampled = current.filter(pl.col("arch").is_in(list(architectures)))
    kept = sampled.sort("measured_at").unique("arch", keep="last").sort("arch")
    if kept.is_empty():
        raise ValueError(
            f"{Path(store) / device.name / space}: no successful rows of {device.name} with its current configuration "
            f"{device.config_id} for the sampled {space} archs (run `dvc repro measure@{device.name}`)"
        )
    return TrainingData(
        device=device.name,
        config_id=device.config_id,
        statistic=statistic,
        archs=kept["arch"].to_list(),
        latency_ms=kept[statistic].to_numpy(),
        rows_read=rows.height,
        other_config=rows.height - current.height,
        not_sampled=current.height - sampled.height,
        repeats=sampled.height - kept.height,
    )


@dataclass(frozen=True)
class DeviceData:
    """One device's cells under the BRP-NAS protocol, sorted by arch string."""

    device: str
    archs: list[str]
    latency_ms: np.ndarray
    excluded_no_path: int  # cells dropped because no input->output path exists (341 in NB201)


def load_device(path: str | Path, device: str, space: str = "nb201") -> DeviceData:
    """Successful rows of ``device`` for ``space`` from a latency store folder or a latency table file.

    Cells the space calls invalid are excluded, as BRP-NAS and HELP do for NB201's cells without an
    input→output path: their networks are only stem, reductions and head, and some devices report
    near-zero latency for them. Several rows for one cell (repeated campaigns) are averaged.
    """
    from leti import campaign, spaces, tables

    is_valid = spaces.get(space).is_valid

    path = Path(path)
    if path.is_dir():
        if not (path / device).is_dir():
            known = sorted(p.name for p in path.iterdir() if p.is_dir())
            raise KeyError(f"unknown device {device!r} in latency store {path} (known: {', '.join(known) or 'none'})")
        rows = campaign.latency_table(path, device)
    else:
        rows = tables.read(path, tables.LATENCY).filter(pl.col("error").is_null())
        if not rows.filter(pl.col("device") == device).height:
            known = sorted(rows["device"].unique().to_list())
            raise KeyError(f"unknown device {device!r} in {path} (known: {', '.join(known) or 'none'})")
    rows = rows.filter(pl.col("device") == device)
    if not rows.filter(pl.col("space") == space).height:
        known = sorted(rows["space"].unique().to_list())
        raise KeyError(f"no rows of space {space!r} for device {device!r} in {path} (spaces there: {', '.join(known) or 'none'})")
    rows = rows.filter(pl.col("space") == space).group_by("arch").agg(pl.col("median_ms").mean()).sort("arch")
    valid = [is_valid(arch) for arch in rows["arch"]]
    kept = rows.filter(pl.Series(valid))
    return DeviceData(device, kept["arch"].to_list(), kept["median_ms"].to_numpy(), len(valid) - sum(valid))
