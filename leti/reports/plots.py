"""The plots latency-prediction papers show: predicted vs measured, and the CDF of relative error."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402


def predicted_vs_measured(predictions: pl.DataFrame, path: Path, title: str = "") -> Path:
    """One scatter per predictor with the y = x line and the ±10 % band."""
    families = predictions["predictor"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 4), squeeze=False)
    for ax, family in zip(axes[0], families):
        rows = predictions.filter(pl.col("predictor") == family)
        measured, predicted = rows["measured_ms"].to_numpy(), rows["predicted_ms"].to_numpy()
        low, high = float(min(measured.min(), predicted.min())), float(max(measured.max(), predicted.max()))
        line = np.linspace(low, high, 2)
        ax.fill_between(line, line * 0.9, line * 1.1, color="tab:green", alpha=0.15, label="±10 %")
        ax.plot(line, line, color="black", lw=0.8)
        ax.scatter(measured, predicted, s=5, alpha=0.6)
        ax.set(title=f"{family} {title}".strip(), xlabel="measured latency (ms)", ylabel="predicted latency (ms)")
        ax.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def error_cdf(predictions: pl.DataFrame, path: Path, title: str = "") -> Path:
    """Share of cells (y) whose relative error is at most x, one line per predictor."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for family in predictions["predictor"].unique(maintain_order=True).to_list():
        rows = predictions.filter(pl.col("predictor") == family)
        error = np.sort(
            100 * np.abs(rows["predicted_ms"].to_numpy() - rows["measured_ms"].to_numpy()) / rows["measured_ms"].to_numpy()
        )
        ax.plot(error, 100 * np.arange(1, len(error) + 1) / len(error), label=family)
    for k in (1, 5, 10):
        ax.axvline(k, color="grey", lw=0.6, ls="--")
    ax.set(xscale="symlog", xlabel="relative error (%)", ylabel="cells within error (%)", title=title or "error CDF")
    ax.set_xlim(left=0)  # errors are never negative; symlog would otherwise show a -1 tick
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sample_rows(predictions: pl.DataFrame, per_predictor: int, seed: int = 0) -> pl.DataFrame:
    """At most ``per_predictor`` rows of each predictor, the same cells for every predictor (a seeded
    choice of archs), for the CSVs DVC plots read: a cloud of a few hundred points shows the fit as
    well as every test cell does, and keeps the committed file small."""
    archs = predictions["arch"].unique().sort()
    if archs.len() > per_predictor:
        archs = archs.sample(per_predictor, seed=seed)
    return predictions.filter(pl.col("arch").is_in(archs.to_list()))
