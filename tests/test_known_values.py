"""Metrics, the evaluation split, the ensemble's weights and auto's choice on hand-computed cases.

Every expected value here is worked out by hand in the comment beside it, not taken from the code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from leti.metrics import accuracy_within, regression_metrics
from leti.predictors.auto import pick, validation_score
from leti.predictors.ensemble import member_weights
from leti.predictors.evaluation import split

# --- leti.metrics ------------------------------------------------------------------------------------

# Relative errors 0.5 %, 4 %, 9 % and 20 %, on latencies in increasing order (ranks kept).
MEASURED = np.array([10.0, 20.0, 40.0, 80.0])
PREDICTED = np.array([10.05, 20.8, 43.6, 96.0])


def test_regression_metrics_by_hand() -> None:
    metrics = regression_metrics(MEASURED, PREDICTED)
    assert metrics["acc_1pct"] == 25.0  # only the 0.5 % error is within 1 %
    assert metrics["acc_5pct"] == 50.0  # 0.5 % and 4 %
    assert metrics["acc_10pct"] == 75.0  # 0.5 %, 4 % and 9 %
    # RMSE: errors 0.05, 0.8, 3.6, 16 -> sqrt((0.0025 + 0.64 + 12.96 + 256) / 4) = sqrt(67.400625)
    assert metrics["rmse_ms"] == pytest.approx(8.209788, rel=1e-6)
    assert metrics["mape"] == pytest.approx((0.5 + 4 + 9 + 20) / 4)  # 8.375 %
    assert metrics["spearman"] == pytest.approx(1.0)  # the order is kept
    assert metrics["kendall"] == pytest.approx(1.0)
    assert set(metrics) == {"acc_1pct", "acc_5pct", "acc_10pct", "rmse_ms", "mape", "spearman", "kendall"}


def test_regression_metrics_on_constant_measurements() -> None:
    # The brief's example: measured 10 ms four times, errors 0.5 %, 4 %, 9 %, 20 %.
    with pytest.warns(Warning):  # rank correlations are undefined on a constant input (scipy warns)
        metrics = regression_metrics(np.full(4, 10.0), np.array([10.05, 10.4, 10.9, 12.0]))
    assert (metrics["acc_1pct"], metrics["acc_5pct"], metrics["acc_10pct"]) == (25.0, 50.0, 75.0)
    # sqrt((0.05² + 0.4² + 0.9² + 2²) / 4) = sqrt(4.9725 / 4)
    assert metrics["rmse_ms"] == pytest.approx(math.sqrt(4.9725 / 4))
    assert metrics["mape"] == pytest.approx(8.375)
    assert math.isnan(metrics["spearman"]) and math.isnan(metrics["kendall"])


def test_rank_correlations_of_a_known_permutation() -> None:
    # Ranks 1..5 predicted as 2 1 3 5 4: rank differences ±1 on four cells, sum of squares 4, so
    # Spearman = 1 - 6·4 / (5·(25 - 1)) = 0.8; 2 of the 10 pairs are swapped, so Kendall = (8 - 2) / 10.
    metrics = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([2.0, 1.0, 3.0, 5.0, 4.0]))
    assert metrics["spearman"] == pytest.approx(0.8)
    assert metrics["kendall"] == pytest.approx(0.6)


def test_accuracy_within_counts_an_error_of_exactly_the_tolerance() -> None:
    # |11 - 10| / 10 and |9 - 10| / 10 are exactly 0.1 in floating point: both count at 10 % (<=).
    assert accuracy_within(np.array([10.0, 10.0]), np.array([11.0, 9.0]), 0.10) == 100.0
    assert accuracy_within(np.array([100.0, 100.0]), np.array([101.0, 99.0]), 0.01) == 100.0
    # Just over the tolerance does not count.
    assert accuracy_within(np.array([10.0, 10.0]), np.array([11.0001, 10.0]), 0.10) == 50.0
    assert accuracy_within(np.array([10.0, 20.0]), np.array([10.0, 20.0]), 0.0) == 100.0


@pytest.mark.parametrize(
    ("measured", "predicted", "message"),
    [
        ([10.0, 20.0], [10.0, 20.0, 30.0], "equal-length"),
        ([10.0], [10.0], ">= 2 values"),
        ([10.0, 0.0], [10.0, 1.0], "positive"),
        ([10.0, -2.0], [10.0, 1.0], "positive"),
    ],
)
def test_regression_metrics_rejects_bad_input(measured, predicted, message) -> None:
    with pytest.raises(ValueError, match=message):
        regression_metrics(np.array(measured), np.array(predicted))


# --- leti.predictors.evaluation.split ----------------------------------------------------------------


def test_split_parts_are_disjoint_cover_every_index_and_have_the_asked_sizes() -> None:
    parts = split(100, 60, 15, seed=3)
    assert (len(parts.train), len(parts.val), len(parts.test)) == (60, 15, 25)
    every = np.concatenate([parts.train, parts.val, parts.test])
    assert sorted(every.tolist()) == list(range(100))  # a partition: each index exactly once
    assert not set(parts.train) & set(parts.val) and not set(parts.val) & set(parts.test)
    assert not set(parts.train) & set(parts.test)


def test_split_is_deterministic_per_seed_and_differs_between_seeds() -> None:
    first, again, other = split(100, 60, 15, seed=3), split(100, 60, 15, seed=3), split(100, 60, 15, seed=4)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert set(first.train.tolist()) != set(other.train.tolist())
    assert set(first.test.tolist()) != set(other.test.tolist())


def test_split_keeps_at_least_one_test_cell() -> None:
    assert len(split(10, 6, 3, seed=0).test) == 1
    assert len(split(10, 9, 0, seed=0).val) == 0
    for train, val in ((6, 4), (8, 5), (10, 0)):  # nothing left, or more than there is
        with pytest.raises(ValueError, match="leave no test cell"):
            split(10, train, val, seed=0)


# --- leti.predictors.ensemble.member_weights ---------------------------------------------------------

A = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
B = np.array([2.0, 1.0, 4.0, 3.0, 7.0])
USELESS = np.array([5.0, 1.0, 1.0, 5.0, 1.0])


def test_weights_recover_an_exact_mixture() -> None:
    # The target is 0.25·a + 0.75·b exactly, a and b independent: NNLS gives (0.25, 0.75), already summing to 1.
    np.testing.assert_allclose(member_weights(np.column_stack([A, B]), 0.25 * A + 0.75 * B), [0.25, 0.75], atol=1e-12)


def test_weights_are_normalised_and_a_useless_member_gets_zero() -> None:
    # 0.5·a + 1.5·b is matched exactly with the third member at 0; normalised (0.5, 1.5, 0) / 2.
    target = 0.5 * A + 1.5 * B
    np.testing.assert_allclose(member_weights(np.column_stack([A, B, USELESS]), target), [0.25, 0.75, 0.0], atol=1e-12)
    # Unconstrained least squares would fit 2·a - 0.5·b exactly with b at -0.5; NNLS clips b to 0
    # (b·residual = 0.5727·63 - 0.5·79 < 0 at a's best weight 78.5 / 55, so 0 is optimal for b).
    np.testing.assert_allclose(member_weights(np.column_stack([A, B]), 2 * A - 0.5 * B), [1.0, 0.0], atol=1e-12)


def test_all_zero_nnls_weights_fall_back_to_equal_weights() -> None:
    # Every member anti-correlated with the target (A^T y < 0): NNLS's best is all zeros.
    columns = np.column_stack([-A, -B, -USELESS])
    np.testing.assert_array_equal(member_weights(columns, A), np.full(3, 1 / 3))
    # A zero target: the same fallback.
    np.testing.assert_array_equal(member_weights(np.column_stack([A, B]), np.zeros(5)), [0.5, 0.5])


# --- leti.predictors.auto.pick -----------------------------------------------------------------------

VAL = np.array([10.0, 20.0, 30.0, 40.0])


def test_validation_score_is_acc10_then_minus_mape() -> None:
    # Errors 0 %, 5 %, 0 %, 20 %: acc@10 75 %, MAPE 25 / 4.
    assert validation_score(VAL, np.array([10.0, 21.0, 30.0, 48.0])) == pytest.approx((75.0, -6.25))


def test_pick_takes_the_best_acc10() -> None:
    candidates = {
        "flops": VAL * 1.2,  # every cell 20 % off: acc@10 0
        "linear": VAL * np.array([1.0, 1.0, 1.0, 1.11]),  # one cell 11 % off: acc@10 75, MAPE 2.75
        "gcn": VAL * np.array([1.08, 0.92, 1.08, 0.92]),  # every cell 8 % off: acc@10 100, MAPE 8
    }
    assert pick(VAL, candidates) == "gcn"  # acc@10 decides first, though linear's MAPE (2.75) is lower than gcn's (8)


def test_pick_breaks_an_acc10_tie_by_mape_then_by_order() -> None:
    candidates = {
        "xgboost": VAL * 1.09,  # acc@10 100, MAPE 9
        "layerwise": VAL * np.array([1.02, 0.98, 1.02, 0.98]),  # acc@10 100, MAPE 2: the pick
        "linear": VAL * 1.03,  # acc@10 100, MAPE 3
    }
    assert pick(VAL, candidates) == "layerwise"
    # An exact tie (an ensemble that put all its weight on linear predicts what linear does) keeps
    # the first candidate in order.
    same = VAL * np.array([1.02, 0.98, 1.02, 0.98])
    assert pick(VAL, {"linear": same, "ensemble": same.copy()}) == "linear"
    assert pick(VAL, {"ensemble": same, "linear": same.copy()}) == "ensemble"



@pytest.mark.parametrize("family, attribute", [("linear", "coef"), ("layerwise", "costs_ms")])
def test_a_fitted_line_never_predicts_below_half_the_fastest_training_cell(family: str, attribute: str, tmp_path) -> None:
    """A line fitted on few cells can cross zero for an unlike cell; the prediction is held at half the
    fastest training latency, and the floor survives save / load."""
    from leti import predictors
    from leti.spaces import nb201

    archs = nb201.sample_valid(40, seed=3)
    latency = np.linspace(2.0, 6.0, 40)
    predictor = predictors.make_predictor(family).fit(archs[:30], latency[:30])
    assert np.all(predictor.predict(archs[30:]) > 1.0)  # a sensible fit stays clear of the floor
    setattr(predictor, attribute, -np.abs(getattr(predictor, attribute)) - 1.0)  # a line below zero everywhere
    assert np.allclose(predictor.predict(archs[30:]), 1.0)
    predictor.save(tmp_path / family)
    assert np.allclose(predictors.load(tmp_path / family).predict(archs[30:]), 1.0)
