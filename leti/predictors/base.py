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


class Predictor(ABC):
    family: ClassVar[str]

    def __init__(self, **params: Any) -> None:
        self.params = params

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

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "predictor.json").write_text(
            json.dumps({"family": self.family, "params": self.params}, indent=2, sort_keys=True)
        )
        self.save_state(folder)
        return folder
