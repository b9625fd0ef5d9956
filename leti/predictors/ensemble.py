"""An ensemble: member predictors averaged with weights fitted on the validation cells.

Members err in different ways (the GCN sees structure, the linear model is exact on additive op
costs, trees capture interactions), so a weighted mean beats each member when its errors are not
shared. Weights are non-negative least squares on the validation predictions, normalised to sum to
one; without validation cells the members are averaged equally.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from leti.predictors.base import Predictor

DEFAULT_MEMBERS: dict[str, dict[str, Any]] = {
    "gcn": {},
    "linear": {},
    "xgboost": {"feature_set": "flat", "target": "log"},
}


def member_weights(val_predictions: np.ndarray, val_latency_ms: np.ndarray) -> np.ndarray:
    """NNLS weights (columns = members) normalised to sum to one; equal weights if all vanish."""
    weights, _ = nnls(val_predictions, val_latency_ms)
    if weights.sum() <= 0:
        return np.full(val_predictions.shape[1], 1.0 / val_predictions.shape[1])
    return weights / weights.sum()


class EnsemblePredictor(Predictor):
    family = "ensemble"

    def __init__(self, members: dict[str, dict[str, Any]] | None = None, seed: int = 0) -> None:
        super().__init__(members=members, seed=seed)
        self.members: dict[str, Predictor] = {}
        self.weights: np.ndarray | None = None

    def _make_members(self) -> dict[str, Predictor]:
        from leti.predictors import make_predictor, with_seed

        members = self.params["members"] or DEFAULT_MEMBERS
        return {family: make_predictor(family, **with_seed(family, params, self.params["seed"])) for family, params in members.items()}

    def fit(self, archs, latency_ms, val_archs=(), val_latency_ms=None) -> EnsemblePredictor:
        self.members = self._make_members()
        for member in self.members.values():
            member.fit(archs, latency_ms, val_archs, val_latency_ms)
        if len(val_archs):
            columns = np.column_stack([m.predict(val_archs) for m in self.members.values()])
            self.weights = member_weights(columns, np.asarray(val_latency_ms, dtype=np.float64))
        else:
            self.weights = np.full(len(self.members), 1.0 / len(self.members))
        return self

    def predict(self, archs: Sequence[str]) -> np.ndarray:
        if self.weights is None:
            raise RuntimeError("ensemble predictor is not fitted")
        return np.column_stack([m.predict(archs) for m in self.members.values()]) @ self.weights

    def feature_schema(self) -> dict:
        members = self.members or self._make_members()
        return {"input": "arch", "members": {family: member.feature_schema() for family, member in members.items()}}

    def save_state(self, folder: Path) -> None:
        for family, member in self.members.items():
            member.save(folder / family)
        (folder / "weights.json").write_text(json.dumps(dict(zip(self.members, self.weights.tolist()))))

    def load_state(self, folder: Path) -> None:
        from leti.predictors import load

        weights = json.loads((folder / "weights.json").read_text())
        self.members = {family: load(folder / family) for family in weights}
        self.weights = np.array(list(weights.values()))
