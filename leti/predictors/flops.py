"""Latency as a linear function of FLOPs: the proxy NAS papers use before any predictor."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from leti.features import costs
from leti.predictors.base import Predictor


def mflops(archs: Sequence[str]) -> np.ndarray:
    return np.array([costs.network_cost(arch).flops / 1e6 for arch in archs], dtype=np.float64)


class FlopsPredictor(Predictor):
    family = "flops"

    def __init__(self) -> None:
        super().__init__()
        self.coef: np.ndarray | None = None  # (intercept ms, ms per MFLOP)

    def feature_schema(self) -> dict:
        return {"input": "arch", "features": ["mflops"]}

    def fit(self, archs, latency_ms, val_archs=(), val_latency_ms=None) -> FlopsPredictor:
        x = np.column_stack([np.ones(len(archs)), mflops(archs)])
        self.coef, *_ = np.linalg.lstsq(x, np.asarray(latency_ms, dtype=np.float64), rcond=None)
        return self

    def predict(self, archs: Sequence[str]) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError("flops predictor is not fitted")
        return self.coef[0] + self.coef[1] * mflops(archs)

    def save_state(self, folder: Path) -> None:
        np.save(folder / "coef.npy", self.coef)

    def load_state(self, folder: Path) -> None:
        self.coef = np.load(folder / "coef.npy")
