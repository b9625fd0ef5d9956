"""``auto``: fit every candidate family and keep the one with the best validation score.

The score is acc@10 on the validation cells, ties broken by lower MAPE, so the choice follows the
metric the protocol reports. Without validation cells the choice would be blind; ``fit`` refuses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leti.metrics import regression_metrics
from leti.predictors.base import Predictor

DEFAULT_CANDIDATES: dict[str, dict[str, Any]] = {
    "linear": {},
    "layerwise": {},
    "flops": {},
    "xgboost": {"feature_set": "flat", "target": "log"},
    "gcn": {},
    "ensemble": {},
}


def validation_score(val_latency_ms: np.ndarray, val_predicted: np.ndarray) -> tuple[float, float]:
    """Sort key, larger is better: (acc@10 %, -MAPE)."""
    metrics = regression_metrics(np.asarray(val_latency_ms, dtype=float), np.asarray(val_predicted, dtype=float))
    return metrics["acc_10pct"], -metrics["mape"]


def pick(val_latency_ms: np.ndarray, val_predictions: dict[str, np.ndarray]) -> str:
    """The candidate whose validation predictions score best (first one on a tie)."""
    return max(val_predictions, key=lambda name: validation_score(val_latency_ms, val_predictions[name]))


class AutoPredictor(Predictor):
    family = "auto"

    def __init__(self, candidates: dict[str, dict[str, Any]] | None = None, seed: int = 0) -> None:
        super().__init__(candidates=candidates, seed=seed)
        self.best: Predictor | None = None

    @property
    def chosen(self) -> str:
        return self.best.family if self.best is not None else self.family

    def fit(self, archs, latency_ms, val_archs=(), val_latency_ms=None) -> AutoPredictor:
        from leti.predictors import make_predictor, with_seed

        if not len(val_archs):
            raise ValueError("auto predictor needs validation cells to choose a family (--val-size > 0)")
        fitted, val_predictions = {}, {}
        for family, params in (self.params["candidates"] or DEFAULT_CANDIDATES).items():
            predictor = make_predictor(family, **with_seed(family, params, self.params["seed"]))
            fitted[family] = predictor.fit(archs, latency_ms, val_archs, val_latency_ms)
            val_predictions[family] = predictor.predict(val_archs)
        self.best = fitted[pick(val_latency_ms, val_predictions)]
        return self

    def predict(self, archs: Sequence[str]) -> np.ndarray:
        if self.best is None:
            raise RuntimeError("auto predictor is not fitted")
        return self.best.predict(archs)

    def feature_schema(self) -> dict:
        return self.best.feature_schema() if self.best is not None else {"input": "arch"}

    def save_state(self, folder: Path) -> None:
        self.best.save(folder / "best")
        (folder / "auto.json").write_text(json.dumps({"chosen": self.best.family}))

    def load_state(self, folder: Path) -> None:
        from leti.predictors import load

        self.best = load(folder / "best")
