"""The BRP-NAS evaluation protocol: a seeded train / validation / test split, fit, time, score."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from leti.metrics import regression_metrics
from leti.predictors import Predictor


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
