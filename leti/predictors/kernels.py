"""Kernel predictors: one regressor per kernel type, summed over a network's kernels.

A device's predictor holds its fusion rules (which ops its runtime runs as one kernel), its per-call
overhead (the ``empty`` model's time) and, per kernel type, a regressor from the kernel's
configuration, FLOPs and memory traffic (``leti.features.kernels.FEATURE_NAMES``) to the kernel's own
time: its one-kernel model's time less the overhead. A network's prediction is the overhead plus the
sum of its kernels' predictions (nn-Meter, LitePred).

Families (``REGRESSORS``), compared by measurement in ``train_kernels``:

- ``linear``: a roofline sum, time = a + b * FLOPs + c * bytes with non-negative coefficients, fitted
  for relative error: what FLOP and byte counts alone explain;
- ``xgboost``: the roofline sum corrected by gradient-boosted trees on the log of its ratio to the
  measured time (nn-Meter used random forests on the time itself). Trees alone cannot extrapolate
  past the largest sampled kernel and need many samples per type; on the first torch-cpu campaign
  (843 kernels, 4-fold cross-validation per type) trees on log time had a WAPE of 28 %, the
  roofline 16 %, the corrected roofline 10 %;
- ``mlp``: a small network on standardised log features trained on relative error (LitePred).

Everything is saved in portable formats: XGBoost's JSON, coefficients and MLP weights as JSON lists.
No pickle: a predictor saved by one version loads in another.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leti.features import kernels as K

REGRESSORS = ("xgboost", "linear", "mlp")
FLOOR_MS = 0.0005
"""The smallest kernel time learned (0.5 us): a kernel no slower than the empty model still costs
its dispatch, and log targets need a positive value."""
FORMAT = 1


class MissingKernelPredictor(KeyError):
    """A network has kernels of types the device's predictor never measured; names them."""

    def __str__(self) -> str:
        return str(self.args[0])


# --- one kernel type ----------------------------------------------------------------------------


class KernelRegressor:
    """One kernel type's regressor (scikit-learn style: ``__init__`` stores, ``fit`` returns self)."""

    def __init__(self, family: str = "xgboost", **params: Any) -> None:
        if family not in REGRESSORS:
            raise KeyError(f"unknown kernel regressor {family!r} (known: {', '.join(REGRESSORS)})")
        self.family = family
        self.params = params
        self.state: dict[str, Any] | None = None
        self.booster: Any = None

    def fit(self, x: np.ndarray, latency_ms: np.ndarray) -> KernelRegressor:
        y = np.maximum(np.asarray(latency_ms, dtype=float), FLOOR_MS)
        if len(y) == 0:
            raise ValueError("no samples to fit a kernel regressor on")
        getattr(self, f"_fit_{self.family}")(np.asarray(x, dtype=float), y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.state is None and self.booster is None:
            raise RuntimeError(f"{self.family} kernel regressor is not fitted")
        x = np.asarray(x, dtype=float)
        if len(x) == 0:
            return np.zeros(0)
        return np.maximum(getattr(self, f"_predict_{self.family}")(x), FLOOR_MS)

    # xgboost: the roofline corrected by trees on the log ratio
    def _fit_xgboost(self, x: np.ndarray, y: np.ndarray) -> None:
        import xgboost as xgb

        p = {"n_estimators": 200, "max_depth": 3, "learning_rate": 0.05, "subsample": 0.9, "min_child_weight": 1.0, **self.params}
        self._fit_linear(x, y)
        roofline = self.state
        base = np.maximum(self._predict_linear(x), FLOOR_MS)
        model = xgb.XGBRegressor(n_estimators=int(p["n_estimators"]), max_depth=int(p["max_depth"]), learning_rate=float(p["learning_rate"]),
                                 subsample=float(p["subsample"]), min_child_weight=float(p["min_child_weight"]), n_jobs=1,
                                 random_state=int(p.get("seed", 0)))
        model.fit(x, np.log(y / base))
        self.booster = model.get_booster()
        self.state = {"kind": "xgboost", "roofline": roofline}

    def _predict_xgboost(self, x: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        base = np.maximum(self._design_predict(self.state["roofline"], x), FLOOR_MS)
        return base * np.exp(self.booster.predict(xgb.DMatrix(x)).astype(float))

    # linear: a roofline sum
    def _linear_design(self, x: np.ndarray) -> np.ndarray:
        index = {name: i for i, name in enumerate(K.FEATURE_NAMES)}
        return np.stack([np.ones(len(x)), x[:, index["flops"]] / 1e6, x[:, index["bytes"]] / 1e6], axis=1)

    def _fit_linear(self, x: np.ndarray, y: np.ndarray) -> None:
        from scipy.optimize import nnls

        design = self._linear_design(x)
        weights = 1.0 / y  # relative error: each kernel counts by its error's share of its own time
        coefficients, _ = nnls(design * weights[:, None], y * weights)
        self.state = {"kind": "linear", "coefficients": coefficients.tolist(), "columns": ["1", "mflops", "mbytes"]}

    def _predict_linear(self, x: np.ndarray) -> np.ndarray:
        return self._design_predict(self.state, x)

    def _design_predict(self, state: dict[str, Any], x: np.ndarray) -> np.ndarray:
        return self._linear_design(x) @ np.asarray(state["coefficients"])

    # mlp: LitePred's small network on relative error
    def _mlp_inputs(self, x: np.ndarray) -> np.ndarray:
        return np.log1p(np.maximum(x, 0.0))

    def _fit_mlp(self, x: np.ndarray, y: np.ndarray) -> None:
        from leti.threads import torch_threads

        with torch_threads(1):  # a few hundred samples: more threads only spin against XGBoost's and the host's
            self._train_mlp(x, y)

    def _train_mlp(self, x: np.ndarray, y: np.ndarray) -> None:
        import torch

        p = {"hidden": 64, "epochs": 300, "lr": 0.02, "weight_decay": 1e-4, "seed": 0, **self.params}
        torch.manual_seed(int(p["seed"]))
        inputs = self._mlp_inputs(x)
        mean, std = inputs.mean(axis=0), inputs.std(axis=0) + 1e-6
        target_mean = float(np.log(y).mean())
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], p["hidden"]), torch.nn.ReLU(), torch.nn.Linear(p["hidden"], p["hidden"]),
                                  torch.nn.ReLU(), torch.nn.Linear(p["hidden"], 1))
        features = torch.tensor((inputs - mean) / std, dtype=torch.float32)
        target = torch.tensor(y, dtype=torch.float32)
        optimizer = torch.optim.Adam(net.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]))
        for _ in range(int(p["epochs"])):
            optimizer.zero_grad()
            predicted = torch.exp(net(features).squeeze(1) + target_mean)
            loss = torch.mean(torch.abs(predicted - target) / target)  # MAPE, as LitePred trains
            loss.backward()
            optimizer.step()
        self.state = {"kind": "mlp", "mean": mean.tolist(), "std": std.tolist(), "target_mean": target_mean,
                      "layers": [[layer.weight.detach().numpy().tolist(), layer.bias.detach().numpy().tolist()]
                                 for layer in net if isinstance(layer, torch.nn.Linear)]}

    def _predict_mlp(self, x: np.ndarray) -> np.ndarray:
        h = (self._mlp_inputs(x) - np.asarray(self.state["mean"])) / np.asarray(self.state["std"])
        layers = self.state["layers"]
        for index, (weight, bias) in enumerate(layers):
            h = h @ np.asarray(weight).T + np.asarray(bias)
            if index < len(layers) - 1:
                h = np.maximum(h, 0.0)
        return np.exp(h[:, 0] + self.state["target_mean"])

    def save(self, path: Path) -> None:
        """JSON coefficients or weights in ``path``; trees in XGBoost's own JSON beside it (``.trees.json``)."""
        if self.family == "xgboost":
            self.booster.save_model(str(path.with_suffix(".trees.json")))
        path.write_text(json.dumps(self.state))

    @classmethod
    def load(cls, family: str, path: Path) -> KernelRegressor:
        regressor = cls(family)
        regressor.state = json.loads(path.read_text())
        if family == "xgboost":
            import xgboost as xgb

            regressor.booster = xgb.Booster()
            regressor.booster.load_model(str(path.with_suffix(".trees.json")))
        return regressor


# --- a device's predictor -----------------------------------------------------------------------


@dataclass
class Breakdown:
    """A network's prediction: the total, its kernels and each kernel's share."""

    model: str
    predicted_ms: float
    overhead_ms: float
    kernels: list[K.Kernel]
    kernel_ms: np.ndarray

    def explain(self) -> list[dict[str, Any]]:
        return [{"kernel": kernel.type, "config": kernel.config, "ops": list(kernel.ops), "predicted_ms": round(float(ms), 6)}
                for kernel, ms in zip(self.kernels, self.kernel_ms)]


class KernelPredictor:
    """A device's kernel predictors: ``fit`` on measured kernels, ``predict_graph`` on a network.

    ``__init__`` stores hyperparameters only; ``fit`` returns self; predicting before ``fit`` raises.
    """

    def __init__(self, family: str = "xgboost", params: Mapping[str, Any] | None = None, min_samples: int = 3) -> None:
        if family not in REGRESSORS:
            raise KeyError(f"unknown kernel regressor {family!r} (known: {', '.join(REGRESSORS)})")
        self.family = family
        self.params = dict(params or {})
        self.min_samples = min_samples
        self.regressors: dict[str, KernelRegressor] = {}
        self.samples: dict[str, int] = {}
        self.rules: dict[tuple[str, str], bool] = {}
        self.overhead_ms: float | None = None
        self.info: dict[str, Any] = {}

    @property
    def fitted(self) -> bool:
        return self.overhead_ms is not None

    def fit(self, kernels: Sequence[K.Kernel], own_ms: np.ndarray, rules: Mapping[tuple[str, str], bool], overhead_ms: float,
            info: Mapping[str, Any] | None = None) -> KernelPredictor:
        """Fit one regressor per kernel type on each kernel's own time (its one-kernel model's time
        less the per-call overhead, per copy: ``leti.store.reader.KernelRows.own_ms``). Types with
        fewer than ``min_samples`` kernels get none."""
        own = np.asarray(own_ms, dtype=float)
        by_type: dict[str, list[int]] = {}
        for index, kernel in enumerate(kernels):
            if kernel.type != K.EMPTY:
                by_type.setdefault(kernel.type, []).append(index)
        self.regressors, self.samples = {}, {}
        for kernel_type, indices in sorted(by_type.items()):
            if len(indices) < self.min_samples:
                continue
            x = K.feature_matrix([kernels[i] for i in indices])
            self.regressors[kernel_type] = KernelRegressor(self.family, **self.params).fit(x, own[indices])
            self.samples[kernel_type] = len(indices)
        self.rules = dict(rules)
        self.overhead_ms = float(overhead_ms)
        self.info = dict(info or {})
        return self

    def _require(self) -> None:
        if not self.fitted:
            raise RuntimeError("kernel predictor is not fitted")

    def missing(self, kernels: Sequence[K.Kernel]) -> list[str]:
        return sorted({kernel.type for kernel in kernels} - set(self.regressors))

    def predict_kernels(self, kernels: Sequence[K.Kernel]) -> np.ndarray:
        """Each kernel's own time in ms; a type without a regressor is one ``MissingKernelPredictor``."""
        self._require()
        missing = self.missing(kernels)
        if missing:
            raise MissingKernelPredictor(f"no predictor for kernel type{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                                         f"(measured types: {len(self.regressors)}; run the kernel campaign with them)")
        result = np.zeros(len(kernels))
        by_type: dict[str, list[int]] = {}
        for index, kernel in enumerate(kernels):
            by_type.setdefault(kernel.type, []).append(index)
        for kernel_type, indices in by_type.items():
            result[indices] = self.regressors[kernel_type].predict(K.feature_matrix([kernels[i] for i in indices]))
        return result

    def predict_graph(self, graph: K.Graph, rules: Mapping[tuple[str, str], bool] | None = None) -> Breakdown:
        """The network's time: the overhead plus its kernels (split by the device's rules, or ``rules``:
        ``{}`` predicts every op as its own kernel, the layer-wise view)."""
        self._require()
        kernels = K.split_kernels(graph, self.rules if rules is None else rules)
        kernel_ms = self.predict_kernels(kernels)
        return Breakdown(graph.name, float(self.overhead_ms + kernel_ms.sum()), float(self.overhead_ms), kernels, kernel_ms)

    def save(self, folder: str | Path) -> Path:
        self._require()
        folder = Path(folder)
        (folder / "types").mkdir(parents=True, exist_ok=True)
        files = {}
        for index, (kernel_type, regressor) in enumerate(sorted(self.regressors.items())):
            path = folder / "types" / f"{index:03d}-{kernel_type.replace('+', '_')}.json"
            regressor.save(path)
            files[kernel_type] = str(path.relative_to(folder))
        record = {
            "format": FORMAT, "family": "kernels", "regressor": self.family, "params": self.params, "min_samples": self.min_samples,
            "overhead_ms": self.overhead_ms, "rules": [[a, b, fused] for (a, b), fused in sorted(self.rules.items())],
            "types": {t: {"file": files[t], "samples": self.samples.get(t, 0)} for t in sorted(self.regressors)},
            "feature_names": list(K.FEATURE_NAMES), "info": self.info,
        }
        (folder / "predictor.json").write_text(json.dumps(record, indent=2, sort_keys=True))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> KernelPredictor:
        folder = Path(folder)
        path = folder / "predictor.json"
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: no kernel predictor (predictor.json) there")
        record = json.loads(path.read_text())
        if record.get("family") != "kernels":
            raise ValueError(f"{folder}: holds a {record.get('family')!r} predictor, not kernel predictors")
        if list(record["feature_names"]) != list(K.FEATURE_NAMES):
            raise ValueError(f"{folder}: kernel predictors of another feature schema; train them again (dvc repro train_kernels)")
        predictor = cls(record["regressor"], record.get("params"), record.get("min_samples", 3))
        predictor.regressors = {t: KernelRegressor.load(record["regressor"], folder / entry["file"]) for t, entry in record["types"].items()}
        predictor.samples = {t: int(entry["samples"]) for t, entry in record["types"].items()}
        predictor.rules = {(a, b): bool(fused) for a, b, fused in record["rules"]}
        predictor.overhead_ms = float(record["overhead_ms"])
        predictor.info = dict(record.get("info") or {})
        return predictor


# --- how well a family predicts kernels ---------------------------------------------------------


def kernel_scores(measured_ms: np.ndarray, predicted_ms: np.ndarray) -> dict[str, float]:
    """acc@10 (share within 10 %), MAPE and WAPE (absolute error over total time: big kernels count
    by their time, as in a network's sum)."""
    measured, predicted = np.asarray(measured_ms, dtype=float), np.asarray(predicted_ms, dtype=float)
    if len(measured) == 0:
        return {"acc_10pct": math.nan, "mape": math.nan, "wape": math.nan, "n": 0}
    error = np.abs(predicted - measured)
    return {"acc_10pct": float(np.mean(error <= 0.1 * measured) * 100), "mape": float(np.mean(error / measured) * 100),
            "wape": float(error.sum() / measured.sum() * 100), "n": int(len(measured))}


def cross_validated(kernels: Sequence[K.Kernel], own_ms: np.ndarray, family: str, params: Mapping[str, Any] | None = None,
                    folds: int = 4, seed: int = 0) -> np.ndarray:
    """Out-of-fold predictions of each kernel's own time by its type's regressor (the adaptive
    rounds' error signal); NaN for types with too few kernels to fold."""
    own_ms = np.asarray(own_ms, dtype=float)
    predicted = np.full(len(kernels), np.nan)
    by_type: dict[str, list[int]] = {}
    for index, kernel in enumerate(kernels):
        by_type.setdefault(kernel.type, []).append(index)
    rng = np.random.default_rng(seed)
    for indices in by_type.values():
        if len(indices) < max(folds, 4):
            continue
        indices = np.asarray(indices)
        fold_of = rng.permutation(len(indices)) % folds
        x = K.feature_matrix([kernels[i] for i in indices])
        for fold in range(folds):
            train, test = fold_of != fold, fold_of == fold
            regressor = KernelRegressor(family, **dict(params or {})).fit(x[train], own_ms[indices[train]])
            predicted[indices[test]] = regressor.predict(x[test])
    return predicted
