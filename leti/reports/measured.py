"""Predictors on cells measured here, beside the measurement's own noise floor.

A predictor cannot be judged without knowing how well the measurement agrees with itself: on a busy
machine two timings of one network differ by several percent, and no predictor can be expected to
land within 1 % of one of them when a second timing of the same network does not. So this report
samples ``n`` cells of a space, measures them on one device **twice** (two full passes, one after
the other, each a resumable campaign in its own store), trains every family on the first pass by
the BRP-NAS protocol (``train_size`` / ``val_size`` / rest test, per seed), and scores on the same
test cells both each predictor and the second pass as if it were a predictor of the first: the
noise floor.

    python stages/measured_report.py --section report_nb101 --store data/report_nb101 --output report_nb101
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from leti import params, spaces
from leti.devices.config import DeviceConfig, device_from_params
from leti.measure import campaign
from leti.metrics import regression_metrics
from leti.predictors import evaluation
from leti.reports import plots
from leti.reports.tables import TABLE_METRICS, Run, fit_run, markdown_table, results_frame, test_frame
from leti.store import reader

NOISE = "second pass (noise floor)"


def pass_store(store: Path, index: int) -> Path:
    """The latency store of pass ``index`` (1-based): ``<store>/pass<index>/<device>/<space>/``."""
    return Path(store) / f"pass{index}"


def device_of(config: dict[str, Any], params_path: str | Path) -> DeviceConfig:
    """The device entry of ``config['device']`` measuring ``config['space']`` in ``config['network']``
    (``{}``: the benchmark's own network; absent: the pipeline's ``measure.networks`` setting)."""
    return device_from_params(config["device"], params_path, config["space"], config.get("network"))


def sample(config: dict[str, Any]) -> list[str]:
    return spaces.get(config["space"]).sample_valid(config["n"], config["seed"])


def measure(config: dict[str, Any], params_path: str | Path, store: Path, progress: bool = True,
            log: Callable[[str], None] = print) -> list[campaign.CampaignResult]:
    """Every pass over the sample, pass after pass; a stopped run resumes where it stopped."""
    archs, device = sample(config), device_of(config, params_path)
    results = []
    for index in range(1, config["passes"] + 1):
        options = {**campaign.options_from_params(params.load(params_path).get("measure") or {}),
                   **({"part_size": config["part_size"]} if "part_size" in config else {})}
        result = campaign.run_campaign(archs, device, pass_store(store, index), progress=progress, **options)
        log(f"pass {index}: {result.measured} measured, {result.skipped} already there, {result.failed} failed, "
            f"{result.seconds:.0f} s")
        results.append(result)
    return results


def pass_latencies(store: Path, device: DeviceConfig, archs: list[str], statistic: str, passes: int) -> pl.DataFrame:
    """One row per cell measured successfully in every pass: ``arch`` and ``pass1`` ... ``passN``
    (the statistic of each pass's latest row under the device's current configuration), sorted by arch."""
    policy = reader.ReadPolicy(statistic=statistic, configuration=device.config_id)
    frame = pl.DataFrame({"arch": sorted(set(archs))})
    for index in range(1, passes + 1):
        cells = reader.read_cells(pass_store(store, index), device.name, device.space.NAME, policy, archs)
        frame = frame.join(pl.DataFrame({"arch": cells.archs, f"pass{index}": cells.latency_ms}), on="arch", how="inner")
    return frame.sort("arch")


def pass_agreement(cells: pl.DataFrame) -> dict[str, float]:
    """How the second pass differs from the first over every cell: median and 90th percentile of
    the relative difference (percent) and the rank correlation."""
    first, second = cells["pass1"].to_numpy(), cells["pass2"].to_numpy()
    relative = 100 * np.abs(second - first) / first
    return {
        "cells": cells.height,
        "median_diff_pct": float(np.median(relative)),
        "p90_diff_pct": float(np.percentile(relative, 90)),
        "spearman": float(regression_metrics(first, second)["spearman"]),
    }


def runs_of_seed(cells: pl.DataFrame, config: dict[str, Any], device: str, seed: int, log: Callable[[str], None]) -> list[Run]:
    """The noise floor and every family on one split: train on the first pass, score on its test cells."""
    archs, first, second = cells["arch"].to_list(), cells["pass1"].to_numpy(), cells["pass2"].to_numpy()
    parts = evaluation.split(len(archs), config["train_size"], config["val_size"], seed)
    test_archs = [archs[i] for i in parts.test]
    runs = [Run(device, seed, NOISE, regression_metrics(first[parts.test], second[parts.test]), test_archs,
                first[parts.test], second[parts.test])]
    for family, settings in config["predictors"].items():
        run = fit_run(device, family, settings or {}, seed, archs, first, parts, supplied={"space": config["space"]})
        log(f"seed {seed} {family}: acc@10 {run.metrics['acc_10pct']:.1f} % in {run.fit_seconds:.0f} s")
        runs.append(run)
    return runs


def table(results: pl.DataFrame) -> str:
    """acc@1/5/10 (%) and Spearman per predictor, mean ± std over seeds, the noise floor in bold."""
    return markdown_table(results, ["predictor"], emphasise=NOISE)


def markdown(config: dict[str, Any], device: DeviceConfig, cells: pl.DataFrame, results: pl.DataFrame,
             agreement: dict[str, dict[str, float]], environment: str) -> str:
    statistic = config.get("statistic", "min_ms")
    network = ", ".join(f"{key} {value}" for key, value in vars(device.network).items())
    agree = "\n".join(
        f"| {name} | {a['cells']} | {a['median_diff_pct']:.2f} | {a['p90_diff_pct']:.2f} | {a['spearman']:.4f} |"
        for name, a in agreement.items()
    )
    first = cells["pass1"].to_numpy()
    return f"""# {config.get('title', f"{config['space']} cells measured on {device.name}")}

{cells.height} {config['space']} cells (uniform sample, seed {config['seed']}; all measured in both passes) on
`{device.name}` ({device.backend}, {device.protocol.threads} thread(s), batch {device.protocol.batch},
{device.protocol.warmup_runs} warm-up + {device.protocol.runs} timed runs per cell), network: {network}.
Latency statistic learned: `{statistic}` of each cell's timed runs; range {first.min():.2f}–{first.max():.2f} ms,
median {np.median(first):.2f} ms. Configuration `{device.config_id}`; host: {environment}.

Protocol (BRP-NAS): {config['train_size']} training and {config['val_size']} validation cells drawn by seed
from the first pass, every other cell is a test cell; seeds {config['seeds']}. **Noise floor**: the second pass,
measured after the whole first pass, scored as if it were a predictor of the first on the same test cells. A
predictor cannot be expected to agree with one timing of a network better than a second timing of it does.

## Predictors and the noise floor (test cells, mean ± std over seeds)

{table(results)}

Predictor settings: `{json.dumps(config['predictors'])}`

## The two passes over all cells

| statistic | cells | median difference % | 90th percentile % | Spearman |
|---|---|---|---|---|
{agree}

Files: `results.csv` (every seed and predictor), `summary.json`, `plots/predicted_vs_measured.png`,
`plots/error_cdf.png` (first seed). Reproduce: `python stages/measured_report.py --section <section>
--store <store> --output <folder>` (the measurement resumes where it stopped).
"""


def run_report(config: dict[str, Any], params_path: str | Path, store: Path, out: Path, progress: bool = True,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure (resuming), train and score, and write ``report.md``, ``results.csv``, ``summary.json``
    and plots to ``out``; returns the summary."""
    if config["passes"] < 2:
        raise ValueError("measured report: `passes` must be at least 2 (the second pass is the noise floor)")
    measure(config, params_path, store, progress, log)
    device = device_of(config, params_path)
    statistic = config.get("statistic", "min_ms")
    archs = sample(config)
    cells = pass_latencies(store, device, archs, statistic, config["passes"])
    runs = [run for seed in config["seeds"] for run in runs_of_seed(cells, config, device.name, seed, log)]
    results = results_frame(runs)
    agreement = {name: pass_agreement(pass_latencies(store, device, archs, name, 2)) for name in dict.fromkeys([statistic, "median_ms"])}
    out.mkdir(parents=True, exist_ok=True)
    results.write_csv(out / "results.csv")
    first_seed = [run for run in runs if run.seed == config["seeds"][0]]
    test = test_frame(first_seed)
    title = f"{config['space']}, {device.name}"
    plots.predicted_vs_measured(test, out / "plots" / "predicted_vs_measured.png", title)
    plots.error_cdf(test, out / "plots" / "error_cdf.png", f"relative error, {title}")
    rows = reader.device_rows(pass_store(store, 1), device.name, device.space.NAME)
    environment = json.loads(rows["environment"][0]) if rows.height else {}
    host = f"{environment.get('cpu_model', '?')}, governor {environment.get('governor')}, torch {environment.get('torch')}"
    (out / "report.md").write_text(markdown(config, device, cells, results, agreement, host))
    means = results.group_by("predictor", maintain_order=True).agg([pl.col(m).mean() for m in TABLE_METRICS])
    summary = {
        "cells": cells.height, "config_id": device.config_id, "statistic": statistic,
        "predictors": {row["predictor"]: {m: row[m] for m in TABLE_METRICS} for row in means.iter_rows(named=True)},
        "passes": agreement,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
