"""The investigation's figures: each says in its title what it shows, labels its axes with units,
and colours devices by kind of processor the same way in every figure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

from leti.reports.investigation import analysis  # noqa: E402
from leti.reports.investigation.analysis import CrossDevice, DeviceFit, LookupCheck  # noqa: E402
from leti.reports.investigation.data import KIND_ORDER  # noqa: E402

DPI = 120
PALETTE = dict(zip(KIND_ORDER, ["#1f77b4", "#17becf", "#d62728", "#9467bd", "#2ca02c", "#ff7f0e", "#8c564b", "#000000",
                                "#7f7f7f", "#e377c2"]))
OP_LABELS = {"none": "none (zero)", "skip_connect": "skip", "nor_conv_1x1": "conv 1×1", "nor_conv_3x3": "conv 3×3",
             "avg_pool_3x3": "avg pool 3×3", analysis.ADDITIONS: "cell additions", analysis.FIXED_BLOCKS: "stem, reductions, head"}
"""Short axis labels for op names (NB201's here); any other op is shown by its own name."""


def op_label(op: str) -> str:
    return OP_LABELS.get(op, op)


def colour(kind: str) -> str:
    return PALETTE.get(kind, "#bcbd22")


def kind_legend(ax: plt.Axes, kinds: Sequence[str], **options) -> None:
    present = [kind for kind in KIND_ORDER if kind in set(kinds)] + sorted(set(kinds) - set(KIND_ORDER))
    ax.legend(handles=[Patch(color=colour(kind), label=kind) for kind in present], title="device kind", **options)


def save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def flops_correlation(fits: Sequence[DeviceFit], space: str, path: Path) -> Path:
    """Bars: Spearman ρ(FLOPs, latency) per device, sorted, coloured by kind."""
    fits = sorted(fits, key=lambda fit: np.nan_to_num(fit.flops_spearman, nan=-2))
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.32 * len(fits)))
    values = [fit.flops_spearman for fit in fits]
    ax.barh([fit.device.label for fit in fits], values, color=[colour(fit.device.kind) for fit in fits])
    for y, value in enumerate(values):
        ax.text(max(value, 0) + 0.01, y, f"{value:.2f}", va="center", fontsize=8)
    ax.set_xlim(min(0.0, np.nanmin(values) - 0.05), 1.08)
    ax.axvline(0.9, color="grey", lw=0.8, ls="--")
    ax.text(0.9, len(fits) - 0.3, "ρ = 0.9 ", ha="right", va="bottom", fontsize=8, color="grey")
    ax.set_xlabel("Spearman ρ between network FLOPs and measured latency (1 = FLOPs order the cells perfectly)")
    ax.set_title(f"How well FLOPs rank {space} networks by latency, per device")
    kind_legend(ax, [fit.device.kind for fit in fits], loc="lower right", fontsize=8)
    return save(fig, path)


def latency_vs_flops(fits: Sequence[DeviceFit], flops: dict[str, np.ndarray], path: Path) -> Path:
    """Scatter panels: latency against FLOPs for the devices FLOPs explain best and worst, and leti's own."""
    ranked = sorted((f for f in fits if np.isfinite(f.flops_spearman)), key=lambda f: f.flops_spearman)
    own = [f for f in ranked if f.device.measured_here]
    published = [f for f in ranked if not f.device.measured_here]
    chosen = own[:3] + published[:2] + published[-2:]
    chosen = list({id(f): f for f in chosen}.values())[:6]
    cols = min(3, len(chosen))
    rows = int(np.ceil(len(chosen) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.6 * rows), squeeze=False)
    for ax, fit in zip(axes.flat, chosen):
        ax.scatter(flops[fit.device.name] / 1e6, fit.device.latency_ms, s=3, alpha=0.35, color=colour(fit.device.kind),
                   rasterized=True)
        ax.set_title(f"{fit.device.label}\nρ = {fit.flops_spearman:.2f}, {len(fit.device.archs)} cells", fontsize=10)
        ax.set_xlabel("network FLOPs (millions)")
        ax.set_ylabel("latency (ms)")
    for ax in list(axes.flat)[len(chosen):]:
        ax.axis("off")
    fig.suptitle("Latency against FLOPs: leti's devices, and the published devices FLOPs rank worst and best", y=1.0)
    fig.tight_layout()
    return save(fig, path)


def layerwise_accuracy(fits: Sequence[DeviceFit], lookups: Sequence[LookupCheck], path: Path) -> Path:
    """Grouped bars per device: acc@10 of a FLOPs line, the fitted per-op sum and the measured lookup."""
    fits = sorted(fits, key=lambda fit: fit.layerwise_fit["acc_10pct"])
    measured = {check.device.name: check for check in lookups}
    labels = [fit.device.label for fit in fits]
    y = np.arange(len(fits))
    height = 0.28
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.42 * len(fits)))
    ax.barh(y - height, [fit.flops_fit["acc_10pct"] for fit in fits], height, color="#c7c7c7")
    ax.barh(y, [fit.layerwise_fit["acc_10pct"] for fit in fits], height, color=[colour(f.device.kind) for f in fits])
    handles = [Patch(color="#c7c7c7", label="latency ~ FLOPs (a fitted line)"),
               Patch(facecolor="none", edgecolor="black", label="sum of per-op costs, least-squares fit (colour: device kind)")]
    lookup_values = [measured[f.device.name].metrics["acc_10pct"] if f.device.name in measured else np.nan for f in fits]
    if any(np.isfinite(lookup_values)):
        ax.barh(y + height, lookup_values, height, color="white", edgecolor="black", hatch="////")
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="////", label="sum of per-op latencies measured alone (lookup)"))
    for index, fit in enumerate(fits):
        ax.text(fit.layerwise_fit["acc_10pct"] + 0.8, index, f"{fit.layerwise_fit['acc_10pct']:.0f}", va="center", fontsize=7)
        if np.isfinite(lookup_values[index]):
            ax.text(lookup_values[index] + 0.8, index + height, f"{lookup_values[index]:.0f} (lookup)", va="center", fontsize=7)
    ax.set_yticks(y, labels)
    ax.set_xlim(0, 108)
    ax.set_xlabel("test cells predicted within ±10 % of the measured latency (%)")
    ax.set_title("Layer-wise lookup against measured latency: how often a per-op sum is within ±10 %")
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.95)  # the worst-fitted devices' short bars leave room
    return save(fig, path)


def layerwise_scatter(fits: Sequence[DeviceFit], lookups: Sequence[LookupCheck], path: Path) -> Path | None:
    """Predicted (per-op sum) against measured: leti's measured lookups, and the mobile GPUs and CPUs."""
    panels: list[tuple[str, np.ndarray, np.ndarray, str]] = []
    for check in lookups:
        panels.append((f"{check.device.label}: measured lookup", check.device.latency_ms, check.predicted, check.device.kind))
    for kind in ("GPU (mobile)", "CPU (mobile)", "CPU (this machine)"):
        for fit in (f for f in fits if f.device.kind == kind):
            panels.append((f"{fit.device.label}: fitted per-op costs", fit.test_measured, fit.test_layerwise, kind))
    panels = panels[:6]
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 4.0 * rows), squeeze=False)
    for ax, (title, measured, predicted, kind) in zip(axes.flat, panels):
        # the view spans 99.5 % of the cells: a handful of outliers (a 250 ms cell among 20 ms ones) would squash the rest
        both = np.concatenate([measured, predicted])
        low, high = float(min(0.0, both.min())), float(np.quantile(both, 0.995)) * 1.05
        hidden = int(np.sum((measured > high) | (predicted > high)))
        line = np.linspace(low, high, 2)
        ax.fill_between(line, line * 0.9, line * 1.1, color="tab:green", alpha=0.15, label="±10 %")
        ax.plot(line, line, color="black", lw=0.8)
        ax.scatter(measured, predicted, s=3, alpha=0.35, color=colour(kind), rasterized=True)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        within = 100 * np.mean(np.abs(predicted - measured) <= 0.1 * measured)
        beyond = f"; {hidden} beyond the axes" if hidden else ""
        ax.set_title(f"{title}\n{within:.0f} % of {len(measured)} cells within ±10 %{beyond}", fontsize=9)
        ax.set_xlabel("measured latency (ms)")
        ax.set_ylabel("per-op sum (ms)")
        ax.legend(loc="upper left", fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("Per-op sums against measured network latency", y=1.0)
    fig.tight_layout()
    return save(fig, path)


def op_costs(fits: Sequence[DeviceFit], lookups: Sequence[LookupCheck], flops_marginal: dict[str, float], path: Path) -> Path:
    """Heatmap: what an op costs relative to the op FLOPs call costliest (NB201: a 3x3 conv), per device,
    beside the FLOPs ratio."""
    reference = analysis.reference_op(flops_marginal)
    rows = [("FLOPs (the proxy)", analysis.relative(flops_marginal, reference), "other")]
    rows += [(f"{check.device.label} (measured alone)", analysis.relative(check.marginal_ms, reference), check.device.kind)
             for check in lookups]
    order = {kind: i for i, kind in enumerate(KIND_ORDER)}
    for fit in sorted(fits, key=lambda f: (order.get(f.device.kind, 99), f.device.label)):
        rows.append((fit.device.label, analysis.relative(fit.marginal_ms, reference), fit.device.kind))
    ops = [op for op in flops_marginal if op != reference]
    values = np.array([[row[1][op] for op in ops] for row in rows])
    fig, ax = plt.subplots(figsize=(6.5, 1.4 + 0.3 * len(rows)))
    finite = values[np.isfinite(values)]
    image = ax.imshow(values, cmap="YlOrRd", aspect="auto", vmin=min(0.0, finite.min(initial=0)), vmax=max(1.0, finite.max(initial=1)))
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="black" if value < 0.8 * values.max() else "white")
    ax.set_xticks(range(len(ops)), [op_label(op) for op in ops])
    ax.set_yticks(range(len(rows)), [row[0] for row in rows], fontsize=8)
    for tick, row in zip(ax.get_yticklabels(), rows):
        tick.set_color(colour(row[2]) if row[2] != "other" else "black")
    ax.xaxis.tick_top()
    fig.colorbar(image, ax=ax, label=f"cost of the op / cost of a {op_label(reference)} in its place")
    ax.set_title(f"What an op costs relative to a {op_label(reference)} (per-op fit per device; FLOPs row: the proxy)",
                 fontsize=10, pad=28)
    return save(fig, path)


def time_shares(shares: pl.DataFrame, device: str, path: Path, top: int = 7) -> Path:
    """Stacked bars: where each network's time goes on one device, by operator category."""
    rows = shares.filter(pl.col("device") == device)
    order = rows.group_by("category").agg(pl.col("share").mean()).sort("share", descending=True)["category"].to_list()
    shown = [category for category in order if category != "other"][:top]
    networks = rows.group_by("arch").agg(pl.col("total_ms").first()).sort("total_ms")["arch"].to_list()
    fig, ax = plt.subplots(figsize=(9.5, 1.3 + 0.42 * len(networks)))
    left = np.zeros(len(networks))
    cmap = plt.get_cmap("tab10")
    for index, category in enumerate([*shown, "other"]):
        if category == "other":
            picked = rows.filter(~pl.col("category").is_in(shown))
        else:
            picked = rows.filter(pl.col("category") == category)
        by_arch = dict(picked.group_by("arch").agg(pl.col("share").sum()).iter_rows())
        widths = np.array([100 * by_arch.get(arch, 0.0) for arch in networks])
        ax.barh(networks, widths, left=left, color=cmap(index) if category != "other" else "#d9d9d9", label=category)
        for y, (start, width) in enumerate(zip(left, widths)):
            if width >= 7:
                ax.text(start + width / 2, y, f"{width:.0f}", ha="center", va="center", fontsize=7)
        left += widths
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of the profiled time (%)")
    ax.set_title(f"Where time goes on {device}: operator categories per network (profiled; networks sorted by time)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 if len(networks) > 6 else -0.25), ncol=4, fontsize=8)
    return save(fig, path)


def cell_time_shares(check: LookupCheck, space: str, path: Path) -> Path:
    """Two stacked bars: a cell's network, its measured per-op time by block against its FLOPs by block."""
    names = (set(check.flops_shares) | set(check.time_shares)) - {analysis.FIXED_BLOCKS}
    blocks = [*sorted(names, key=lambda name: (-check.flops_shares.get(name, 0.0), -check.time_shares.get(name, 0.0))),
              analysis.FIXED_BLOCKS]  # the costly ops first, as FLOPs see them, then as time does
    fig, ax = plt.subplots(figsize=(9, 2.6))
    cmap = plt.get_cmap("tab10")
    for row, (name, shares) in enumerate([("time (measured lookup)", check.time_shares), ("FLOPs", check.flops_shares)]):
        left = 0.0
        for index, block in enumerate(blocks):
            width = 100 * shares.get(block, 0.0)
            ax.barh(row, width, left=left, color=cmap(index), label=op_label(block) if row == 0 else None)
            if width >= 5:
                ax.text(left + width / 2, row, f"{width:.0f}", ha="center", va="center", fontsize=8)
            left += width
    ax.set_yticks([0, 1], ["time (per-op lookup)", "FLOPs"])
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of a network, averaged over the measured cells (%)")
    ax.set_title(f"Where time goes in a {space} network on {check.device.label}: time against FLOPs")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=4, fontsize=8)
    return save(fig, path)


def compact(value: float) -> str:
    """A correlation in three characters: ``.87``, ``1``, ``-.3``."""
    rounded = round(value, 2)
    if rounded >= 1:
        return "1"
    text = f"{rounded:.2f}" if rounded >= 0 else f"{rounded:.1f}"
    return text.replace("0.", ".", 1)


def plain_log_ticks(axis: Any) -> None:
    """Log-scale ticks written as plain numbers (0.5, 2, 100) rather than powers of ten."""
    formatter = FuncFormatter(lambda value, _: f"{value:g}")
    axis.set_major_formatter(formatter)
    axis.set_minor_locator(LogLocator(subs=(2, 5)))
    axis.set_minor_formatter(formatter)


def cross_device_heatmap(cross: CrossDevice, kinds: dict[str, str], space: str, path: Path) -> Path:
    """Clustered heatmap of the rank correlation between devices; clusters outlined."""
    n = len(cross.names)
    size = max(6.0, 0.42 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(cross.rho, cmap="viridis", vmin=min(0.0, np.nanmin(cross.rho)), vmax=1)
    if n <= 40:
        for (i, j), value in np.ndenumerate(cross.rho):
            if np.isfinite(value):
                ax.text(j, i, compact(value), ha="center", va="center",
                        fontsize=6 if n > 16 else 8, color="white" if value < 0.75 else "black")
    ax.set_xticks(range(n), cross.names, rotation=90, fontsize=8)
    ax.set_yticks(range(n), cross.names, fontsize=8)
    for tick in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
        tick.set_color(colour(kinds.get(tick.get_text(), "other")))
    position = {name: i for i, name in enumerate(cross.names)}
    for cluster in cross.clusters:
        if len(cluster) > 1:
            start = min(position[name] for name in cluster)
            ax.add_patch(Rectangle((start - 0.5, start - 0.5), len(cluster), len(cluster), fill=False, edgecolor="red", lw=1.6))
    fig.colorbar(image, ax=ax, label="Spearman ρ over the cells both devices measured", shrink=0.8)
    ax.set_title(f"Which devices rank {space} networks alike (red boxes: clusters; tick colour: device kind)")
    kind_legend(ax, list(kinds.values()), loc="upper left", bbox_to_anchor=(1.0, -0.02 - 3.0 / size), fontsize=8, ncol=2)
    return save(fig, path)


def popular_networks(table: pl.DataFrame, path: Path, statistic: str) -> Path:
    """Grouped bars: each network's latency on each measured device (log scale), networks by FLOPs."""
    devices = table["device"].unique(maintain_order=True).to_list()
    networks = table.group_by("arch").agg(pl.col("flops").first()).sort("flops")["arch"].to_list()
    height = 0.8 / len(devices)
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.5 * len(networks) * max(1, len(devices) / 2)))
    cmap = plt.get_cmap("Set2")
    for index, device in enumerate(devices):
        rows = dict(table.filter(pl.col("device") == device).select("arch", "latency_ms").iter_rows())
        values = np.array([rows.get(arch, np.nan) for arch in networks])
        y = np.arange(len(networks)) + (index - (len(devices) - 1) / 2) * height
        ax.barh(y, values, height, color=cmap(index), label=device)
        for yy, value in zip(y, values):
            if np.isfinite(value):
                ax.text(value * 1.03, yy, f"{value:.1f}", va="center", fontsize=7)
    gflops = dict(table.group_by("arch").agg(pl.col("flops").first()).iter_rows())
    ax.set_yticks(range(len(networks)), [f"{arch} ({gflops[arch] / 1e9:.2f} GFLOPs)" for arch in networks])
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis)
    ax.set_xlabel(f"latency per image (ms, {statistic.removesuffix('_ms')} of the timed runs, mean of passes; log scale)")
    shape = ", ".join(sorted(table["input"].unique().to_list()))
    ax.set_title(f"Popular networks on each measured device (input {shape}; networks sorted by FLOPs)")
    ax.legend(title="device", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_xlim(right=ax.get_xlim()[1] * 1.4)
    return save(fig, path)


def popular_vs_flops(table: pl.DataFrame, spearman: dict[str, float], path: Path) -> Path:
    """Scatter: latency against FLOPs of the popular networks, one colour per device, names annotated."""
    fig, ax = plt.subplots(figsize=(9, 6.5))
    cmap = plt.get_cmap("Set2")
    for index, device in enumerate(table["device"].unique(maintain_order=True).to_list()):
        rows = table.filter(pl.col("device") == device)
        ax.scatter(rows["flops"].to_numpy() / 1e9, rows["latency_ms"].to_numpy(), s=45, color=cmap(index), edgecolor="black",
                   lw=0.5, label=f"{device} (ρ = {spearman.get(device, float('nan')):.2f})", zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    anchors = []
    for arch, rows in table.group_by("arch"):  # one label per network, beside its slowest device
        ax.vlines(rows["flops"][0] / 1e9, rows["latency_ms"].min(), rows["latency_ms"].max(), color="#999999", lw=0.6)
        anchors.append((arch[0], rows["flops"][0] / 1e9, rows["latency_ms"].max()))
    points = zip(table["flops"].to_numpy() / 1e9, table["latency_ms"].to_numpy())
    label_points(ax, anchors, obstacles=list(points))
    plain_log_ticks(ax.xaxis)
    plain_log_ticks(ax.yaxis)
    ax.set_xlabel("GFLOPs per image (log scale)")
    ax.set_ylabel("latency per image (ms, log scale)")
    ax.set_title("Popular networks: FLOPs against measured latency (ρ: Spearman per device)")
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(title="device", fontsize=8)
    return save(fig, path)


def label_points(ax: plt.Axes, anchors: Sequence[tuple[str, float, float]], obstacles: Sequence[tuple[float, float]] = (),
                 fontsize: int = 8) -> None:
    """Annotate points so that labels overlap neither each other nor the markers: each label takes the
    first of a few offsets (right, then above and below, then left) whose box is clear."""
    ax.figure.canvas.draw()  # fixes the data-to-pixel transform after the log scales and limits
    scale = ax.figure.dpi / 72  # points to pixels
    marker = 5 * scale
    placed: list[tuple[float, float, float, float]] = [
        (px - marker, py - marker, px + marker, py + marker) for px, py in (ax.transData.transform(point) for point in obstacles)
    ]
    for text, x, y in sorted(anchors, key=lambda anchor: (anchor[1], anchor[2])):
        px, py = ax.transData.transform((x, y))
        width, height = 0.62 * fontsize * len(text) * scale, 1.25 * fontsize * scale
        candidates = [(6, 2), (6, 13), (6, -11), (6, 24), (6, -22), (6, 35), (6, -33), (6, 46), (-6 - width / scale, 2),
                      (-6 - width / scale, 13), (-6 - width / scale, -11)]
        for dx, dy in candidates:
            box = (px + dx * scale, py + dy * scale, px + dx * scale + width, py + dy * scale + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, color="#333333",
                    arrowprops={"arrowstyle": "-", "color": "#bbbbbb", "lw": 0.5} if abs(dy) > 2 else None)


def noise(rows: pl.DataFrame, summary: pl.DataFrame, path: Path) -> Path:
    """Left: CV of the timed runs per device and kind of network; right: pass-to-pass differences."""
    groups = list(summary.select("what", "device").iter_rows())
    labels = [f"{device}\n{what}" for what, device in groups]
    y = np.arange(len(groups))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 1.8 + 0.6 * len(groups)), sharey=True,
                                      gridspec_kw={"width_ratios": [3, 2]})
    data = [rows.filter((pl.col("what") == what) & (pl.col("device") == device) & pl.col("cv").is_not_null())["cv"].to_numpy() * 100
            for what, device in groups]
    left.boxplot(data, positions=y, orientation="horizontal", tick_labels=labels, showfliers=True, widths=0.5,
                 flierprops={"markersize": 2, "alpha": 0.4})
    left.set_xscale("log")
    plain_log_ticks(left.xaxis)
    left.set_xlabel("coefficient of variation of a measurement's timed runs (std / mean, %, log scale)")
    left.set_title("Run-to-run spread within each measurement")
    height = 0.38
    for offset, statistic, shade in ((-height / 2, "median_ms", "#4c72b0"), (height / 2, "min_ms", "#dd8452")):
        values = 100 * summary[f"pass_diff_{statistic}"].fill_null(np.nan).to_numpy()
        right.barh(y + offset, np.nan_to_num(values), height, color=shade, label=f"{statistic.removesuffix('_ms')} of the runs")
        for yy, value in zip(y + offset, values):
            if np.isfinite(value):
                right.text(value, yy, f" {value:.1f}", va="center", fontsize=7)
    for yy, value in zip(y, summary["pass_diff_min_ms"].fill_null(np.nan).to_numpy()):
        if not np.isfinite(value):
            right.text(0, yy, " each measured once", va="center", fontsize=8, color="grey")
    right.set_xlabel("median |pass 1 − pass 2| / mean of the two (%)")
    right.set_title("Pass-to-pass difference")
    right.set_xlim(0, max(1.0, float(np.nanmax(100 * summary.select(
        pl.max_horizontal("pass_diff_median_ms", "pass_diff_min_ms")).to_series().fill_null(0).to_numpy()))) * 1.25)
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.5 / len(groups) - 0.12), ncol=2)
    left.invert_yaxis()
    fig.suptitle("Measurement noise of leti's own measurements (published data keeps one value per cell)", y=1.0)
    fig.tight_layout()
    return save(fig, path)


def network_methods(predictions: pl.DataFrame, scores: pl.DataFrame, path: Path) -> Path:
    """Per device: predicted against measured latency of the measured networks for the FLOPs line,
    layer-wise sums and kernels with fusion (each with its best family), the ±10 % band shaded."""
    devices = scores["device"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(1, len(devices), figsize=(6 * len(devices), 5.5), squeeze=False)
    colours = {analysis.FLOPS_LINE: "#7f7f7f", analysis.LAYERWISE: "#ff7f0e", analysis.KERNELS: "#1f77b4"}
    for ax, device in zip(axes[0], devices):
        mine = scores.filter(pl.col("device") == device)
        for method, colour_ in colours.items():
            ranked = mine.filter(pl.col("method") == method).sort("acc_10pct", "mape", descending=[True, False])
            if ranked.is_empty():
                continue
            best = ranked.row(0, named=True)
            rows = predictions.filter((pl.col("device") == device) & (pl.col("method") == method) & (pl.col("family") == best["family"])
                                      & pl.col("predicted_ms").is_not_null())
            label = f"{method}{' (' + best['family'] + ')' if best['family'] else ''}: acc@10 {best['acc_10pct']:.0f} %"
            ax.scatter(rows["measured_ms"], rows["predicted_ms"], s=28, color=colour_, edgecolor="black", lw=0.4, label=label, zorder=3)
        values = predictions.filter(pl.col("device") == device).select(pl.col("measured_ms"), pl.col("predicted_ms")).to_numpy().ravel()
        values = values[np.isfinite(values) & (values > 0)]
        low, high = values.min() * 0.8, values.max() * 1.25
        line = np.geomspace(low, high, 50)
        ax.plot(line, line, color="black", lw=0.8)
        ax.fill_between(line, line * 0.9, line * 1.1, color="#cccccc", alpha=0.5, label="±10 %")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        plain_log_ticks(ax.xaxis)
        plain_log_ticks(ax.yaxis)
        ax.set_xlabel("measured latency per image (ms, log scale)")
        ax.set_ylabel("predicted latency (ms, log scale)")
        ax.set_title(f"{device}: networks never fitted on")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(True, which="both", alpha=0.2)
    return save(fig, path)


def sentinel_drift(drift: pl.DataFrame, path: Path) -> Path:
    """The sentinel cell's latency over each campaign, relative to its first timing: the device's drift
    (crosses: timings that moved alone, were timed again and not believed)."""
    series = drift.select("device", "config_id").unique(maintain_order=True).rows()
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for device, config in series:
        rows = drift.filter((pl.col("device") == device) & (pl.col("config_id") == config))
        label = device if sum(1 for d, _ in series if d == device) == 1 else f"{device} ({config[:6]})"
        kept, retimed = rows.filter(pl.col("believed")), rows.filter(~pl.col("believed"))
        line, = ax.plot(kept["minutes"], kept["drift_pct"], marker=".", markersize=3, linewidth=1, label=label)
        if retimed.height:
            ax.scatter(retimed["minutes"], retimed["drift_pct"], marker="x", s=30, color=line.get_color(),
                       label=f"{label}: timed again, not believed")
    ax.axhline(0, color="#999999", linewidth=0.8)
    ax.set_xlabel("minutes since the configuration's first sentinel timing")
    ax.set_ylabel("sentinel min_ms vs its first timing (%)")
    ax.set_title("Device drift: the sentinel cell timed around every chunk of a campaign")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)
