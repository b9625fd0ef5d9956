"""Markdown, tables and metrics of the investigation: every sentence is filled from the analysis."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from leti.reports.investigation import analysis, data
from leti.reports.investigation.analysis import CrossDevice, DeviceFit, LookupCheck
from leti.reports.investigation.data import CellDevice
from leti.spaces import SearchSpace


@dataclass
class Results:
    """Everything the report shows, computed once."""

    config: dict[str, Any]
    space: SearchSpace  # whose cells the device studies compare
    flops_marginal: dict[str, float]  # FLOPs an op adds in place of the space's baseline op
    devices: list[CellDevice]
    fits: list[DeviceFit]
    lookups: list[LookupCheck]
    cross: CrossDevice | None
    networks: pl.DataFrame
    networks_spearman: dict[str, float]
    shares: pl.DataFrame
    noise: pl.DataFrame
    drift: pl.DataFrame  # the sentinel over time per measured device (analysis.sentinel_drift)
    network_predictions: pl.DataFrame = field(default_factory=pl.DataFrame)
    network_scores: pl.DataFrame = field(default_factory=pl.DataFrame)
    figures: dict[str, Path] = field(default_factory=dict)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def figure(results: Results, key: str, caption: str) -> str:
    path = results.figures.get(key)
    return f"![{caption}]({path.as_posix()})\n" if path else f"_{caption}: no data for this figure in the stores._\n"


def names(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "none"


def findings(results: Results) -> list[str]:
    """The headline of each study, in one sentence each, from the numbers."""
    lines = []
    fits = [f for f in results.fits if np.isfinite(f.flops_spearman)]
    if fits:
        best, worst = max(fits, key=lambda f: f.flops_spearman), min(fits, key=lambda f: f.flops_spearman)
        lines.append(
            f"**FLOPs rank cells well on some devices and poorly on others**: Spearman ρ(FLOPs, latency) ranges from "
            f"{worst.flops_spearman:.2f} ({worst.device.label}) to {best.flops_spearman:.2f} ({best.device.label}) "
            f"(figure `flops_rank_correlation.png`)."
        )
    by_kind = kind_means(results.fits, lambda f: f.layerwise_fit["acc_10pct"])
    if by_kind:
        ordered = sorted(by_kind.items(), key=lambda item: item[1])
        lines.append(
            "**Per-op sums (fitted) by device kind**, mean acc@10: "
            + "; ".join(f"{kind} {value:.0f} %" for kind, value in ordered) + " (figure `layerwise_accuracy.png`)."
        )
    for check in results.lookups:
        lines.append(
            f"**{check.device.label}'s measured lookup** (each operator timed alone, summed) predicts "
            f"{check.metrics['acc_10pct']:.0f} % of its cells within ±10 %; the sum accounts for a median "
            f"{100 * check.coverage:.0f} % of a network's measured time (figure `layerwise_scatter.png`)."
        )
    if results.cross is not None and len(results.cross.names) > 1:
        groups = [group for group in results.cross.clusters if len(group) > 1]
        lines.append(
            f"**{len(groups)} clusters of devices** rank cells alike (average ρ ≥ {results.config['cluster_threshold']}); the "
            f"largest: {names(groups[0]) if groups else 'none'} (figure `cross_device_correlation.png`)."
        )
    if not results.networks.is_empty():
        for device, rows in results.networks.group_by("device", maintain_order=True):
            efficient = rows.sort("ms_per_gflop")
            lines.append(
                f"**Popular networks on {device[0]}**: ρ(FLOPs, latency) = {results.networks_spearman.get(device[0], float('nan')):.2f} "
                f"over {rows.height} networks; ms per GFLOP from {efficient['ms_per_gflop'][0]:.1f} "
                f"({efficient['arch'][0]}) to {efficient['ms_per_gflop'][-1]:.1f} ({efficient['arch'][-1]}) "
                f"(figure `popular_networks_vs_flops.png`)."
            )
    if not results.network_scores.is_empty():
        for device, rows in results.network_scores.group_by("device", maintain_order=True):
            best = {method: group.sort("acc_10pct", descending=True).row(0, named=True)
                    for (method,), group in rows.group_by("method", maintain_order=True)}
            parts = [f"{method} {value['acc_10pct']:.0f} %" for method, value in best.items()]
            lines.append(f"**Any network on {device[0]}**, share within ±10 % of {max(v['of'] for v in best.values())} measured "
                         f"networks: {'; '.join(parts)} (section 7, figure `network_methods.png`).")
    return lines


def kind_means(fits: Sequence[DeviceFit], metric: Any) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for fit in fits:
        groups.setdefault(fit.device.kind, []).append(metric(fit))
    return {kind: float(np.mean(values)) for kind, values in groups.items()}


def flops_section(results: Results) -> str:
    fits = sorted(results.fits, key=lambda f: -np.nan_to_num(f.flops_spearman, nan=-2))
    explained = [f.device.label for f in fits if f.flops_spearman >= 0.9]
    poor = [f.device.label for f in fits if f.flops_spearman < 0.7]
    rows = [(f.device.label, f.device.kind, len(f.device.archs), f.flops_spearman, f.flops_fit["acc_10pct"]) for f in fits]
    text = [
        "## 1. Latency against FLOPs",
        "",
        f"FLOPs of each cell's network (the benchmark's own network, as the `{results.space.NAME}` space counts them: 2 per",
        "multiply-add of convolutions and the classifier) against the measured latency. Spearman ρ asks whether FLOPs",
        "*order* the cells as the device does; the FLOPs line (latency = a + b·FLOPs, fitted on the training cells)",
        "asks whether they *predict* it within ±10 %.",
        "",
        figure(results, "flops_rank_correlation", "Spearman rank correlation between FLOPs and latency, per device"),
        f"FLOPs order the cells well (ρ ≥ 0.9) on: {names(explained)}. They do not (ρ < 0.7) on: {names(poor)}.",
        "",
        table(["device", "kind", "cells", "ρ(FLOPs, latency)", "FLOPs line: acc@10 %"], rows),
        "",
        figure(results, "latency_vs_flops", "Latency against FLOPs on selected devices"),
    ]
    if results.networks_spearman:
        text += [
            "On the popular networks (section 5), ρ(FLOPs, latency) over the networks: "
            + "; ".join(f"{device} {value:.2f}" for device, value in results.networks_spearman.items()) + ".",
            "",
        ]
    return "\n".join(text)


def layerwise_section(results: Results) -> str:
    measured = {check.device.name: check for check in results.lookups}
    rows = []
    for f in sorted(results.fits, key=lambda f: f.layerwise_fit["acc_10pct"]):
        check = measured.get(f.device.name)
        rows.append((f.device.label, f.device.kind, f.n_train, f.n_test, f.flops_fit["acc_10pct"], f.layerwise_fit["acc_10pct"],
                     f.layerwise_fit["spearman"], check.metrics["acc_10pct"] if check else None,
                     100 * check.coverage if check else None))
    kinds = kind_means(results.fits, lambda f: f.layerwise_fit["acc_10pct"])
    mobile = {kind: value for kind, value in kinds.items() if "mobile" in kind}
    text = [
        "## 2. The layer-wise lookup against measured latency",
        "",
        "A layer-wise lookup predicts a network as the sum of its operators' latencies (ProxylessNAS, nn-Meter's kernel",
        "tables; LETI reports that such lookups work on mobile CPUs and fail on mobile GPUs). Published data has no",
        "per-op table, so the `layerwise` family fits one: per-op costs by least squares on the op counts of the",
        f"training cells ({results.config['train_size']} train / {results.config['val_size']} validation by seed "
        f"{results.config['seed']}, every other cell tested), the best lookup table the data allows. On leti's own",
        "devices the lookup measured by `measure_ops` (every operator instance timed alone) is summed as it is,",
        "nothing fitted, over every measured cell.",
        "",
        figure(results, "layerwise_accuracy", "Share of cells a per-op sum predicts within 10 %, per device"),
        table(["device", "kind", "train", "test", "FLOPs line acc@10 %", "per-op fit acc@10 %", "per-op fit ρ",
               "measured lookup acc@10 %", "lookup sum / measured, median %"], rows),
        "",
    ]
    if mobile:
        text += [
            "LETI's claim, on the mobile devices here (mean acc@10 of the fitted per-op sum): "
            + "; ".join(f"{kind} {value:.0f} %" for kind, value in sorted(mobile.items())) + ". "
            + claim_verdict(mobile),
            "",
        ]
    text.append(figure(results, "layerwise_scatter", "Per-op sums against measured latency"))
    return "\n".join(text)


def claim_verdict(mobile: dict[str, float]) -> str:
    gpu, cpu = mobile.get("GPU (mobile)"), mobile.get("CPU (mobile)")
    if gpu is None or cpu is None:
        return "Mobile GPUs and mobile CPUs are not both in the stores, so the claim cannot be checked here."
    if gpu < cpu - 10:
        return f"The per-op sum fits the mobile GPUs {cpu - gpu:.0f} points worse than the mobile CPUs: the claim holds here."
    if gpu > cpu + 10:
        return f"The per-op sum fits the mobile GPUs {gpu - cpu:.0f} points *better* than the mobile CPUs: the claim does not hold on this data."
    return "Mobile GPUs and mobile CPUs are within 10 points of each other: the data neither confirms nor refutes the claim."


def time_section(results: Results) -> str:
    baseline = analysis.baseline_op(results.space)
    reference = analysis.reference_op(results.flops_marginal) if results.flops_marginal else None
    flops_view = analysis.relative(results.flops_marginal, reference) if reference else {}
    text = [
        "## 3. Where time goes",
        "",
        "### What an op costs, per device",
        "",
        f"From each device's fitted per-op costs: the latency a cell's op adds when it replaces `{baseline}` (in every",
        f"cell of the network), relative to `{reference}` in its place. FLOPs say: "
        + ", ".join(f"`{op}` {round(value, 2) + 0.0:.2f}" for op, value in flops_view.items() if op != reference)  # no -0.00
        + "; the devices' rows below say what the time is.",
        "",
        figure(results, "op_costs", "Cost of each edge op relative to a 3x3 convolution, per device"),
    ]
    for check in results.lookups:
        key = f"cell_time_shares_{check.device.name}"
        text += [f"### A {data.space_title(results.space)} network on {check.device.label}, from its measured lookup", "",
                 figure(results, key, f"Time against FLOPs by block on {check.device.label}"),
                 table(["block", "share of time %", "share of FLOPs %"],
                       [(block, 100 * check.time_shares.get(block, 0.0), 100 * check.flops_shares.get(block, 0.0))
                        for block in sorted(set(check.time_shares) | set(check.flops_shares),
                                            key=lambda b: -check.time_shares.get(b, 0.0))]), ""]
    if results.shares.is_empty():
        text += ["No operator profiles in the stores (a phone with `op_profiling: true`, or `measure-model --op-profile`).", ""]
    for device in results.shares["device"].unique(maintain_order=True).to_list() if not results.shares.is_empty() else []:
        rows = results.shares.filter(pl.col("device") == device)
        top = rows.sort("share", descending=True).group_by("arch", maintain_order=True).head(2)
        summary = top.group_by("arch", maintain_order=True).agg(pl.col("category"), pl.col("share"))
        text += [
            f"### Popular networks on {device}, by operator category (profiled)", "",
            figure(results, f"time_shares_{device}", f"Operator-category shares of time per network on {device}"),
            table(["network", "largest category", "share %", "second", "share %"],
                  [(r["arch"], r["category"][0], 100 * r["share"][0], r["category"][1] if len(r["category"]) > 1 else None,
                    100 * r["share"][1] if len(r["share"]) > 1 else None) for r in summary.iter_rows(named=True)]),
            "",
        ]
    return "\n".join(text)


def cross_section(results: Results) -> str:
    cross = results.cross
    if cross is None or len(cross.names) < 2:
        return "## 4. Cross-device rank correlation\n\nFewer than two devices in the stores.\n"
    groups = [group for group in cross.clusters if len(group) > 1]
    alone = [group[0] for group in cross.clusters if len(group) == 1]
    nearest = analysis.nearest(cross)
    text = [
        "## 4. Cross-device rank correlation",
        "",
        "Spearman ρ between every two devices over the cells both measured, ordered by average-linkage clustering on",
        f"1 − ρ. A cluster is a group whose average ρ stays at or above {results.config['cluster_threshold']}: within one, a",
        "predictor (or a ranking) learned on one device transfers to the others with little loss; across clusters it",
        "does not.",
        "",
        figure(results, "cross_device_correlation", "Rank correlation between devices, clustered"),
        *[f"- cluster {index}: {names(group)}" for index, group in enumerate(groups, 1)],
        f"- on their own: {names(alone)}",
        "",
        table(["device", "most similar device", "ρ"], [(name, other, rho) for name, (other, rho) in nearest.items()]),
        "",
    ]
    return "\n".join(text)


def networks_section(results: Results) -> str:
    if results.networks.is_empty():
        return "## 5. Popular networks on each measured device\n\nNo named networks in the store (`leti measure-model`).\n"
    devices = results.networks["device"].unique(maintain_order=True).to_list()
    wide = results.networks.pivot(on="device", index=["arch", "input", "flops", "params"], values="latency_ms").sort("flops")
    rows = [(r["arch"], r["input"], r["flops"] / 1e9, r["params"] / 1e6, *[r.get(d) for d in devices]) for r in wide.iter_rows(named=True)]
    statistic = results.config["statistic"]
    hosts = results.networks.group_by("device", maintain_order=True).agg(pl.col("cpu").first(), pl.col("threads").first())
    where = "; ".join(f"{r['device']}: {r['cpu'] or 'an unrecorded CPU'}, {r['threads']} thread(s)" for r in hosts.iter_rows(named=True))
    text = [
        "## 5. Popular networks on each measured device",
        "",
        f"torchvision classifiers, randomly initialised, batch as in the input column ({where}); latency = the",
        f"{statistic.removesuffix('_ms')} of each measurement's timed runs, averaged over its passes. Per-device detail",
        "(ms per GFLOP, rank, passes, CV) is in `popular_networks.csv`.",
        "",
        table(["network", "input", "GFLOPs", "M params", *[f"{d} (ms)" for d in devices]], rows),
        "",
        *speedups(results.networks, devices),
        figure(results, "popular_networks", "Latency of popular networks per device"),
        figure(results, "popular_networks_vs_flops", "Latency against FLOPs of the popular networks"),
    ]
    return "\n".join(text)


def speedups(networks: pl.DataFrame, devices: Sequence[str]) -> list[str]:
    """One sentence per pair of devices: how many times faster the first runs each network, the range."""
    lines = []
    for index, first in enumerate(devices):
        for second in devices[index + 1:]:
            pair = networks.filter(pl.col("device") == first).join(
                networks.filter(pl.col("device") == second), on=["arch", "input"], suffix="_other")
            if pair.is_empty():
                continue
            ratio = pair.select("arch", (pl.col("latency_ms_other") / pl.col("latency_ms")).alias("ratio")).sort("ratio")
            lines += [
                f"{second} takes {ratio['ratio'].median():.2f}× the time of {first} on the median network, from "
                f"{ratio['ratio'][0]:.2f}× ({ratio['arch'][0]}) to {ratio['ratio'][-1]:.2f}× ({ratio['arch'][-1]}).",
                "",
            ]
    return lines


def noise_section(results: Results) -> str:
    if results.noise.is_empty():
        return "## 6. Measurement noise\n\nNo measurements of leti's own with per-run samples in the stores.\n"
    rows = [(r["device"], r["what"], r["rows"], 100 * r["cv_median"], 100 * r["cv_p90"], 100 * r["unstable_share"],
             r["pairs"], pct(r.get("pass_diff_median_ms")), pct(r.get("pass_diff_min_ms"))) for r in results.noise.iter_rows(named=True)]
    text = [
        "## 6. Measurement noise",
        "",
        "leti's own rows only (published data keeps one value per cell). CV = std / mean of a row's timed runs;",
        "'unstable' = rows flagged by the protocol's `cv_threshold`; pass-to-pass = median relative difference between",
        "two measurements of the same network under the same configuration (the popular networks are measured",
        "`models.passes` times, interleaved; cells only when a store holds repeats).",
        "",
        table(["device", "networks", "rows", "CV median %", "CV p90 %", "unstable %", "repeated",
               "pass-to-pass, median of runs %", "pass-to-pass, min of runs %"], rows),
        "",
        figure(results, "noise", "Measurement noise per device"),
        "",
        *drift_lines(results),
    ]
    return "\n".join(text)


def kernels_section(results: Results) -> str:
    title = "## 7. Any network: FLOPs, layer-wise sums, or kernels with the runtime's fusion"
    if results.network_scores.is_empty():
        return (f"{title}\n\nNo device has both kernel predictors (`dvc repro train_kernels@DEVICE`, devices under "
                "`kernels.devices`) and at least three measured networks (`models:`).\n")
    rows = [(r["device"], r["method"], r["family"] or "–", f"{r['networks']}/{r['of']}", r["acc_5pct"], r["acc_10pct"], r["mape"],
             r["spearman"]) for r in results.network_scores.iter_rows(named=True)]
    text = [
        title,
        "",
        "LETI's question per device: how well does each view of a network predict its measured latency? The networks are",
        "the popular ones of `models:` (measured end to end, the latency as in section 5). The **FLOPs line** is fitted on",
        "the other networks of the device (leave one out). The two kernel views never saw a network: their regressors",
        "(one per kernel type, `leti/predictors/kernels.py`) learned one-kernel models of the device's kernel campaign",
        "(`stages/measure_kernels.py`). **Layer-wise** predicts every op as a kernel of its own and sums them, as a per-op",
        "lookup does; **kernels with fusion** first merges the ops the device's runtime fuses (its fusion rules, measured",
        "pair against parts) and predicts the kernels it really runs. Both add the per-call overhead once. The model set",
        "of `benchmarks/kernel_models.py` (202 networks, whole families held out) is the larger test.",
        "",
        table(["device", "method", "family", "networks", "acc@5 %", "acc@10 %", "MAPE %", "Spearman"], rows),
        "",
        figure(results, "network_methods", "Predicted against measured latency of the networks, per method"),
    ]
    return "\n".join(text)


def drift_lines(results: Results) -> list[str]:
    """The sentinel's drift per measured device: how far the device's speed moved during its campaigns."""
    if results.drift.is_empty():
        return ["No sentinel timings in the stores (campaigns measured before the sentinel, or with it off)."]
    kept = pl.col("drift_pct").filter(pl.col("believed"))
    summary = results.drift.group_by("device", "config_id", maintain_order=True).agg(
        pl.len().alias("timings"), (~pl.col("believed")).sum().alias("retimed"), pl.col("minutes").max(),
        kept.min().alias("low"), kept.max().alias("high"))
    rows = [(r["device"], r["config_id"], r["timings"], r["retimed"], r["minutes"], r["low"], r["high"]) for r in summary.iter_rows(named=True)]
    return [
        "### Device drift",
        "",
        "Each campaign times the space's sentinel cell before and after every chunk; its `min_ms` relative to the",
        "configuration's first timing is the device's speed. Rows keep `min_ms_corrected`, normalised to that reference.",
        "A closing timing that moved alone was timed again and the second one decided (`measure.sentinel.retime`):",
        "such timings are counted, drawn as crosses, and left out of the lowest and highest drift.",
        "",
        table(["device", "configuration", "sentinel timings", "timed again, not believed", "minutes", "lowest %", "highest %"], rows),
        "",
        figure(results, "sentinel_drift", "The sentinel over time, per measured device"),
    ]


def pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


def markdown(results: Results) -> str:
    sources: dict[str, list[str]] = {}
    for device in results.devices:
        sources.setdefault(device.source, []).append(device.name)
    inventory = "; ".join(f"{source}: {len(items)} ({', '.join(items)})" for source, items in sources.items())
    head = [
        "# Investigation: what the stores say about inference latency",
        "",
        f"{data.space_title(results.space)} cells on {len(results.devices)} devices — {inventory}. Popular networks: "
        f"{results.networks['arch'].n_unique() if not results.networks.is_empty() else 0} on "
        f"{results.networks['device'].n_unique() if not results.networks.is_empty() else 0} devices. leti's own rows use "
        f"`{results.config['statistic']}` of the timed runs; published rows their one value. Cells without an input→output",
        "path are left out. Every number below is computed from the stores by `leti/investigation/`.",
        "",
        "## Findings",
        "",
        *[f"{index}. {line}" for index, line in enumerate(findings(results), 1)],
        "",
    ]
    body = [flops_section(results), layerwise_section(results), time_section(results), cross_section(results),
            networks_section(results), noise_section(results), kernels_section(results)]
    return "\n".join(head) + "\n" + "\n\n".join(body) + "\n"


def summary(results: Results) -> dict[str, Any]:
    """The metrics DVC tracks: per device (names as in the stores), finite values only."""

    def clean(values: dict[str, float]) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in values.items() if v is not None and np.isfinite(v)}

    out: dict[str, Any] = {
        "devices": len(results.devices),
        "flops_spearman": clean({f.device.name: f.flops_spearman for f in results.fits}),
        "layerwise_fit_acc_10pct": clean({f.device.name: f.layerwise_fit["acc_10pct"] for f in results.fits}),
        "lookup_acc_10pct": clean({c.device.name: c.metrics["acc_10pct"] for c in results.lookups}),
        "clusters": sum(len(g) > 1 for g in results.cross.clusters) if results.cross else 0,
    }
    if not results.networks.is_empty():
        out["popular_networks_ms"] = {
            device[0]: clean(dict(rows.select("arch", "latency_ms").iter_rows()))
            for device, rows in results.networks.group_by("device", maintain_order=True)
        }
        out["popular_networks_flops_spearman"] = clean(results.networks_spearman)
    if not results.noise.is_empty():
        out["noise"] = {
            f"{r['device']} {r['what']}": clean({"cv_median": r["cv_median"], "unstable_share": r["unstable_share"],
                                                 "pass_diff_min": r.get("pass_diff_min_ms"), "pass_diff_median": r.get("pass_diff_median_ms")})
            for r in results.noise.iter_rows(named=True)
        }
    if not results.network_scores.is_empty():
        out["network_methods_acc_10pct"] = {
            device[0]: clean({f"{r['method']}{' ' + r['family'] if r['family'] else ''}": r["acc_10pct"] for r in rows.iter_rows(named=True)})
            for device, rows in results.network_scores.group_by("device", maintain_order=True)
        }
    return out


def write_tables(results: Results, out: Path) -> list[Path]:
    """CSV tables beside the report, and the small ones DVC plots compare between commits. Every file
    is written (a header only when the stores had nothing for it), so the stage's declared outputs exist."""
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    reference = analysis.reference_op(results.flops_marginal) if results.flops_marginal else None
    fits = or_header(pl.DataFrame([
        {"device": f.device.name, "label": f.device.label, "kind": f.device.kind, "source": f.device.source,
         "cells": len(f.device.archs), "flops_spearman": f.flops_spearman, "flops_acc_10pct": f.flops_fit["acc_10pct"],
         "layerwise_acc_10pct": f.layerwise_fit["acc_10pct"], "layerwise_spearman": f.layerwise_fit["spearman"],
         **{f"relative_cost_{op}": value for op, value in analysis.relative(f.marginal_ms, reference).items()}}
        for f in results.fits
    ]), {"device": pl.String, "label": pl.String, "flops_spearman": pl.Float64, "layerwise_acc_10pct": pl.Float64})
    networks = or_header(results.networks, {"device": pl.String, "arch": pl.String, "latency_ms": pl.Float64})
    cross = results.cross
    tables = {
        out / "devices.csv": fits,
        plots / "flops_spearman.csv": fits.select("label", "flops_spearman"),
        plots / "layerwise_acc.csv": fits.select("label", "layerwise_acc_10pct"),
        out / "popular_networks.csv": networks,
        plots / "popular_networks.csv": networks.select(pl.format("{} @ {}", "arch", "device").alias("network"),
                                                        pl.col("latency_ms").round(3)),
        out / "cross_device_spearman.csv": pl.DataFrame(
            {"device": cross.names, **{name: cross.rho[:, i] for i, name in enumerate(cross.names)}}
        ) if cross is not None else pl.DataFrame(schema={"device": pl.String}),
        out / "noise.csv": or_header(results.noise, {"what": pl.String, "device": pl.String}),
        out / "network_predictions.csv": or_header(results.network_predictions, {"device": pl.String, "network": pl.String}),
        out / "network_methods.csv": or_header(results.network_scores, {"device": pl.String, "method": pl.String}),
    }
    for path, frame in tables.items():
        frame.write_csv(path)
    return list(tables)


def or_header(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """``frame``, or an empty one with ``schema``'s columns when the analysis found nothing."""
    return frame if not frame.is_empty() else pl.DataFrame(schema=schema)


def write(results: Results, out: Path) -> dict[str, Any]:
    (out / "report.md").write_text(markdown(results))
    write_tables(results, out)
    metrics = summary(results)
    (out / "summary.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
