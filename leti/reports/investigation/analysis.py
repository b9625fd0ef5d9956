"""The investigation's numbers, as small pure functions over what ``leti.reports.investigation.data`` loads.

Every figure here is computed from the stores; nothing is typed in. Fits follow the BRP-NAS split
(``train_size`` / ``val_size`` cells drawn by seed, the rest tested; a device with fewer cells uses 60 %
and 10 % of them) so the accuracies read like the predictor reports'. Cells are handled through their
search space's interface (``leti.spaces``): FLOPs, op counts and, for the measured lookups, the
space's operator decomposition (``leti.measure.operators``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import polars as pl
from scipy import stats
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from leti import spaces
from leti.metrics import regression_metrics
from leti.predictors import evaluation
from leti.predictors.flops import FlopsPredictor
from leti.predictors.layerwise import LayerwisePredictor, predict_from_lookup
from leti.reports.investigation.data import CellDevice
from leti.spaces import SearchSpace
from leti.spaces.base import OpInstance, count_flops

OP_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("depthwise convolution", r"depthwise"),
    ("attention", r"attention|softmax"),
    ("matrix multiply", r"addmm|matmul|\bmm\b|::mm$|linear|bmm|fully_connected|gemm"),
    ("convolution", r"conv"),
    ("normalisation", r"norm"),
    ("activation", r"relu|hardswish|hardsigmoid|silu|sigmoid|gelu|tanh|clamp|logistic|hard_swish|prelu"),
    ("pooling", r"pool|mean"),
    ("elementwise", r"add|mul|sub|div|where"),
    ("data movement", r"cat|concat|view|reshape|permute|transpose|contiguous|copy|clone|flatten|empty|slice|select|"
                      r"split|chunk|stack|pad|strided|expand|squeeze|shuffle|_to_copy|zero|fill|resize|gather"),
    ("delegate (GPU/NPU)", r"delegate"),
)
"""Operator names of the profilers (ATen's ``aten::mkldnn_convolution``, TFLite's ``DEPTHWISE_CONV_2D``)
grouped into what a reader asks about; the first pattern that matches wins."""


def op_category(name: str) -> str:
    lowered = name.lower()
    for category, pattern in OP_CATEGORIES:
        if re.search(pattern, lowered):
            return category
    return "other"


def baseline_op(space: SearchSpace) -> str:
    """The op every other op's cost is measured against: the first of the space's ops (NB201's ``none``).
    In NB201 a cell's six op counts always sum to six, so only differences between ops are identified."""
    return space.OPS[0]


def compared_ops(space: SearchSpace) -> tuple[str, ...]:
    return space.OPS[1:]


@lru_cache(maxsize=None)
def _flops(space: SearchSpace, arch: str) -> int:
    return space.flops_params(arch)[0]


def cell_flops(archs: Sequence[str], space: SearchSpace) -> np.ndarray:
    """FLOPs of each cell's network (the space's benchmark network, e.g. NB201's CIFAR network), as the space counts them."""
    return np.array([_flops(space, arch) for arch in archs], dtype=float)


def op_marginals(archs: Sequence[str], values: np.ndarray, space: SearchSpace) -> dict[str, float]:
    """What each op adds to ``values`` (latency, or FLOPs) when it replaces the baseline op, from a least-squares
    fit of ``values`` on the cells' op counts. Exact when ``values`` is a sum of per-op parts (FLOPs, a lookup)."""
    table = LayerwisePredictor(space=space.NAME).fit(list(archs), np.asarray(values, dtype=float)).op_table()
    return {op: table[op] - table[baseline_op(space)] for op in compared_ops(space)}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def device_split(n: int, train_size: int, val_size: int, seed: int) -> evaluation.Split:
    """The BRP-NAS split, shrunk to 60 % / 10 % of the cells for a device with fewer."""
    train = min(train_size, int(0.6 * n))
    val = min(val_size, int(0.1 * n))
    return evaluation.split(n, max(train, 2), val, seed)


@dataclass
class DeviceFit:
    """FLOPs and the layer-wise sum against one device's measured latencies."""

    device: CellDevice
    flops_spearman: float
    n_train: int
    n_test: int
    flops_fit: dict[str, float]  # latency ~ a + b * FLOPs, on the test cells
    layerwise_fit: dict[str, float]  # latency ~ fixed + sum of per-op costs, least squares, on the test cells
    marginal_ms: dict[str, float]  # fitted cost of an edge carrying op instead of none (all 15 cells)
    test_measured: np.ndarray
    test_layerwise: np.ndarray


def fit_device(device: CellDevice, space: SearchSpace, train_size: int, val_size: int, seed: int) -> DeviceFit:
    """Rank correlation with FLOPs over every cell; FLOPs and layer-wise fits on the train split."""
    archs = np.asarray(device.archs, dtype=object)
    y = device.latency_ms
    parts = device_split(len(archs), train_size, val_size, seed)
    train, test = list(archs[parts.train]), list(archs[parts.test])
    flops_model = FlopsPredictor(space=space.NAME).fit(train, y[parts.train])
    layer_model = LayerwisePredictor(space=space.NAME).fit(train, y[parts.train])
    predicted = layer_model.predict(test)
    table = layer_model.op_table()
    return DeviceFit(
        device=device,
        flops_spearman=spearman(cell_flops(device.archs, space), y),
        n_train=len(train),
        n_test=len(test),
        flops_fit=regression_metrics(y[parts.test], flops_model.predict(test)),
        layerwise_fit=regression_metrics(y[parts.test], predicted),
        marginal_ms={op: table[op] - table[baseline_op(space)] for op in compared_ops(space)},
        test_measured=y[parts.test],
        test_layerwise=predicted,
    )


def flops_marginal(archs: Sequence[str], space: SearchSpace) -> dict[str, float]:
    """FLOPs an op adds in place of the baseline op, over ``archs``: the FLOPs proxy's view of op costs."""
    return op_marginals(archs, cell_flops(archs, space), space)


def reference_op(flops_marginal: dict[str, float]) -> str:
    """The op the others are compared with: the one FLOPs call costliest (NB201's 3x3 convolution)."""
    return max(flops_marginal, key=lambda op: flops_marginal[op])


def relative(marginal: dict[str, float], reference: str) -> dict[str, float]:
    """Each op's marginal cost as a fraction of the reference op's."""
    base = marginal[reference]
    return {op: value / base if base else float("nan") for op, value in marginal.items()}


@dataclass
class LookupCheck:
    """A measured per-op lookup table summed over each measured cell, against the cell's latency."""

    device: CellDevice
    metrics: dict[str, float]
    predicted: np.ndarray
    coverage: float  # median of predicted / measured: the share of a network's time the sum accounts for
    time_shares: dict[str, float]  # average share of the summed time by block kind
    flops_shares: dict[str, float]  # the same cells' FLOPs shares
    marginal_ms: dict[str, float]  # summed from ops measured alone: an op in place of the baseline op


FIXED_BLOCKS = "fixed blocks"  # what every network runs whatever its cell: stem, reductions, head
ADDITIONS = "cell additions"  # the sums of a cell's edges (the decomposition's ``add`` operator)


def block(instance: OpInstance, space: SearchSpace) -> str:
    """Which part of a network an operator instance belongs to: a cell op (by name), additions, or fixed."""
    if instance.op in space.OPS:
        return instance.op
    return ADDITIONS if instance.op == "add" else FIXED_BLOCKS


def mean_shares(archs: Sequence[str], cost: Callable[[OpInstance], float], space: SearchSpace) -> dict[str, float]:
    """Average share of a network's ``cost`` (time from a lookup, or FLOPs) by block over ``archs``;
    a block a network lacks counts as zero, so the shares sum to one."""
    config = space.NetworkConfig()
    sums: dict[str, float] = {}
    for arch in archs:
        parts: dict[str, float] = {}
        for instance, n in spaces.operators(space.NAME).network_ops(arch, config).items():
            parts[block(instance, space)] = parts.get(block(instance, space), 0.0) + n * cost(instance)
        total = sum(parts.values())
        for name, value in parts.items():
            sums[name] = sums.get(name, 0.0) + value / total
    return {name: value / len(archs) for name, value in sums.items()}


@lru_cache(maxsize=None)
def instance_flops(instance: OpInstance, space: SearchSpace) -> int:
    """FLOPs of one operator instance, counted on the built module as the space counts a network's."""
    import torch

    return count_flops(spaces.operators(space.NAME).build_op(instance).eval(), torch.randn(instance.input_shape(1)))


def check_lookup(device: CellDevice, lookup: pl.DataFrame, space: SearchSpace) -> LookupCheck | None:
    """The measured lookup's prediction of every measured cell (nothing fitted); None when the table
    does not cover the cells' operators (another network configuration) or the space has no operator
    decomposition."""
    if space.NAME not in spaces.OPERATOR_DECOMPOSITIONS:
        return None
    latency = dict(zip(lookup["op_key"].to_list(), lookup["latency_ms"].to_list()))
    try:
        predicted = predict_from_lookup(device.archs, lookup.select("op_key", "latency_ms"), space.NetworkConfig())
    except KeyError:
        return None
    return LookupCheck(
        device=device,
        metrics=regression_metrics(device.latency_ms, predicted),
        predicted=predicted,
        coverage=float(np.median(predicted / device.latency_ms)),
        time_shares=mean_shares(device.archs, lambda instance: latency[instance.key], space),
        flops_shares=mean_shares(device.archs, lambda instance: instance_flops(instance, space), space),
        marginal_ms=op_marginals(device.archs, predicted, space),  # exact: the lookup's sum is linear in op counts
    )


@dataclass
class CrossDevice:
    names: list[str]  # device labels in clustered order
    rho: np.ndarray  # Spearman over the cells both devices measured (NaN: too few in common)
    common: np.ndarray  # how many cells each pair shares
    clusters: list[list[str]]  # labels, clusters of two or more devices first, largest first
    linkage: np.ndarray


def cross_device(devices: Sequence[CellDevice], min_common: int, threshold: float) -> CrossDevice:
    """Rank correlation between every two devices over their common cells, and the clusters of
    devices whose average-linkage correlation stays at or above ``threshold``."""
    frames = [pl.DataFrame({"arch": d.archs, d.label: d.latency_ms}) for d in devices]
    wide = frames[0]
    for frame in frames[1:]:
        wide = wide.join(frame, on="arch", how="full", coalesce=True)
    labels = [d.label for d in devices]
    values = wide.select(labels).to_numpy().astype(float)
    n = len(labels)
    rho, common = np.eye(n), np.zeros((n, n), dtype=int)
    for i in range(n):
        common[i, i] = int(np.sum(~np.isnan(values[:, i])))
        for j in range(i + 1, n):
            both = ~np.isnan(values[:, i]) & ~np.isnan(values[:, j])
            common[i, j] = common[j, i] = int(both.sum())
            rho[i, j] = rho[j, i] = spearman(values[both, i], values[both, j]) if both.sum() >= min_common else np.nan
    distance = np.clip(1 - np.nan_to_num(rho, nan=0.0), 0, 2)
    np.fill_diagonal(distance, 0)
    if n < 2:
        return CrossDevice(labels, rho, common, [labels], np.zeros((0, 4)))
    linkage = hierarchy.linkage(squareform(distance, checks=False), method="average")
    order = hierarchy.leaves_list(linkage)
    assignment = hierarchy.fcluster(linkage, t=1 - threshold, criterion="distance")
    groups: dict[int, list[str]] = {}
    for index in order:
        groups.setdefault(int(assignment[index]), []).append(labels[index])
    clusters = sorted(groups.values(), key=lambda group: -len(group))
    return CrossDevice([labels[i] for i in order], rho[np.ix_(order, order)], common[np.ix_(order, order)], clusters, linkage)


def nearest(cross: CrossDevice) -> dict[str, tuple[str, float]]:
    """Each device's most rank-correlated other device."""
    found = {}
    for i, name in enumerate(cross.names):
        row = np.where(np.arange(len(cross.names)) == i, -np.inf, np.nan_to_num(cross.rho[i], nan=-np.inf))
        j = int(np.argmax(row))
        if np.isfinite(row[j]):
            found[name] = (cross.names[j], float(cross.rho[i, j]))
    return found


def popular_networks(models: pl.DataFrame, statistic: str) -> pl.DataFrame:
    """One row per (device, network, input shape): latency (mean over passes of ``statistic``), passes,
    FLOPs, params, ms per GFLOP, median CV, threads, the host's CPU and the latency rank on the device."""
    if models.is_empty():
        return pl.DataFrame()
    column = pl.when(pl.col(statistic).is_not_null()).then(pl.col(statistic)).otherwise(pl.col("mean_ms"))
    table = (
        models.with_columns(column.alias("latency"), pl.col("input_shape").cast(pl.List(pl.String)).list.join("x").alias("input"))
        .group_by("device", "backend", "arch", "input", "config_id", "model_digest")
        .agg(
            pl.col("latency").mean().alias("latency_ms"), pl.len().alias("passes"), pl.col("flops").first(),
            pl.col("params").first(), pl.col("cv").median().alias("cv"), pl.col("threads").first(),
            pl.col("environment").str.json_path_match("$.cpu_model").first().alias("cpu"),
        )
        .with_columns((pl.col("latency_ms") / (pl.col("flops") / 1e9)).alias("ms_per_gflop"))
        .sort("device", "latency_ms")
    )
    # one configuration per (device, network, input): the newest is what a rerun would measure
    table = table.unique(["device", "arch", "input"], keep="last", maintain_order=True)
    return table.with_columns(pl.col("latency_ms").rank("ordinal").over("device", "input").cast(pl.Int32).alias("rank"))


def models_flops_spearman(table: pl.DataFrame) -> dict[str, float]:
    """Per device: rank correlation of the popular networks' latency with their FLOPs."""
    return {
        device: spearman(rows["flops"].to_numpy().astype(float), rows["latency_ms"].to_numpy())
        for device, rows in ((key[0], group) for key, group in table.group_by("device", maintain_order=True))
    }


def op_shares(profiles: pl.DataFrame) -> pl.DataFrame:
    """Per (device, network): the share of profiled time in each operator category."""
    if profiles.is_empty():
        return pl.DataFrame()
    categories = profiles.with_columns(pl.col("op_type").map_elements(op_category, return_dtype=pl.String).alias("category"))
    latest = categories.join(
        categories.group_by("device", "arch").agg(pl.col("measured_at").max()), on=["device", "arch", "measured_at"]
    )
    totals = latest.group_by("device", "arch").agg(pl.col("avg_ms").sum().alias("total_ms"))
    return (
        latest.group_by("device", "space", "arch", "category").agg(pl.col("avg_ms").sum())
        .join(totals, on=["device", "arch"])
        .with_columns((pl.col("avg_ms") / pl.col("total_ms")).alias("share"))
        .sort("device", "arch", "share", descending=[False, False, True])
    )


def noise_rows(devices: Sequence[CellDevice], models: pl.DataFrame) -> pl.DataFrame:
    """Every row measured here, labelled by device and by what it measured (cells or networks)."""
    keep = ["device", "arch", "config_id", "model_digest", "measured_at", "median_ms", "min_ms", "cv", "unstable", "samples_ms"]
    frames = [d.rows.select(keep).with_columns(pl.lit("NB201 cells").alias("what")) for d in devices if d.measured_here]
    if not models.is_empty():
        frames.append(models.select(keep).with_columns(pl.lit("popular networks").alias("what")))
    frames = [frame for frame in frames if frame.height]
    return pl.concat(frames, how="vertical") if frames else pl.DataFrame()


def pass_to_pass(rows: pl.DataFrame, statistic: str) -> pl.DataFrame:
    """Relative difference |a - b| / mean(a, b) of ``statistic`` between the first two measurements
    of each (device, network, configuration) measured at least twice."""
    if rows.is_empty():
        return pl.DataFrame()
    ordered = rows.sort("measured_at").group_by("what", "device", "arch", "config_id", "model_digest", maintain_order=True).agg(
        pl.col(statistic).head(2)
    )
    pairs = ordered.filter(pl.col(statistic).list.len() == 2)
    first, second = pl.col(statistic).list.get(0), pl.col(statistic).list.get(1)
    return pairs.select("what", "device", "arch", ((first - second).abs() / ((first + second) / 2)).alias("difference"))


def noise_summary(rows: pl.DataFrame) -> pl.DataFrame:
    """Per device and kind of network: rows, CV quantiles, share flagged unstable, and the pass-to-pass
    difference of the median and of the minimum where networks were measured twice."""
    if rows.is_empty():
        return pl.DataFrame()
    summary = rows.filter(pl.col("samples_ms").list.len() > 1).group_by("what", "device", maintain_order=True).agg(
        pl.len().alias("rows"), pl.col("cv").median().alias("cv_median"), pl.col("cv").quantile(0.9).alias("cv_p90"),
        pl.col("unstable").mean().alias("unstable_share"),
    )
    for statistic in ("median_ms", "min_ms"):
        diffs = pass_to_pass(rows, statistic)
        if diffs.is_empty():
            summary = summary.with_columns(pl.lit(None, dtype=pl.Float64).alias(f"pass_diff_{statistic}"), pl.lit(0).alias("pairs"))
            continue
        summary = summary.join(
            diffs.group_by("what", "device").agg(pl.col("difference").median().alias(f"pass_diff_{statistic}"), pl.len().alias("pairs")),
            on=["what", "device"], how="left",
        )
        if "pairs_right" in summary.columns:
            summary = summary.drop("pairs_right")
    return summary.with_columns(pl.col("pairs").fill_null(0))


FLOPS_LINE = "FLOPs line"
LAYERWISE = "layer-wise"
KERNELS = "kernels with fusion"


def loo_flops_line(flops: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """Each network's latency from a line ``a + b * FLOPs`` fitted on the others (leave one out): the
    FLOPs proxy given every other network's measurement."""
    predicted = np.full(len(flops), np.nan)
    for index in range(len(flops)):
        others = np.arange(len(flops)) != index
        design = np.stack([np.ones(others.sum()), flops[others]], axis=1)
        coefficients = np.linalg.lstsq(design, latency[others], rcond=None)[0]
        predicted[index] = coefficients[0] + coefficients[1] * flops[index]
    return predicted


def network_predictions(networks: pl.DataFrame, predictors: dict[str, dict[str, Any]]) -> pl.DataFrame:
    """Per device with kernel predictors and measured networks, each network's measured latency beside
    three predictions: the FLOPs line (fitted on the other networks), every op predicted as its own
    kernel (layer-wise: no fusion) and the kernels the device's runtime runs (its fusion rules), the
    last two for each regressor family. The kernel predictors never saw a network."""
    from leti.features import kernels

    rows: list[dict[str, Any]] = []
    for device, families in predictors.items():
        measured = networks.filter(pl.col("device") == device) if not networks.is_empty() else networks
        if measured.height < 3:
            continue
        flops = measured["flops"].to_numpy().astype(float)
        latency = measured["latency_ms"].to_numpy()
        line = loo_flops_line(flops, latency)
        for index, row in enumerate(measured.iter_rows(named=True)):
            shape = [int(d) for d in row["input"].split("x")]
            base = {"device": device, "network": row["arch"], "input": row["input"], "flops": row["flops"], "measured_ms": row["latency_ms"]}
            rows.append({**base, "method": FLOPS_LINE, "family": "", "predicted_ms": float(line[index])})
            try:
                graph = kernels.model_graph(row["arch"], shape[1:], shape[0])
            except (ValueError, KeyError):  # not a network leti can rebuild: the FLOPs line only
                continue
            for family, predictor in families.items():
                for method, rules in ((LAYERWISE, {}), (KERNELS, None)):
                    try:
                        predicted = predictor.predict_graph(graph, rules).predicted_ms
                    except KeyError:  # a kernel type the campaign did not measure
                        predicted = None
                    rows.append({**base, "method": method, "family": family, "predicted_ms": predicted})
    schema = {"device": pl.String, "network": pl.String, "input": pl.String, "flops": pl.Int64, "measured_ms": pl.Float64,
              "method": pl.String, "family": pl.String, "predicted_ms": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def method_scores(predictions: pl.DataFrame) -> pl.DataFrame:
    """Per device, method and family: networks predicted, acc@5/10 %, MAPE % and Spearman ρ."""
    rows = []
    for (device, method, family), group in predictions.group_by("device", "method", "family", maintain_order=True):
        answered = group.filter(pl.col("predicted_ms").is_not_null())
        if answered.height < 2:
            continue
        metrics = regression_metrics(answered["measured_ms"].to_numpy(), answered["predicted_ms"].to_numpy())
        rows.append({"device": device, "method": method, "family": family, "networks": answered.height, "of": group.height,
                     "acc_5pct": metrics["acc_5pct"], "acc_10pct": metrics["acc_10pct"], "mape": metrics["mape"],
                     "spearman": metrics["spearman"]})
    schema = {"device": pl.String, "method": pl.String, "family": pl.String, "networks": pl.Int64, "of": pl.Int64,
              "acc_5pct": pl.Float64, "acc_10pct": pl.Float64, "mape": pl.Float64, "spearman": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def sentinel_drift(sentinels: pl.DataFrame) -> pl.DataFrame:
    """The sentinel over time per device and configuration: minutes since its first timing, its
    ``min_ms`` relative to that first one (%), the speed every corrected row is normalised to, and
    whether the timing was believed (``believed``, as :func:`data.load_sentinels` reads it)."""
    if sentinels.is_empty():
        return pl.DataFrame(schema={"device": pl.String, "config_id": pl.String, "minutes": pl.Float64, "drift_pct": pl.Float64,
                                    "believed": pl.Boolean})
    ordered = sentinels.sort("measured_at")
    return ordered.select(
        "device", "config_id",
        ((pl.col("measured_at") - pl.col("measured_at").first().over("device", "config_id")).dt.total_seconds() / 60).alias("minutes"),
        (100 * (pl.col("min_ms") / pl.col("min_ms").first().over("device", "config_id") - 1)).alias("drift_pct"),
        "believed",
    )
