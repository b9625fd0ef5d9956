"""What every report shares: a fitted run, the frame of all runs, and the mean ± std table over seeds."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from leti import predictors
from leti.predictors import evaluation

TABLE_METRICS = ("acc_1pct", "acc_5pct", "acc_10pct", "spearman")
SCORES = ("acc_1pct", "acc_5pct", "acc_10pct", "rmse_ms", "mape", "spearman", "kendall")
"""The metrics of ``leti.metrics.regression_metrics`` that a run keeps."""


@dataclass
class Run:
    """One predictor scored on one device and split: its test (and validation) predictions and metrics."""

    device: str
    seed: int
    predictor: str
    metrics: dict[str, float]
    test_archs: list[str]
    measured: np.ndarray  # the test cells' measured latency
    test: np.ndarray  # the predictor's test predictions, aligned with ``test_archs``
    val: np.ndarray | None = None
    fit_seconds: float | None = None
    predict_test_seconds: float | None = None
    predict_all_seconds: float | None = None  # every cell of the space (15625 for NB201)
    study: str = "main"  # main | ablation | train_size | batch_size
    setting: str = ""  # the varied value of a study; "" for the main table
    chosen: str = ""  # the family that made the predictions (``auto`` names its pick)


def fit_run(
    device: str, family: str, params: dict[str, Any], seed: int, archs: Sequence[str], latency_ms: np.ndarray,
    parts: evaluation.Split, every_cell: Sequence[str] = (), name: str | None = None, study: str = "main", setting: str = "",
    supplied: dict[str, Any] | None = None,
) -> Run:
    """Fit one family by the evaluation protocol; also time predicting ``every_cell`` (a whole space).

    ``supplied`` (the space, say) reaches the families whose constructor takes it; ``params`` win."""
    predictor = predictors.make_predictor(family, **predictors.with_defaults(family, params, {"seed": seed, **(supplied or {})}))
    result = evaluation.evaluate(predictor, archs, latency_ms, parts)
    predict_all = None
    if every_cell:
        start = time.perf_counter()
        predictor.predict(list(every_cell))
        predict_all = time.perf_counter() - start
    return Run(
        device, seed, name or family, {k: float(v) for k, v in result.metrics.items() if k in SCORES},
        [archs[i] for i in parts.test], np.asarray(latency_ms)[parts.test], result.predicted["test"], result.predicted["val"],
        float(result.metrics["fit_seconds"]), float(result.metrics["predict_seconds"]), predict_all, study, setting,
        str(result.metrics["predictor"]),
    )


def results_frame(runs: Sequence[Run]) -> pl.DataFrame:
    """One row per run: its identity, timings, test size and metrics (the reports' ``results.csv``)."""
    return pl.DataFrame([
        {
            "device": r.device, "seed": r.seed, "study": r.study, "setting": r.setting, "predictor": r.predictor,
            "chosen": r.chosen or r.predictor, "fit_seconds": r.fit_seconds, "predict_all_seconds": r.predict_all_seconds,
            "predict_test_seconds": r.predict_test_seconds, "n_test": len(r.test), **r.metrics,
        }
        for r in runs
    ])


def test_frame(runs: Sequence[Run]) -> pl.DataFrame:
    """Every run's test cells: arch, predictor, measured and predicted latency (what the plots draw)."""
    return pl.concat([
        pl.DataFrame({"arch": r.test_archs, "predictor": r.predictor, "measured_ms": r.measured, "predicted_ms": r.test})
        for r in runs
    ])


def mean_std(frame: pl.DataFrame, keys: Sequence[str], metrics: Sequence[str] = TABLE_METRICS) -> pl.DataFrame:
    """Mean and (population) std over seeds of each metric, grouped by ``keys``; ``seeds`` counts the rows."""
    aggregations = [pl.len().alias("seeds")]
    for metric in metrics:
        aggregations += [pl.col(metric).mean().alias(metric), pl.col(metric).std(ddof=0).fill_null(0).alias(f"{metric}_std")]
    return frame.group_by(keys, maintain_order=True).agg(aggregations)


METRIC_HEADERS = {"acc_1pct": "acc@1 %", "acc_5pct": "acc@5 %", "acc_10pct": "acc@10 %", "spearman": "Spearman", "fit_seconds": "fit s"}


def mean_std_cell(row: dict[str, Any], metric: str) -> str:
    digits = 3 if metric == "spearman" else 1
    return f"{row[metric]:.{digits}f} ± {row[metric + '_std']:.{digits}f}"


def markdown_table(
    frame: pl.DataFrame, keys: Sequence[str], metrics: Sequence[str] = TABLE_METRICS, headers: Sequence[str] | None = None,
    emphasise: str | None = None,
) -> str:
    """A Markdown table of ``mean_std(frame, keys, metrics)``: the keys, the seed count, then each metric
    as mean ± std; a row whose last key equals ``emphasise`` is set in bold."""
    table = mean_std(frame, keys, metrics)
    lines = ["| " + " | ".join([*(headers or keys), "seeds", *(METRIC_HEADERS.get(m, m) for m in metrics)]) + " |",
             "|" + "---|" * (len(keys) + 1 + len(metrics))]
    for row in table.iter_rows(named=True):
        labels = [str(row[key]) for key in keys]
        if emphasise is not None and labels[-1] == emphasise:
            labels[-1] = f"**{labels[-1]}**"
        lines.append("| " + " | ".join([*labels, str(row["seeds"]), *(mean_std_cell(row, m) for m in metrics)]) + " |")
    return "\n".join(lines)
