"""Linear regression on the space's one-hot cell encoding (the simplest learned baseline).

``target="log"`` fits log-latency instead: a multiplicative model whose squared error weighs
relative errors, which is what acc@k scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from leti import features
from leti.predictors.base import Predictor, latency_floor


class LinearPredictor(Predictor):
    family = "linear"

    def __init__(self, feature_set: str = "onehot", ridge: float = 1e-6, target: str = "raw", space: str = "nb201") -> None:
        if target not in ("raw", "log"):
            raise ValueError(f"unknown linear target {target!r} (known: raw, log)")
        super().__init__(feature_set=feature_set, ridge=ridge, target=target, space=space)
        self.coef: np.ndarray | None = None
        self.floor_ms: float | None = None

    def _design(self, archs: Sequence[str]) -> np.ndarray:
        x = features.matrix(archs, self.params["feature_set"], self.space).astype(np.float64)
        return np.hstack([x, np.ones((len(x), 1))])

    def fit(self, archs, latency_ms, val_archs=(), val_latency_ms=None) -> LinearPredictor:
        x = self._design(archs)
        # A tiny ridge keeps the one-hot design (collinear with the intercept) well posed.
        gram = x.T @ x + self.params["ridge"] * np.eye(x.shape[1])
        y = np.asarray(latency_ms, dtype=np.float64)
        y = np.log(y) if self.params["target"] == "log" else y
        self.coef = np.linalg.solve(gram, x.T @ y)
        self.floor_ms = latency_floor(latency_ms)
        return self

    def predict(self, archs: Sequence[str]) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError("linear predictor is not fitted")
        y = self._design(archs) @ self.coef
        return np.exp(y) if self.params["target"] == "log" else np.maximum(y, self.floor_ms)

    def save_state(self, folder: Path) -> None:
        np.save(folder / "coef.npy", self.coef)
        np.save(folder / "floor_ms.npy", np.array(self.floor_ms))

    def load_state(self, folder: Path) -> None:
        self.coef = np.load(folder / "coef.npy")
        self.floor_ms = float(np.load(folder / "floor_ms.npy"))
