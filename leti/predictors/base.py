"""The predictor interface: every family fits on arch strings and measured latencies.

A family featurizes cells itself (features are pure functions of the arch string), so a saved
predictor can be loaded anywhere and asked about any cell, with no feature table beside it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


FLOOR_SHARE = 0.5
"""Lines fitted on few cells (a raw linear target, per-op costs fitted on op counts) can cross zero for
a cell unlike the training cells; no latency does, so their predictions are held at this share of the
fastest training cell's latency."""


def latency_floor(latency_ms: Sequence[float] | np.ndarray) -> float:
    """The least latency a fitted line may predict (:data:`FLOOR_SHARE` of the fastest training cell)."""
    return FLOOR_SHARE * float(np.min(latency_ms))


class Predictor(ABC):
    family: ClassVar[str]

    def __init__(self, **params: Any) -> None:
        self.params = params

    @property
    def space(self) -> str:
        """The search space whose arch strings the predictor reads (saved predictors from before
        spaces were a parameter read NAS-Bench-201's)."""
        return self.params.get("space", "nb201")

    @property
    def chosen(self) -> str:
        """The family that makes the predictions (``auto`` names the one it picked)."""
        return self.family

    @abstractmethod
    def fit(
        self,
        archs: Sequence[str],
        latency_ms: np.ndarray,
        val_archs: Sequence[str] = (),
        val_latency_ms: np.ndarray | None = None,
    ) -> Predictor:
        """Learn from measured cells; the validation cells are for early stopping and selection."""

    @abstractmethod
    def predict(self, archs: Sequence[str]) -> np.ndarray:
        """Predicted latency in milliseconds, one per arch."""

    @abstractmethod
    def save_state(self, folder: Path) -> None:
        """Write the fitted state into ``folder``."""

    @abstractmethod
    def load_state(self, folder: Path) -> None:
        """Read the fitted state written by :meth:`save_state`."""

    def feature_schema(self) -> dict[str, Any]:
        """What the family computes from an arch string before predicting, recorded when saved.

        The default covers families with a ``feature_set`` parameter; others override it.
        """
        from leti import features

        feature_set = self.params.get("feature_set")
        if feature_set is None:
            return {"input": "arch"}
        return {"input": "arch", "feature_set": feature_set, "features": features.names(feature_set, self.space)}

    def save(self, folder: str | Path, space: str | None = None, statistic: str | None = None) -> Path:
        """Write ``predictor.json`` and the fitted state into ``folder``.

        ``predictor.json`` records what the predictor answers: the search space its arch strings
        belong to, the latency statistic it learned (``min_ms``, ``median_ms``, ...), and its feature
        schema, so a loaded predictor can be checked against the question asked of it.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "family": self.family,
            "params": self.params,
            "space": space,
            "statistic": statistic,
            "feature_schema": self.feature_schema(),
        }
        (folder / "predictor.json").write_text(json.dumps(record, indent=2, sort_keys=True))
        self.save_state(folder)
        return folder
