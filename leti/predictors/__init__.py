"""Predictor families by name, each behind fit / predict / save / load."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from leti.predictors.auto import AutoPredictor
from leti.predictors.base import Predictor
from leti.predictors.ensemble import EnsemblePredictor
from leti.predictors.flops import FlopsPredictor
from leti.predictors.gcn import GCNPredictor
from leti.predictors.layerwise import LayerwisePredictor
from leti.predictors.linear import LinearPredictor
from leti.predictors.xgboost import XGBoostPredictor

FAMILIES: dict[str, type[Predictor]] = {
    cls.family: cls
    for cls in (
        LinearPredictor, XGBoostPredictor, GCNPredictor, LayerwisePredictor, FlopsPredictor, EnsemblePredictor, AutoPredictor
    )
}


def with_seed(family: str, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """``params`` with ``seed`` added when the family takes one and it is not set already."""
    if family in FAMILIES and "seed" in inspect.signature(FAMILIES[family].__init__).parameters:
        return {"seed": seed, **params}
    return dict(params)


def make_predictor(family: str, **params: Any) -> Predictor:
    try:
        cls = FAMILIES[family]
    except KeyError:
        raise KeyError(f"unknown predictor {family!r} (known: {', '.join(sorted(FAMILIES))})") from None
    return cls(**params)


def load(folder: str | Path) -> Predictor:
    """A predictor saved with :meth:`Predictor.save`."""
    folder = Path(folder)
    spec = json.loads((folder / "predictor.json").read_text())
    predictor = make_predictor(spec["family"], **spec["params"])
    predictor.load_state(folder)
    return predictor


__all__ = ["FAMILIES", "Predictor", "load", "make_predictor", "with_seed"]
