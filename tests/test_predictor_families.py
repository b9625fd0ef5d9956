"""Every predictor family: fit / predict / save / load on real published latencies."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from leti import predictors
from leti.metrics import regression_metrics

SMALL_GCN = {"hidden": 64, "layers": 2, "batch_size": 8, "epochs": 30, "patience": 10, "lr": 2e-3, "target": "log"}
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
def test_conformance(family: str, help_cells, tmp_path: Path) -> None:
    """scikit-learn's contract: __init__ stores hyperparameters, predict before fit fails clearly,
    fit returns self, and save/load reproduces the predictions."""
    archs, latency = help_cells
    cls = predictors.FAMILIES[family]
    predictor = predictors.make_predictor(family, **FAMILY_PARAMS[family])
    arguments = {name: arg.default for name, arg in inspect.signature(cls.__init__).parameters.items() if name != "self"}
    assert predictor.params == {**arguments, **FAMILY_PARAMS[family]}
    with pytest.raises(RuntimeError, match="not fitted"):
        predictor.predict(archs[:3])
    assert predictor.fit(archs[:150], latency[:150], archs[150:180], latency[150:180]) is predictor
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


def test_auto_picks_the_candidate_with_the_best_validation_score(help_cells) -> None:
    from leti.predictors.auto import validation_score

    archs, latency = help_cells
    fit_args = (archs[:150], latency[:150], archs[150:200], latency[150:200])
    candidates = FAMILY_PARAMS["auto"]["candidates"]
    scores = {
        family: validation_score(latency[150:200], predictors.make_predictor(family).fit(*fit_args).predict(archs[150:200]))
        for family in candidates
    }
    best = max(scores, key=scores.get)
    assert len({scores[f] for f in candidates}) == len(candidates)  # distinct scores: the choice is not a tie
    auto = predictors.make_predictor("auto", **FAMILY_PARAMS["auto"]).fit(*fit_args)
    assert auto.chosen == best
    np.testing.assert_allclose(auto.predict(archs[200:]), predictors.make_predictor(best).fit(*fit_args).predict(archs[200:]))
    with pytest.raises(ValueError, match="validation"):
        predictors.make_predictor("auto").fit(archs[:10], latency[:10])


def test_layerwise_table_reproduces_its_predictions(help_cells) -> None:
    from leti.spaces import nb201

    archs, latency = help_cells
    model = predictors.make_predictor("layerwise").fit(archs, latency)
    table = model.op_table()
    by_hand = [table["fixed"] + sum(table[op] for op in nb201.parse(arch)) for arch in archs[:5]]
    np.testing.assert_allclose(model.predict(archs[:5]), by_hand)
