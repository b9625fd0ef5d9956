"""Architecture features: flat vectors for tabular predictors (graphs for the GCN live in ``graph``).

Every feature set is a pure function of the space and the arch string, so a predictor can featurize
the cells it is asked about itself, and the ``featurize`` stage can materialise the same vectors as
a table. The space says what its cells look like (``encoding``, ``op_counts``, ``costs``); this
module only names and stacks them:

- ``onehot``: the space's fixed-length encoding (NB201: a one-hot op per edge; NB101: the padded
  7x7 upper triangle and a one-hot op per vertex);
- ``counts``: how many times the cell uses each op;
- ``flat``: both, then the network's costs (MFLOPs, thousands of params, ...);
- ``live_counts``: how many ops of each kind the cell's network runs on an input->output path, then
  how many it runs off every such path (dead: they still cost time on an eager runtime). A network's
  latency is close to a sum over the ops it runs, so these are the columns of an additive cost model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import polars as pl

from leti import spaces


def onehot(arch: str, space: str = spaces.DEFAULT) -> np.ndarray:
    return spaces.get(space).encoding(arch)


def onehot_names(space: str = spaces.DEFAULT) -> list[str]:
    return list(spaces.get(space).ENCODING_NAMES)


def op_counts(arch: str, space: str = spaces.DEFAULT) -> np.ndarray:
    return np.asarray(spaces.get(space).op_counts(arch), dtype=np.float32)


def op_counts_names(space: str = spaces.DEFAULT) -> list[str]:
    return [f"count_{op}" for op in spaces.get(space).OPS]


def flat(arch: str, space: str = spaces.DEFAULT) -> np.ndarray:
    """The encoding, the op counts, then the network's costs (per-op sums or layer shapes, so
    featurizing a whole space is fast)."""
    totals = np.asarray(spaces.get(space).costs(arch), dtype=np.float32)
    return np.concatenate([onehot(arch, space), op_counts(arch, space), totals])


def flat_names(space: str = spaces.DEFAULT) -> list[str]:
    return onehot_names(space) + op_counts_names(space) + list(spaces.get(space).COST_NAMES)


def live_counts(arch: str, space: str = spaces.DEFAULT) -> np.ndarray:
    network = spaces.get(space).network_graph(arch)
    ops = spaces.get(space).OPS
    values = np.zeros(2 * len(ops), dtype=np.float32)
    for op, live in zip(network.nodes, network.live or ()):
        if op in ops:
            values[ops.index(op) + (0 if live else len(ops))] += 1
    return values


def live_counts_names(space: str = spaces.DEFAULT) -> list[str]:
    ops = spaces.get(space).OPS
    return [f"live_{op}" for op in ops] + [f"dead_{op}" for op in ops]


FEATURE_SETS: dict[str, tuple[Callable[[str, str], np.ndarray], Callable[[str], list[str]]]] = {
    "onehot": (onehot, onehot_names),
    "counts": (op_counts, op_counts_names),
    "flat": (flat, flat_names),
    "live_counts": (live_counts, live_counts_names),
}


def names(feature_set: str, space: str = spaces.DEFAULT) -> list[str]:
    return _lookup(feature_set)[1](space)


@lru_cache(maxsize=400_000)
def vector(arch: str, feature_set: str, space: str = spaces.DEFAULT) -> np.ndarray:
    """Always computed from the live code, so a model trains and serves on the same features;
    remembered per process (read-only), since reports featurize the same cells for every device."""
    values = _lookup(feature_set)[0](arch, space)
    values.flags.writeable = False
    return values


def matrix(archs: Sequence[str], feature_set: str, space: str = spaces.DEFAULT) -> np.ndarray:
    """Feature matrix, one row per arch."""
    if not len(archs):
        return np.zeros((0, len(names(feature_set, space))), dtype=np.float32)
    return np.stack([vector(arch, feature_set, space) for arch in archs])


def table(archs: Sequence[str], feature_sets: Sequence[str], space: str = spaces.DEFAULT) -> pl.DataFrame:
    """Rows of the features table (see ``leti.store.tables.FEATURES``)."""
    rows = [
        {"space": space, "arch": arch, "feature_set": feature_set, "values": values.tolist()}
        for feature_set in feature_sets
        for arch, values in zip(archs, matrix(archs, feature_set, space))
    ]
    return pl.DataFrame(rows, schema={"space": pl.String, "arch": pl.String, "feature_set": pl.String, "values": pl.List(pl.Float32)})


def _lookup(feature_set: str) -> tuple[Callable[[str, str], np.ndarray], Callable[[str], list[str]]]:
    try:
        return FEATURE_SETS[feature_set]
    except KeyError:
        raise KeyError(f"unknown feature set {feature_set!r} (known: {', '.join(FEATURE_SETS)})") from None
