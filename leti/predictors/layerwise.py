"""Layer-wise lookup: a network's latency is the sum of its operators' latencies.

This is ProxylessNAS's and nn-Meter's model. With ``lookup`` (a device's op-latency folder from
``leti measure-ops``), each operator instance's measured latency is summed as it is: nothing is
fitted, so the gap to the measured network shows what the sum misses (fusion, per-call overhead).
Without a lookup table (published datasets measured nothing per op), the per-op costs are fitted
by least squares on the op counts of the training cells (``latency ≈ fixed + Σ_op count(op) ·
cost(op)``), the best lookup table the training data allows. In NAS-Bench-201 every op of a cell
runs whatever its neighbours are, ``none`` included (it multiplies by zero), so counts are the
right regressors. In NAS-Bench-101 an op's width depends on the cell's wiring (the output's
channels are split among the vertices feeding it), so the fitted per-op costs are averages over
widths: the same model, a coarser fit. Measured lookup tables exist for the spaces whose networks
``leti.spaces.operators`` decomposes into operator instances (NAS-Bench-201).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from leti import features, spaces
from leti.predictors.base import Predictor, latency_floor
from leti.store import reader


class LayerwisePredictor(Predictor):
    family = "layerwise"

    def __init__(
        self, lookup: str | None = None, network: dict | None = None, statistic: str = "median_ms", config_id: str | None = None,
        space: str = "nb201",
    ) -> None:
        """``network``: the ``NetworkConfig`` keys the lookup table was measured for (default: the
        benchmark's); ``statistic``: which summary of each operator's runs the lookup sums;
        ``config_id``: which measurement configuration of the lookup folder to use (needed once it
        holds several)."""
        if lookup and space not in spaces.OPERATOR_DECOMPOSITIONS:
            raise ValueError(
                f"layerwise: per-op lookup tables exist for {', '.join(spaces.OPERATOR_DECOMPOSITIONS)} networks, not {space}; "
                "leave out `lookup` to fit per-op costs on op counts"
            )
        super().__init__(lookup=lookup, network=network, statistic=statistic, config_id=config_id, space=space)
        self.costs_ms: np.ndarray | None = None  # fixed part, then one cost per op of the space's OPS
        self.lookup_table: pl.DataFrame | None = None  # op_key -> latency_ms, when measured
        self.floor_ms: float | None = None  # fitted costs only: the least latency predicted (base.latency_floor)

    def _design(self, archs: Sequence[str]) -> np.ndarray:
        counts = features.matrix(archs, "counts", self.space).astype(np.float64)
        return np.hstack([np.ones((len(counts), 1)), counts])

    def fit(self, archs, latency_ms, val_archs=(), val_latency_ms=None) -> LayerwisePredictor:
        if self.params["lookup"]:
            self.lookup_table = reader.read_op_lookup(
                self.params["lookup"], self.params["statistic"], self.params["config_id"] or reader.ONLY
            ).select("op_key", "latency_ms")
            return self
        # NB201's six counts always sum to 6, so the intercept and the op costs are collinear; lstsq's
        # minimum-norm solution picks one decomposition, predictions are the same for any.
        self.costs_ms, *_ = np.linalg.lstsq(self._design(archs), np.asarray(latency_ms, dtype=np.float64), rcond=None)
        self.floor_ms = latency_floor(latency_ms)
        return self

    def feature_schema(self) -> dict:
        if self.params["lookup"]:
            return {"input": "arch", "features": "operator instances (op|c_in|c_out|size|stride) summed from the lookup table",
                    "network": self.params["network"] or {}}
        return {"input": "arch", "feature_set": "counts", "features": ["fixed", *features.names("counts", self.space)]}

    def op_table(self) -> dict[str, float]:
        """The fitted lookup table: fixed part and per-op latency in ms."""
        if self.costs_ms is None:
            raise RuntimeError("layerwise predictor is not fitted")
        return {"fixed": float(self.costs_ms[0]), **{op: float(c) for op, c in zip(spaces.get(self.space).OPS, self.costs_ms[1:])}}

    def predict(self, archs: Sequence[str]) -> np.ndarray:
        if self.lookup_table is not None:
            config = spaces.get(self.space).NetworkConfig(**(self.params["network"] or {}))
            return predict_from_lookup(archs, self.lookup_table, config)
        if self.costs_ms is None:
            raise RuntimeError("layerwise predictor is not fitted")
        return np.maximum(self._design(archs) @ self.costs_ms, self.floor_ms)

    def save_state(self, folder: Path) -> None:
        if self.lookup_table is not None:
            self.lookup_table.write_parquet(folder / "lookup.parquet")
        else:
            np.save(folder / "costs_ms.npy", self.costs_ms)
            np.save(folder / "floor_ms.npy", np.array(self.floor_ms))

    def load_state(self, folder: Path) -> None:
        if (folder / "lookup.parquet").exists():
            self.lookup_table = pl.read_parquet(folder / "lookup.parquet")
        else:
            self.costs_ms = np.load(folder / "costs_ms.npy")
            self.floor_ms = float(np.load(folder / "floor_ms.npy"))


def predict_from_lookup(archs: Sequence[str], lookup: pl.DataFrame, config: object) -> np.ndarray:
    """Each network's operator latencies (``op_key`` -> ``latency_ms``), summed as often as it runs
    them; ``config`` is the space's ``NetworkConfig`` the lookup was measured for."""
    decomposition = spaces.operators(spaces.of_network(config).NAME)
    latency = dict(zip(lookup["op_key"].to_list(), lookup["latency_ms"].to_list()))
    predictions = []
    for arch in archs:
        counts = decomposition.network_ops(arch, config)
        missing = [instance.key for instance in counts if instance.key not in latency]
        if missing:
            raise KeyError(f"operator {missing[0]!r} of {arch} is not in the lookup table")
        predictions.append(sum(count * latency[instance.key] for instance, count in counts.items()))
    return np.asarray(predictions, dtype=float)
