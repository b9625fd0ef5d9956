"""Latency as a linear function of FLOPs: the proxy NAS papers use before any predictor."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from leti import spaces
from leti.predictors.base import Predictor


def mflops(archs: Sequence[str], space: str = spaces.DEFAULT) -> np.ndarray:
    """MFLOPs of each arch's network as the benchmark defines it."""
    flops_params = spaces.get(space).flops_params
    return np.array([flops_params(arch)[0] / 1e6 for arch in archs], dtype=np.float64)


class FlopsPredictor(Predictor):
    family = "flops"

    def __init__(self, space: str = "nb201") -> None:
        super().__init__(space=space)
        self.coef: np.ndarray | None = None  # (intercept ms, ms per MFLOP)

    def feature_schema(self) -> dict:
        return {"input": "arch", "features": ["mflops"]}

    def fit(self, archs, latency_ms, val_archs=(), val_latency_ms=None) -> FlopsPredictor:
        x = np.column_stack([np.ones(len(archs)), mflops(archs, self.space)])
        self.coef, *_ = np.linalg.lstsq(x, np.asarray(latency_ms, dtype=np.float64), rcond=None)
        return self

    def predict(self, archs: Sequence[str]) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError("flops predictor is not fitted")
        return self.coef[0] + self.coef[1] * mflops(archs, self.space)

    def save_state(self, folder: Path) -> None:
        np.save(folder / "coef.npy", self.coef)

    def load_state(self, folder: Path) -> None:
        self.coef = np.load(folder / "coef.npy")
