"""Predictor families by name, each behind fit / predict / save / load."""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from leti.predictors.base import Predictor

FAMILY_CLASSES = {
    "linear": "leti.predictors.linear:LinearPredictor",
    "xgboost": "leti.predictors.xgboost:XGBoostPredictor",
    "gcn": "leti.predictors.gcn:GCNPredictor",
    "layerwise": "leti.predictors.layerwise:LayerwisePredictor",
    "flops": "leti.predictors.flops:FlopsPredictor",
    "ensemble": "leti.predictors.ensemble:EnsemblePredictor",
    "auto": "leti.predictors.auto:AutoPredictor",
    "transfer": "leti.predictors.transfer:TransferPredictor",
}


class Families(Mapping[str, type[Predictor]]):
    """Family name -> predictor class, importing a family's module when it is first asked for.

    Loading one saved model (``leti predict``, a served model) then imports that family's libraries
    only, not torch, DGL and XGBoost together.
    """

    def __getitem__(self, family: str) -> type[Predictor]:
        module, _, name = FAMILY_CLASSES[family].partition(":")
        return getattr(importlib.import_module(module), name)

    def __iter__(self) -> Iterator[str]:
        return iter(FAMILY_CLASSES)

    def __len__(self) -> int:
        return len(FAMILY_CLASSES)


FAMILIES = Families()


def with_defaults(family: str, params: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``params`` completed by the ``defaults`` the family's constructor takes (``params`` win).

    A stage knows things a family may need (the seed, the op-latency table of the device, the
    statistic it learns); each family gets those it has a parameter for.
    """
    if family not in FAMILIES:
        return dict(params)
    accepted = inspect.signature(FAMILIES[family].__init__).parameters
    return {**{key: value for key, value in defaults.items() if key in accepted}, **params}


def make_predictor(family: str, **params: Any) -> Predictor:
    try:
        cls = FAMILIES[family]
    except KeyError:
        raise KeyError(f"unknown predictor {family!r} (known: {', '.join(sorted(FAMILIES))})") from None
    return cls(**params)


def describe(folder: str | Path) -> dict[str, Any]:
    """The record :meth:`Predictor.save` wrote: family, params, space, statistic, feature schema."""
    return json.loads((Path(folder) / "predictor.json").read_text())


def load(folder: str | Path) -> Predictor:
    """A predictor saved with :meth:`Predictor.save`."""
    folder = Path(folder)
    spec = describe(folder)
    predictor = make_predictor(spec["family"], **spec["params"])
    predictor.load_state(folder)
    return predictor


__all__ = ["FAMILIES", "Predictor", "describe", "load", "make_predictor", "with_defaults"]
