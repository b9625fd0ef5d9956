"""Layer-wise lookup: a network's latency is a fixed part plus the sum of its ops' latencies.

This is nn-Meter's and most hardware-aware NAS tools' model. The per-op latencies should come from
per-op measurements; until leti measures those, they are fitted by least squares on the op counts
of the training cells (``latency ≈ fixed + Σ_op count(op) · cost(op)``), which is the best lookup
table the training data allows. Every op of a cell runs whatever its neighbours are, ``none``
included (it multiplies by zero), so counts are the right regressors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from leti import features
from leti.predictors.base import Predictor
from leti.spaces import nb201


class LayerwisePredictor(Predictor):
    family = "layerwise"

    def __init__(self) -> None:
        super().__init__()
        self.costs_ms: np.ndarray | None = None  # fixed part, then one cost per op of nb201.OPS

    def _design(self, archs: Sequence[str]) -> np.ndarray:
        counts = features.matrix(archs, "counts").astype(np.float64)
        return np.hstack([np.ones((len(counts), 1)), counts])

    def fit(self, archs, latency_ms, val_archs=(), val_latency_ms=None) -> LayerwisePredictor:
        # The six counts always sum to 6, so the intercept and the op costs are collinear; lstsq's
        # minimum-norm solution picks one decomposition, predictions are the same for any.
        self.costs_ms, *_ = np.linalg.lstsq(self._design(archs), np.asarray(latency_ms, dtype=np.float64), rcond=None)
        return self

    def op_table(self) -> dict[str, float]:
        """The fitted lookup table: fixed part and per-op latency in ms."""
        if self.costs_ms is None:
            raise RuntimeError("layerwise predictor is not fitted")
        return {"fixed": float(self.costs_ms[0]), **{op: float(c) for op, c in zip(nb201.OPS, self.costs_ms[1:])}}

    def predict(self, archs: Sequence[str]) -> np.ndarray:
        if self.costs_ms is None:
            raise RuntimeError("layerwise predictor is not fitted")
        return self._design(archs) @ self.costs_ms

    def save_state(self, folder: Path) -> None:
        np.save(folder / "costs_ms.npy", self.costs_ms)

    def load_state(self, folder: Path) -> None:
        self.costs_ms = np.load(folder / "costs_ms.npy")
