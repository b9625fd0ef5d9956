"""BRP-NAS evaluation metrics of a latency predictor."""

from __future__ import annotations

import numpy as np
from scipy import stats


def accuracy_within(measured: np.ndarray, predicted: np.ndarray, tolerance: float) -> float:
    """Percent of cells with |predicted - measured| / measured <= tolerance (BRP-NAS's acc@k)."""
    relative = np.abs(predicted - measured) / measured
    return float(100.0 * np.mean(relative <= tolerance))


def regression_metrics(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """acc@1/5/10 % (in percent), RMSE in ms, MAPE (in percent), Spearman and Kendall."""
    measured = np.asarray(measured, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    if measured.shape != predicted.shape or measured.size < 2:
        raise ValueError(f"need two equal-length arrays of >= 2 values, got {measured.shape} and {predicted.shape}")
    if np.any(measured <= 0):
        raise ValueError("measured latencies must be positive")
    return {
        "acc_1pct": accuracy_within(measured, predicted, 0.01),
        "acc_5pct": accuracy_within(measured, predicted, 0.05),
        "acc_10pct": accuracy_within(measured, predicted, 0.10),
        "rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))),
        "mape": float(100.0 * np.mean(np.abs(predicted - measured) / measured)),
        "spearman": float(stats.spearmanr(measured, predicted).statistic),
        "kendall": float(stats.kendalltau(measured, predicted).statistic),
    }
