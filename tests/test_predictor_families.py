"""Predictor families on real published latencies (the contract every family follows, on synthetic
cells that every clone has, is tests/test_predictor_conformance.py)."""

from __future__ import annotations

import numpy as np

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


def test_trained_gcn_beats_the_mean_on_held_out_cells(help_cells) -> None:
    archs, latency = help_cells
    gcn = predictors.make_predictor("gcn", **SMALL_GCN).fit(archs[:150], latency[:150], archs[150:180], latency[150:180])
    held_out = latency[180:]
    gcn_mape = regression_metrics(held_out, gcn.predict(archs[180:]))["mape"]
    mean_mape = 100 * np.mean(np.abs(latency[:150].mean() - held_out) / held_out)
    assert gcn_mape < 0.6 * mean_mape


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

