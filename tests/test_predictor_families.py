"""Every predictor family: fit / predict / save / load on real published latencies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from leti import predictors
from leti.metrics import regression_metrics

SMALL_GCN = {"hidden": 64, "layers": 2, "batch_size": 8, "epochs": 30, "patience": 10, "lr": 2e-3}
FAMILY_PARAMS = {
    "linear": {},
    "xgboost": {"n_estimators": 60, "feature_set": "flat", "target": "log"},
    "layerwise": {},
    "flops": {},
    "gcn": SMALL_GCN,
    "ensemble": {"members": {"linear": {}, "gcn": {**SMALL_GCN, "epochs": 5}}},
    "auto": {"candidates": {"flops": {}, "layerwise": {}, "linear": {}}},
}


def test_every_family_is_covered() -> None:
    assert set(FAMILY_PARAMS) == set(predictors.FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILY_PARAMS))
def test_round_trip(family: str, help_cells, tmp_path: Path) -> None:
    archs, latency = help_cells
    predictor = predictors.make_predictor(family, **FAMILY_PARAMS[family])
    predictor.fit(archs[:150], latency[:150], archs[150:180], latency[150:180])
    predicted = predictor.predict(archs[180:])
    assert predicted.shape == (70,) and np.all(np.isfinite(predicted))
    loaded = predictors.load(predictor.save(tmp_path / family))
    np.testing.assert_allclose(loaded.predict(archs[180:]), predicted, rtol=1e-5)


def test_trained_gcn_beats_the_mean_on_held_out_cells(help_cells) -> None:
    archs, latency = help_cells
    gcn = predictors.make_predictor("gcn", **SMALL_GCN).fit(archs[:150], latency[:150], archs[150:180], latency[150:180])
    held_out = latency[180:]
    gcn_mape = regression_metrics(held_out, gcn.predict(archs[180:]))["mape"]
    mean_mape = 100 * np.mean(np.abs(latency[:150].mean() - held_out) / held_out)
    assert gcn_mape < 0.6 * mean_mape


def test_gcn_is_reproducible_with_a_seed(help_cells) -> None:
    archs, latency = help_cells
    params = {**SMALL_GCN, "epochs": 3}
    first = predictors.make_predictor("gcn", **params).fit(archs[:60], latency[:60]).predict(archs[200:])
    second = predictors.make_predictor("gcn", **params).fit(archs[:60], latency[:60]).predict(archs[200:])
    np.testing.assert_allclose(first, second, rtol=1e-6)


def test_auto_names_the_family_it_picked(help_cells) -> None:
    archs, latency = help_cells
    auto = predictors.make_predictor("auto", **FAMILY_PARAMS["auto"])
    auto.fit(archs[:150], latency[:150], archs[150:200], latency[150:200])
    assert auto.chosen in FAMILY_PARAMS["auto"]["candidates"]
    with pytest.raises(ValueError, match="validation"):
        predictors.make_predictor("auto").fit(archs[:10], latency[:10])


def test_layerwise_table_reproduces_its_predictions(help_cells) -> None:
    from leti.spaces import nb201

    archs, latency = help_cells
    model = predictors.make_predictor("layerwise").fit(archs, latency)
    table = model.op_table()
    by_hand = [table["fixed"] + sum(table[op] for op in nb201.parse(arch)) for arch in archs[:5]]
    np.testing.assert_allclose(model.predict(archs[:5]), by_hand)
