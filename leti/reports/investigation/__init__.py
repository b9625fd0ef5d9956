"""The investigation: what every latency store says about inference, as a report a researcher would publish.

Over whatever the stores hold (leti's measured devices, HELP and LatBench imports, named networks,
per-op lookups, op profiles and the devices' kernel predictors), seven studies: latency against
FLOPs per device; the layer-wise lookup against measured latency (LETI's claim that lookups fail on
mobile GPUs); where time goes; cross-device rank correlation and its clusters; the popular networks
on each measured device; the measurement noise; and, for any network, FLOPs against layer-wise sums
against kernels with the runtime's fusion. ``data`` loads, ``analysis`` computes, ``figures`` draws, ``report`` writes
Markdown, CSV tables and the metrics DVC tracks. ``stages/investigate.py`` runs it and logs it to MLflow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from leti import spaces
from leti.reports.investigation import analysis, data, figures, report
from leti.store import tables

DEFAULTS = {"space": spaces.DEFAULT, "statistic": "min_ms", "train_size": 900, "val_size": 100, "seed": 0, "cluster_threshold": 0.9,
            "min_cells": 20, "min_common_cells": 50}


def investigate(
    cell_stores: Sequence[Path], model_store: Path | None, op_latency_store: Path | None, op_profile_stores: Sequence[Path],
    config: dict[str, Any], out: Path, log: Callable[[str], None] = print, kernel_models: Path | None = None,
) -> dict[str, Any]:
    """Compute every study, draw the figures, write ``report.md``, the CSVs and ``summary.json`` under ``out``."""
    config = {**DEFAULTS, **config}
    out.mkdir(parents=True, exist_ok=True)
    statistic, space = config["statistic"], spaces.get(config["space"])
    devices = data.load_cell_devices([Path(s) for s in cell_stores], statistic, config["min_cells"], space)
    cells = sorted({arch for device in devices for arch in device.archs})
    log(f"investigate: {len(devices)} devices with {space.NAME} cells")
    fits = [analysis.fit_device(d, space, config["train_size"], config["val_size"], config["seed"]) for d in devices]
    lookup_tables = data.load_op_lookups(op_latency_store, statistic) if op_latency_store and op_latency_store.is_dir() else {}
    lookups = [check for d in devices if d.name in lookup_tables and d.measured_here
               for check in [analysis.check_lookup(d, lookup_tables[d.name], space)] if check is not None]
    flops_marginal = analysis.flops_marginal(cells, space) if cells else {}
    cross = analysis.cross_device(devices, config["min_common_cells"], config["cluster_threshold"]) if devices else None
    models = data.load_models(model_store) if model_store and model_store.is_dir() else tables.empty(tables.LATENCY)
    networks = analysis.popular_networks(models, statistic)
    shares = analysis.op_shares(data.load_op_profiles([Path(s) for s in op_profile_stores]))
    noise_rows = analysis.noise_rows(devices, models)
    drift = analysis.sentinel_drift(data.load_sentinels([Path(s) for s in cell_stores], space))
    predictors = data.load_kernel_predictors(kernel_models) if kernel_models is not None else {}
    network_predictions = analysis.network_predictions(networks, predictors)
    results = report.Results(
        config=config, space=space, flops_marginal=flops_marginal, devices=devices, fits=fits, lookups=lookups, cross=cross, networks=networks,
        networks_spearman=analysis.models_flops_spearman(networks) if not networks.is_empty() else {},
        shares=shares, noise=analysis.noise_summary(noise_rows), drift=drift, network_predictions=network_predictions,
        network_scores=analysis.method_scores(network_predictions),
    )
    results.figures = draw(results, noise_rows, out)
    log(f"investigate: {len(results.figures)} figures in {out / 'figures'}")
    return report.write(results, out)


def draw(results: report.Results, noise_rows: Any, out: Path) -> dict[str, Path]:
    """Every figure the data allows, as paths relative to ``out`` (where report.md links them)."""
    folder = out / "figures"
    title = data.space_title(results.space)
    drawn: dict[str, Path | None] = {}
    if results.fits:
        drawn["flops_rank_correlation"] = figures.flops_correlation(results.fits, title, folder / "flops_rank_correlation.png")
        flops = {fit.device.name: analysis.cell_flops(fit.device.archs, results.space) for fit in results.fits}
        drawn["latency_vs_flops"] = figures.latency_vs_flops(results.fits, flops, folder / "latency_vs_flops.png")
        drawn["layerwise_accuracy"] = figures.layerwise_accuracy(results.fits, results.lookups, folder / "layerwise_accuracy.png")
        drawn["layerwise_scatter"] = figures.layerwise_scatter(results.fits, results.lookups, folder / "layerwise_scatter.png")
        drawn["op_costs"] = figures.op_costs(results.fits, results.lookups, results.flops_marginal, folder / "op_costs.png")
    for check in results.lookups:
        key = f"cell_time_shares_{check.device.name}"
        drawn[key] = figures.cell_time_shares(check, title, folder / f"{key}.png")
    if not results.shares.is_empty():
        for device in results.shares["device"].unique(maintain_order=True).to_list():
            drawn[f"time_shares_{device}"] = figures.time_shares(results.shares, device, folder / f"time_shares_{device}.png")
    if results.cross is not None and len(results.cross.names) > 1:
        kinds = {d.label: d.kind for d in results.devices}
        drawn["cross_device_correlation"] = figures.cross_device_heatmap(results.cross, kinds, title, folder / "cross_device_correlation.png")
    if not results.networks.is_empty():
        statistic = results.config["statistic"]
        drawn["popular_networks"] = figures.popular_networks(results.networks, folder / "popular_networks.png", statistic)
        drawn["popular_networks_vs_flops"] = figures.popular_vs_flops(results.networks, results.networks_spearman,
                                                                      folder / "popular_networks_vs_flops.png")
    if not results.noise.is_empty():
        drawn["noise"] = figures.noise(noise_rows, results.noise, folder / "noise.png")
    if not results.network_scores.is_empty():
        drawn["network_methods"] = figures.network_methods(results.network_predictions, results.network_scores, folder / "network_methods.png")
    if not results.drift.is_empty():
        drawn["sentinel_drift"] = figures.sentinel_drift(results.drift, folder / "sentinel_drift.png")
    return {key: path.relative_to(out) for key, path in drawn.items() if path is not None}
