"""Architecture features: flat vectors for tabular predictors (graphs for the GCN live in ``graph``).

Every feature set is a pure function of the arch string, so a predictor can featurize the cells it
is asked about itself, and the ``featurize`` stage can materialise the same vectors as a table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

from leti.spaces import nb201


def onehot(arch: str) -> np.ndarray:
    """One-hot op per edge: 6 edges x 5 ops = 30 values."""
    cell = nb201.parse(arch)
    vector = np.zeros((len(nb201.EDGES), len(nb201.OPS)), dtype=np.float32)
    for edge, op in enumerate(cell):
        vector[edge, nb201.OPS.index(op)] = 1.0
    return vector.ravel()


def onehot_names() -> list[str]:
    return [f"edge{dst}{src}_{op}" for dst, src in nb201.EDGES for op in nb201.OPS]


def op_counts(arch: str) -> np.ndarray:
    """How many of the six edges carry each op (5 values, in ``nb201.OPS`` order)."""
    cell = nb201.parse(arch)
    return np.array([cell.count(op) for op in nb201.OPS], dtype=np.float32)


def op_counts_names() -> list[str]:
    return [f"count_{op}" for op in nb201.OPS]


def flat(arch: str) -> np.ndarray:
    """One-hot op×edge, op counts, then MFLOPs, thousands of params and MB of memory traffic.

    The costs come from ``costs.network_cost`` (per-op sums), so featurizing all 15625 cells is fast.
    """
    from leti.features import costs

    cost = costs.network_cost(arch)
    totals = np.array([cost.flops / 1e6, cost.params / 1e3, cost.memory_bytes / 1e6], dtype=np.float32)
    return np.concatenate([onehot(arch), op_counts(arch), totals])


def flat_names() -> list[str]:
    return onehot_names() + op_counts_names() + ["mflops", "kparams", "memory_mb"]


FEATURE_SETS: dict[str, tuple[Callable[[str], np.ndarray], Callable[[], list[str]]]] = {
    "onehot": (onehot, onehot_names),
    "counts": (op_counts, op_counts_names),
    "flat": (flat, flat_names),
}


def names(feature_set: str) -> list[str]:
    return _lookup(feature_set)[1]()


_precomputed: dict[tuple[str, str], np.ndarray] = {}


def preload(features_table: pl.DataFrame) -> None:
    """Use the vectors of a features table (the ``featurize`` stage's out) instead of recomputing."""
    for arch, feature_set, values in features_table.select("arch", "feature_set", "values").iter_rows():
        _precomputed[(feature_set, arch)] = np.asarray(values, dtype=np.float32)


def vector(arch: str, feature_set: str) -> np.ndarray:
    found = _precomputed.get((feature_set, arch))
    return found if found is not None else _lookup(feature_set)[0](arch)


def matrix(archs: Sequence[str], feature_set: str) -> np.ndarray:
    """Feature matrix, one row per arch."""
    if not len(archs):
        return np.zeros((0, len(names(feature_set))), dtype=np.float32)
    return np.stack([vector(arch, feature_set) for arch in archs])


def table(archs: Sequence[str], feature_sets: Sequence[str]) -> pl.DataFrame:
    """Rows of the features table (see ``leti.tables.FEATURES``)."""
    rows = [
        {"space": nb201.NAME, "arch": arch, "feature_set": feature_set, "values": values.tolist()}
        for feature_set in feature_sets
        for arch, values in zip(archs, matrix(archs, feature_set))
    ]
    return pl.DataFrame(rows, schema={"space": pl.String, "arch": pl.String, "feature_set": pl.String, "values": pl.List(pl.Float32)})


def _lookup(feature_set: str) -> tuple[Callable[[str], np.ndarray], Callable[[], list[str]]]:
    try:
        return FEATURE_SETS[feature_set]
    except KeyError:
        raise KeyError(f"unknown feature set {feature_set!r} (known: {', '.join(FEATURE_SETS)})") from None
