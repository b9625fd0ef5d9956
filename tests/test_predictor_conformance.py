"""One contract for every predictor family (scikit-learn's), on synthetic NAS-Bench-201 cells.

The cells are sampled and their latencies computed here, so these tests run on every clone (the
published-data layer is ``test_predictor_families.py``). Three synthetic latency functions, each
built so that what a family can learn from it is known in advance:

- ``additive``: a fixed cost, a cost per op (from the op counts) and a FLOPs term. NB201's FLOPs
  are themselves a sum over the six edges (every edge's op runs, whatever its neighbours), so the
  whole function is linear in the op counts: ``linear`` (one-hot per edge, which sums to the counts)
  and ``layerwise`` (the counts) represent it exactly.
- ``flops``: a fixed cost plus a cost per MFLOP: exactly the ``flops`` family's model.
- ``graph``: costs of the ops on BRP-NAS's graph (``nb201.graph``: ops on an input->output path,
  skips and nones removed), with an interaction term: what the GCN reads, while op counts miss the
  pruned ops and the interaction.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from leti import predictors, spaces
from leti.metrics import regression_metrics
from leti.predictors import Predictor
from leti.spaces import nb201

OP_COST_MS = {"none": 0.0, "skip_connect": 0.05, "nor_conv_1x1": 0.25, "nor_conv_3x3": 0.6, "avg_pool_3x3": 0.35}
MS_PER_MFLOP = 0.004
# FLOPs one edge's op adds to the benchmark's network: 15 cells (3 stages of 5) whose C²·H·W is
# 16²·32² = 32²·16² = 64²·8² = 262144, two FLOPs per multiply-add; pools, skips and nones count 0.
MFLOPS_PER_EDGE = {"none": 0.0, "skip_connect": 0.0, "avg_pool_3x3": 0.0,
                   "nor_conv_1x1": 15 * 2 * 262144 / 1e6, "nor_conv_3x3": 15 * 2 * 9 * 262144 / 1e6}


def mflops(arch: str) -> float:
    return nb201.flops_params(arch)[0] / 1e6


def additive_ms(arch: str) -> float:
    counts = dict(zip(nb201.OPS, spaces.get("nb201").op_counts(arch)))
    return 2.0 + sum(OP_COST_MS[op] * n for op, n in counts.items()) + MS_PER_MFLOP * mflops(arch)


def flops_ms(arch: str) -> float:
    return 1.5 + 0.01 * mflops(arch)


def graph_ms(arch: str) -> float:
    nodes = Counter(op for op in nb201.graph(arch).nodes[1:-1] if op)
    return 2.0 + sum(OP_COST_MS[op] * n for op, n in nodes.items()) + 0.05 * nodes["nor_conv_3x3"] * nodes["avg_pool_3x3"]


LATENCY: dict[str, Callable[[str], float]] = {"additive": additive_ms, "flops": flops_ms, "graph": graph_ms}

N_CELLS = 300
TRAIN, VAL, TEST = slice(0, 150), slice(150, 200), slice(200, 300)
SMALL_GCN = {"hidden": 32, "layers": 2, "batch_size": 8, "epochs": 60, "patience": 15, "lr": 3e-3}
SUPPLIED = {"seed": 0, "space": "nb201"}


@dataclass(frozen=True)
class Case:
    params: dict
    latency: str  # the synthetic function the family is fitted on
    acc_5pct: float  # held-out acc@5 (%) it must reach
    acc_10pct: float  # held-out acc@10 (%) it must reach
    exact: bool = False  # the function is in the family's model: predictions equal it to rounding


# Thresholds: exact families must reproduce the function; the others were measured on these cells
# (seed 0) and are set with a margin below the measurement.
CASES = {
    "linear": Case({}, "additive", 100, 100, exact=True),
    "layerwise": Case({}, "additive", 100, 100, exact=True),
    "flops": Case({}, "flops", 100, 100, exact=True),
    # Trees approximate the additive function by steps: measured acc@5 86 %, acc@10 98 %.
    "xgboost": Case({"n_estimators": 200, "feature_set": "flat", "target": "log"}, "additive", 70, 90),
    # The GCN reads the graph the function is defined on: measured acc@5 100 %, acc@10 100 %.
    "gcn": Case(SMALL_GCN, "graph", 90, 95),
    # The GCN member can learn the graph function, the linear one cannot (acc@10 71 %): the weights go
    # to the GCN (measured 0.98) and the ensemble does as well as it (measured 100 % / 100 %).
    "ensemble": Case({"members": {"linear": {}, "gcn": SMALL_GCN}}, "graph", 90, 95),
    # layerwise is exact on the additive function, flops is not (it cannot see pools and skips): auto
    # must choose layerwise, and so be exact.
    "auto": Case({"candidates": {"flops": {}, "layerwise": {}}}, "additive", 100, 100, exact=True),
}
FAMILIES = sorted(CASES)


@pytest.fixture(scope="module")
def cells() -> tuple[list[str], dict[str, np.ndarray]]:
    archs = nb201.sample_valid(N_CELLS, seed=0)
    return archs, {name: np.array([function(arch) for arch in archs]) for name, function in LATENCY.items()}


def make(family: str) -> Predictor:
    return predictors.make_predictor(family, **predictors.with_defaults(family, CASES[family].params, SUPPLIED))


def fit(family: str, cells) -> tuple[Predictor, object]:
    """A new predictor of ``family`` fitted on its case's function, and what ``fit`` returned."""
    archs, latency = cells
    y = latency[CASES[family].latency]
    predictor = make(family)
    returned = predictor.fit(archs[TRAIN], y[TRAIN], archs[VAL], y[VAL])
    return predictor, returned


@pytest.fixture(scope="module")
def fitted(cells) -> Callable[[str], Predictor]:
    """Each family fitted once for the module: fit(family) -> (predictor, what fit returned)."""
    done: dict[str, tuple[Predictor, object]] = {}

    def get(family: str) -> tuple[Predictor, object]:
        if family not in done:
            done[family] = fit(family, cells)
        return done[family]

    return get


def test_every_family_has_a_case() -> None:
    assert set(CASES) == set(predictors.FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_init_only_stores_hyperparameters(family: str) -> None:
    predictor = make(family)
    cls = predictors.FAMILIES[family]
    defaults = {name: arg.default for name, arg in inspect.signature(cls.__init__).parameters.items() if name != "self"}
    passed = predictors.with_defaults(family, CASES[family].params, SUPPLIED)
    assert predictor.params == {**defaults, **passed}
    assert predictors.make_predictor(family, **predictor.params).params == predictor.params  # params rebuild it
    # Nothing fitted yet: every other attribute is unset (None, empty, or a placeholder of numbers).
    for name, value in vars(predictor).items():
        if name == "params":
            continue
        unset = value is None or (isinstance(value, (list, dict)) and not value) or (
            isinstance(value, tuple) and all(isinstance(v, (int, float)) for v in value)
        )
        assert unset, f"{family}: {name} is set at construction: {value!r}"


@pytest.mark.parametrize("family", FAMILIES)
def test_predict_before_fit_is_a_clear_error(family: str, cells) -> None:
    archs, _ = cells
    with pytest.raises((RuntimeError, ValueError), match="not fitted"):
        make(family).predict(archs[:3])


@pytest.mark.parametrize("family", FAMILIES)
def test_fit_returns_self_and_predictions_are_finite_and_positive(family: str, cells, fitted) -> None:
    archs, _ = cells
    predictor, returned = fitted(family)
    assert returned is predictor
    predicted = predictor.predict(archs[TEST])
    assert isinstance(predicted, np.ndarray) and predicted.shape == (100,)
    assert np.all(np.isfinite(predicted)) and np.all(predicted > 0)
    assert predictor.predict(archs[TEST][:1]).shape == (1,)


@pytest.mark.parametrize("family", FAMILIES)
def test_learns_its_synthetic_latency_on_held_out_cells(family: str, cells, fitted) -> None:
    archs, latency = cells
    case = CASES[family]
    measured = latency[case.latency][TEST]
    predicted = fitted(family)[0].predict(archs[TEST])
    metrics = regression_metrics(measured, predicted)
    assert metrics["acc_5pct"] >= case.acc_5pct and metrics["acc_10pct"] >= case.acc_10pct, metrics
    if case.exact:
        np.testing.assert_allclose(predicted, measured, rtol=1e-6)


def test_auto_chooses_the_family_that_can_represent_the_function(fitted) -> None:
    assert fitted("auto")[0].chosen == "layerwise"


def test_ensemble_weights_go_to_the_member_that_can_represent_the_function(fitted) -> None:
    ensemble = fitted("ensemble")[0]
    weights = dict(zip(ensemble.members, ensemble.weights))
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["gcn"] > 0.9 and weights["linear"] >= 0.0


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip_gives_identical_predictions_and_no_pickles(family: str, cells, fitted, tmp_path: Path) -> None:
    archs, _ = cells
    predictor = fitted(family)[0]
    folder = predictor.save(tmp_path / family)
    assert not [*folder.rglob("*.pkl"), *folder.rglob("*.pickle")]
    loaded = predictors.load(folder)
    assert type(loaded) is type(predictor) and loaded.params == predictor.params
    assert loaded.chosen == predictor.chosen
    np.testing.assert_array_equal(loaded.predict(archs[TEST]), predictor.predict(archs[TEST]))


@pytest.mark.parametrize("family", FAMILIES)
def test_same_params_and_seed_give_the_same_predictions(family: str, cells, fitted) -> None:
    archs, _ = cells
    again, _ = fit(family, cells)
    np.testing.assert_allclose(again.predict(archs[TEST]), fitted(family)[0].predict(archs[TEST]), rtol=1e-6)


def test_auto_refuses_to_choose_without_validation_cells(cells) -> None:
    archs, latency = cells
    with pytest.raises(ValueError, match="validation"):
        make("auto").fit(archs[:10], latency["additive"][:10])


def test_ensemble_without_validation_cells_weighs_members_equally(cells) -> None:
    archs, latency = cells
    ensemble = predictors.make_predictor("ensemble", members={"linear": {}, "flops": {}}).fit(archs[TRAIN], latency["additive"][TRAIN])
    np.testing.assert_array_equal(ensemble.weights, [0.5, 0.5])
    members = [predictors.make_predictor(f).fit(archs[TRAIN], latency["additive"][TRAIN]) for f in ("linear", "flops")]
    np.testing.assert_allclose(ensemble.predict(archs[TEST]), (members[0].predict(archs[TEST]) + members[1].predict(archs[TEST])) / 2)


def test_layerwise_table_reproduces_its_predictions_and_recovers_the_op_costs(cells, fitted) -> None:
    archs, _ = cells
    model = fitted("layerwise")[0]
    table = model.op_table()
    by_hand = [table["fixed"] + sum(table[op] for op in nb201.parse(arch)) for arch in archs[TEST][:5]]
    np.testing.assert_allclose(model.predict(archs[TEST][:5]), by_hand)
    # The six counts sum to 6, so only differences between ops are identified: each op costs what
    # the function charges for it beyond `none`, its FLOPs included.
    for op in nb201.OPS:
        expected = OP_COST_MS[op] - OP_COST_MS["none"] + MS_PER_MFLOP * (MFLOPS_PER_EDGE[op] - MFLOPS_PER_EDGE["none"])
        assert table[op] - table["none"] == pytest.approx(expected, abs=1e-6), op
