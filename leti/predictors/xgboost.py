"""Gradient-boosted trees (XGBoost) on flat features; ``target="log"`` fits log-latency."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xgboost as xgb

from leti import features
from leti.predictors.base import Predictor


class XGBoostPredictor(Predictor):
    family = "xgboost"

    def __init__(
        self,
        feature_set: str = "onehot",
        n_estimators: int = 600,
        max_depth: int = 6,
        learning_rate: float = 0.05,
        early_stopping_rounds: int = 50,
        seed: int = 0,
        target: str = "raw",
        space: str = "nb201",
    ) -> None:
        if target not in ("raw", "log"):
            raise ValueError(f"unknown xgboost target {target!r} (known: raw, log)")
        super().__init__(
            feature_set=feature_set,
            n_estimators=n_estimators,
            max_depth=max_depth,
            learning_rate=learning_rate,
            early_stopping_rounds=early_stopping_rounds,
            seed=seed,
            target=target,
            space=space,
        )
        self.model: xgb.XGBRegressor | None = None

    def _model(self, early_stopping: bool) -> xgb.XGBRegressor:
        p = self.params
        return xgb.XGBRegressor(
            n_estimators=p["n_estimators"],
            max_depth=p["max_depth"],
            learning_rate=p["learning_rate"],
            early_stopping_rounds=p["early_stopping_rounds"] if early_stopping else None,
            random_state=p["seed"],
            n_jobs=2,
        )

    def fit(self, archs, latency_ms, val_archs=(), val_latency_ms=None) -> XGBoostPredictor:
        x = features.matrix(archs, self.params["feature_set"], self.space)
        has_val = len(val_archs) > 0
        self.model = self._model(early_stopping=has_val)
        eval_set = [(features.matrix(val_archs, self.params["feature_set"], self.space), self._target(val_latency_ms))] if has_val else None
        self.model.fit(x, self._target(latency_ms), eval_set=eval_set, verbose=False)
        return self

    def predict(self, archs: Sequence[str]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("xgboost predictor is not fitted")
        y = self.model.predict(features.matrix(archs, self.params["feature_set"], self.space)).astype(np.float64)
        return np.exp(y) if self.params["target"] == "log" else y

    def _target(self, latency_ms: np.ndarray) -> np.ndarray:
        y = np.asarray(latency_ms, dtype=np.float64)
        return np.log(y) if self.params["target"] == "log" else y

    def save_state(self, folder: Path) -> None:
        self.model.save_model(folder / "model.json")

    def load_state(self, folder: Path) -> None:
        self.model = xgb.XGBRegressor()
        self.model.load_model(folder / "model.json")
